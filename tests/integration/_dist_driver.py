"""Worker script for test_distributed.py, launched by ``python -m torch.distributed.run --nproc_per_node 2``.

Each rank builds a Trainer (FSDP2 over the 2 gloo ranks) with the scripted fake engine (real tiny Qwen2, real
update). Run ``full`` makes steps 1-4 uninterrupted; a spy on ``update_policy`` empties rank 1's batch at step 2
and every batch at step 3. Run ``split`` makes steps 1-2, then a second Trainer in the same processes resumes it
(global RNGs scrambled first) and makes steps 3-4. Each rank saves to ``{out}/rank{r}.pt``: every update's batch
and the FULL (gathered) gradients the optimizer stepped on, full parameters after each step, the elements of
its own parameter shards, AdamW moments at step 2, metrics, and its own state at the end of step 2 and right
after the resume.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import torch

from spell.rl import distributed
from spell.rl.sharding import full_tensor
from tests.integration.test_trainer import make_cfg, make_trainer

EMPTY_RANKS_AT_STEP = {2: {1}, 3: {0, 1}}  # step -> ranks whose batch is dropped before the update
OVERRIDES = ("data.questions_per_round=3", "logging.dump_samples_every=1", "train.keep_last_checkpoints=5")


def local_state(trainer) -> dict:
    """This rank's state as the checkpoint stores it, with the torch generator instead of the JSON RNGs."""
    state = trainer.rank_state()
    state.pop("rng", None)
    state["torch_rng"] = torch.get_rng_state()
    return state


def full_params(trainer) -> dict:
    return {n: full_tensor(p).detach().clone() for n, p in trainer.model.named_parameters()}


def instrument(trainer, rank: int, record: dict) -> None:
    """Record each step's (possibly emptied) batch, the gathered gradients and the parameters after it."""
    update = trainer.update_policy
    current = {}

    def spy(samples):
        step = current["step"] = current.get("step", trainer.start_step) + 1
        record["batches"][step] = [] if rank in EMPTY_RANKS_AT_STEP.get(step, set()) else list(samples)
        stats = update(record["batches"][step])
        record["params"][step] = full_params(trainer)
        return stats

    def grab(optimizer, args, kwargs):
        record["grads"][current["step"]] = {n: full_tensor(p.grad).detach().clone()
                                            for n, p in trainer.model.named_parameters()}

    trainer.update_policy = spy
    trainer.optimizer.register_step_pre_hook(grab)


def adam_moments(trainer) -> dict:
    """Full exp_avg of every parameter (gathered), keyed by name."""
    return {n: full_tensor(trainer.optimizer.state[p]["exp_avg"]).clone() for n, p in trainer.model.named_parameters()}


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("--corpus", "--policy", "--out"):
        parser.add_argument(name, required=True)
    args = parser.parse_args()
    info = distributed.init_distributed("cpu")
    out = Path(args.out)
    result = {"rank": info.rank, "world_size": info.world_size, "backend": info.backend}

    full = {"batches": {}, "grads": {}, "params": {}}
    trainer = make_trainer(make_cfg(args.corpus, args.policy, out / "full", "train.max_steps=4", *OVERRIDES))
    full["params"][0] = full_params(trainer)
    result["local_numel"] = sum(p.to_local().numel() for p in trainer.model.parameters())
    result["total_numel"] = sum(p.numel() for p in trainer.model.parameters())
    instrument(trainer, info.rank, full)
    full["metrics"] = trainer.train()
    result["full"] = full

    split = {"batches": {}, "grads": {}, "params": {}}
    first = make_trainer(make_cfg(args.corpus, args.policy, out / "split", "train.max_steps=2", *OVERRIDES))
    instrument(first, info.rank, split)
    first.train()
    split["state_at_2"] = local_state(first)
    split["adam_at_2"] = adam_moments(first)
    torch.manual_seed(1000 + info.rank)  # a resume must bring every generator back, not inherit it
    random.seed(1000 + info.rank)
    resumed = make_trainer(make_cfg(args.corpus, args.policy, out / "split", "train.max_steps=4", *OVERRIDES),
                           out / "split" / "checkpoints" / "step_000002")
    split["resumed_state"] = local_state(resumed)
    split["start_step"] = resumed.start_step
    instrument(resumed, info.rank, split)
    split["metrics"] = resumed.train()
    result["split"] = split
    torch.save(result, out / f"rank{info.rank}.pt")
    distributed.cleanup()


if __name__ == "__main__":
    main()
