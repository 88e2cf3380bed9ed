"""Tests for spell/rl/shared_prefix.py, the shared-prefix update layout: each distinct prompt encoded once, every
completion attending to it, must give the per-sample log-probs and gradients (fp32 tolerance 1e-5)."""

from __future__ import annotations

import pytest
import torch

from spell.rl.batching import collate
from spell.rl.policy import sequence_logprobs
from spell.rl.prefix_attention import PREFIX_ATTENTION
from spell.rl.shared_prefix import pack_shared_prompts, prompt_units, segment_attention, shared_prefix_logprobs
from spell.types import Role, RoleSample, TaskType


def _sample(prompt, completion, advantage, temperature=1.0) -> RoleSample:
    return RoleSample(Role.RESPONDER, TaskType.DOC_MC, "g", tuple(prompt), tuple(completion), 0.0,
                      advantage=advantage, temperature=temperature)


def _samples() -> list[RoleSample]:
    gen = torch.Generator().manual_seed(0)
    ids = lambda n: torch.randint(3, 300, (n,), generator=gen).tolist()  # noqa: E731
    a, b = ids(6), ids(9)
    return [
        _sample(a, ids(3), 1.0, 0.7), _sample(b, ids(2), -0.5), _sample(a, ids(1), -1.0, 0.7),
        _sample(ids(4), ids(5), 0.25),  # a prompt of its own
        _sample(a, ids(4), 0.5, 0.7), _sample(b, ids(5), 0.5), _sample(b, [], 0.0),  # an empty completion
    ]


def _per_sample(model, samples, chunk_tokens):
    """Today's layout: every sample left padded with its own prompt; [N, C] completion-aligned results."""
    batch = collate(samples, pad_id=0)
    logprobs, entropy = sequence_logprobs(model, batch["input_ids"], batch["attention_mask"],
                                          batch["completion_mask"], chunk_tokens, True,
                                          temperature=batch["temperatures"])
    width = max(len(s.completion_ids) for s in samples)
    out_lp, out_ent = torch.zeros(len(samples), width), torch.zeros(len(samples), width)
    for row, sample in enumerate(samples):  # left padded: the completion is the last len(c) positions
        n = len(sample.completion_ids)
        if n:
            out_lp[row, :n], out_ent[row, :n] = logprobs[row, -n:], entropy[row, -n:]
    return out_lp, out_ent


def _grads(model, logprobs, entropy, advantages):
    model.zero_grad()
    (-(logprobs * advantages[:, None]).sum() + 0.1 * entropy.sum()).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("checkpointing", [False, True])
def test_shared_prefix_equals_per_sample_logprobs_entropy_and_gradients(tiny_model, checkpointing):
    samples = _samples()
    if checkpointing:
        tiny_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    tiny_model.train()
    advantages = torch.tensor([s.advantage for s in samples])
    expected_lp, expected_ent = _per_sample(tiny_model, samples, chunk_tokens=3)
    expected_grads = _grads(tiny_model, expected_lp, expected_ent, advantages)
    batch = pack_shared_prompts(samples, pad_id=0)
    assert batch["input_ids"].shape[0] == 3  # 3 distinct prompts -> 3 rows, not 7
    logprobs, entropy = shared_prefix_logprobs(tiny_model, batch, chunk_tokens=3, with_entropy=True)
    assert tiny_model.config._attn_implementation == PREFIX_ATTENTION  # the [Q, T]-mask path, not the [T, T] one
    mask = batch["completion_mask"]
    assert mask.sum() == sum(len(s.completion_ids) for s in samples) == 20
    torch.testing.assert_close(logprobs[mask], expected_lp[mask], rtol=0, atol=1e-5)
    torch.testing.assert_close(entropy[mask], expected_ent[mask], rtol=0, atol=1e-5)
    assert (logprobs[~mask] == 0).all()
    for name, grad in _grads(tiny_model, logprobs, entropy, advantages).items():
        torch.testing.assert_close(grad, expected_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_shared_prefix_with_eager_attention_uses_an_additive_mask(tiny_model):
    samples = _samples()[:3]
    expected, _ = _per_sample(tiny_model, samples, chunk_tokens=1024)
    tiny_model.config._attn_implementation = "eager"
    logprobs, _ = shared_prefix_logprobs(tiny_model, pack_shared_prompts(samples, pad_id=0))
    mask = pack_shared_prompts(samples, pad_id=0)["completion_mask"]
    torch.testing.assert_close(logprobs[mask], expected[mask], rtol=0, atol=1e-5)


def test_the_layout_by_hand():
    # prompt [5, 6] with completions [7, 8] and [9]; prompt [4] with completion [3]
    batch = pack_shared_prompts([_sample([5, 6], [7, 8], 1.0), _sample([4], [3], 0.0), _sample([5, 6], [9], -1.0)],
                                pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9], [4, 3, 0, 0, 0]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 2], [0, 1, 0, 0, 0]]  # 9 sits right after the prompt
    # token 7 is predicted by position 1 (the prompt's end), 8 by 7 (position 2), 9 by the prompt's end again;
    # row 1 starts at flat index 5: 3 is predicted by position 0 -> 5
    assert batch["hidden_index"].tolist() == [1, 2, 1, 5]
    assert batch["targets"].tolist() == [7, 8, 9, 3]
    assert batch["token_sample"].tolist() == [0, 0, 2, 1] and batch["token_offset"].tolist() == [0, 1, 0, 0]
    attend = segment_attention(batch["segment"])[0, 0].int().tolist()
    assert attend[4] == [1, 1, 0, 0, 1]  # token 9 sees the prompt and itself, not the other completion
    assert attend[3] == [1, 1, 1, 1, 0]
    assert segment_attention(batch["segment"])[1, 0, 3].int().tolist() == [0, 0, 0, 1, 0]  # padding sees itself only
    assert batch["completion_mask"].tolist() == [[True, True], [True, False], [True, False]]


def test_prompt_units_split_a_group_that_exceeds_the_budget():
    samples = [_sample([1] * 10, [2] * 4, 0.0) for _ in range(5)]
    # 10 + 4 + 4 = 18 <= 20, a third would make 22: units of two, the last alone
    assert prompt_units(samples, max_tokens=20) == [[0, 1], [2, 3], [4]]


def test_a_second_pass_over_a_batch_reuses_its_mask(tiny_model):
    batch = pack_shared_prompts(_samples(), pad_id=0)
    first, _ = shared_prefix_logprobs(tiny_model, batch)
    masks = [k for k in batch if isinstance(k, tuple) and k[0] == "_mask"]
    assert len(masks) == 1  # built once and kept in the batch (the KL reference pass reads the same batch)
    kept = batch[masks[0]]
    second, _ = shared_prefix_logprobs(tiny_model, batch)
    assert batch[masks[0]] is kept and torch.equal(first, second)
