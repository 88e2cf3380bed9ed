"""The transformers generation engine: a hand-written KV-cache decode loop, CPU or GPU.

Spec §3 stages 3, 5, 6 and 8 sample n completions per prompt (G responders, G_v verifier votes). Each prompt
is prefilled ONCE and its KV cache is kept ONCE: the n samples' queries attend to it together (as n x heads
query rows of one matrix product), and only each sample's own new tokens are cached per row
(:func:`shared_prefix_attention`). Before issue 13 the prompt's KV was copied n times, each copy with room for
max_new_tokens (``prompt_kv="copied"``, still used for models this attention cannot serve, e.g. sliding-window
layers). A row that drew its eos stops being computed once a quarter of its batch has (``drop_finished``; the
tokens do not change). Prompts are left-padded, sampling is temperature + top-p (spec §8). On a bf16-capable GPU
the forward passes run under bf16 autocast by default (``compute_dtype="auto"``); on CPU in the parameters' dtype.
Measured in benchmarks/rollout_prefix.py and benchmarks/rollout_stop.py.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Sequence
from typing import Any, Literal

import torch
from transformers import DynamicCache

from spell.rl.engine.kv_cache import (
    SHARED_PREFIX_KWARG,
    SharedPrefixCache,
    reserve_cache,
    shared_prefix_attention_enabled,
    supports_shared_prefix,
)
from spell.types import Completion, SamplingParams

logger = logging.getLogger(__name__)

IM_END = "<|im_end|>"
PromptKV = Literal["shared", "copied", "repeated"]


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


def token_logprob(logits: torch.Tensor, token: torch.Tensor, temperature: float) -> torch.Tensor:
    """log p(token) per row under ``softmax(logits / T)`` (greedy, ``T <= 0``, at 1): what the trainer scores,
    so the rollout and training log-probs of a sample differ only by numerics. logits [B, V], token [B] -> [B].

    >>> round(float(token_logprob(torch.tensor([[0.0, 0.0]]), torch.tensor([1]), 1.0)[0]), 4)  # log(1/2)
    -0.6931
    """
    scaled = logits.float() / (temperature if temperature > 0 else 1.0)
    return torch.log_softmax(scaled, dim=-1).gather(-1, token[:, None]).squeeze(-1)


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
    """Generates with a transformers causal LM (the policy object itself), each prompt's KV cache kept once.

    Args:
        model: a ``PreTrainedModel`` for causal LM; generation runs on its device.
        tokenizer: its tokenizer (decoding, pad and eos ids).
        max_batch_prompts: distinct prompts prefilled together; a batch decodes
            ``max_batch_prompts * n`` sequences.
        prompt_kv: how the n samples of a prompt get its KV cache. ``"shared"`` (default): prefilled once,
            stored once, attended by all n rows (:func:`shared_prefix_attention`); models it cannot serve
            (:func:`supports_shared_prefix`) use ``"copied"``. ``"copied"``: prefilled once, copied n times into
            per-row buffers with room for max_new_tokens (the engine before issue 13; benchmarks). ``"repeated"``:
            the prompt n times in the prefill batch (the ``num_return_sequences`` layout; benchmarks).
        compute_dtype: ``"auto"`` (default): bf16 autocast on a bf16-capable CUDA device when the parameters are
            fp32 (``model.dtype=auto``); otherwise the parameters' dtype. ``None``: always the parameters' dtype.
            A ``torch.dtype``: autocast to it on the model's device.
        drop_finished: stop computing the rows that drew an eos (default): once a quarter of a batch's computed
            rows have finished, they leave its KV cache and forward passes (with ``"shared"``, a prompt leaves when
            all its n rows have). The tokens are the same as with False (the baseline of
            benchmarks/rollout_stop.py); only the work of the finished rows is saved.

    Attributes:
        eos_token_ids: ids that end a completion (see :func:`resolve_eos_ids`); may be replaced, e.g. by an
            empty set to force fixed-length generation in benchmarks.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_batch_prompts: int = 8,
        prompt_kv: PromptKV = "shared",
        compute_dtype: torch.dtype | Literal["auto"] | None = "auto",
        drop_finished: bool = True,
    ):
        if max_batch_prompts < 1:
            raise ValueError(f"max_batch_prompts must be >= 1, got {max_batch_prompts}")
        if prompt_kv not in ("shared", "copied", "repeated"):
            raise ValueError(f"prompt_kv must be shared, copied or repeated, got {prompt_kv!r}")
        self.tokenizer = tokenizer
        self.max_batch_prompts = max_batch_prompts
        self.prompt_kv = prompt_kv
        self.compute_dtype = compute_dtype
        self.drop_finished = drop_finished
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_token_id = int(pad) if pad is not None else 0
        self._shared_ok = True  # until a model the shared-prompt attention cannot serve (warned about once)
        self.sync_weights(model)

    def sync_weights(self, model: Any) -> None:
        """Sample from ``model`` from now on.

        The HF engine generates with the training model object itself, so after an optimizer step it is
        already on-policy; this only stores the reference (in case the caller swapped the object).
        """
        self.model = model
        self.eos_token_ids = resolve_eos_ids(self.tokenizer, model)
        self._cache_kwarg = cache_kwarg(model)
        shared_ok = supports_shared_prefix(model)
        if self.prompt_kv == "shared" and not shared_ok and self._shared_ok:  # once per model
            logger.info(
                "%s: prompt KV copied per sample (shared-prompt attention needs full attention layers "
                "dispatched through transformers' AttentionInterface)",
                type(model).__name__,
            )
        self._shared_ok = shared_ok

    def autocast_dtype(self, device: torch.device) -> torch.dtype | None:
        """The dtype the forward passes are autocast to on ``device``, or None for the parameters' dtype."""
        if self.compute_dtype != "auto":
            return self.compute_dtype
        fp32 = next(self.model.parameters()).dtype == torch.float32
        return torch.bfloat16 if device.type == "cuda" and fp32 and torch.cuda.is_bf16_supported() else None

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
        dtype = self.autocast_dtype(device)
        autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
        was_training = self.model.training
        self.model.eval()
        results: list[list[Completion]] = []
        try:
            with torch.inference_mode(), autocast:
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
        """Prefill, lay out the prompt KV for n rows per prompt, decode until every row stopped or hit the limit."""
        if sampling.max_new_tokens <= 0:
            return [[Completion("", (), tuple(p), "length") for _ in range(n)] for p in prompts]
        layout = "copied" if self.prompt_kv == "shared" and not self._shared_ok else self.prompt_kv
        if layout == "repeated":
            cache, logits, prompt_mask = self._prefill([p for p in prompts for _ in range(n)], device)
        else:
            cache, logits, prompt_mask = self._prefill(prompts, device)
            logits = logits.repeat_interleave(n, dim=0)  # rows: p0 x n, p1 x n, ...
        if layout == "shared":
            shared = SharedPrefixCache(cache, prompt_mask, n, sampling.max_new_tokens, self.autocast_dtype(device))
            del cache  # its tensors live on, once, as the shared layers' prefixes
            positions = prompt_mask.sum(dim=-1, keepdim=True).repeat_interleave(n, dim=0)  # [rows, 1]
            with shared_prefix_attention_enabled(self.model):
                tokens, logprobs = self._decode(logits, _SharedRows(self, shared, positions), sampling, generator)
        else:
            if layout == "copied" and n > 1:
                cache.batch_repeat_interleave(n)
                prompt_mask = prompt_mask.repeat_interleave(n, dim=0)
            reserve_cache(cache, sampling.max_new_tokens)
            tokens, logprobs = self._decode(logits, _CopiedRows(self, cache, prompt_mask), sampling, generator)
        return self._to_completions(prompts, tokens, logprobs, n)

    def _decode(
        self,
        logits: torch.Tensor,
        rows: _DecodeRows,
        sampling: SamplingParams,
        generator: torch.Generator | None,
    ) -> tuple[list[list[int]], list[list[float]]]:
        """Sample a token per row from ``logits`` [rows, V], feed the running rows' tokens to ``rows``, repeat.

        Rows that drew an eos get the pad token from then on. With ``drop_finished`` the forward passes stop
        computing them: once a quarter of the computed rows have finished (whole groups of ``rows.group``),
        ``rows.keep`` drops them from the cache. Sampling still draws over every row (the finished ones on
        zero logits): PyTorch's one-sample multinomial draws an exponential variate per entry, so a row's draw
        depends only on its own logits and the generator's state, which advances by rows x V per step however many
        rows are running; the running rows draw the same tokens as without dropping (tested on CPU). Returns the
        tokens [rows, steps] and their log-probs (:func:`token_logprob`).
        """
        total = logits.shape[0]
        eos = torch.tensor(sorted(self.eos_token_ids), dtype=torch.long, device=logits.device)
        finished = torch.zeros(total, dtype=torch.bool, device=logits.device)
        running = torch.arange(total, device=logits.device)  # the rows the forward passes compute
        steps: list[torch.Tensor] = []
        logprobs: list[torch.Tensor] = []
        for step in range(sampling.max_new_tokens):
            if len(running) < total:  # dropped rows: zero logits keep the draws' layout
                logits = logits.new_zeros(total, logits.shape[1]).index_copy_(0, running, logits)
            token = sample_next_token(logits, sampling.temperature, sampling.top_p, generator)
            token = token.masked_fill(finished, self.pad_token_id)
            steps.append(token)
            logprobs.append(token_logprob(logits, token, sampling.temperature))
            finished |= torch.isin(token, eos)
            if step + 1 == sampling.max_new_tokens or bool(finished.all()):
                break
            if self.drop_finished:
                running = self._drop_finished_groups(rows, running, finished)
            logits = rows.forward(token[running], step)
        return torch.stack(steps, dim=1).tolist(), torch.stack(logprobs, dim=1).tolist()  # [rows, steps] each

    @staticmethod
    def _drop_finished_groups(rows: _DecodeRows, running: torch.Tensor, finished: torch.Tensor) -> torch.Tensor:
        """Drop the groups of ``rows.group`` running rows that have all finished, once they are at least a
        quarter of the running rows (fewer cache copies); return the rows still computed."""
        done = finished[running].view(-1, rows.group).all(dim=1)  # [running groups]
        if int(done.sum()) * 4 < max(len(done), 4):
            return running
        keep = (~done).repeat_interleave(rows.group).nonzero().squeeze(-1)  # positions among the running rows
        rows.keep(keep)
        return running[keep]

    def _to_completions(
        self, prompts: Sequence[Sequence[int]], tokens: list[list[int]], logprobs: list[list[float]], n: int
    ) -> list[list[Completion]]:
        """Cut each row after its first eos and decode; rows are grouped n per prompt."""
        grouped: list[list[Completion]] = []
        for index, prompt in enumerate(prompts):
            group = []
            for row, row_logprobs in zip(tokens[index * n : (index + 1) * n], logprobs[index * n : (index + 1) * n]):
                stop_at = next((i for i, t in enumerate(row) if t in self.eos_token_ids), None)
                ids = row if stop_at is None else row[: stop_at + 1]
                text = self.tokenizer.decode(ids, skip_special_tokens=True)
                reason = "length" if stop_at is None else "stop"
                group.append(Completion(text, tuple(ids), tuple(prompt), reason, tuple(row_logprobs[: len(ids)])))
            grouped.append(group)
        return grouped


class _DecodeRows:
    """The rows a decode loop computes: ``forward`` feeds them a token each, ``keep`` drops the others from the
    cache. ``group``: rows that can only leave together (the n samples of a prompt whose KV they share)."""

    group = 1

    def forward(self, token: torch.Tensor, step: int) -> torch.Tensor:
        raise NotImplementedError

    def keep(self, index: torch.Tensor) -> None:
        raise NotImplementedError


class _SharedRows(_DecodeRows):
    """Rows on a :class:`SharedPrefixCache` (the prompt's KV once per prompt), leaving a prompt at a time."""

    def __init__(self, engine: HFEngine, cache: Any, positions: torch.Tensor):
        self.engine, self.cache, self.positions = engine, cache, positions  # positions [rows, 1]
        self.group = cache.n

    def forward(self, token: torch.Tensor, step: int) -> torch.Tensor:
        """Feed the tokens sampled at ``step`` [rows]; return the next logits [rows, V]."""
        out = self.engine.model(
            input_ids=token[:, None],
            position_ids=self.positions + step,
            use_cache=True,
            **{self.engine._cache_kwarg: self.cache, SHARED_PREFIX_KWARG: self.cache},
        )
        self.cache.check_attended()
        return out.logits[:, -1, :]

    def keep(self, index: torch.Tensor) -> None:
        self.positions = self.positions[index]
        self.cache.keep_rows(index)


class _CopiedRows(_DecodeRows):
    """Rows that each hold their prompt's KV (``"copied"`` / ``"repeated"``): the mask grows a column per step."""

    def __init__(self, engine: HFEngine, cache: Any, prompt_mask: torch.Tensor):
        self.engine, self.cache, self.prompt_mask = engine, cache, prompt_mask

    def forward(self, token: torch.Tensor, step: int) -> torch.Tensor:
        mask = self.prompt_mask
        out = self.engine.model(
            input_ids=token[:, None],
            attention_mask=torch.cat([mask, mask.new_ones(mask.shape[0], step + 1)], dim=-1),
            position_ids=mask.sum(dim=-1, keepdim=True) + step,
            use_cache=True,
            **{self.engine._cache_kwarg: self.cache},
        )
        return out.logits[:, -1, :]

    def keep(self, index: torch.Tensor) -> None:
        self.prompt_mask = self.prompt_mask[index]
        self.cache.batch_select_indices(index)
