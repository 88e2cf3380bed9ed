"""Sharded training under torchrun (2 CPU ranks, gloo, FSDP2): one real launch of tests/integration/_dist_driver.py.

Checks that each rank holds half of the parameters, that the sharded update equals a single-process update on the
union of both ranks' batches (also with one rank empty, and when every rank is empty), that only rank 0 writes
metrics, that a 2-rank resume continues bit for bit, and that a 2-rank checkpoint resumes in one process with its
weights, optimizer moments and every history-memory entry.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spell.rl.distributed import merge_rank_metrics, shard_docsets
from spell.types import DocSet, TaskType
from tests.integration.test_trainer import make_cfg, make_trainer

ROOT = Path(__file__).resolve().parents[2]
# Dealt round-robin per task: rank 0 gets alpha-a, bravo, echo; rank 1 alpha-b, delta, charlie -> both
# ranks have one valid question (the scripted alpha: 2 of 4 responders right) and different negatives.
NAMES = ["alpha-set-a", "alpha-set-b", "bravo-set", "delta-set", "echo-set", "charlie-set"]
OVERRIDES = ("data.questions_per_round=3",)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def launched(tmp_path_factory, tiny_policy_dir):
    out = tmp_path_factory.mktemp("dist")
    corpus = out / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": n, "documents": [f"Document about {n}.", f"More facts on {n}."],
                                          "task": "doc_general_qa"}) + "\n" for n in NAMES))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(ROOT / "tests" / "integration" / "_dist_driver.py"),
           "--corpus", str(corpus), "--policy", str(tiny_policy_dir), "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    return out, corpus, ranks


def test_each_rank_holds_half_the_parameters(launched):
    _, _, (r0, r1) = launched
    assert (r0["world_size"], r0["backend"], r1["rank"]) == (2, "gloo", 1)
    # fully_shard splits every tensor on dim 0: each rank holds ceil/floor halves of the rows
    assert r0["local_numel"] + r1["local_numel"] == r0["total_numel"]
    assert abs(r0["local_numel"] - r0["total_numel"] / 2) <= 0.02 * r0["total_numel"]


def test_every_parameter_trains_and_empty_steps_skip(launched):
    _, _, (r0, r1) = launched
    full = r0["full"]
    assert [len(full["batches"][s]) for s in (1, 2, 3)] == [10, 10, 0]  # 4 resp + 2 ques + 4 verif
    assert [len(r1["full"]["batches"][s]) for s in (1, 2, 3)] == [10, 0, 0]  # step 2 emptied on rank 1
    assert len(full["batches"][4]) >= 6 and len(r1["full"]["batches"][4]) >= 6  # the verifier quota is global
    changed = [n for n, p in full["params"][4].items() if not torch.equal(p, full["params"][0][n])]
    assert len(changed) == len(full["params"][0])
    assert sorted(full["grads"]) == [1, 2, 4]  # step 3 was empty everywhere: skipped, no optimizer step
    for step in (1, 2, 4):  # both ranks gathered the same full weights
        for name, tensor in full["params"][step].items():
            assert torch.equal(tensor, r1["full"]["params"][step][name]), (step, name)


@pytest.fixture()
def one_thread():
    # tiny ops on a busy 2-core machine: 2 OpenMP threads can wait on each other for a time slice per op
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_sharded_shared_prefix_update_equals_a_per_sample_update_on_the_union_batch(launched, tiny_policy_dir,
                                                                                    tmp_path, one_thread):
    out, corpus, (r0, r1) = launched
    # the reference updates one sequence per sample: the ranks' FSDP2 shared-prefix update must equal it
    reference = make_trainer(make_cfg(corpus, tiny_policy_dir, tmp_path / "ref", *OVERRIDES,
                                      "grpo.shared_prefix=false"))
    grads = {}
    step = {}
    reference.optimizer.register_step_pre_hook(lambda *_: grads.__setitem__(step["now"], {
        n: p.grad.detach().clone() for n, p in reference.model.named_parameters()}))
    for now in (1, 2, 3, 4):
        step["now"] = now
        union = r0["full"]["batches"][now] + r1["full"]["batches"][now]
        stats = reference.update_policy(union)
        assert stats["train/num_tokens"] == sum(len(s.completion_ids) for s in union)
        params = {n: p.detach() for n, p in reference.model.named_parameters()}
        for name, tensor in r0["full"]["params"][now].items():
            # Adam divides by sqrt(v): float-order noise in tiny gradients shows up as ~1e-5 here
            torch.testing.assert_close(tensor, params[name], rtol=0, atol=1e-4, msg=(now, name))
    assert sorted(grads) == [1, 2, 4]
    for now in (1, 2, 4):
        for name, grad in grads[now].items():
            # FSDP2 sums in another order (reduce-scatter of each rank's share): tolerance as float noise
            torch.testing.assert_close(r0["full"]["grads"][now][name], grad, rtol=1e-4, atol=1e-7, msg=(now, name))
    assert r0["full"]["metrics"]["train/loss"] == pytest.approx(stats["train/loss"], rel=1e-5)


def test_only_rank_zero_writes_metrics_and_every_rank_its_checkpoint_shard(launched):
    out, _, (r0, r1) = launched
    rows = [json.loads(line) for line in (out / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2, 3, 4]  # one writer: no duplicated lines
    batches = [r0["full"]["batches"][k] + r1["full"]["batches"][k] for k in (1, 2, 3, 4)]
    assert [row["train/num_tokens"] for row in rows] == [sum(len(s.completion_ids) for s in b) for b in batches]
    assert [row["train/skipped"] for row in rows] == [0.0, 0.0, 1.0, 0.0]
    assert rows[0]["questioner/num_generated"] == 6  # 3 per rank, summed
    assert rows[0]["questioner/valid_rate"] == pytest.approx(1 / 3)  # one of three on each rank, averaged
    checkpoints = sorted(p.name for p in (out / "full" / "checkpoints").iterdir())
    assert checkpoints == ["step_000001", "step_000002", "step_000003", "step_000004"]  # no temp leftovers
    final = out / "full" / "checkpoints" / "step_000004"
    assert sorted(p.name for p in (final / "dcp").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    state = json.loads((final / "state.json").read_text())
    assert state["world_size"] == 2 and len(state["ranks"]) == 2
    dump = [json.loads(line) for line in (out / "full" / "samples" / "step_000001.jsonl").read_text().splitlines()]
    assert sorted(d["rank"] for d in dump) == [0, 0, 0, 1, 1, 1]


def test_two_rank_resume_is_exact(launched):
    _, _, ranks = launched
    rank0, rank1 = (r["split"]["state_at_2"] for r in ranks)
    assert rank0["memory"] != rank1["memory"] and rank0["sampler"] != rank1["sampler"]  # really per rank
    assert not torch.equal(rank0["torch_rng"], rank1["torch_rng"])  # seeded train.seed + rank
    for r in ranks:
        split = r["split"]
        assert split["start_step"] == 2
        resumed, saved = dict(split["resumed_state"]), dict(split["state_at_2"])
        assert torch.equal(resumed.pop("torch_rng"), saved.pop("torch_rng"))  # the driver scrambled it before
        assert resumed == saved
        for name, tensor in r["full"]["params"][4].items():  # killed after step 2 + resumed == uninterrupted
            assert torch.equal(split["params"][4][name], tensor), name


def test_two_rank_checkpoint_resumes_in_one_process(launched, tiny_policy_dir, one_thread):
    out, corpus, (r0, r1) = launched
    cfg = make_cfg(corpus, tiny_policy_dir, out / "split", "train.max_steps=5", *OVERRIDES)
    single = make_trainer(cfg, out / "split" / "checkpoints" / "step_000002")
    assert single.start_step == 2
    for name, param in single.model.named_parameters():  # DCP resharded 2 shards into one tensor, exactly
        assert torch.equal(param.detach(), r0["split"]["params"][2][name]), name
        assert torch.equal(single.optimizer.state[param]["exp_avg"], r0["split"]["adam_at_2"][name]), name
    saved = [e for r in (r0, r1) for e in r["split"]["state_at_2"]["memory"]["entries"]]
    restored = single.memory.state_dict()["entries"]
    assert saved and sorted(map(json.dumps, restored)) == sorted(map(json.dumps, saved))  # none lost
    assert single.scheduler.last_epoch == 2


@pytest.mark.parametrize("rank, expected", [
    (0, ["a0", "a2", "b0"]),  # task a: 3 sets dealt 0/1/0; task b: 1 set < 2 ranks -> shared by both
    (1, ["a1", "b0"]),
])
def test_shard_docsets_deals_each_task_round_robin(rank, expected):
    qa, mc = TaskType.DOC_GENERAL_QA, TaskType.DOC_MC
    docsets = [DocSet("a0", ("x",), qa), DocSet("b0", ("x",), mc), DocSet("a1", ("x",), qa), DocSet("a2", ("x",), qa)]
    shard = shard_docsets(docsets, [qa, mc], rank, 2)
    assert [d.id for d in shard] == expected


def test_merge_rank_metrics_sums_counts_and_averages_rates():
    merged = merge_rank_metrics([{"n": 2, "rate": 0.25, "only0": 1.0}, {"n": 4, "rate": 0.75}], {"n"})
    # n: 2 + 4 = 6; rate: (0.25 + 0.75) / 2 = 0.5; only0: present on one rank -> its value
    assert merged == {"n": 6.0, "rate": 0.5, "only0": 1.0}



# ---- process group backend and CPU offload ---------------------------------------------------------------------
def test_a_gpu_job_joins_nccl_with_gloo_beside_it(monkeypatch):
    from spell.rl import distributed

    calls = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: bool(calls))
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda backend, timeout: calls.append(backend))
    monkeypatch.setattr(distributed.torch.cuda, "set_device", lambda index: calls.append(f"device {index}"))
    monkeypatch.setattr(distributed.dist, "get_rank", lambda: 1)
    monkeypatch.setattr(distributed.dist, "get_backend", lambda: calls[-1])
    monkeypatch.setattr(distributed, "dist_info", lambda: None)
    distributed.init_distributed("cuda")
    # CUDA tensors over nccl; CPU tensors (offloaded gradients, their norm) over gloo in the same group
    assert calls == ["device 1", "cuda:nccl,cpu:gloo"]
    calls.clear()
    distributed.init_distributed("cpu")
    assert calls == ["gloo"]


def _offload_worker(rank: int, port: int, policy_dir: str, corpus: str, out: str) -> None:
    """One of 2 gloo ranks: one clipped step with train.fsdp_cpu_offload=true, then the same step without it."""
    import torch.distributed as dist
    import torch.distributed.fsdp as fsdp

    from spell.rl.sharding import full_tensor

    made, policy_class = [], fsdp.CPUOffloadPolicy
    fsdp.CPUOffloadPolicy = lambda **kwargs: made.append(kwargs) or policy_class(**kwargs)  # records each policy
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        result = {}
        for offload in (True, False):
            cfg = make_cfg(Path(corpus), Path(policy_dir), Path(out) / f"run_{offload}", "train.max_steps=1",
                           f"train.fsdp_cpu_offload={str(offload).lower()}", "grpo.max_grad_norm=1e-3",
                           "eval.heldout_files=[]", *OVERRIDES)
            trainer = make_trainer(cfg)
            metrics = trainer.train()
            params = {n: full_tensor(p).detach().clone() for n, p in trainer.model.named_parameters()}
            result[offload] = {"metrics": metrics, "policies": list(made), "params": params}
            made.clear()
        torch.save(result, Path(out) / f"offload{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_cpu_offload_runs_a_clipped_two_rank_step_equal_to_the_step_without_it(tmp_path, tiny_policy_dir):
    import torch.multiprocessing as mp

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": n, "documents": [f"Document about {n}.", f"More facts on {n}."],
                                          "task": "doc_general_qa"}) + "\n" for n in NAMES))
    mp.spawn(_offload_worker, args=(free_port(), str(tiny_policy_dir), str(corpus), str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"offload{r}.pt", weights_only=False) for r in (0, 1)]
    for result in ranks:
        offloaded, plain = result[True], result[False]
        # the offload policy was built (no pinned memory without a GPU: pinning needs an accelerator), once per run
        assert offloaded["policies"] == [{"pin_memory": False}] and plain["policies"] == []
        assert offloaded["metrics"]["train/skipped"] == 0.0
        # the global gradient norm over the offloaded shards, far above grpo.max_grad_norm: the step was clipped
        assert offloaded["metrics"]["train/grad_norm"] > 1e-3
        assert offloaded["metrics"]["train/grad_norm"] == pytest.approx(plain["metrics"]["train/grad_norm"], rel=1e-5)
        for name, value in offloaded["params"].items():
            torch.testing.assert_close(value, plain["params"][name], rtol=1e-6, atol=1e-7, msg=name)
    for name, value in ranks[0][True]["params"].items():  # both ranks hold the same updated policy
        assert torch.equal(value, ranks[1][True]["params"][name]), name
