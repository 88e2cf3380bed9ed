"""Tests for LoRA via PEFT in spell/rl/policy.py (apply_lora, load_policy with model.lora_rank)."""

from __future__ import annotations

import torch

from spell.config import ModelConfig
from spell.rl.engine import HFEngine
from spell.rl.policy import load_policy, sequence_logprobs
from spell.types import SamplingParams


def _lora_policy(tiny_policy_dir, rank=8, **kwargs):
    cfg = ModelConfig(path=str(tiny_policy_dir), lora_rank=rank, **kwargs)
    return load_policy(cfg, torch.device("cpu"), seed=0)


def test_trainable_parameter_count_matches_peft_and_the_hand_count(tiny_policy_dir):
    model, _ = _lora_policy(tiny_policy_dir)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # tiny Qwen2: hidden 32, 4 heads of 8 -> q/o 32x32, 2 kv heads -> k/v 32x16, MLP 32x128; r = 8 adds r*(in+out):
    # q 8*64=512, k 8*48=384, v 384, o 512, gate 8*160=1280, up 1280, down 1280 -> 5632 per layer, x2 layers
    assert trainable == 11264
    assert trainable == model.get_nb_trainable_parameters()[0]
    assert all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)


def test_target_modules_restrict_the_adapters(tiny_policy_dir):
    model, _ = _lora_policy(tiny_policy_dir, rank=4, target_modules=["q_proj", "v_proj"])
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == 2 * (4 * (32 + 32) + 4 * (32 + 16))  # q 4*64 = 256, v 4*48 = 192 per layer -> 896


def test_one_step_changes_only_adapter_weights(tiny_policy_dir):
    model, _ = _lora_policy(tiny_policy_dir)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.tensor([[3, 9, 27, 81, 40, 7]])
    mask = torch.ones_like(ids)
    completion = torch.tensor([[False, False, False, True, True, True]])
    logprobs, _ = sequence_logprobs(model, ids, mask, completion, chunk_tokens=2)
    (-logprobs.sum()).backward()
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    assert all(".lora_" in n for n in changed)  # the frozen base is untouched
    # every targeted module of both layers: lora_B (it starts at 0, A's gradient is 0 then, only decay moves A)
    assert len({n for n in changed if ".lora_B." in n}) == 2 * 7


def test_adapter_starts_at_the_base_model_and_the_engine_samples_with_it(tiny_policy_dir):
    base, tokenizer = load_policy(ModelConfig(path=str(tiny_policy_dir)), torch.device("cpu"))
    model, _ = _lora_policy(tiny_policy_dir)
    prompt = [[5, 17, 33, 2, 8]]
    greedy = SamplingParams(0.0, 1.0, 6)
    same = HFEngine(base, tokenizer).generate(prompt, greedy)[0][0].token_ids
    assert HFEngine(model, tokenizer).generate(prompt, greedy)[0][0].token_ids == same  # B = 0: no change yet
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".lora_B." in name:
                param.normal_(0, 2.0)  # a strong adapter
    assert HFEngine(model, tokenizer).generate(prompt, greedy)[0][0].token_ids != same
