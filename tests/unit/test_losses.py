"""Tests for spell.rl.losses: the clipped GRPO surrogate, KL estimators and token-sum aggregation (spec §7.2).

Run: .venv/bin/python -m pytest tests/unit/test_losses.py
"""

from __future__ import annotations

import math

import pytest
import torch

from spell.rl.losses import grpo_loss, kl_penalty

CLIP = {"clip_low": 0.2, "clip_high": 0.2}


def _loss(logprobs, old_logprobs, advantages, mask, num_tokens_total, **kwargs):
    kwargs = CLIP | kwargs
    return grpo_loss(
        torch.as_tensor(logprobs, dtype=torch.float32),
        torch.as_tensor(old_logprobs, dtype=torch.float32),
        torch.as_tensor(advantages, dtype=torch.float32),
        torch.as_tensor(mask, dtype=torch.bool),
        num_tokens_total=num_tokens_total,
        **kwargs,
    )


def test_ratio_one_loss_is_minus_masked_advantage_sum_over_tokens():
    logprobs = [[-1.0, -2.0, -0.5], [-0.3, -0.7, -9.0]]
    mask = [[True, True, True], [True, True, False]]
    loss, stats = _loss(logprobs, logprobs, [2.0, -1.0], mask, num_tokens_total=5)
    # ratio = 1 -> per token -A: row 0: 3 tokens * -2 = -6; row 1: 2 tokens * +1 = +2; sum -4 / 5 = -0.8
    assert loss.item() == pytest.approx(-0.8)
    assert stats["pg_loss_sum"] == pytest.approx(-4.0)
    assert stats["clip_frac_sum"] == 0.0


@pytest.mark.parametrize(
    ("log_ratio", "advantage", "expected_per_token", "clipped"),
    [
        # ratio e^0.5 = 1.6487 > 1.2, A = +1: min(1.6487, 1.2) = 1.2 -> -1.2, clipped
        (0.5, 1.0, -1.2, True),
        # ratio e^0.5, A = -1: min(-1.6487, -1.2) = -1.6487 -> +1.6487, not clipped (pessimistic branch)
        (0.5, -1.0, math.exp(0.5), False),
        # ratio e^-0.5 = 0.6065 < 0.8, A = +1: min(0.6065, 0.8) = 0.6065 -> -0.6065, not clipped
        (-0.5, 1.0, -math.exp(-0.5), False),
        # ratio e^-0.5, A = -2: min(-1.2131, -1.6) = -1.6 -> +1.6, clipped
        (-0.5, -2.0, 1.6, True),
        # ratio e^0.1 = 1.1052 inside [0.8, 1.2], A = +3: -3.3155, not clipped
        (0.1, 3.0, -3.0 * math.exp(0.1), False),
    ],
)
def test_clipping_cases(log_ratio, advantage, expected_per_token, clipped):
    loss, stats = _loss([[log_ratio]], [[0.0]], [advantage], [[True]], num_tokens_total=1)
    assert loss.item() == pytest.approx(expected_per_token, rel=1e-5)
    assert stats["clip_frac_sum"] == (1.0 if clipped else 0.0)


def test_asymmetric_clip_uses_clip_high_above_one():
    # ratio e^0.5, A = +1, clip_high 0.28: min(1.6487, 1.28) = 1.28 -> -1.28
    loss, _ = _loss([[0.5]], [[0.0]], [1.0], [[True]], num_tokens_total=1, clip_low=0.2, clip_high=0.28)
    assert loss.item() == pytest.approx(-1.28)


def test_clipped_token_has_zero_gradient():
    logprobs = torch.tensor([[0.5]], requires_grad=True)
    loss, _ = grpo_loss(logprobs, torch.zeros(1, 1), torch.ones(1), torch.ones(1, 1, dtype=torch.bool),
                        num_tokens_total=1, **CLIP)
    loss.backward()
    # the clipped branch -1.2*A is constant in logprobs
    assert logprobs.grad.item() == 0.0


@pytest.mark.parametrize(
    ("estimator", "expected"),
    [
        # logp = -1, ref = -2: ref - logp = -1. k1 = logp - ref = 1
        ("k1", 1.0),
        # k3 = e^-1 - (-1) - 1 = 0.36788
        ("k3", math.exp(-1.0)),
        # low_var_kl = k3 inside the clamp
        ("low_var_kl", math.exp(-1.0)),
    ],
)
def test_kl_estimators_on_known_numbers(estimator, expected):
    value = kl_penalty(torch.tensor([[-1.0]]), torch.tensor([[-2.0]]), estimator)
    assert value.item() == pytest.approx(expected, rel=1e-6)


def test_low_var_kl_clamps_at_ten_but_k3_does_not():
    # ref - logp = 3: k3 = e^3 - 3 - 1 = 16.0855; low_var_kl = min(16.0855, 10) = 10
    logprobs, ref = torch.tensor([[-3.0]]), torch.tensor([[0.0]])
    assert kl_penalty(logprobs, ref, "k3").item() == pytest.approx(math.exp(3.0) - 4.0, rel=1e-6)
    assert kl_penalty(logprobs, ref, "low_var_kl").item() == pytest.approx(10.0)


def test_unknown_kl_estimator_raises():
    with pytest.raises(ValueError, match="kl_estimator"):
        kl_penalty(torch.zeros(1, 1), torch.zeros(1, 1), "k2")


def test_kl_and_entropy_terms_are_added():
    logprobs = [[-1.0, -1.0]]
    ref = torch.tensor([[-2.0, -1.0]])
    entropy = torch.tensor([[0.5, 1.5]])
    loss, stats = _loss(logprobs, logprobs, [1.0], [[True, True]], num_tokens_total=2,
                        ref_logprobs=ref, kl_coef=0.1, kl_estimator="k1", entropy=entropy, entropy_coef=0.01)
    # pg: -1 per token -> -2; k1: (1 + 0) * 0.1 = 0.1; entropy: -(0.5 + 1.5) * 0.01 = -0.02
    # total (-2 + 0.1 - 0.02) / 2 = -0.96
    assert loss.item() == pytest.approx(-0.96)
    assert stats["kl_sum"] == pytest.approx(1.0)
    assert stats["entropy_sum"] == pytest.approx(2.0)


def test_zero_coefficients_log_kl_and_entropy_without_touching_loss_or_gradient():
    logprobs = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    entropy = torch.tensor([[0.5, 1.5]], requires_grad=True)
    loss, stats = grpo_loss(logprobs, logprobs.detach(), torch.tensor([1.0]), torch.ones(1, 2, dtype=torch.bool),
                            num_tokens_total=2, ref_logprobs=torch.tensor([[-2.0, -2.0]]), kl_coef=0.0,
                            kl_estimator="k1", entropy=entropy, entropy_coef=0.0, **CLIP)
    loss.backward()
    # pg only: (-1 - 1) / 2 = -1; k1 = (-1 + 2) + (-2 + 2) = 1 and entropy 0.5 + 1.5 = 2 are still logged
    assert loss.item() == pytest.approx(-1.0)
    assert stats["kl_sum"] == pytest.approx(1.0) and stats["entropy_sum"] == pytest.approx(2.0)
    assert entropy.grad is None  # not part of the graph at all
    assert logprobs.grad.tolist() == [[-0.5, -0.5]]


def test_mask_excludes_tokens_even_with_garbage_values():
    # token 2 is padding with an overflowing ratio and inf reference; it must not count or produce NaN
    logprobs = torch.tensor([[-1.0, 50.0]], requires_grad=True)
    old = torch.tensor([[-1.0, -50.0]])
    ref = torch.tensor([[-1.0, float("inf")]])
    mask = torch.tensor([[True, False]])
    loss, stats = grpo_loss(logprobs, old, torch.tensor([3.0]), mask, num_tokens_total=1,
                            ref_logprobs=ref, kl_coef=1.0, **CLIP)
    loss.backward()
    # only token 1: ratio 1, A = 3 -> -3; k3(0) = 0
    assert loss.item() == pytest.approx(-3.0)
    assert logprobs.grad.tolist() == [[-3.0, 0.0]]


def test_gradient_at_ratio_one_is_minus_advantage_over_num_tokens():
    logprobs = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, -0.5]], requires_grad=True)
    mask = torch.tensor([[True, True, False], [False, True, True]])
    advantages = torch.tensor([1.5, -0.5])
    loss, _ = grpo_loss(logprobs, logprobs.detach(), advantages, mask, num_tokens_total=8, **CLIP)
    loss.backward()
    # d/dlogp of -exp(logp - old) * A at logp = old is -A; / 8 -> -1.5/8 = -0.1875, +0.5/8 = 0.0625
    expected = [[-0.1875, -0.1875, 0.0], [0.0, 0.0625, 0.0625]]
    assert torch.allclose(logprobs.grad, torch.tensor(expected))


def test_two_micro_batches_summed_equal_one_big_batch():
    torch.manual_seed(0)
    logprobs = torch.randn(4, 5) - 2.0
    old = logprobs + 0.3 * torch.randn(4, 5)  # stale samples, so some tokens clip
    advantages = torch.tensor([1.0, -1.0, 0.5, 2.0])
    mask = torch.rand(4, 5) > 0.3
    total = int(mask.sum())
    big_lp = logprobs.clone().requires_grad_(True)
    big, big_stats = grpo_loss(big_lp, old, advantages, mask, num_tokens_total=total, **CLIP)
    big.backward()
    small_lp = logprobs.clone().requires_grad_(True)
    summed, clipped = torch.zeros(()), 0.0
    for rows in (slice(0, 1), slice(1, 4)):  # uneven micro-batches
        part, stats = grpo_loss(small_lp[rows], old[rows], advantages[rows], mask[rows],
                                num_tokens_total=total, **CLIP)
        part.backward()
        summed, clipped = summed + part.detach(), clipped + stats["clip_frac_sum"]
    assert summed.item() == pytest.approx(big.item(), abs=1e-6)
    assert clipped == big_stats["clip_frac_sum"]
    assert torch.allclose(small_lp.grad, big_lp.grad, atol=1e-7)


def test_bad_inputs_raise():
    lp = torch.zeros(2, 3)
    mask = torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="num_tokens_total"):
        grpo_loss(lp, lp, torch.zeros(2), mask, num_tokens_total=0, **CLIP)
    with pytest.raises(ValueError, match="advantages"):
        grpo_loss(lp, lp, torch.zeros(3), mask, num_tokens_total=6, **CLIP)
    with pytest.raises(ValueError, match="old_logprobs"):
        grpo_loss(lp, torch.zeros(2, 4), torch.zeros(2), mask, num_tokens_total=6, **CLIP)
