"""CUDA paths of the HF engine, the trainer (bf16 autocast, fp32 master weights), resume and nccl (GPU only).

Run: .venv/bin/python -m pytest tests/gpu/test_cuda_training.py -m gpu -q
(the default ``-m 'not gpu ...'`` in pyproject deselects these; without a GPU the module is skipped).
Rollouts of the trainer tests come from the scripted fake engine of tests/integration/test_trainer.py, so
batches are deterministic and non-empty; model, log-probs, loss, AdamW and checkpoints are real, on CUDA.
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

pytestmark = pytest.mark.gpu

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

from spell.builtin.tiny import build_tiny_model, build_tiny_tokenizer  # noqa: E402
from spell.rl.engine import HFEngine, encode_chat_prompt  # noqa: E402
from spell.rl.engine.hf import resolve_eos_ids  # noqa: E402
from spell.types import SamplingParams  # noqa: E402
from tests.integration.test_trainer import make_cfg, make_trainer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ["the river Alder flows 42 km north to Brenn", "what is 17 + 25? the answer is 42", "café naïve 3.14"] * 10
GREEDY = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=12)


# ---- 1. the HF engine on CUDA ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def engine_setup():
    tokenizer = build_tiny_tokenizer(CORPUS, vocab_size=320)
    # fp32 on the GPU; init std 0.5 makes greedy output vary token to token (a wrong cache or position shows)
    model = build_tiny_model(tokenizer, hidden_size=64, num_layers=2, initializer_range=0.5, seed=0).cuda().eval()
    texts = ["hi", "what is 17 + 25? the answer is", "the river Alder flows north", "café"]
    return tokenizer, model, [encode_chat_prompt(tokenizer, t) for t in texts]


def generate_greedy(model, tokenizer, prompts, max_new_tokens):
    """transformers' own greedy ``generate`` on the left-padded CUDA batch, each row cut after its first eos."""
    batch = tokenizer.pad({"input_ids": prompts}, return_tensors="pt").to("cuda")
    with torch.no_grad():
        out = model.generate(**batch, do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=0)
    eos = resolve_eos_ids(tokenizer, model)
    rows = []
    for row in out[:, batch["input_ids"].shape[1]:].tolist():
        stop = next((i for i, t in enumerate(row) if t in eos), None)
        rows.append(tuple(row if stop is None else row[: stop + 1]))
    return rows


def test_hf_engine_greedy_on_cuda_equals_model_generate(engine_setup):
    tokenizer, model, prompts = engine_setup
    reference = generate_greedy(model, tokenizer, prompts, GREEDY.max_new_tokens)
    assert len({t for row in reference for t in row}) > 4  # a varied reference, not one repeated token
    engine = HFEngine(model, tokenizer, compute_dtype=None)  # fp32 like the reference (the default autocasts to bf16)
    for n in (1, 3):  # n=3: one prefill, the prompt's KV shared by the rows
        out = engine.generate(prompts, GREEDY, n=n)
        assert [[c.token_ids for c in group] for group in out] == [[row] * n for row in reference]
        assert all(c.prompt_token_ids == tuple(p) for p, group in zip(prompts, out) for c in group)
    chunked = HFEngine(model, tokenizer, max_batch_prompts=1, compute_dtype=None).generate(prompts, GREEDY)
    assert [g[0].token_ids for g in chunked] == reference  # no left padding at all: same tokens


def test_hf_engine_seeded_sampling_on_cuda_is_reproducible(engine_setup):
    tokenizer, model, prompts = engine_setup
    engine = HFEngine(model, tokenizer)
    params = SamplingParams(1.0, 0.9, 8, seed=3)
    first = engine.generate(prompts, params, n=4)
    assert engine.generate(prompts, params, n=4) == first  # a CUDA generator seeded per call
    assert engine.generate(prompts, SamplingParams(1.0, 0.9, 8, seed=4), n=4) != first
    assert any(len({c.token_ids for c in group}) > 1 for group in first)  # it really samples


# ---- 2-3. the trainer on CUDA ------------------------------------------------------------------------
def cuda_cfg(corpus, policy_dir, out, *extra):
    # tiny_cpu sets train.device=cpu; model.dtype stays auto = fp32 parameters, bf16 autocast on a bf16 GPU
    return make_cfg(corpus, policy_dir, out, "train.device=cuda", *extra)


def spy_batches(trainer) -> list:
    """Record the samples of every update (to recompute the loss by hand)."""
    seen = []
    update = trainer.update_policy

    def spy(samples):
        seen.append(list(samples))
        return update(samples)

    trainer.update_policy = spy
    return seen


def params_of(trainer) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters()}


def assert_optimizer_state_on_cuda(trainer):
    for name, param in trainer.model.named_parameters():
        state = trainer.optimizer.state[param]
        for key in ("exp_avg", "exp_avg_sq"):
            assert state[key].is_cuda and state[key].dtype == torch.float32, (name, key)


def test_one_step_on_cuda_bf16_autocast_fp32_master_weights(corpus, tiny_policy_dir, tmp_path):
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16: model.dtype=auto trains in fp32 without autocast")
    trainer = make_trainer(cuda_cfg(corpus, tiny_policy_dir, tmp_path / "run", "train.max_steps=1"))
    assert trainer.device.type == "cuda" and trainer.autocast == torch.bfloat16
    before = params_of(trainer)
    assert all(p.is_cuda and p.dtype == torch.float32 for p in before.values())
    head_dtypes = set()
    hook = trainer.model.get_output_embeddings().register_forward_hook(lambda m, i, o: head_dtypes.add(o.dtype))
    batches = spy_batches(trainer)
    metrics = trainer.train()
    hook.remove()
    assert head_dtypes == {torch.bfloat16}  # the LM head ran under autocast (forward and checkpoint recompute)
    after = dict(trainer.model.named_parameters())
    assert all(p.is_cuda and p.dtype == torch.float32 for p in after.values())  # master weights stay fp32
    unchanged = [n for n, p in after.items() if p.requires_grad and torch.equal(p.detach(), before[n])]
    assert unchanged == []
    assert_optimizer_state_on_cuda(trainer)
    # on-policy: ratio == 1, so loss = -sum_i A_i * len_i / sum_i len_i over the batch's completions
    samples = [s for s in batches[0] if s.completion_ids]
    tokens = sum(len(s.completion_ids) for s in samples)
    expected = -sum(s.advantage * len(s.completion_ids) for s in samples) / tokens
    assert metrics["train/num_tokens"] == tokens > 0
    assert math.isfinite(metrics["train/loss"])
    assert metrics["train/loss"] == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert metrics["train/skipped"] == 0.0 and 0 < metrics["train/grad_norm"] < math.inf
    # bf16 compute against the fp32 CPU step on the same batch: entropy and gradient norm agree closely
    cpu = make_trainer(make_cfg(corpus, tiny_policy_dir, tmp_path / "cpu", "train.max_steps=1")).train()
    assert metrics["train/num_tokens"] == cpu["train/num_tokens"]
    assert metrics["train/entropy"] == pytest.approx(cpu["train/entropy"], rel=1e-2)
    assert metrics["train/grad_norm"] == pytest.approx(cpu["train/grad_norm"], rel=5e-2)


def test_resume_on_cuda_equals_a_straight_run(corpus, tiny_policy_dir, tmp_path):
    # mirrors tests/integration/test_trainer.py::test_resume_is_exact: 2 steps == 1 step + resume + 1 step
    straight = make_trainer(cuda_cfg(corpus, tiny_policy_dir, tmp_path / "a", "train.max_steps=2"))
    loss_a = straight.train()["train/loss"]
    make_trainer(cuda_cfg(corpus, tiny_policy_dir, tmp_path / "b", "train.max_steps=1")).train()
    resumed = make_trainer(cuda_cfg(corpus, tiny_policy_dir, tmp_path / "b", "train.max_steps=2"), tmp_path / "b")
    assert resumed.start_step == 1
    assert all(p.is_cuda and p.dtype == torch.float32 for p in resumed.model.parameters())
    assert_optimizer_state_on_cuda(resumed)  # restored from the CPU-mapped file onto the parameters' device
    loss_b = resumed.train()["train/loss"]
    # Exact: same process, same GPU, same kernels and the same batches, so bf16 autocast is deterministic too.
    assert loss_b == loss_a
    for (name, pa), (_, pb) in zip(straight.model.named_parameters(), resumed.model.named_parameters()):
        assert torch.equal(pa, pb), name
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]


def test_builtin_step_on_cuda_with_the_real_hf_engine(tmp_path, monkeypatch):
    from spell.builtin.defaults import apply_builtin_defaults
    from spell.config import load_config
    from spell.trainer import Trainer

    # `spell train train.device=cuda`: the shipped policy on the built-in world; the configured engine (hf)
    # samples from the CUDA training model itself between updates, and held-out eval runs before and after
    monkeypatch.setenv("SPELL_CACHE_DIR", str(tmp_path / "cache"))
    cfg = apply_builtin_defaults(load_config("builtin", [
        "train.device=cuda", "train.max_steps=1", f"output_dir={tmp_path / 'run'}", "eval.limit=6",
        "logging.progress=false"]))
    trainer = Trainer(cfg)
    assert isinstance(trainer.engine, HFEngine) and trainer.engine.model is trainer.model
    before = params_of(trainer)
    metrics = trainer.train()
    assert trainer.model.training  # the engine put it back in train mode
    assert metrics["train/num_tokens"] > 0 and metrics["train/skipped"] == 0.0
    assert math.isfinite(metrics["train/loss"]) and 0 < metrics["train/grad_norm"] < math.inf
    assert any(not torch.equal(p.detach(), before[n]) for n, p in trainer.model.named_parameters())
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [0, 1] and all(0 <= r["heldout/accuracy"] <= 1 for r in rows)


# ---- 4. torch.distributed with nccl, one rank --------------------------------------------------------
def nccl_driver(corpus: str, policy: str, out: str, port: str) -> None:
    """Run in a subprocess: one step in a 1-rank nccl group with every collective of spell.rl.distributed on.

    ``init_distributed`` leaves a 1-rank job alone and the helpers are no-ops below 2 ranks, so this joins the
    group itself and forces the helpers active: then all_reduce_dict, broadcast, the object gathers (metrics,
    sample dump, checkpoint state) and barriers all go through NCCL, as in a multi-GPU run (one rank: no FSDP).
    """
    import torch.distributed as dist

    from spell.rl import distributed

    torch.cuda.set_device(0)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    distributed._active = lambda: dist.is_initialized()
    info = distributed.dist_info()
    trainer = make_trainer(cuda_cfg(corpus, policy, out, "train.max_steps=1"))
    metrics = trainer.train()
    torch.save({"backend": info.backend, "world_size": info.world_size, "metrics": metrics,
                "params": {n: p.detach().cpu() for n, p in trainer.model.named_parameters()}},
               Path(out) / "nccl.pt")
    distributed.cleanup()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(not torch.distributed.is_nccl_available(), reason="torch built without nccl")
def test_one_step_under_nccl_with_one_rank(corpus, tiny_policy_dir, tmp_path):
    out = tmp_path / "nccl"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    code = "import sys; from tests.gpu.test_cuda_training import nccl_driver; nccl_driver(*sys.argv[1:])"
    cmd = [sys.executable, "-c", code, str(corpus), str(tiny_policy_dir), str(out), str(free_port())]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = torch.load(out / "nccl.pt", weights_only=False)
    assert (result["backend"], result["world_size"]) == ("nccl", 1)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1]
    assert rows[0]["train/skipped"] == 0.0 and math.isfinite(rows[0]["train/loss"]) and rows[0]["train/num_tokens"] > 0
    assert (out / "checkpoints" / "step_000001" / "state.json").is_file()
    assert len((out / "samples" / "step_000001.jsonl").read_text().splitlines()) == 5
    # sums over one rank are the identity: the same step without a process group gives the same result
    plain = make_trainer(cuda_cfg(corpus, tiny_policy_dir, tmp_path / "plain", "train.max_steps=1"))
    metrics = plain.train()
    assert rows[0]["train/loss"] == pytest.approx(metrics["train/loss"], rel=1e-6)
    assert rows[0]["train/num_tokens"] == metrics["train/num_tokens"]
    for name, param in plain.model.named_parameters():
        # Exact: another process, but the same GPU, kernels and batch, and NCCL sums over one rank copy
        # (bit-identical in 4 runs on an H100; loosen to atol=1e-5 if another GPU ever disagrees)
        torch.testing.assert_close(result["params"][name], param.detach().cpu(), rtol=0, atol=0, msg=name)


# ---- 5. FSDP2 on CUDA: bf16 compute, fp32 master weights and reduction (one rank, nccl) ---------------------
def fsdp_driver(policy: str, out: str, port: str) -> None:
    """Run in a subprocess: shard the tiny policy with FSDP2 in a 1-rank nccl group, one AdamW step in bf16."""
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor

    from spell.config import ModelConfig
    from spell.rl.losses import grpo_loss
    from spell.rl.policy import load_policy, sequence_logprobs
    from spell.rl.sharding import full_tensor, shard_policy

    torch.cuda.set_device(0)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    device = torch.device("cuda")
    model, _ = load_policy(ModelConfig(path=policy), device)
    reference, _ = load_policy(ModelConfig(path=policy), device)
    shard_policy(model, device, 1, compute_dtype=torch.bfloat16)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(3, 300, (2, 24), device=device)
    mask = torch.ones_like(ids)
    completion = torch.zeros_like(ids, dtype=torch.bool)
    completion[:, 16:] = True
    head_dtypes = set()
    model.get_output_embeddings().register_forward_hook(lambda m, i, o: head_dtypes.add(o.dtype))
    logprobs, _ = sequence_logprobs(model, ids, mask, completion, 8, temperature=torch.tensor([0.7, 1.0]))
    loss, _ = grpo_loss(logprobs, logprobs.detach(), torch.tensor([1.0, -1.0], device=device), completion,
                        clip_low=0.2, clip_high=0.2, num_tokens_total=16)
    loss.backward()
    with torch.no_grad():
        exact, _ = sequence_logprobs(reference, ids, mask, completion, 8, temperature=torch.tensor([0.7, 1.0]))
    grad_dtypes = {p.grad.dtype for p in model.parameters()}
    optimizer.step()
    torch.save({"param_types": {type(p).__name__ for p in model.parameters()},
                "param_dtypes": {p.dtype for p in model.parameters()}, "grad_dtypes": grad_dtypes,
                "head_dtypes": head_dtypes, "adam_dtypes": {s["exp_avg"].dtype for s in optimizer.state.values()},
                "max_logprob_error": float((logprobs.detach() - exact).abs().max()),
                "dtensor": all(isinstance(p, DTensor) for p in model.parameters()),
                "full": {n: full_tensor(p).detach().cpu() for n, p in model.named_parameters()}},
               Path(out) / "fsdp.pt")
    dist.destroy_process_group()


@pytest.mark.skipif(not torch.distributed.is_nccl_available(), reason="torch built without nccl")
def test_fsdp2_step_on_cuda_computes_in_bf16_and_keeps_fp32_master_weights(tiny_policy_dir, tmp_path):
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    code = "import sys; from tests.gpu.test_cuda_training import fsdp_driver; fsdp_driver(*sys.argv[1:])"
    cmd = [sys.executable, "-c", code, str(tiny_policy_dir), str(tmp_path), str(free_port())]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = torch.load(tmp_path / "fsdp.pt", weights_only=False)
    assert result["dtensor"] and result["param_dtypes"] == {torch.float32}  # sharded fp32 master weights
    assert result["grad_dtypes"] == {torch.float32} and result["adam_dtypes"] == {torch.float32}
    assert result["head_dtypes"] == {torch.bfloat16}  # the chunked log-probs ran the head in bf16
    assert result["max_logprob_error"] < 0.1  # bf16 compute vs the fp32 unsharded model, same temperatures
    assert all(torch.isfinite(t).all() for t in result["full"].values())


# ---- 6. LoRA on CUDA --------------------------------------------------------------------------------------
def test_lora_step_on_cuda_trains_only_the_adapter(corpus, tiny_policy_dir, tmp_path):
    trainer = make_trainer(cuda_cfg(corpus, tiny_policy_dir, tmp_path / "run", "train.max_steps=1",
                                    "model.lora_rank=8"))
    before = params_of(trainer)
    metrics = trainer.train()
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed and all(".lora_" in n for n in changed)
    assert all(p.is_cuda and p.dtype == torch.float32 for p in trainer.model.parameters())
    assert metrics["train/skipped"] == 0.0 and math.isfinite(metrics["train/loss"])
