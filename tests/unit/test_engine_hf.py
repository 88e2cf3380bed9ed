"""Tests for spell/rl/engine/hf.py (and build_engine): the shared-prompt KV decode loop against transformers.

A tiny random Qwen2 with a wide init (std 0.5) makes greedy output vary token to token, so any error in
left padding, position ids or the prompt KV layout shows up as a different token sequence.
``reference_generate`` below is the engine as it was before issue 13 (prompt prefilled once, its KV copied n
times, a plain decode loop): the shared-prompt engine must give the same tokens for the same seed.
Run: .venv/bin/python -m pytest tests/unit/test_engine_hf.py -q
"""

from __future__ import annotations

import dataclasses
import importlib.util

import pytest
import torch
from transformers import DynamicCache, Qwen2Config, Qwen2ForCausalLM

from spell.builtin.tiny import build_tiny_model, build_tiny_tokenizer
from spell.config import EngineConfig
from spell.rl.engine import Engine, HFEngine, build_engine, encode_chat_prompt
from spell.rl.engine.hf import cache_kwarg, resolve_eos_ids, sample_next_token
from spell.rl.engine.kv_cache import (
    FIRST_CAPACITY,
    DynamicLayer,
    SharedPrefixCache,
    SharedPrefixLayer,
    reserve_cache,
    shared_prefix_attention,
    supports_shared_prefix,
)
from spell.types import EngineKind, SamplingParams

CORPUS = ["the river Alder flows 42 km north to Brenn", "what is 17 + 25? the answer is 42", "café naïve 3.14"] * 10
GREEDY = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=12)
needs_layer_caches = pytest.mark.skipif(DynamicLayer is None, reason="transformers without per-layer caches")


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer(CORPUS, vocab_size=320)


@pytest.fixture(scope="module")
def model(tokenizer):
    return build_tiny_model(tokenizer, hidden_size=64, num_layers=2, initializer_range=0.5, seed=0).eval()


@pytest.fixture(scope="module")
def prompts(tokenizer):
    # different lengths (9 to 84 tokens), so the batch is left-padded
    texts = ["hi", "what is 17 + 25? the answer is", "the river Alder flows north", "café", " ".join(CORPUS[:6])]
    return [encode_chat_prompt(tokenizer, t) for t in texts]


def reference_sample(logits, temperature, top_p, generator):
    """The sampler of the engine before issue 13, kept verbatim: greedy, temperature, then top-p."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, sorted_ids = probs.sort(dim=-1, descending=True)
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
        sorted_probs = sorted_probs.masked_fill(mass_before >= top_p, 0.0)
        choice = torch.multinomial(sorted_probs, 1, generator=generator)
        return sorted_ids.gather(-1, choice).squeeze(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.inference_mode()
def reference_generate(model, prompts, sampling, n, eos_ids, pad_id=0):
    """The engine before issue 13, as a plain loop: prefill the left-padded prompts once, copy each prompt's KV
    n times (``batch_repeat_interleave``), then decode all rows with a growing mask; eos rows get the pad token.

    Returns the token-id tuples [prompt][sample], each cut after its first eos (as ``Completion.token_ids``).
    """
    width = max(len(p) for p in prompts)
    input_ids = torch.tensor([[pad_id] * (width - len(p)) + list(p) for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    cache, kwarg = DynamicCache(), cache_kwarg(model)
    out = model(
        input_ids=input_ids,
        attention_mask=mask,
        position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
        use_cache=True,
        logits_to_keep=1,
        **{kwarg: cache},
    )
    cache.batch_repeat_interleave(n)
    logits, mask = out.logits[:, -1].repeat_interleave(n, dim=0), mask.repeat_interleave(n, dim=0)
    position = mask.sum(dim=-1, keepdim=True)
    generator = torch.Generator().manual_seed(sampling.seed) if sampling.seed is not None else None
    finished = torch.zeros(len(logits), dtype=torch.bool)
    steps = []
    for step in range(sampling.max_new_tokens):
        token = reference_sample(logits, sampling.temperature, sampling.top_p, generator).masked_fill(finished, pad_id)
        steps.append(token)
        finished |= torch.isin(token, torch.tensor(sorted(eos_ids)))
        if step + 1 == sampling.max_new_tokens or bool(finished.all()):
            break
        mask = torch.cat([mask, mask.new_ones(len(mask), 1)], dim=-1)
        out = model(
            input_ids=token[:, None], attention_mask=mask, position_ids=position, use_cache=True, **{kwarg: cache}
        )
        logits, position = out.logits[:, -1], position + 1
    rows = []
    for row in torch.stack(steps, dim=1).tolist():
        stop = next((i for i, t in enumerate(row) if t in eos_ids), None)
        rows.append(tuple(row if stop is None else row[: stop + 1]))
    return [rows[i * n : (i + 1) * n] for i in range(len(prompts))]


@pytest.fixture
def shared_caches(monkeypatch):
    """Every SharedPrefixCache the engine builds during the test."""
    import spell.rl.engine.hf as hf

    made = []

    class Recorded(SharedPrefixCache):
        def __init__(self, *args):
            super().__init__(*args)
            made.append(self)

    monkeypatch.setattr(hf, "SharedPrefixCache", Recorded)
    return made


def without_logprobs(groups):
    return [[dataclasses.replace(c, logprobs=()) for c in group] for group in groups]


def token_ids(groups):
    return [[c.token_ids for c in group] for group in groups]


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
        {"prompt_kv": "copied"},  # prompt KV copied per sample (the engine before issue 13)
        {"prompt_kv": "repeated"},  # prompt repeated n times in the batch: same tokens, more prefill work
        {"max_batch_prompts": 1},  # one prompt per forward batch
        {"max_batch_prompts": 3},  # 5 prompts -> batches of 3 and 2
    ],
)
def test_layout_does_not_change_greedy_output(model, tokenizer, prompts, engine_kwargs):
    expected = HFEngine(model, tokenizer).generate(prompts, GREEDY, n=2)
    got = HFEngine(model, tokenizer, **engine_kwargs).generate(prompts, GREEDY, n=2)
    assert without_logprobs(got) == without_logprobs(expected)
    # the log-probs come from other attention arithmetic in each layout: equal to fp32 rounding, not bit for bit
    for got_group, want_group in zip(got, expected):
        for c, want in zip(got_group, want_group):
            torch.testing.assert_close(torch.tensor(c.logprobs), torch.tensor(want.logprobs), rtol=0, atol=1e-4)


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
    assert [len(g) for g in out] == [2] * len(prompts)
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
    logprobs = [[-0.1, -0.2, -0.3, -0.4, -0.5], [-1.0, -1.1, -1.2, -1.3, -1.4]]
    (group,) = engine._to_completions([[7, 8]], rows, logprobs, n=2)
    assert group[0].token_ids == (40, 41, 2) and group[0].finish_reason == "stop"
    assert group[0].logprobs == (-0.1, -0.2, -0.3)  # one per kept token, the padding after eos dropped
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


# ---- the shared-prompt engine gives the same samples as the engine before issue 13 ----------------------
CASES = {
    "greedy": SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=12),
    "temperature": SamplingParams(temperature=1.3, top_p=1.0, max_new_tokens=16, seed=1),
    "top_p": SamplingParams(temperature=0.7, top_p=0.9, max_new_tokens=16, seed=2),
    "grows": SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=FIRST_CAPACITY + 20, seed=3),
}


@pytest.mark.parametrize("n", [1, 4])
@pytest.mark.parametrize("case", list(CASES))
def test_same_tokens_as_reference(model, tokenizer, prompts, case, n):
    sampling = CASES[case]  # "grows": the per-row buffers of new tokens outgrow their first capacity once
    engine = HFEngine(model, tokenizer)
    expected = reference_generate(model, prompts, sampling, n, engine.eos_token_ids, engine.pad_token_id)
    assert token_ids(engine.generate(prompts, sampling, n=n)) == expected
    if n > 1 and sampling.temperature > 0:
        assert any(len(set(group)) > 1 for group in expected)  # the n samples really differ


def test_same_tokens_as_reference_with_stop_tokens(model, tokenizer, prompts):
    sampling = SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=24, seed=4)
    engine = HFEngine(model, tokenizer)
    engine.eos_token_ids = frozenset()
    free = token_ids(engine.generate(prompts, sampling, n=4))
    stops = frozenset(group[0][5] for group in free)  # tokens these rows draw: several rows stop, others do not
    engine.eos_token_ids = stops
    out = engine.generate(prompts, sampling, n=4)
    assert token_ids(out) == reference_generate(model, prompts, sampling, 4, stops, engine.pad_token_id)
    assert {c.finish_reason for group in out for c in group} == {"stop", "length"}


def test_prompt_kv_is_stored_once_per_prompt(model, tokenizer, prompts, shared_caches):
    HFEngine(model, tokenizer).generate(prompts, GREEDY, n=4)
    (cache,) = shared_caches
    width = max(len(p) for p in prompts)
    for layer in cache.layers:
        assert layer.prefix_keys.shape[:3] == (len(prompts), 2, width)  # 5 prompts x 2 KV heads, not 20 rows
        assert layer._key_buffer.shape[:3] == (4 * len(prompts), 2, GREEDY.max_new_tokens - 1)  # new tokens only
    assert model.config._attn_implementation == "sdpa"  # the decode's attention switch is undone


def test_shared_layer_buffer_grows_to_what_rows_need():
    prefix = torch.randn(2, 1, 5, 4)  # 2 prompts, 1 KV head, 5 prompt positions
    layer = SharedPrefixLayer(prefix, -prefix, max_new_positions=100)
    steps = [torch.randn(6, 1, 1, 4) for _ in range(FIRST_CAPACITY + 6)]  # 3 rows per prompt
    for index, k in enumerate(steps):
        keys, values = layer.update(k, -k)
        expected = FIRST_CAPACITY if index < FIRST_CAPACITY else 100  # doubling, capped at max_new_positions
        assert layer._key_buffer.shape[-2] == expected
    assert torch.equal(keys, torch.cat(steps, dim=-2)) and torch.equal(values, -keys)
    assert layer.prefix_keys is prefix and layer.get_seq_length() == 5 + len(steps)


def test_shared_prefix_attention_equals_attention_over_copied_kv():
    torch.manual_seed(0)
    prompts, n, kv_heads, group, dim, length, new = 2, 3, 2, 2, 8, 7, 4
    prefix_k, prefix_v = torch.randn(prompts, kv_heads, length, dim), torch.randn(prompts, kv_heads, length, dim)
    new_k, new_v = torch.randn(prompts * n, kv_heads, new, dim), torch.randn(prompts * n, kv_heads, new, dim)
    query = torch.randn(prompts * n, kv_heads * group, 1, dim)
    prompt_mask = torch.ones(prompts, length, dtype=torch.long)
    prompt_mask[1, :3] = 0  # prompt 1 is left-padded by 3

    class Prefill:  # the two attributes SharedPrefixCache reads from a DynamicCache
        layers = [type("Layer", (), {"keys": prefix_k, "values": prefix_v})()]

    cache = SharedPrefixCache(Prefill(), prompt_mask, n, max_new_tokens=new + 1)
    module = type("Attention", (), {"layer_idx": 0})()
    out, _ = shared_prefix_attention(module, query, new_k, new_v, None, scaling=0.3, spell_shared_prefix_cache=cache)
    # reference: every row gets its own copy of its prompt's KV, GQA heads repeated, one masked softmax
    keys = torch.cat([prefix_k.repeat_interleave(n, 0), new_k], dim=2).repeat_interleave(group, 1)
    values = torch.cat([prefix_v.repeat_interleave(n, 0), new_v], dim=2).repeat_interleave(group, 1)
    pad = torch.cat([prompt_mask.repeat_interleave(n, 0) == 0, torch.zeros(prompts * n, new, dtype=torch.bool)], 1)
    scores = (query @ keys.transpose(-1, -2) * 0.3).masked_fill(pad[:, None, None, :], float("-inf"))
    expected = (scores.softmax(dim=-1) @ values).transpose(1, 2)  # [rows, 1, heads, dim]
    torch.testing.assert_close(out, expected)
    assert cache.attended == 1


def test_shared_prefix_attention_refuses_other_calls():
    module = type("Attention", (), {"layer_idx": 0})()
    q = torch.randn(2, 2, 1, 4)
    with pytest.raises(RuntimeError, match="decode steps only"):
        shared_prefix_attention(module, q, q, q, None)  # no cache: a forward outside the engine's decode


def test_check_attended_catches_a_model_that_ignores_the_attention_switch():
    prefix = torch.randn(1, 1, 3, 4)

    class Prefill:
        layers = [type("Layer", (), {"keys": prefix, "values": prefix})()] * 2

    cache = SharedPrefixCache(Prefill(), torch.ones(1, 3, dtype=torch.long), 2, max_new_tokens=4)
    cache.attended = 1  # one of two layers went through shared_prefix_attention
    with pytest.raises(RuntimeError, match="prompt_kv='copied'"):
        cache.check_attended()


def test_sliding_window_model_falls_back_to_copied_prompt_kv(tokenizer, prompts):
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        use_sliding_window=True,
        sliding_window=8,
        max_window_layers=0,
        initializer_range=0.5,
    )
    torch.manual_seed(0)
    sliding = Qwen2ForCausalLM(config).eval()
    assert not supports_shared_prefix(sliding)
    sampling = SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=10, seed=5)
    engine = HFEngine(sliding, tokenizer)
    expected = reference_generate(sliding, prompts, sampling, 3, engine.eos_token_ids, engine.pad_token_id)
    assert token_ids(engine.generate(prompts, sampling, n=3)) == expected


def test_model_switched_to_the_update_attention_samples_the_same(model, tokenizer, prompts):
    from spell.rl.prefix_attention import PREFIX_ATTENTION, use_prefix_attention

    switched = build_tiny_model(tokenizer, hidden_size=64, num_layers=2, initializer_range=0.5, seed=0).eval()
    assert use_prefix_attention(switched)  # what grpo.shared_prefix does to the policy before its first update
    sampling = CASES["top_p"]
    engine = HFEngine(switched, tokenizer)
    expected = reference_generate(model, prompts, sampling, 3, engine.eos_token_ids, engine.pad_token_id)
    assert token_ids(engine.generate(prompts, sampling, n=3)) == expected
    assert switched.config._attn_implementation == PREFIX_ATTENTION  # restored after the decode


def test_attention_switch_undone_after_an_error(model, tokenizer, prompts, monkeypatch):
    import spell.rl.engine.hf as hf

    calls = []

    def failing_sampler(*args):
        calls.append(1)
        if len(calls) == 3:  # inside the decode, after two shared-prefix steps
            raise KeyboardInterrupt
        return sample_next_token(*args)

    monkeypatch.setattr(hf, "sample_next_token", failing_sampler)
    with pytest.raises(KeyboardInterrupt):
        HFEngine(model, tokenizer).generate(prompts, GREEDY, n=2)
    assert model.config._attn_implementation == "sdpa"


def test_compute_dtype(model, tokenizer, prompts, shared_caches):
    cpu = torch.device("cpu")
    assert HFEngine(model, tokenizer).autocast_dtype(cpu) is None  # "auto": fp32 on CPU
    engine = HFEngine(model, tokenizer, compute_dtype=torch.bfloat16)  # bf16 autocast (the GPU default) on CPU
    assert engine.autocast_dtype(cpu) is torch.bfloat16
    out = engine.generate(prompts, SamplingParams(1.0, 0.9, 8, seed=3), n=2)
    assert all(len(c.token_ids) > 0 for group in out for c in group)
    layer = shared_caches[0].layers[0]  # RoPE makes fp32 keys under autocast; the cache stores them in bf16
    assert layer.prefix_keys.dtype == layer._key_buffer.dtype == layer.prefix_values.dtype == torch.bfloat16
    assert next(model.parameters()).dtype == torch.float32
    with pytest.raises(ValueError, match="prompt_kv"):
        HFEngine(model, tokenizer, prompt_kv="paged")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_greedy_on_cuda_matches_cpu(model, tokenizer, prompts):
    cpu = HFEngine(model, tokenizer).generate(prompts, GREEDY, n=2)
    gpu_model = build_tiny_model(tokenizer, hidden_size=64, num_layers=2, initializer_range=0.5, seed=0).cuda()
    fp32 = HFEngine(gpu_model, tokenizer, compute_dtype=None)  # the parameters' dtype, as on CPU
    assert fp32.generate(prompts, GREEDY, n=2) == cpu
    seeded = SamplingParams(1.0, 0.9, 8, seed=3)
    assert fp32.generate(prompts, seeded, n=2) == fp32.generate(prompts, seeded, n=2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or not torch.cuda.is_bf16_supported(), reason="needs bf16 CUDA")
def test_auto_compute_dtype_is_bf16_on_cuda(tokenizer, prompts, shared_caches):
    gpu_model = build_tiny_model(tokenizer, hidden_size=64, num_layers=2, initializer_range=0.5, seed=0).cuda()
    engine = HFEngine(gpu_model, tokenizer)  # fp32 parameters (model.dtype=auto) -> bf16 autocast
    assert engine.autocast_dtype(torch.device("cuda")) is torch.bfloat16
    seeded = SamplingParams(1.0, 0.9, 8, seed=3)
    out = engine.generate(prompts, seeded, n=2)
    assert out == engine.generate(prompts, seeded, n=2)
    layer = shared_caches[0].layers[0]
    assert layer.prefix_keys.dtype == layer._key_buffer.dtype == layer.prefix_values.dtype == torch.bfloat16
    assert next(gpu_model.parameters()).dtype == torch.float32  # parameters untouched


def test_completions_carry_the_log_probs_the_trainer_scores(model, tokenizer, prompts):
    from spell.rl.batching import collate
    from spell.rl.policy import sequence_logprobs
    from spell.types import Role, RoleSample, TaskType

    engine = HFEngine(model, tokenizer)
    (group,) = engine.generate(prompts[:1], SamplingParams(0.7, 1.0, 6, seed=0), n=2)
    samples = [RoleSample(Role.RESPONDER, TaskType.DOC_MC, "g", c.prompt_token_ids, c.token_ids, 0.0,
                          temperature=0.7) for c in group]
    batch = collate(samples, pad_id=tokenizer.pad_token_id)
    with torch.no_grad():
        train, _ = sequence_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"],
                                     temperature=batch["temperatures"])
    for row, c in enumerate(group):
        assert len(c.logprobs) == len(c.token_ids) > 0
        # the engine's decode (KV cache, T = 0.7) and the trainer's full forward agree to fp32 rounding
        torch.testing.assert_close(train[row][batch["completion_mask"][row]], torch.tensor(c.logprobs),
                                   rtol=0, atol=1e-4)


def forward_batch_sizes(model):
    """Record the batch size of every forward pass of ``model`` (a hook; remove it with the returned handle)."""
    sizes = []
    handle = model.register_forward_pre_hook(lambda module, args, kwargs: sizes.append(kwargs["input_ids"].shape[0]),
                                             with_kwargs=True)
    return sizes, handle


@pytest.mark.parametrize("prompt_kv", ["shared", "copied", "repeated"])
@pytest.mark.parametrize("n", [1, 4])
def test_dropping_finished_rows_draws_the_same_tokens(model, tokenizer, prompts, prompt_kv, n):
    sampling = SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=24, seed=4)
    engine = HFEngine(model, tokenizer, prompt_kv=prompt_kv, drop_finished=False)
    engine.eos_token_ids = frozenset()
    free = token_ids(engine.generate(prompts, sampling, n=n))
    stops = frozenset(row[3] for group in free[:3] for row in group)  # token 3 of prompts 0-2's rows: they stop
    outputs, sizes = {}, {}
    for drop in (False, True):
        engine = HFEngine(model, tokenizer, prompt_kv=prompt_kv, drop_finished=drop)
        engine.eos_token_ids = stops
        sizes[drop], handle = forward_batch_sizes(model)
        outputs[drop] = engine.generate(prompts, sampling, n=n)
        handle.remove()
    assert without_logprobs(outputs[True]) == without_logprobs(outputs[False])  # tokens, texts, finish reasons
    for got_group, want_group in zip(outputs[True], outputs[False]):  # fewer rows per product: fp32 rounding
        for got, want in zip(got_group, want_group):
            torch.testing.assert_close(torch.tensor(got.logprobs), torch.tensor(want.logprobs), rtol=0, atol=1e-4)
    assert token_ids(outputs[True]) == reference_generate(model, prompts, sampling, n, stops, engine.pad_token_id)
    assert "length" in {c.finish_reason for group in outputs[True] for c in group}  # some rows ran to the end
    rows = len(prompts) * n
    assert set(sizes[False][1:]) == {rows}  # without dropping every decode step computes all 5 x n rows
    assert min(sizes[True][1:]) < rows  # with it some steps compute fewer rows
    assert sum(sizes[True][1:]) < sum(sizes[False][1:])


class RecordedRows:
    """A fake of the engine's decode rows (orchestration test): records what ``keep`` was asked to keep."""

    def __init__(self, group):
        self.group, self.kept = group, []

    def keep(self, index):
        self.kept.append(index.tolist())


@pytest.mark.parametrize(
    "group, running, finished, kept, still",
    [
        # 8 rows, groups of 1: rows 0 and 5 finished = 2 of 8, a quarter -> dropped
        (1, range(8), [0, 5], [[1, 2, 3, 4, 6, 7]], [1, 2, 3, 4, 6, 7]),
        # 8 rows, only row 0 finished: 1 of 8 is under a quarter -> kept computing
        (1, range(8), [0], [], list(range(8))),
        # groups of 2 among rows 2..7 (rows 0, 1 already gone): rows 2, 3 finished = group 0 of 3 groups; 1 * 4 >= 4
        (2, range(2, 8), [0, 1, 2, 3, 4], [[2, 3, 4, 5]], [4, 5, 6, 7]),
        # groups of 2: rows 2 and 4 finished, but each group still has a running row -> nothing to drop
        (2, range(8), [2, 4], [], list(range(8))),
    ],
)
def test_drop_finished_groups(group, running, finished, kept, still):
    rows = RecordedRows(group)
    done = torch.zeros(8, dtype=torch.bool)
    done[finished] = True
    assert HFEngine._drop_finished_groups(rows, torch.tensor(list(running)), done).tolist() == still
    assert rows.kept == kept
