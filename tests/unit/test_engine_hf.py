"""Tests for spell/rl/engine/hf.py (and build_engine): the shared-prefix KV decode loop against transformers.

A tiny random Qwen2 with a wide init (std 0.5) makes greedy output vary token to token, so any error in
left padding, position ids or cache expansion shows up as a different token sequence.
Run: .venv/bin/python -m pytest tests/unit/test_engine_hf.py -q
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from spell.builtin.tiny import build_tiny_model, build_tiny_tokenizer
from spell.config import EngineConfig
from spell.rl.engine import Engine, HFEngine, build_engine, encode_chat_prompt
from spell.rl.engine.hf import DynamicLayer, reserve_cache, resolve_eos_ids, sample_next_token
from spell.types import EngineKind, SamplingParams

CORPUS = ["the river Alder flows 42 km north to Brenn", "what is 17 + 25? the answer is 42", "café naïve 3.14"] * 10
GREEDY = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=12)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer(CORPUS, vocab_size=320)


@pytest.fixture(scope="module")
def model(tokenizer):
    return build_tiny_model(tokenizer, hidden_size=64, num_layers=2, initializer_range=0.5, seed=0).eval()


@pytest.fixture(scope="module")
def prompts(tokenizer):
    # different lengths, so the batch is left-padded
    texts = ["hi", "what is 17 + 25? the answer is", "the river Alder flows north", "café"]
    return [encode_chat_prompt(tokenizer, t) for t in texts]


def reference_greedy(model, tokenizer, prompts, max_new_tokens):
    """transformers' own greedy generate on the left-padded batch, each row cut after its first eos."""
    batch = tokenizer.pad({"input_ids": prompts}, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**batch, do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=0)
    eos = resolve_eos_ids(tokenizer, model)
    rows = []
    for row in out[:, batch["input_ids"].shape[1] :].tolist():
        stop = next((i for i, t in enumerate(row) if t in eos), None)
        rows.append(tuple(row if stop is None else row[: stop + 1]))
    return rows


def test_eos_ids_include_im_end_and_generation_config(tokenizer, model):
    # tokenizer eos <|im_end|>=2; generation_config eos [0, 2] adds <|endoftext|>=0
    assert resolve_eos_ids(tokenizer, model) == frozenset({0, 2})
    assert resolve_eos_ids(tokenizer) == frozenset({2})


@pytest.mark.parametrize("n", [1, 3])  # n=3: the expanded cache must give 3 copies of the greedy answer
def test_greedy_matches_transformers_generate(model, tokenizer, prompts, n):
    expected = reference_greedy(model, tokenizer, prompts, GREEDY.max_new_tokens)
    assert len(set(expected)) == len(prompts)  # the random model really answers each prompt differently
    out = HFEngine(model, tokenizer).generate(prompts, GREEDY, n=n)
    assert [[c.token_ids for c in group] for group in out] == [[e] * n for e in expected]


def test_unpadded_single_prompts_match_padded_batch(model, tokenizer, prompts):
    engine = HFEngine(model, tokenizer)
    batched = engine.generate(prompts, GREEDY)
    singles = [engine.generate([p], GREEDY)[0] for p in prompts]
    assert [g[0].token_ids for g in batched] == [g[0].token_ids for g in singles]


@pytest.mark.parametrize(
    "engine_kwargs",
    [
        {"share_prompt_kv": False},  # prompt repeated n times in the batch: same tokens, more prefill work
        {"max_batch_prompts": 1},  # one prompt per forward batch
        {"max_batch_prompts": 3},  # 4 prompts -> batches of 3 and 1
    ],
)
def test_layout_does_not_change_greedy_output(model, tokenizer, prompts, engine_kwargs):
    expected = HFEngine(model, tokenizer).generate(prompts, GREEDY, n=2)
    assert HFEngine(model, tokenizer, **engine_kwargs).generate(prompts, GREEDY, n=2) == expected


def test_tiny_top_p_is_greedy(model, tokenizer, prompts):
    # top_p -> 0 keeps only the most likely token, whatever the temperature
    sampled = HFEngine(model, tokenizer).generate(prompts, SamplingParams(1.0, 1e-9, 12, seed=5), n=2)
    greedy = HFEngine(model, tokenizer).generate(prompts, GREEDY)
    assert [[c.token_ids for c in g] for g in sampled] == [[g[0].token_ids] * 2 for g in greedy]


def test_stops_per_sequence_on_eos(model, tokenizer, prompts):
    engine = HFEngine(model, tokenizer)
    engine.eos_token_ids = frozenset()
    free = [g[0].token_ids for g in engine.generate(prompts, GREEDY)]
    stop_token = free[0][3]  # make prompt 0's 4th greedy token the eos
    engine.eos_token_ids = frozenset({stop_token})
    out = engine.generate(prompts, GREEDY)
    for group, row in zip(out, free):
        (completion,) = group
        if stop_token in row:  # cut right after the first occurrence, eos kept in token_ids
            cut = row.index(stop_token) + 1
            assert (completion.token_ids, completion.finish_reason) == (row[:cut], "stop")
        else:
            assert (completion.token_ids, completion.finish_reason) == (row, "length")
    assert len(out[0][0].token_ids) <= 4  # prompt 0 stopped at step 4 at the latest


def test_max_new_tokens_and_completion_fields(model, tokenizer, prompts):
    engine = HFEngine(model, tokenizer)
    engine.eos_token_ids = frozenset()
    out = engine.generate(prompts, SamplingParams(0.7, 0.95, max_new_tokens=5, seed=0), n=2)
    assert [len(g) for g in out] == [2, 2, 2, 2]
    for prompt, group in zip(prompts, out):
        for c in group:
            assert len(c.token_ids) == 5 and c.finish_reason == "length"
            assert c.prompt_token_ids == tuple(prompt)
            assert c.text == tokenizer.decode(list(c.token_ids), skip_special_tokens=True)
    empty = engine.generate(prompts[:1], SamplingParams(max_new_tokens=0), n=2)
    assert [[c.token_ids for c in g] for g in empty] == [[(), ()]]


def test_completion_cut_keeps_eos_id_but_not_its_text(model, tokenizer):
    engine = HFEngine(model, tokenizer)  # eos ids {0, 2}
    rows = [[40, 41, 2, 0, 0], [40, 41, 42, 43, 44]]  # row 0 stops on <|im_end|>, row 1 runs to the limit
    (group,) = engine._to_completions([[7, 8]], rows, n=2)
    assert group[0].token_ids == (40, 41, 2) and group[0].finish_reason == "stop"
    assert group[0].text == tokenizer.decode([40, 41]) and "<|im_end|>" not in group[0].text
    assert group[1].token_ids == (40, 41, 42, 43, 44) and group[1].finish_reason == "length"
    assert group[0].prompt_token_ids == group[1].prompt_token_ids == (7, 8)


def test_seed_reproducible_and_samples_differ(model, tokenizer, prompts):
    engine = HFEngine(model, tokenizer)
    params = SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=10, seed=7)
    first = engine.generate(prompts, params, n=4)
    assert engine.generate(prompts, params, n=4) == first
    other = engine.generate(prompts, SamplingParams(1.0, 0.95, 10, seed=8), n=4)
    assert other != first
    for group in first:  # 4 samples of 10 tokens from a 320-token vocabulary: not all identical
        assert len({c.token_ids for c in group}) > 1


def test_train_mode_restored_and_no_grad(model, tokenizer, prompts):
    model.train()
    try:
        out = HFEngine(model, tokenizer).generate(prompts[:1], GREEDY)
        assert model.training
    finally:
        model.eval()
    assert out == HFEngine(model, tokenizer).generate(prompts[:1], GREEDY)  # dropout-free eval decode
    assert not model.training


def test_bad_arguments_raise(model, tokenizer, prompts):
    engine = HFEngine(model, tokenizer)
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        engine.generate([prompts[0], []], GREEDY)
    with pytest.raises(ValueError, match="n must be >= 1"):
        engine.generate(prompts, GREEDY, n=0)
    with pytest.raises(ValueError, match="max_batch_prompts"):
        HFEngine(model, tokenizer, max_batch_prompts=0)


@pytest.mark.parametrize(
    "top_p, allowed",
    [
        (1.0, {0, 1, 2}),  # no filter
        (0.6, {0, 1}),  # mass before: 0, 0.5, 0.8 -> token 2 (0.8 >= 0.6) removed
        (0.5, {0}),  # mass before token 1 is 0.5 >= 0.5 -> only token 0
    ],
)
def test_top_p_filter(top_p, allowed):
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]])).repeat(400, 1)  # probs 0.5 / 0.3 / 0.2
    drawn = sample_next_token(logits, 1.0, top_p, torch.Generator().manual_seed(0))
    assert set(drawn.tolist()) == allowed  # 400 draws hit every allowed token (P(miss 0.2) = 0.8^400)


@pytest.mark.skipif(DynamicLayer is None, reason="transformers without per-layer caches")
def test_reserved_cache_layer_equals_concatenation():
    from transformers import DynamicCache

    keys = [torch.randn(2, 1, t, 4) for t in (3, 1, 1, 2)]  # prefill 3 positions, then 1, 1, 2
    plain, reserved = DynamicCache(), DynamicCache()
    plain.update(keys[0], -keys[0], 0)
    reserved.update(keys[0], -keys[0], 0)
    reserve_cache(reserved, 2)  # room for 3 + 2 = 5 positions; the last update (to 7) makes it grow
    for k in keys[1:]:
        expected = plain.update(k, -k, 0)
        got = reserved.update(k, -k, 0)
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    assert type(reserved.layers[0]).__name__ == "ReservedLayer"
    assert reserved.get_seq_length() == 7  # 3 + 1 + 1 + 2


def test_zero_temperature_is_argmax():
    logits = torch.tensor([[0.1, 3.0, 2.9], [5.0, -1.0, 0.0]])
    assert sample_next_token(logits, 0.0, 0.5).tolist() == [1, 0]


def test_build_engine_hf_and_protocol(model, tokenizer):
    engine = build_engine(EngineConfig(kind=EngineKind.HF, max_batch_prompts=3), model, tokenizer)
    assert isinstance(engine, HFEngine) and engine.max_batch_prompts == 3
    assert isinstance(engine, Engine)
    engine.sync_weights(model)
    assert engine.model is model


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM installed")
def test_build_engine_vllm_without_vllm_says_how_to_install(model, tokenizer):
    with pytest.raises(ImportError, match=r"pip install 'spell-rl\[vllm\]'"):
        build_engine(EngineConfig(kind=EngineKind.VLLM), model, tokenizer)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_greedy_on_cuda_matches_cpu(model, tokenizer, prompts):
    cpu = HFEngine(model, tokenizer).generate(prompts, GREEDY, n=2)
    gpu_model = build_tiny_model(tokenizer, hidden_size=64, num_layers=2, initializer_range=0.5, seed=0).cuda()
    assert HFEngine(gpu_model, tokenizer).generate(prompts, GREEDY, n=2) == cpu
    seeded = SamplingParams(1.0, 0.9, 8, seed=3)
    engine = HFEngine(gpu_model, tokenizer)
    assert engine.generate(prompts, seeded, n=2) == engine.generate(prompts, seeded, n=2)
