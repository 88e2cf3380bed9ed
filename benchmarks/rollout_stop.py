"""Self-play rollouts of the built-in default with finished rows dropped from the decode batch vs kept computing.

A generation round (questioner, grounding, responder and verifier rollouts: ``spell.selfplay.run_generation_round``)
of the ``builtin`` preset, on the shipped policy and world, run twice on the same document sets from the same
random state: with the HF engine's ``drop_finished=True`` (default: a row that drew its eos leaves the forward
passes once a quarter of the batch has finished) and ``False`` (the baseline: every row of a batch is computed
until the longest one stops). The variants alternate in this process (A/B interleaved, the order reversed every
round) after a warm-up round; each round draws new document sets. Reported per stage: total seconds over the
rounds and the baseline / drop ratio; and whether both variants produced the same questions, answers and votes
(they draw the same tokens; only the rows' floating-point rounding may differ).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/rollout_stop.py --rounds 3   # the preset's batches (24)
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/rollout_stop.py --rounds 3 --batch-prompts 8 \
        --out benchmarks/results/rollout_stop_bp8.json                            # the batches of 8 before
Writes benchmarks/results/rollout_stop.json (or --out); the last line is
``rollout_stop: speedup=… questioner=… same=…``.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("questioner_generate", "grounding", "responder_generate", "verifier_generate")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="timed rounds per variant after one warm-up round")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-prompts", type=int, help="engine.max_batch_prompts (default: the preset's)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "rollout_stop.json"))
    return parser.parse_args(argv)


def outputs(records) -> list:
    """What a round produced, per record: its questioner text, status, the responses' and the verdicts' texts."""
    text = lambda completion: None if completion is None else completion.text  # noqa: E731
    return [(text(r.completion), r.status, [text(c) for c in r.responses],
             [[text(c) for c in votes] for votes in r.verdict_completions]) for r in records]


def timed_round(trainer, docsets, drop: bool, seed: int) -> tuple[dict[str, float], list]:
    """One generation round on ``docsets`` from the random state ``seed``; its stage times and outputs."""
    from spell.rl.metrics import pop_timings
    from spell.selfplay import run_generation_round

    trainer.engine.drop_finished = drop
    trainer.ctx.rng.seed(seed)
    torch.manual_seed(seed)
    pop_timings()
    start = time.perf_counter()
    records = run_generation_round(docsets, trainer.ctx)
    timings = pop_timings()
    times = {stage: timings.get(f"timing/{stage}_s", 0.0) for stage in STAGES}
    times["total"] = time.perf_counter() - start
    return times, outputs(records)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from spell.builtin.defaults import apply_builtin_defaults
    from spell.config import load_config
    from spell.experience import draw_round
    from spell.trainer import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        cfg = apply_builtin_defaults(load_config("builtin", [f"output_dir={tmp}/run", "eval.heldout_files=[]",
                                                             f"train.seed={args.seed}", "logging.progress=false"]))
        trainer = Trainer(cfg)
        trainer.engine.max_batch_prompts = args.batch_prompts or cfg.engine.max_batch_prompts
        totals = {drop: dict.fromkeys((*STAGES, "total"), 0.0) for drop in (True, False)}
        same, rounds = True, []
        for index in range(args.rounds + 1):  # round 0 warms up
            docsets = draw_round(trainer.sampler, trainer.ctx)
            order = (True, False) if index % 2 else (False, True)
            results = {drop: timed_round(trainer, docsets, drop, args.seed + index) for drop in order}
            same &= results[True][1] == results[False][1]
            if index:
                for drop in (True, False):
                    for stage, seconds in results[drop][0].items():
                        totals[drop][stage] += seconds
                rounds.append({str(drop): results[drop][0] for drop in (True, False)})
    ratio = {stage: totals[False][stage] / totals[True][stage] for stage in totals[True] if totals[True][stage] > 0}
    payload = {
        "rounds": args.rounds, "threads": args.threads, "seed": args.seed,
        "max_batch_prompts": trainer.engine.max_batch_prompts, "machine": platform.processor(),
        "torch": torch.__version__, "seconds_drop": totals[True], "seconds_keep": totals[False],
        "speedup": ratio, "same_outputs": same, "per_round": rounds,
    }
    Path(args.out).write_text(json.dumps(payload, indent=2) + "\n")
    for stage in (*STAGES, "total"):
        print(f"{stage:20s} keep {totals[False][stage]:7.1f} s   drop {totals[True][stage]:7.1f} s   "
              f"x{ratio.get(stage, float('nan')):.2f}")
    print(f"rollout_stop: speedup={ratio['total']:.2f} questioner={ratio['questioner_generate']:.2f} same={same}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
