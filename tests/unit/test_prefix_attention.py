"""Tests for spell/rl/prefix_attention.py: the shared-prefix attention without a [T, T] mask must equal attention
with the full segment mask, and a switched model must compute exactly what sdpa computed everywhere else."""

from __future__ import annotations

import torch
from torch import nn

from spell.rl.prefix_attention import PREFIX_ATTENTION, prefix_attention_forward, use_prefix_attention
from spell.rl.shared_prefix import completion_attention, segment_attention


def _layout():
    # row 0: prompt of 4, completions of 3 and 2 (9 real tokens); row 1: prompt of 2, completion of 1, then padding
    segment = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 2, 2], [0, 0, 1, -1, -1, -1, -1, -1, -1]])
    return segment, torch.tensor([4, 2]), torch.tensor([9, 3])


def test_equals_attention_with_the_full_segment_mask_including_grouped_heads():
    segment, prefix, real = _layout()
    gen = torch.Generator().manual_seed(0)
    query = torch.randn(2, 4, 9, 8, generator=gen, requires_grad=True)
    key = torch.randn(2, 2, 9, 8, generator=gen, requires_grad=True)  # 2 kv heads for 4 query heads
    value = torch.randn(2, 2, 9, 8, generator=gen, requires_grad=True)
    module = nn.Module()
    module.num_key_value_groups = 2
    out, _ = prefix_attention_forward(module, query, key, value, completion_attention(segment, prefix, real),
                                      scaling=0.3, prefix_lengths=[4, 2], row_lengths=[9, 3])
    full = torch.nn.functional.scaled_dot_product_attention(
        query, key.repeat_interleave(2, dim=1), value.repeat_interleave(2, dim=1),
        attn_mask=segment_attention(segment), scale=0.3).transpose(1, 2)
    assert out.shape == (2, 9, 4, 8)
    torch.testing.assert_close(out[0], full[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(out[1, :3], full[1, :3], rtol=0, atol=1e-6)  # real tokens of row 1
    assert (out[1, 3:] == 0).all()  # its padding gets zeros
    weights = torch.randn(out.shape, generator=gen)
    weights[1, 3:] = 0  # padding outputs are read by nobody
    grads = torch.autograd.grad((out * weights).sum(), (query, key, value))
    expected = torch.autograd.grad((full * weights).sum(), (query, key, value))
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_the_completion_mask_is_linear_in_the_prompt_not_the_square_of_the_row():
    segment, prefix, real = _layout()
    mask = completion_attention(segment, prefix, real)
    assert mask.shape == (2, 1, 5, 9)  # 5 = row 0's 3 + 2 completion tokens (the most of any row), not 9 x 9
    assert mask[0, 0, 3].int().tolist() == [1, 1, 1, 1, 0, 0, 0, 1, 0]  # completion 2's first token: prompt + self
    assert mask[1, 0, 0].int().tolist() == [1, 1, 1, 0, 0, 0, 0, 0, 0]
    assert not mask[1, 0, 1:].any()  # row 1 has one completion token; the rest of its queries see nothing


def test_a_switched_model_generates_and_scores_exactly_as_sdpa(tiny_model, tmp_path):
    ids = torch.tensor([[0, 0, 5, 6, 7], [4, 3, 2, 9, 8]])
    attention = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])  # left padding: the mask path, not is_causal
    before = tiny_model(input_ids=ids, attention_mask=attention).logits
    assert use_prefix_attention(tiny_model) and tiny_model.config._attn_implementation == PREFIX_ATTENTION
    after = tiny_model(input_ids=ids, attention_mask=attention).logits
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    tiny_model.save_pretrained(tmp_path)  # never saved with the model: a reload is plain sdpa again
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)  # the default implementation, not ours
    assert reloaded.config._attn_implementation == "sdpa"
    assert PREFIX_ATTENTION not in (tmp_path / "config.json").read_text()


def test_other_attention_implementations_are_left_alone(tiny_model):
    tiny_model.config._attn_implementation = "eager"
    assert not use_prefix_attention(tiny_model)
    assert tiny_model.config._attn_implementation == "eager"
