"""The transformers generation engine: a hand-written KV-cache decode loop, CPU or GPU.

Spec §3 stages 3, 5, 6 and 8 sample n completions per prompt (G responders, G_v verifier votes). Here each
prompt is prefilled ONCE and its KV cache is repeated n times for decoding, instead of placing the prompt n
times in the batch (``num_return_sequences``): with long documents the prompt dominates the cost
(benchmarks/rollout_prefix.py). Prompts are left-padded, sampling is temperature + top-p (spec §8).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from typing import Any

import torch
from transformers import DynamicCache

from spell.types import Completion, SamplingParams

try:  # transformers >= 4.56 keeps one object per layer in a DynamicCache
    from transformers.cache_utils import DynamicLayer
except ImportError:  # older caches: decode still works, only without the preallocated buffers
    DynamicLayer = None

logger = logging.getLogger(__name__)

IM_END = "<|im_end|>"

if DynamicLayer is not None:

    class ReservedLayer(DynamicLayer):
        """A ``DynamicLayer`` whose keys/values live in a buffer with room for the coming tokens.

        ``DynamicLayer.update`` concatenates, copying the whole cache at every decode step; for n rows of a
        4K-token prompt that copy is most of the decode time. Here each step writes in place and
        ``keys``/``values`` are views of the filled part; the buffer doubles if it ever runs out.
        """

        def reserve(self, capacity: int) -> None:
            """Move the cached states into buffers of ``capacity`` positions (at least the current length)."""
            length = self.keys.shape[-2]
            capacity = max(capacity, length)
            self._key_buffer = self.keys.new_empty((*self.keys.shape[:-2], capacity, self.keys.shape[-1]))
            self._value_buffer = self.values.new_empty((*self.values.shape[:-2], capacity, self.values.shape[-1]))
            self._key_buffer[..., :length, :] = self.keys
            self._value_buffer[..., :length, :] = self.values
            self.keys = self._key_buffer[..., :length, :]
            self.values = self._value_buffer[..., :length, :]

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
            start = self.keys.shape[-2]
            end = start + key_states.shape[-2]
            if end > self._key_buffer.shape[-2]:
                self.reserve(max(end, 2 * start))
            self._key_buffer[..., start:end, :] = key_states
            self._value_buffer[..., start:end, :] = value_states
            self.keys = self._key_buffer[..., :end, :]
            self.values = self._value_buffer[..., :end, :]
            return self.keys, self.values


def reserve_cache(cache: Any, extra_tokens: int) -> None:
    """Preallocate room for ``extra_tokens`` more positions in every plain dynamic layer of ``cache``.

    A no-op on transformers versions without per-layer cache objects, and for other layer types.
    """
    for layer in getattr(cache, "layers", None) or []:
        if DynamicLayer is not None and type(layer) is DynamicLayer and layer.is_initialized:
            layer.__class__ = ReservedLayer  # same state, in-place updates (ReservedLayer adds no fields)
            layer.reserve(layer.keys.shape[-2] + extra_tokens)


def resolve_eos_ids(tokenizer: Any, model: Any = None) -> frozenset[int]:
    """Token ids that end a completion.

    The union of the tokenizer's eos id, ``<|im_end|>`` when the vocabulary has it (end of an assistant
    turn) and the model's ``generation_config.eos_token_id`` (an int or a list).

    Args:
        tokenizer: a transformers tokenizer.
        model: optional model with a ``generation_config``.

    Returns:
        The set of stop ids (may be empty for a tokenizer without eos).
    """
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    im_end = tokenizer.convert_tokens_to_ids(IM_END)
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id and im_end < len(tokenizer):
        ids.add(im_end)
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if gen_eos is not None:
        ids.update(int(i) for i in ([gen_eos] if isinstance(gen_eos, int) else gen_eos))
    return frozenset(ids)


def cache_kwarg(model: Any) -> str:
    """Name of the forward argument that takes the KV cache: ``cache`` (transformers >= 5.2x) or the older
    ``past_key_values`` (also used for wrappers whose forward only has ``**kwargs``)."""
    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(target.forward).parameters else "past_key_values"


def sample_next_token(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw one token per row from ``logits`` [B, V] with temperature and nucleus (top-p) sampling.

    ``temperature <= 0`` is greedy (argmax). Top-p keeps the smallest set of most likely tokens whose
    probability reaches ``top_p`` (always at least the most likely one).

    Args:
        logits: next-token logits, shape [B, V].
        temperature: softmax temperature; ``<= 0`` means greedy.
        top_p: nucleus mass in (0, 1]; ``>= 1`` disables the filter.
        generator: RNG for reproducible draws (on the logits' device).

    Returns:
        Token ids, shape [B] (int64).
    """
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)  # [B, V]
    if top_p < 1.0:
        sorted_probs, sorted_ids = probs.sort(dim=-1, descending=True)
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs  # mass of the strictly more likely tokens
        sorted_probs = sorted_probs.masked_fill(mass_before >= top_p, 0.0)  # the first token always stays
        choice = torch.multinomial(sorted_probs, 1, generator=generator)  # [B, 1]; multinomial renormalises
        return sorted_ids.gather(-1, choice).squeeze(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token-id lists into ``input_ids`` and ``attention_mask``, both [B, L_max] int64."""
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        if prompt:
            input_ids[row, width - len(prompt) :] = torch.tensor(list(prompt), dtype=torch.long)
            attention_mask[row, width - len(prompt) :] = 1
    return input_ids.to(device), attention_mask.to(device)


class HFEngine:
    """Generates with a transformers causal LM (the policy object itself) and a shared-prefix KV cache.

    Args:
        model: a ``PreTrainedModel`` for causal LM; generation runs on its device and dtype.
        tokenizer: its tokenizer (decoding, pad and eos ids).
        max_batch_prompts: distinct prompts prefilled together; a batch decodes
            ``max_batch_prompts * n`` sequences.
        share_prompt_kv: prefill each prompt once and repeat its KV cache n times (default). ``False``
            repeats the prompt n times before prefill (the ``num_return_sequences`` layout; benchmarks only).

    Attributes:
        eos_token_ids: ids that end a completion (see :func:`resolve_eos_ids`); may be replaced, e.g. by an
            empty set to force fixed-length generation in benchmarks.
    """

    def __init__(self, model: Any, tokenizer: Any, *, max_batch_prompts: int = 8, share_prompt_kv: bool = True):
        if max_batch_prompts < 1:
            raise ValueError(f"max_batch_prompts must be >= 1, got {max_batch_prompts}")
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_prompts = max_batch_prompts
        self.share_prompt_kv = share_prompt_kv
        self.eos_token_ids = resolve_eos_ids(tokenizer, model)
        self._cache_kwarg = cache_kwarg(model)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_token_id = int(pad) if pad is not None else 0

    def sync_weights(self, model: Any) -> None:
        """Sample from ``model`` from now on.

        The HF engine generates with the training model object itself, so after an optimizer step it is
        already on-policy; this only stores the reference (in case the caller swapped the object).
        """
        self.model = model
        self.eos_token_ids = resolve_eos_ids(self.tokenizer, model)
        self._cache_kwarg = cache_kwarg(model)

    def generate(
        self, prompts: Sequence[Sequence[int]], sampling: SamplingParams, n: int = 1
    ) -> list[list[Completion]]:
        """Sample ``n`` completions for every prompt.

        Args:
            prompts: token-id prompts (non-empty), e.g. from :func:`spell.rl.engine.base.encode_chat_prompt`.
            sampling: temperature (``<= 0`` = greedy), top-p, max_new_tokens and an optional seed; the same
                seed gives the same completions for the same prompts, batch size and device.
            n: completions per prompt.

        Returns:
            One list of ``n`` completions per prompt, in prompt order.
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        for index, prompt in enumerate(prompts):
            if len(prompt) == 0:
                raise ValueError(f"prompt {index} is empty; the HF engine needs at least one token")
        device = next(self.model.parameters()).device
        generator = None
        if sampling.seed is not None:
            generator = torch.Generator(device=device)
            generator.manual_seed(sampling.seed)
        was_training = self.model.training
        self.model.eval()
        results: list[list[Completion]] = []
        try:
            with torch.inference_mode():
                for start in range(0, len(prompts), self.max_batch_prompts):
                    chunk = prompts[start : start + self.max_batch_prompts]
                    results.extend(self._generate_batch(chunk, sampling, n, device, generator))
        finally:
            self.model.train(was_training)
        return results

    def _prefill(
        self, prompts: Sequence[Sequence[int]], device: torch.device
    ) -> tuple[DynamicCache, torch.Tensor, torch.Tensor]:
        """Run the prompts once; return the cache, the last-position logits [B, V] and the attention mask."""
        input_ids, attention_mask = left_pad(prompts, self.pad_token_id, device)
        position_ids = (attention_mask.cumsum(dim=-1) - 1).clamp(min=0)  # pads get 0; real tokens 0..len-1
        cache = DynamicCache()  # filled in place by the forward pass
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            logits_to_keep=1,
            **{self._cache_kwarg: cache},
        )
        return cache, out.logits[:, -1, :], attention_mask

    def _generate_batch(
        self,
        prompts: Sequence[Sequence[int]],
        sampling: SamplingParams,
        n: int,
        device: torch.device,
        generator: torch.Generator | None,
    ) -> list[list[Completion]]:
        """Prefill, expand to n rows per prompt, decode until every row stopped or hit max_new_tokens."""
        if sampling.max_new_tokens <= 0:
            return [[Completion("", (), tuple(p), "length") for _ in range(n)] for p in prompts]
        if self.share_prompt_kv:
            cache, logits, attention_mask = self._prefill(prompts, device)
            if n > 1:
                cache.batch_repeat_interleave(n)  # rows: p0 x n, p1 x n, ...
                logits = logits.repeat_interleave(n, dim=0)
                attention_mask = attention_mask.repeat_interleave(n, dim=0)
        else:
            cache, logits, attention_mask = self._prefill([p for p in prompts for _ in range(n)], device)
        reserve_cache(cache, sampling.max_new_tokens)
        rows = logits.shape[0]
        next_position = attention_mask.sum(dim=-1, keepdim=True)  # [rows, 1]: position of the 1st new token
        eos = torch.tensor(sorted(self.eos_token_ids), dtype=torch.long, device=device)
        finished = torch.zeros(rows, dtype=torch.bool, device=device)
        steps: list[torch.Tensor] = []
        for step in range(sampling.max_new_tokens):
            token = sample_next_token(logits, sampling.temperature, sampling.top_p, generator)
            token = token.masked_fill(finished, self.pad_token_id)
            steps.append(token)
            finished |= torch.isin(token, eos)
            if step + 1 == sampling.max_new_tokens or bool(finished.all()):
                break
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones(rows, 1)], dim=-1)
            out = self.model(
                input_ids=token[:, None],
                attention_mask=attention_mask,
                position_ids=next_position,
                use_cache=True,
                **{self._cache_kwarg: cache},
            )
            logits = out.logits[:, -1, :]
            next_position = next_position + 1
        tokens = torch.stack(steps, dim=1).tolist()  # [rows, steps]
        return self._to_completions(prompts, tokens, n)

    def _to_completions(
        self, prompts: Sequence[Sequence[int]], tokens: list[list[int]], n: int
    ) -> list[list[Completion]]:
        """Cut each row after its first eos and decode; rows are grouped n per prompt."""
        grouped: list[list[Completion]] = []
        for index, prompt in enumerate(prompts):
            group = []
            for row in tokens[index * n : (index + 1) * n]:
                stop_at = next((i for i, t in enumerate(row) if t in self.eos_token_ids), None)
                ids = row if stop_at is None else row[: stop_at + 1]
                text = self.tokenizer.decode(ids, skip_special_tokens=True)
                reason = "length" if stop_at is None else "stop"
                group.append(Completion(text, tuple(ids), tuple(prompt), reason))
            grouped.append(group)
        return grouped
