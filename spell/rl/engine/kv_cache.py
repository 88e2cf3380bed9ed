"""The HF engine's KV caches: the prompt's KV kept once for its n samples, and in-place growing buffers.

:class:`SharedPrefixCache` stores each prompt's prefill KV once; :func:`shared_prefix_attention` (registered in
transformers' ``AttentionInterface`` and switched on only for the engine's decode steps) lets the n samples'
queries attend to it as rows of one matrix product, plus each row's own new tokens. :class:`ReservedLayer` is the
fallback (``prompt_kv="copied"``): a ``DynamicLayer`` that writes decode steps in place instead of concatenating.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from transformers import PretrainedConfig

try:  # transformers >= 4.56 keeps one object per layer in a cache
    from transformers import AttentionInterface
    from transformers.cache_utils import Cache, CacheLayerMixin, DynamicLayer
except ImportError:  # older caches: the engine falls back to prompt_kv="copied" without preallocated buffers
    AttentionInterface = Cache = CacheLayerMixin = DynamicLayer = None
    ReservedLayer = SharedPrefixLayer = SharedPrefixCache = None  # defined below only when the classes exist

SHARED_PREFIX_ATTENTION = "spell_shared_prefix"  # the name registered in transformers' AttentionInterface
SHARED_PREFIX_KWARG = "spell_shared_prefix_cache"  # forward kwarg that carries the cache to the attention function
FIRST_CAPACITY = 64  # new-token positions a shared-prefix layer allocates first; it doubles when full

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

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            """Keep the rows ``indices`` (buffers included, so later steps still write in place)."""
            length = self.keys.shape[-2]
            self._key_buffer, self._value_buffer = self._key_buffer[indices], self._value_buffer[indices]
            self.keys = self._key_buffer[..., :length, :]
            self.values = self._value_buffer[..., :length, :]

    class SharedPrefixLayer(CacheLayerMixin):
        """One layer of a :class:`SharedPrefixCache`: the prompts' KV once, plus every row's new tokens.

        ``prefix_keys``/``prefix_values`` [B, Hkv, L, D] are the prefill's tensors (never copied per row). ``update``
        writes a decode step's KV [R, Hkv, 1, D] (R = B * n rows) in place into a buffer that starts at
        ``FIRST_CAPACITY`` positions and doubles (at most to ``max_new_positions``), and returns only the rows'
        new tokens [R, Hkv, t, D]: :func:`shared_prefix_attention` adds the prefix.
        """

        is_sliding = False

        def __init__(self, prefix_keys: torch.Tensor, prefix_values: torch.Tensor, max_new_positions: int):
            super().__init__()
            self.prefix_keys, self.prefix_values = prefix_keys, prefix_values
            self.max_new_positions = max_new_positions
            self.length = 0  # new tokens cached per row
            self._key_buffer: torch.Tensor | None = None
            self._value_buffer: torch.Tensor | None = None
            self.device = prefix_keys.device
            self.is_initialized = True

        def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
            """Nothing to do: the prefix is known at construction and buffers follow the first update."""

        def _grow(self, key_states: torch.Tensor, value_states: torch.Tensor, needed: int) -> None:
            old = 0 if self._key_buffer is None else self._key_buffer.shape[-2]
            capacity = max(needed, min(2 * old or FIRST_CAPACITY, self.max_new_positions))
            keys, values = (
                like.new_empty((*like.shape[:-2], capacity, like.shape[-1]), dtype=prefix.dtype)  # steps convert
                for like, prefix in ((key_states, self.prefix_keys), (value_states, self.prefix_values))
            )
            if self.length:
                keys[..., : self.length, :] = self._key_buffer[..., : self.length, :]
                values[..., : self.length, :] = self._value_buffer[..., : self.length, :]
            self._key_buffer, self._value_buffer = keys, values

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
            end = self.length + key_states.shape[-2]
            if self._key_buffer is None or end > self._key_buffer.shape[-2]:
                self._grow(key_states, value_states, end)
            self._key_buffer[..., self.length : end, :] = key_states
            self._value_buffer[..., self.length : end, :] = value_states
            self.length = end
            self.keys = self._key_buffer[..., :end, :]
            self.values = self._value_buffer[..., :end, :]
            return self.keys, self.values

        def keep(self, prompts: torch.Tensor, rows: torch.Tensor) -> None:
            """Keep the prompts ``prompts`` of the prefix and the rows ``rows`` of the new tokens."""
            self.prefix_keys, self.prefix_values = self.prefix_keys[prompts], self.prefix_values[prompts]
            if self._key_buffer is not None:
                self._key_buffer, self._value_buffer = self._key_buffer[rows], self._value_buffer[rows]
                self.keys = self._key_buffer[..., : self.length, :]
                self.values = self._value_buffer[..., : self.length, :]

        def get_seq_length(self) -> int:
            return self.prefix_keys.shape[-2] + self.length

        def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
            return self.get_seq_length() + query_length, 0

        def get_max_length(self) -> int:
            return -1

    class SharedPrefixCache(Cache):
        """A decode cache whose B prompts are stored once for their n rows each (rows p0 x n, p1 x n, ...).

        Args:
            prefill: the ``DynamicCache`` of the prompts' prefill, [B, Hkv, L, D] per layer (kept, not copied, unless
                ``dtype`` converts them once).
            prompt_mask: the prefill's attention mask [B, L] (0 = left padding).
            n: rows (samples) per prompt.
            max_new_tokens: the most tokens a row samples; the last one is never fed back, so a row caches at
                most ``max_new_tokens - 1``.
            dtype: the autocast dtype, if any: the KV is stored in it. Under autocast a fp32-parameter model
                caches fp32 keys (RoPE promotes them) that every bf16 product would convert again at each step.
        """

        def __init__(
            self,
            prefill: Any,
            prompt_mask: torch.Tensor,
            n: int,
            max_new_tokens: int,
            dtype: torch.dtype | None = None,
        ):
            positions = max(max_new_tokens - 1, 1)
            layers = [SharedPrefixLayer(lay.keys.to(dtype), lay.values.to(dtype), positions) for lay in prefill.layers]
            super().__init__(layers=layers)
            self.n = n
            pad = prompt_mask == 0
            self.prompt_pad = pad[:, None, None, :] if bool(pad.any()) else None  # [B, 1, 1, L]: True at padding
            self.attended = 0  # layers served by shared_prefix_attention since the last check

        def keep_rows(self, rows: torch.Tensor) -> None:
            """Keep only the rows ``rows`` (sorted, whole prompts: all n rows of each kept prompt), layer by layer,
            so at most one layer's kept copy exists beside the full cache."""
            prompts = rows[:: self.n] // self.n
            if self.prompt_pad is not None:
                self.prompt_pad = self.prompt_pad[prompts]
            for layer in self.layers:
                layer.keep(prompts, rows)

        def check_attended(self) -> None:
            """Raise unless every layer's attention of the last forward went through the shared-prefix path."""
            if self.attended != len(self.layers):
                raise RuntimeError(
                    f"{self.attended} of {len(self.layers)} attention layers used the shared-prompt KV; this model's "
                    "attention does not follow config._attn_implementation: use HFEngine(prompt_kv='copied')"
                )
            self.attended = 0


def _rows(x: torch.Tensor, n: int) -> torch.Tensor:
    """[B, Hkv, n * g, ...] (the n samples of a prompt side by side) -> [B * n, Hkv, g, ...] (one row per sample)."""
    batch, heads, columns = x.shape[:3]
    x = x.view(batch, heads, n, columns // n, *x.shape[3:]).transpose(1, 2)
    return x.reshape(batch * n, heads, columns // n, *x.shape[4:])


def _by_prompt(x: torch.Tensor, n: int) -> torch.Tensor:
    """The inverse of :func:`_rows`: [B * n, Hkv, g, ...] -> [B, Hkv, n * g, ...]."""
    rows, heads, group = x.shape[:3]
    x = x.view(rows // n, n, heads, group, *x.shape[3:]).transpose(1, 2)
    return x.reshape(rows // n, heads, n * group, *x.shape[4:])


def shared_prefix_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    sliding_window: int | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Decode-step attention over [the prompt's KV, once per prompt] + [each row's own new tokens].

    Registered in transformers' ``AttentionInterface`` and selected during the engine's decode. The query
    [R, Hq, 1, D] of the n rows of prompt b and their Hq / Hkv query heads per KV head become n * Hq / Hkv rows
    of ONE product with that prompt's keys [Hkv, L, D] (read once, not n times). The softmax runs over prefix and
    new tokens together in fp32 (the two parts share the row maximum and the normaliser), as eager attention.

    Args:
        module: the attention module (``layer_idx`` picks the cache layer).
        query: [R, Hq, 1, D], R = B * n rows ordered p0 x n, p1 x n, ...
        key: the rows' new tokens [R, Hkv, t, D] (what :class:`SharedPrefixLayer` returned); likewise ``value``.
        attention_mask: ignored (no mask is built for this implementation); prompt padding comes from the cache.
        scaling: the softmax scale (default D ** -0.5).
        sliding_window: must be None (sliding-window models use ``prompt_kv="copied"``).
        kwargs: must hold the :class:`SharedPrefixCache` under ``SHARED_PREFIX_KWARG``.

    Returns:
        The attention output [R, 1, Hq, D] and no weights, as transformers' sdpa/eager functions.
    """
    cache = kwargs.get(SHARED_PREFIX_KWARG)
    if cache is None or query.shape[2] != 1:
        raise RuntimeError("shared_prefix_attention serves the HF engine's one-token decode steps only")
    if sliding_window is not None or kwargs.get("softcap") is not None or kwargs.get("s_aux") is not None:
        raise NotImplementedError("shared-prompt attention has no sliding window, softcap or sinks")
    layer, n = cache.layers[module.layer_idx], cache.n
    rows, heads, _, dim = query.shape
    scaling = dim**-0.5 if scaling is None else scaling
    q = query.reshape(rows, key.shape[1], heads // key.shape[1], dim)  # [R, Hkv, g, D]; heads kv*g + j as repeat_kv
    # scores in fp32 (.float() copies bf16 and is free for fp32); every op on the [.., L] scores is in place
    prefix = torch.matmul(_by_prompt(q, n), layer.prefix_keys.transpose(-1, -2)).float().mul_(scaling)  # [B,Hkv,n*g,L]
    if cache.prompt_pad is not None:
        prefix.masked_fill_(cache.prompt_pad, float("-inf"))
    new = torch.matmul(q, key.transpose(-1, -2)).float().mul_(scaling)  # [R, Hkv, g, t]
    top = torch.maximum(_rows(prefix.amax(dim=-1, keepdim=True), n), new.amax(dim=-1, keepdim=True))  # [R,Hkv,g,1]
    prefix = prefix.sub_(_by_prompt(top, n)).exp_()
    new = new.sub_(top).exp_()
    total = _rows(prefix.sum(dim=-1, keepdim=True), n) + new.sum(dim=-1, keepdim=True)  # softmax normaliser
    out = _rows(torch.matmul(prefix.div_(_by_prompt(total, n)).to(value.dtype), layer.prefix_values), n)
    out = out + torch.matmul(new.div_(total).to(value.dtype), value)  # [R, Hkv, g, D]
    cache.attended += 1
    return out.reshape(rows, 1, heads, value.shape[-1]), None


def supports_shared_prefix(model: Any) -> bool:
    """Whether :func:`shared_prefix_attention` can serve ``model``: per-layer caches, attention dispatched through
    ``AttentionInterface`` (``_supports_attention_backend``), and full attention in every layer."""
    if CacheLayerMixin is None:
        return False
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    if config is None or not getattr(base, "_supports_attention_backend", False):
        return False
    config = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    layer_types = getattr(config, "layer_types", None) or ["full_attention"]
    return getattr(config, "sliding_window", None) is None and all(t == "full_attention" for t in layer_types)


@contextlib.contextmanager
def shared_prefix_attention_enabled(model: Any) -> Iterator[None]:
    """Run ``model``'s attention layers with :func:`shared_prefix_attention`; restore their implementation after."""
    AttentionInterface.register(SHARED_PREFIX_ATTENTION, shared_prefix_attention)  # idempotent
    configs = {
        id(m.config): m.config for m in model.modules() if isinstance(getattr(m, "config", None), PretrainedConfig)
    }
    saved = [(config, config._attn_implementation) for config in configs.values()]  # modules() is parents first
    try:
        for config, _ in saved:
            config._attn_implementation = SHARED_PREFIX_ATTENTION
        yield
    finally:
        for config, previous in saved:  # parents first: a parent's setter cascades, then each child gets its own
            config._attn_implementation = previous


def reserve_cache(cache: Any, extra_tokens: int) -> None:
    """Preallocate room for ``extra_tokens`` more positions in every plain dynamic layer of ``cache``.

    A no-op on transformers versions without per-layer cache objects, and for other layer types.
    """
    for layer in getattr(cache, "layers", None) or []:
        if DynamicLayer is not None and type(layer) is DynamicLayer and layer.is_initialized:
            layer.__class__ = ReservedLayer  # same state, in-place updates (ReservedLayer adds no fields)
            layer.reserve(layer.keys.shape[-2] + extra_tokens)


