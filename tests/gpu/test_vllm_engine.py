"""Tests for spell/rl/engine/vllm.py on a CUDA GPU with vLLM installed (skipped elsewhere).

Run: .venv/bin/python -m pytest tests/gpu/test_vllm_engine.py -m "gpu and vllm" -q
The tiny policy is bf16 on the GPU next to vLLM (colocated, 30% of GPU memory), head dim 64 so every
vLLM attention backend accepts it.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.vllm]

vllm = pytest.importorskip("vllm")
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

from spell.builtin.tiny import build_tiny_model, build_tiny_tokenizer  # noqa: E402
from spell.rl.engine import HFEngine, encode_chat_prompt  # noqa: E402
from spell.rl.engine.vllm import VLLMEngine  # noqa: E402
from spell.types import SamplingParams  # noqa: E402

CORPUS = ["the river Alder flows 42 km north to Brenn", "what is 17 + 25? the answer is 42", "café naïve 3.14"] * 10
GREEDY = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=8)


def tiny_policy(tokenizer, seed):
    model = build_tiny_model(
        tokenizer, hidden_size=128, num_layers=2, num_heads=2, num_kv_heads=1, initializer_range=1.0, seed=seed
    )
    return model.to(device="cuda", dtype=torch.bfloat16).eval()


@pytest.fixture(scope="module")
def setup():
    tokenizer = build_tiny_tokenizer(CORPUS, vocab_size=320)
    model = tiny_policy(tokenizer, seed=0)
    engine = VLLMEngine(model, tokenizer, gpu_memory_utilization=0.3, max_model_len=512)
    texts = ["hi", "what is 17 + 25? the answer is", "the river Alder flows north", "café"]
    prompts = [encode_chat_prompt(tokenizer, t) for t in texts]
    return tokenizer, model, engine, prompts


def test_shapes_and_fields(setup):
    _, _, engine, prompts = setup
    out = engine.generate(prompts, SamplingParams(1.0, 0.95, 6, seed=0), n=3)
    assert [len(g) for g in out] == [3, 3, 3, 3]
    for prompt, group in zip(prompts, out):
        for c in group:
            assert c.prompt_token_ids == tuple(prompt)
            assert 1 <= len(c.token_ids) <= 6 and c.finish_reason in ("stop", "length")
            if c.finish_reason == "length":
                assert len(c.token_ids) == 6


def test_seed_reproducible(setup):
    _, _, engine, prompts = setup
    params = SamplingParams(1.0, 0.95, 8, seed=11)
    assert engine.generate(prompts, params, n=4) == engine.generate(prompts, params, n=4)


def test_greedy_first_token_agrees_with_hf(setup):
    tokenizer, model, engine, prompts = setup
    hf = HFEngine(model, tokenizer).generate(prompts, GREEDY)
    ours = engine.generate(prompts, GREEDY, n=2)
    assert all(g[0].token_ids == g[1].token_ids for g in ours)  # greedy: n identical samples
    agree = sum(h[0].token_ids[0] == v[0].token_ids[0] for h, v in zip(hf, ours))
    assert agree >= 3  # bf16 kernels differ; a sharp random model (init std 1.0) still agrees on most prompts


def test_sync_weights_switches_policy_and_back(setup):
    tokenizer, model, engine, prompts = setup
    before = engine.generate(prompts, GREEDY)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    other = tiny_policy(tokenizer, seed=1)
    try:
        model.load_state_dict(other.state_dict())
        engine.sync_weights(model)
        changed = engine.generate(prompts, GREEDY)
        assert changed != before
    finally:
        model.load_state_dict(original)
        engine.sync_weights(model)
    assert engine.generate(prompts, GREEDY) == before  # same weights, same vLLM kernels: identical output
