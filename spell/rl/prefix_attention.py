"""Attention for the shared-prefix layout without a T x T mask (``grpo.shared_prefix`` with ``sdpa`` models).

A shared-prefix row is ``prompt, completion_1, ..., completion_k`` (:mod:`spell.rl.shared_prefix`). With a full
[T, T] mask every attention call is the quadratic math kernel over the whole row: at an 8K prompt the fp32 mask
alone is 340 MB and the prompt's self-attention dominates the update. Here each row is split instead:

- the prompt attends causally to itself: ``scaled_dot_product_attention(is_causal=True)``, no mask, so PyTorch
  may use its fused (flash) kernels, with memory linear in the prompt length;
- the completion tokens attend to the prompt and to their own earlier tokens through a mask of [Q, T] (Q the
  completion tokens of the row), so their cost is linear in the prompt length.

The numbers are those of the full mask (tested to fp32 tolerance). The function is registered with
transformers' ``AttentionInterface`` as :data:`PREFIX_ATTENTION`; a call without ``prefix_lengths`` (generation,
per-sample scoring) is passed unchanged to transformers' own ``sdpa`` implementation, so a model switched to it
computes exactly what it did before everywhere else. The switch is not saved with the model's config.
Shape legend: R rows, H heads, T row length, Q completion tokens of the longest row, D head dim.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

PREFIX_ATTENTION = "spell_prefix_sdpa"


def prefix_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    prefix_lengths: Sequence[int] | None = None,
    row_lengths: Sequence[int] | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature. query [R, H, T, D]; key/value [R, H_kv, T, D].

    With ``prefix_lengths`` (P_r, the prompt of row r) and ``row_lengths`` (T_r, its real tokens) the
    ``attention_mask`` is the completions' mask [R, 1, Q, T] (True or 0.0 = may attend): row r's queries
    ``P_r .. T_r - 1`` against keys ``0 .. T_r - 1``. Padding positions get zeros (no real token attends to
    them). Returns ``(output [R, T, H, D], None)`` like transformers' implementations.
    """
    if prefix_lengths is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    from transformers.integrations.sdpa_attention import repeat_kv

    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    length = query.shape[2]
    rows = []
    for row, (prompt, real) in enumerate(zip(prefix_lengths, row_lengths)):
        q, k, v = query[row : row + 1], key[row : row + 1], value[row : row + 1]
        parts = [F.scaled_dot_product_attention(q[:, :, :prompt], k[:, :, :prompt], v[:, :, :prompt],
                                                dropout_p=dropout, is_causal=True, scale=scaling)]
        if real > prompt:
            mask = attention_mask[row : row + 1, :, : real - prompt, :real]
            parts.append(F.scaled_dot_product_attention(q[:, :, prompt:real], k[:, :, :real], v[:, :, :real],
                                                        attn_mask=mask, dropout_p=dropout, scale=scaling))
        if length > real:
            parts.append(q.new_zeros(1, q.shape[1], length - real, q.shape[3]))
        rows.append(torch.cat(parts, dim=2))
    return torch.cat(rows).transpose(1, 2).contiguous(), None


def use_prefix_attention(model: nn.Module) -> bool:
    """Switch an ``sdpa`` model to :data:`PREFIX_ATTENTION` (registering it once); True if the model now uses it.

    Models on other implementations (eager, flash, flex) are left alone (False): the caller then needs the full
    [T, T] mask. Also False when the installed transformers has no attention registry.
    """
    config = model.config
    if getattr(config, "_attn_implementation", None) == PREFIX_ATTENTION:
        return True
    if getattr(config, "_attn_implementation", None) != "sdpa" or not _register():
        return False
    config._attn_implementation = PREFIX_ATTENTION
    return True


def _register() -> bool:
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    except ImportError:
        return False
    AttentionInterface.register(PREFIX_ATTENTION, prefix_attention_forward)
    AttentionMaskInterface.register(PREFIX_ATTENTION, sdpa_mask)  # masks of ordinary calls: those of sdpa
    return True
