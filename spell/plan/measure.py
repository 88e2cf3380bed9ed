"""One real update step on CPU, measured: the peak RSS it adds against the planner's update-phase estimate.

``python -m spell.plan.measure --model FOLDER --prompt 2048 --completion 512 --group 8 --groups 2 [KEY=VALUE ...]``
(or under ``torchrun --nproc_per_node 2 -m spell.plan.measure ...``: FSDP2 over the ranks, each rank measured) runs
``Trainer.update_policy`` (the trainer's own packing, shared-prefix forward, chunked log-prob head, GRPO loss,
backward and AdamW step) on ``--groups`` synthetic responder groups whose G completions share one prompt, in a
fresh process, and prints JSON: the RSS before the model is loaded, the peak RSS (``ru_maxrss``), their
difference and the planner's estimate for the same config. The micro-batch budget is one group (P + G C), so
the largest micro-batch is exactly the planner's T. The process runs with ``MALLOC_MMAP_THRESHOLD_=65536`` (it
restarts itself with it) so that RSS follows the bytes actually alive.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import sys

from spell.config import SpellConfig, load_config
from spell.plan.arch import load_arch
from spell.plan.memory import plan_memory

# glibc serves blocks above this size with mmap and returns them on free; its default threshold grows up to
# 32 MiB and then keeps freed tensors in the heap, so RSS would track the allocator's high-water mark (18-45%
# above the live bytes here) and a second measurement in the same process would reuse the first one's memory.
MMAP_THRESHOLD_ENV = "MALLOC_MMAP_THRESHOLD_"


def current_rss() -> int:
    """Resident set size of this process now, in bytes (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


def reset_peak_rss() -> bool:
    """Restart the peak-RSS counter (``VmHWM``) at the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


def peak_rss() -> int:
    """The largest RSS since the last :func:`reset_peak_rss` (``VmHWM``; else ``ru_maxrss``), in bytes."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            return next(int(line.split()[1]) * 1024 for line in handle if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measured_config(model: str, prompt: int, completion: int, group: int, checkpointing: bool,
                    shared_prefix: bool, *extra: str) -> SpellConfig:
    """The CPU config of the measurement: one responder group per micro-batch, fp32, no KL."""
    return load_config(None, [*extra,
        f"model.path={model}", f"model.gradient_checkpointing={str(checkpointing).lower()}", "train.device=cpu",
        "model.dtype=float32", f"data.max_prompt_tokens={prompt}", f"responder.max_new_tokens={completion}",
        f"questioner.max_new_tokens={completion}", f"responder.group_size={group}",
        f"grpo.micro_batch_tokens={prompt + group * completion}", f"grpo.shared_prefix={str(shared_prefix).lower()}",
        "grpo.kl_coef=0.0"])


def synthetic_groups(groups: int, prompt: int, completion: int, group: int, vocab: int, seed: int = 0) -> list:
    """``groups`` responder groups: one random prompt each, ``group`` random completions with +-1 advantages."""
    from spell.types import Role, RoleSample, TaskType

    rng = random.Random(seed)
    samples = []
    for g in range(groups):
        prompt_ids = tuple(rng.randrange(3, vocab) for _ in range(prompt))
        for k in range(group):
            completion_ids = tuple(rng.randrange(3, vocab) for _ in range(completion))
            sign = 1.0 if k % 2 else -1.0
            samples.append(RoleSample(Role.RESPONDER, TaskType.DOC_GENERAL_QA, f"g{g}", prompt_ids, completion_ids,
                                      reward=sign, advantage=sign, temperature=0.7))
    return samples


def measure_update(cfg: SpellConfig, groups: int) -> dict:
    """Peak RSS added by building the policy + AdamW and running one ``update_policy`` over ``groups`` groups."""
    import torch

    from spell.rl import distributed
    from spell.trainer import Trainer

    torch.manual_seed(0)
    trainer = Trainer.__new__(Trainer)  # only the parts an update needs: no corpus, run folder or engine
    trainer.cfg, trainer.dist, trainer.seed = cfg, distributed.dist_info(), cfg.train.seed
    world = trainer.dist.world_size
    trainer._setup_model()
    trainer._setup_optimizer()
    samples = synthetic_groups(groups, cfg.data.max_prompt_tokens, cfg.responder.max_new_tokens,
                               cfg.responder.group_size, trainer.model.config.vocab_size, seed=trainer.dist.rank)
    baseline = current_rss()  # the weights are loaded (with transformers' model code); AdamW's moments are not
    if not reset_peak_rss() and peak_rss() > baseline:
        raise RuntimeError("cannot reset the peak-RSS counter here: measure in a fresh process")
    stats = trainer.update_policy(samples)
    peak = peak_rss()
    plan = plan_memory(cfg, load_arch(cfg.model.path), world=world)
    # the weights (and, sharded, the rollout replica) are loaded before the baseline is taken
    loaded = sum(item.bytes for item in plan.items if item.name.startswith(("weights", "rollout replica")))
    estimate = max(plan.total("update"), plan.total("step")) - loaded
    return {"baseline_bytes": baseline, "peak_bytes": peak, "measured_bytes": peak - baseline,
            "estimate_bytes": estimate, "items": {i.name: i.bytes for i in plan.items},
            "micro_batch_tokens": plan.micro_batch_tokens, "loss": stats["train/loss"], "world": world,
            "rank": trainer.dist.rank}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a Hugging Face model folder (e.g. the built-in policy)")
    parser.add_argument("--prompt", type=int, default=2048)
    parser.add_argument("--completion", type=int, default=512)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--groups", type=int, default=1)
    parser.add_argument("--checkpointing", choices=("off", "on", "both"), default="off")
    parser.add_argument("--no-shared-prefix", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("overrides", nargs="*", help="overrides, e.g. train.fsdp_reduce_every_micro_batch=false")
    args = parser.parse_args(argv)
    if os.environ.get(MMAP_THRESHOLD_ENV) is None:  # glibc reads it at start-up: run again with it set
        os.execve(sys.executable, [sys.executable, "-m", "spell.plan.measure", *(argv or sys.argv[1:])],
                  {**os.environ, MMAP_THRESHOLD_ENV: "65536"})
    import torch

    from spell.rl import distributed

    torch.set_num_threads(args.threads)
    distributed.init_distributed("cpu")  # under torchrun: FSDP2 over the ranks, the plan for that many
    try:
        for checkpointing in {"off": [False], "on": [True], "both": [False, True]}[args.checkpointing]:
            cfg = measured_config(args.model, args.prompt, args.completion, args.group, checkpointing,
                                  not args.no_shared_prefix, *args.overrides)
            result = {"checkpointing": checkpointing, "overrides": args.overrides,
                      **measure_update(cfg, args.groups)}
            sys.stdout.write(json.dumps(result) + "\n")
            gc.collect()
    finally:
        distributed.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
