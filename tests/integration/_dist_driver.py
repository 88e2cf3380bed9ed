"""Worker script for test_distributed.py, launched by ``python -m torch.distributed.run --nproc_per_node 2``.

Each rank builds a Trainer with the scripted fake engine (real tiny Qwen2, real update) in the gloo group and
runs steps 1-3; a spy on ``update_policy`` empties rank 1's batch at step 2 and every batch at step 3. Then a
second Trainer in the same processes resumes from the step-3 checkpoint (global RNGs scrambled first) and runs
step 4. Each rank saves what it saw to ``{out}/rank{r}.pt``: every update's batch and the gradients the
optimizer stepped on, parameters, metrics, and its own state at the end of run 1 and right after the resume.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import torch

from spell.rl import distributed
from tests.integration.test_trainer import make_cfg, make_trainer

EMPTY_RANKS_AT_STEP = {2: {1}, 3: {0, 1}}  # step -> ranks whose batch is dropped before the update
OVERRIDES = ("data.questions_per_round=3", "logging.dump_samples_every=1", "train.keep_last_checkpoints=5")


def local_state(trainer) -> dict:
    """This rank's state as the checkpoint stores it, with the torch generator instead of the JSON RNGs."""
    state = trainer.rank_state()
    state.pop("rng", None)
    state["torch_rng"] = torch.get_rng_state()
    return state


def instrument(trainer, rank: int, batches: dict, grads: dict) -> None:
    """Record each step's (possibly emptied) batch and the summed gradients the optimizer steps on."""
    update = trainer.update_policy
    current = {}

    def spy(samples):
        step = trainer.start_step + sum(s > trainer.start_step for s in batches) + 1
        current["step"] = step
        batches[step] = [] if rank in EMPTY_RANKS_AT_STEP.get(step, set()) else list(samples)
        return update(batches[step])

    def grab(optimizer, args, kwargs):
        grads[current["step"]] = {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters()}

    trainer.update_policy = spy
    trainer.optimizer.register_step_pre_hook(grab)


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("--corpus", "--policy", "--out"):
        parser.add_argument(name, required=True)
    args = parser.parse_args()
    info = distributed.init_distributed("cpu")
    run_dir = Path(args.out) / "run"
    batches, grads, params = {}, {}, {}
    first = make_trainer(make_cfg(args.corpus, args.policy, run_dir, "train.max_steps=3", *OVERRIDES))
    params[0] = {n: p.detach().clone() for n, p in first.model.named_parameters()}
    instrument(first, info.rank, batches, grads)
    metrics = {3: first.train()}
    params[3] = {n: p.detach().clone() for n, p in first.model.named_parameters()}
    final_state = local_state(first)

    torch.manual_seed(1000 + info.rank)  # a resume must bring every generator back, not inherit it
    random.seed(1000 + info.rank)
    resumed = make_trainer(make_cfg(args.corpus, args.policy, run_dir, "train.max_steps=4", *OVERRIDES), run_dir)
    resumed_state = local_state(resumed)
    instrument(resumed, info.rank, batches, grads)
    metrics[4] = resumed.train()
    params[4] = {n: p.detach().clone() for n, p in resumed.model.named_parameters()}
    torch.save({"rank": info.rank, "world_size": info.world_size, "backend": info.backend, "batches": batches,
                "grads": grads, "params": params, "metrics": metrics, "final_state": final_state,
                "resumed_state": resumed_state, "start_step": resumed.start_step},
               Path(args.out) / f"rank{info.rank}.pt")
    distributed.cleanup()


if __name__ == "__main__":
    main()
