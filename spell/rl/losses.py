"""The GRPO/PPO clipped surrogate with token-level aggregation over the whole mixed batch (spec §7.2, Eq. 10).

Stage 12 of the self-play step: per-token log-probs of the three roles' completions -> one scalar loss.
Shape legend: N sequences in a micro-batch, T token positions (any alignment, as long as every [N, T]
tensor uses the same one). Mask convention (used everywhere in spell): ``mask`` True / 1 = the token counts.
Torch only: no transformers, no spell.rl.policy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

KL_CLAMP = 10.0  # low_var_kl clamps the k3 estimate to [-10, 10] (verl's choice)


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "low_var_kl") -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from samples of pi.

    Args:
        logprobs: log pi(token). Shape: [N, T].
        ref_logprobs: log pi_ref(token). Shape: [N, T].
        estimator: ``k1`` (logp - ref), ``k3`` (exp(ref - logp) - (ref - logp) - 1, unbiased and >= 0) or
            ``low_var_kl`` (k3 clamped to [-10, 10]).

    Returns:
        The per-token estimate. Shape: [N, T].

    Raises:
        ValueError: unknown estimator.
    """
    log_ratio = ref_logprobs - logprobs
    match str(estimator):
        case "k1":
            return -log_ratio
        case "k3":
            return torch.exp(log_ratio) - log_ratio - 1.0
        case "low_var_kl":
            return (torch.exp(log_ratio) - log_ratio - 1.0).clamp(-KL_CLAMP, KL_CLAMP)
    raise ValueError(f"kl_estimator={estimator!r}: use one of low_var_kl, k3, k1")


def grpo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float,
    clip_high: float,
    num_tokens_total: int | float,
    ref_logprobs: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    kl_estimator: str = "low_var_kl",
    entropy: torch.Tensor | None = None,
    entropy_coef: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped policy-gradient loss of one micro-batch, normalised by the whole batch's token count.

    Per token: ``-min(ratio * A, clip(ratio, 1 - clip_low, 1 + clip_high) * A) + kl_coef * kl
    - entropy_coef * entropy`` with ``ratio = exp(logprobs - old_logprobs)``. The per-token terms are
    SUMMED over the micro-batch's masked tokens and divided by ``num_tokens_total``, the completion-token
    count of the whole batch; summing the losses of all micro-batches (gradient accumulation) therefore gives
    the token-mean over the mixed batch of all roles, Eq. 10 / DAPO style.

    Strictly on-policy (one optimizer step per batch, the paper's setting) the caller passes
    ``old_logprobs = logprobs.detach()``: then ratio == 1, the clip is inert and the gradient is the plain
    policy gradient ``-A * grad(logprobs) / num_tokens_total`` (paper Eq. 12). The clip is kept so stale
    samples (several updates per batch, or engine log-probs) are still handled correctly.

    Args:
        logprobs: log-probs under the current policy, with grad. Shape: [N, T].
        old_logprobs: log-probs of the policy that sampled the tokens. Shape: [N, T].
        advantages: one advantage per sequence, broadcast to its tokens. Shape: [N].
        mask: True / 1 where the token is a trained completion token. Shape: [N, T].
        clip_low: ratio clip below 1 (0.2).
        clip_high: ratio clip above 1 (0.2).
        num_tokens_total: masked tokens in the WHOLE batch (all micro-batches), > 0.
        ref_logprobs: reference-policy log-probs for the KL term. Shape: [N, T].
        kl_coef: β; the KL term is added only when ``ref_logprobs`` is given (paper β = 0; always logged).
        kl_estimator: ``low_var_kl``, ``k3`` or ``k1`` (see :func:`kl_penalty`).
        entropy: per-token entropy of the current policy. Shape: [N, T].
        entropy_coef: weight of the entropy bonus (paper 0; with 0 the entropy is only logged, no gradient).

    Returns:
        ``(loss, stats)``. ``loss`` is a scalar tensor. ``stats`` holds floats that are sums over this
        micro-batch's masked tokens, so the caller adds them across micro-batches and divides by the total:
        ``pg_loss_sum``, ``clip_frac_sum`` (tokens where the clipped branch was taken), ``kl_sum``,
        ``entropy_sum``.

    Raises:
        ValueError: mismatched shapes or ``num_tokens_total <= 0``.
    """
    _check_shapes(logprobs, old_logprobs, advantages, mask, ref_logprobs, entropy)
    if num_tokens_total <= 0:
        raise ValueError(f"num_tokens_total={num_tokens_total}: must be > 0 (count the batch's masked tokens)")
    valid = mask.bool()
    zero = torch.zeros((), dtype=torch.float32, device=logprobs.device)
    logprobs = logprobs.float()
    # Zero the log-ratio off the mask first, so padding (where old_logprobs may be anything) cannot overflow exp.
    log_ratio = torch.where(valid, logprobs - old_logprobs.float(), zero)
    ratio = torch.exp(log_ratio)  # [N, T]
    adv = advantages.float().unsqueeze(-1)  # [N, 1]
    unclipped = -ratio * adv
    clipped = -ratio.clamp(1.0 - clip_low, 1.0 + clip_high) * adv
    pg_per_token = torch.where(valid, torch.maximum(unclipped, clipped), zero)  # -min(ratio*A, clip(ratio)*A)
    per_token = pg_per_token
    stats = {
        "pg_loss_sum": pg_per_token.sum().item(),
        "clip_frac_sum": float(((clipped > unclipped) & valid).sum().item()),
        "kl_sum": 0.0,
        "entropy_sum": 0.0,
    }
    if ref_logprobs is not None:
        # Both inputs zeroed off the mask, so exp() there is exp(0) and its gradient is finite.
        ref = torch.where(valid, ref_logprobs.float(), zero)
        kl = kl_penalty(torch.where(valid, logprobs, zero), ref, kl_estimator)
        kl = torch.where(valid, kl, zero)
        if kl_coef != 0.0:  # a zero-weighted term would still cost a backward pass
            per_token = per_token + kl_coef * kl
        stats["kl_sum"] = kl.sum().item()
    if entropy is not None:
        entropy = torch.where(valid, entropy.float(), zero)
        if entropy_coef != 0.0:
            per_token = per_token - entropy_coef * entropy
        stats["entropy_sum"] = entropy.sum().item()
    # Every term is zeroed with torch.where (not a multiply by the mask), so a NaN/inf on a padding position
    # can leak into neither the sum nor its gradient.
    loss = per_token.sum() / num_tokens_total
    return loss, stats


def _check_shapes(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    ref_logprobs: torch.Tensor | None,
    entropy: torch.Tensor | None,
) -> None:
    if logprobs.dim() != 2:
        raise ValueError(f"logprobs must be [N, T], got shape {tuple(logprobs.shape)}")
    named = {"old_logprobs": old_logprobs, "mask": mask, "ref_logprobs": ref_logprobs, "entropy": entropy}
    for name, tensor in named.items():
        if tensor is not None and tensor.shape != logprobs.shape:
            raise ValueError(f"{name} shape {tuple(tensor.shape)} != logprobs shape {tuple(logprobs.shape)}")
    if advantages.shape != logprobs.shape[:1]:
        raise ValueError(f"advantages must be [N]={tuple(logprobs.shape[:1])}, got {tuple(advantages.shape)}")


def rollout_logprob_gap(train_logprobs: torch.Tensor, completion_mask: torch.Tensor,
                        rollout_logprobs: Sequence[Sequence[float]]) -> tuple[float, int]:
    """Sum of |training - rollout| log-prob over the tokens whose rollout log-prob is known, and their count.

    The mean (sum / count over a whole update) is ``train/rollout_logprob_diff``: how far the engine that sampled
    (its numerics, precision, kernels) is from the policy the loss differentiates. On-policy it is zero in exact
    arithmetic for the HF engine; vLLM's processed log-probs add up to -log(top_p).

    Args:
        train_logprobs: [N, L] the trainer's log-probs; ``completion_mask`` [N, L] marks each sample's completion
            tokens (in order).
        rollout_logprobs: per sample, one log-prob per completion token, or an empty / mismatched sequence when
            unknown (then that sample is skipped); NaN entries are skipped.

    >>> train = torch.tensor([[0.0, -1.0, -2.0], [-0.5, -0.5, 0.0]])
    >>> mask = torch.tensor([[False, True, True], [True, False, False]])
    >>> rollout_logprob_gap(train, mask, [(-1.5, float("nan")), ()])  # |-1 - -1.5|; the NaN and sample 2 skipped
    (0.5, 1)
    """
    lengths = completion_mask.sum(dim=-1).tolist()
    known = [torch.tensor(r, dtype=torch.float32) if len(r) == n else torch.full((n,), math.nan)
             for r, n in zip(rollout_logprobs, lengths, strict=True)]
    if not known:
        return 0.0, 0
    rollout = torch.cat(known).to(train_logprobs.device)
    train = train_logprobs.detach()[completion_mask].float()
    valid = torch.isfinite(rollout)
    return float((train[valid] - rollout[valid]).abs().sum()), int(valid.sum())
