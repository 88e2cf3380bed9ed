"""One GRPO update on 2 ranks: FSDP2 sharding (spell.rl.sharding) vs replicas + a bucketed gradient all-reduce.

The baseline is what spell-rl did before FSDP2 (every rank a full replica, gradients summed after backward in
flattened buckets); both variants run in the same torchrun processes on the same random Qwen2 and the same
per-rank batches (left-padded prompt + completion, random advantages), A/B interleaved, through the project's
own collate / sequence_logprobs / grpo_loss. Reported per variant: the median update time and the training-state
memory one rank holds (parameters + gradients + AdamW moments, bytes of its local tensors); FSDP2 also keeps
an unsharded rollout replica for generation, refreshed after each update: its memory and sync time are reported
separately.

    .venv/bin/python benchmarks/sharded_update.py          # re-launches itself under torchrun, 2 CPU ranks
Writes benchmarks/results/sharded_update.json; the last line is ``sharded_update: ...``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--samples", type=int, default=8, help="sequences per rank")
    parser.add_argument("--prompt-tokens", type=int, default=384)
    parser.add_argument("--completion-tokens", type=int, default=64)
    parser.add_argument("--micro-batch-tokens", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5, help="timed updates per variant (after one warm-up)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sharded_update.json"))
    return parser.parse_args(argv)


def build_model(args: argparse.Namespace):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=4 * args.hidden,
                         num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=4096, tie_word_embeddings=True)
    torch.manual_seed(0)
    return Qwen2ForCausalLM(config).train()


def build_samples(args: argparse.Namespace, rank: int) -> list:
    from spell.types import Role, RoleSample, TaskType

    gen = torch.Generator().manual_seed(1000 + rank)
    samples = []
    for i in range(args.samples):
        ids = torch.randint(1, args.vocab, (args.prompt_tokens + args.completion_tokens,), generator=gen).tolist()
        advantage = float(torch.randn((), generator=gen))
        samples.append(RoleSample(Role.RESPONDER, TaskType.DOC_GENERAL_QA, f"g{i // 4}",
                                  tuple(ids[: args.prompt_tokens]), tuple(ids[args.prompt_tokens:]), 0.0,
                                  advantage=advantage, temperature=0.7))
    return samples


@torch.no_grad()
def all_reduce_gradients_baseline(model: torch.nn.Module, bucket_numel: int = 2**25) -> None:
    """The pre-FSDP2 gradient sync (baseline only): every grad summed over ranks in flattened fp32 buckets."""
    import torch.distributed as dist

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in model.parameters() if p.requires_grad]
    start = 0
    while start < len(grads):
        bucket, size = [], 0
        while start < len(grads) and (not bucket or size + grads[start].numel() <= bucket_numel):
            bucket.append(grads[start])
            size += grads[start].numel()
            start += 1
        flat = torch.cat([g.reshape(-1) for g in bucket])
        dist.all_reduce(flat)
        offset = 0
        for grad in bucket:
            grad.copy_(flat[offset: offset + grad.numel()].view_as(grad))
            offset += grad.numel()
    for param, grad in zip((p for p in model.parameters() if p.requires_grad), grads, strict=True):
        param.grad = grad


def update(model, optimizer, samples, args, world_size: int, sharded: bool) -> float:
    """One update (micro-batches, backward, gradient sync, clip, AdamW step); returns its wall time."""
    from spell.rl.batching import collate, pack_micro_batches
    from spell.rl.losses import grpo_loss
    from spell.rl.policy import sequence_logprobs
    from spell.rl.sharding import full_tensor, gradient_scale, set_gradient_sync

    torch.distributed.barrier()
    start = time.perf_counter()
    num_tokens = world_size * sum(len(s.completion_ids) for s in samples)
    batches = pack_micro_batches([len(s.prompt_ids) + len(s.completion_ids) for s in samples],
                                 args.micro_batch_tokens)
    for index, indices in enumerate(batches):
        set_gradient_sync(model, index == len(batches) - 1)
        batch = collate([samples[i] for i in indices], pad_id=0)
        logprobs, _ = sequence_logprobs(model, batch["input_ids"], batch["attention_mask"],
                                        batch["completion_mask"], 256, temperature=batch["temperatures"])
        loss, _ = grpo_loss(logprobs, logprobs.detach(), batch["advantages"], batch["completion_mask"],
                            clip_low=0.2, clip_high=0.2, num_tokens_total=num_tokens)
        (loss * gradient_scale(model, world_size)).backward()
    if not sharded:
        all_reduce_gradients_baseline(model)
    float(full_tensor(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)))
    optimizer.step()
    optimizer.zero_grad(set_to_none=False)  # keep the grads allocated: they are part of the measured state
    torch.distributed.barrier()
    return time.perf_counter() - start


def local_bytes(tensors) -> int:
    from spell.rl.sharding import local_tensor

    return sum(local_tensor(t).numel() * t.element_size() for t in tensors)


def training_state_bytes(model, optimizer) -> dict[str, int]:
    params = list(model.parameters())
    moments = [v for state in optimizer.state.values() for v in state.values()
               if isinstance(v, torch.Tensor) and v.dim() > 0]
    return {"params": local_bytes(params), "grads": local_bytes([p.grad for p in params if p.grad is not None]),
            "adam": local_bytes(moments)}


def worker(args: argparse.Namespace) -> None:
    from spell.rl import distributed
    from spell.rl.sharding import copy_full_weights, shard_policy

    info = distributed.init_distributed("cpu")
    torch.set_num_threads(1)
    base = build_model(args)
    replica, sharded = copy.deepcopy(base), copy.deepcopy(base)
    shard_policy(sharded, torch.device("cpu"), info.world_size)
    variants = {"allreduce": (replica, torch.optim.AdamW(replica.parameters(), lr=1e-5)),
                "fsdp2": (sharded, torch.optim.AdamW(sharded.parameters(), lr=1e-5))}
    samples = build_samples(args, info.rank)
    rollout, sync = copy.deepcopy(base).requires_grad_(False), []
    times: dict[str, list[float]] = {name: [] for name in variants}
    for repeat in range(args.repeats + 1):  # the first round warms up, A/B interleaved afterwards
        order = list(variants) if repeat % 2 == 0 else list(reversed(variants))
        for name in order:
            model, optimizer = variants[name]
            seconds = update(model, optimizer, samples, args, info.world_size, name == "fsdp2")
            if name == "fsdp2":  # the engine's replica is refreshed after every sharded update
                start = time.perf_counter()
                copy_full_weights(sharded, rollout)
                torch.distributed.barrier()
                if repeat:
                    sync.append(time.perf_counter() - start)
            if repeat:
                times[name].append(seconds)
    memory = {name: training_state_bytes(*variants[name]) for name in variants}
    memory["fsdp2_rollout_replica"] = {"params": local_bytes(list(base.parameters()))}
    times["fsdp2_replica_sync"] = sync
    gathered = distributed.gather_to_main({"rank": info.rank, "times": times, "memory": memory})
    if info.is_main:
        report(args, info.world_size, gathered, sum(p.numel() for p in base.parameters()))
    distributed.cleanup()


def report(args: argparse.Namespace, world_size: int, ranks: list[dict], num_params: int) -> None:
    median = {name: statistics.median(max(r["times"][name][i] for r in ranks)
                                      for i in range(args.repeats)) for name in ranks[0]["times"]}
    mib = {name: sum(ranks[0]["memory"][name].values()) / 2**20 for name in ranks[0]["memory"]}
    result = {"args": vars(args), "world_size": world_size, "num_params": num_params,
              "median_update_s": median, "rank0_training_state_mib": mib, "per_rank": ranks,
              "torch": torch.__version__, "cpu_threads_per_rank": 1}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({"median_update_s": median, "training_state_mib": mib}))
    print(f"sharded_update: {num_params / 1e6:.2f}M params, {world_size} CPU ranks: update fsdp2/allreduce = "
          f"{median['fsdp2'] / median['allreduce']:.2f}x time ({median['fsdp2']:.2f} s vs "
          f"{median['allreduce']:.2f} s); training state per rank {mib['fsdp2']:.1f} MiB vs "
          f"{mib['allreduce']:.1f} MiB ({mib['allreduce'] / mib['fsdp2']:.2f}x less), + rollout replica "
          f"{mib['fsdp2_rollout_replica']:.1f} MiB synced in {median['fsdp2_replica_sync']:.3f} s")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if "RANK" in os.environ:
        worker(args)
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", "29517", __file__, *(argv if argv is not None else sys.argv[1:])]
    sys.exit(subprocess.run(cmd, env=env, check=False).returncode)


if __name__ == "__main__":
    main()
