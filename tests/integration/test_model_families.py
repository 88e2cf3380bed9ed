"""The paper's model families on CPU, as tiny random configs of each architecture: Qwen2.5 (``qwen2``, also as a
base model without a chat template), Qwen3 dense (``qwen3``: q/k norms), Qwen3-30B-A3B (``qwen3_moe``: fused
experts and a router) and Llama-3.1 (``llama`` with its ``llama3`` RoPE scaling).

Each one: ``spell plan``'s architecture counts exactly the parameters transformers builds; a real trainer step
(scripted rollouts, real log-probs, loss, AdamW) changes every parameter; a LoRA step trains only the adapters and
its export (merged) loads back with the same outputs as the trained PEFT model. The vLLM engine syncs ``qwen3`` and
``llama3`` in tests/integration/test_vllm_cpu.py; FSDP2 on 2 ranks runs for ``qwen2`` (test_distributed.py).
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from spell.builtin.tiny import build_tiny_tokenizer, save_policy
from spell.plan.arch import load_arch
from spell.rl.checkpoint import latest_checkpoint
from spell.rl.export import export_checkpoint
from tests.conftest import TINY_TEXTS
from tests.integration.test_trainer import corpus, make_cfg, make_trainer  # noqa: F401 (corpus: a fixture)

COMMON = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=True, eos_token_id=2,
              pad_token_id=0, bos_token_id=None)
FAMILIES = {
    "qwen2": ("qwen2", {}),
    "qwen2_base": ("qwen2", {}),  # a base model: its tokenizer has no chat template
    "qwen3": ("qwen3", {"head_dim": 16}),
    "qwen3_moe": ("qwen3_moe", {"head_dim": 16, "num_experts": 4, "num_experts_per_tok": 2,
                                "moe_intermediate_size": 32, "decoder_sparse_step": 1}),
    "llama3": ("llama", {"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                          "high_freq_factor": 4.0, "original_max_position_embeddings": 1024},
                         "tie_word_embeddings": False}),
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory):
    name = request.param
    model_type, extra = FAMILIES[name]
    tokenizer = build_tiny_tokenizer(TINY_TEXTS, vocab_size=400)
    if name.endswith("_base"):
        tokenizer.chat_template = None
    config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), **{**COMMON, **extra})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    folder = save_policy(model, tokenizer, tmp_path_factory.mktemp(name) / "policy")
    return name, folder, sum(p.numel() for p in model.parameters())


def test_the_planner_counts_the_parameters_transformers_builds(family):
    name, folder, count = family
    assert load_arch(folder).params == count, name
    if name == "qwen3_moe":
        assert load_arch(folder).experts == 4 and load_arch(folder).active_intermediate == 2 * 32


def test_a_trainer_step_changes_every_parameter(family, corpus, tmp_path):  # noqa: F811
    name, folder, _ = family
    trainer = make_trainer(make_cfg(corpus, folder, tmp_path / "run", "train.max_steps=1"))
    if name.endswith("_base"):
        assert not trainer.tokenizer.chat_template  # prompts are plain text (encode_chat_prompt's fallback)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    metrics = trainer.train()
    assert metrics["train/skipped"] == 0.0
    unchanged = [n for n, p in trainer.model.named_parameters() if torch.equal(before[n], p)]
    if name == "qwen3_moe":  # experts no token was routed to get no gradient; the router and attention all do
        assert not [n for n in unchanged if "experts" not in n], unchanged
    else:
        assert not unchanged, unchanged


def test_a_lora_step_trains_the_adapters_and_exports_merged(family, corpus, tmp_path):  # noqa: F811
    name, folder, _ = family
    cfg = make_cfg(corpus, folder, tmp_path / "run", "train.max_steps=1", "model.lora_rank=4", "model.lora_alpha=8",
                   "model.target_modules=[q_proj,v_proj]", "grpo.lr=1e-2")
    trainer = make_trainer(cfg)
    base = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" not in n}
    trainer.train()
    for n, p in trainer.model.named_parameters():
        if "lora_" not in n:
            assert torch.equal(base[n], p), n  # the base model is frozen
    out = export_checkpoint(latest_checkpoint(tmp_path / "run"), tmp_path / "export")
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.tensor([[5, 17, 23, 42, 7, 99]])
    trainer.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, trainer.model(input_ids=ids).logits, rtol=1e-4, atol=1e-4)
    assert json.loads((out / "config.json").read_text())["model_type"] == FAMILIES[name][0]
