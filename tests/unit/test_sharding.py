"""Tests for spell/rl/sharding.py in one process: layer discovery, the rollout replica and its weight sync.

FSDP2 itself (2 gloo ranks) is exercised in tests/integration/test_distributed.py.
"""

from __future__ import annotations

import pytest
import torch

from spell.rl.sharding import copy_full_weights, decoder_layers, gradient_scale, is_sharded, rollout_replica


def test_decoder_layers_are_found_by_class_name_also_under_peft(tiny_model):
    layers = decoder_layers(tiny_model)
    assert [type(layer).__name__ for layer in layers] == ["Qwen2DecoderLayer"] * 2
    from peft import LoraConfig, get_peft_model

    wrapped = get_peft_model(tiny_model, LoraConfig(r=2, target_modules=["q_proj"]))
    assert len(decoder_layers(wrapped)) == 2
    with pytest.raises(ValueError, match="no decoder layers found"):
        decoder_layers(torch.nn.Linear(2, 2))


def test_rollout_replica_is_a_frozen_cast_copy_that_keeps_ties_and_buffers(tiny_model):
    replica = rollout_replica(tiny_model, torch.bfloat16)
    assert replica.lm_head.weight is replica.model.embed_tokens.weight  # tied, like the policy
    assert all(p.dtype == torch.bfloat16 and not p.requires_grad for p in replica.parameters())
    assert all(p.dtype == torch.float32 and p.requires_grad for p in tiny_model.parameters())  # untouched
    assert replica.model.rotary_emb.inv_freq.dtype == torch.float32  # RoPE frequencies keep their precision
    for (name, source), (_, copied) in zip(tiny_model.named_parameters(), replica.named_parameters()):
        assert torch.equal(source.detach().to(torch.bfloat16), copied), name
        assert source.data_ptr() != copied.data_ptr(), name


def test_copy_full_weights_refreshes_the_replica(tiny_model):
    replica = rollout_replica(tiny_model, torch.float32)
    with torch.no_grad():
        for param in tiny_model.parameters():
            param.add_(1.0)
    assert not torch.equal(replica.lm_head.weight, tiny_model.lm_head.weight)
    copy_full_weights(tiny_model, replica)
    for (name, source), (_, copied) in zip(tiny_model.named_parameters(), replica.named_parameters()):
        assert torch.equal(source, copied), name


def test_an_unsharded_model_needs_no_gradient_rescaling(tiny_model):
    assert not is_sharded(tiny_model)
    assert gradient_scale(tiny_model, world_size=4) == 1.0  # one process, or no FSDP: the loss is used as is
