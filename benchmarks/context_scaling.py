"""SPELL step time against context length, with the same work at every length, and where a step's time goes.

For each target length the built-in world is generated with document sets of about that many tokens
(``spell world build --target-tokens``, filler text between the facts), then the ``builtin`` preset (shipped
tiny policy, real HF engine) runs --steps self-play steps on it in this process, with small round sizes
(--questions prompts, one round, general QA only). The work must not depend on the tiny policy's skill, which
collapses on long contexts, so the benchmark patches three things (and only these): every role generates its
full ``max_new_tokens`` (the engine's stop ids are cleared), every questioner output parses as one fixed
question, and rule scores are a seeded coin per answer (every group has reward variance, so every group
trains); the grounding filter is off. Reported per length: the median step time (steps after the first) and
the per-stage ``timing/*`` means; across lengths the exponent b of ``time = a * tokens^b`` (least squares on
log-log). The shipped policy's positions stop at 4,096 (RoPE runs beyond; the answers do not matter here).

    .venv/bin/python benchmarks/context_scaling.py            # responder prompts of about 1K, 2K, 4K and 8K tokens
Writes benchmarks/results/context_scaling.{json,png}; the last line is ``context_scaling: exponent=X.XX ...``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[512, 1024, 2048, 4096],
                        help="world --target-tokens values (the responder prompt, all documents, is about twice)")
    parser.add_argument("--steps", type=int, default=3, help="steps per length; the first is not timed")
    parser.add_argument("--questions", type=int, default=6, help="questioner prompts per step (one round)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "context_scaling.json"))
    return parser.parse_args(argv)


def fit_exponent(xs: list[float], ys: list[float]) -> float:
    """Slope b of log y = log a + b log x (least squares).

    >>> round(fit_exponent([1, 2, 4], [3, 6, 12]), 6)
    1.0
    """
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def run_length(tokens: int, args: argparse.Namespace, work: Path) -> dict:
    from spell.builtin.defaults import apply_builtin_defaults
    from spell.builtin.world.build import build_world
    from spell.config import load_config
    from spell.trainer import Trainer

    world = build_world(work / f"world_{tokens}", seed=0, num_train_sets=24, num_heldout_sets=2,
                        target_tokens=tokens)
    cfg = apply_builtin_defaults(load_config("builtin", [
        "data.tasks=[doc_general_qa]", "verifier.tasks=[doc_general_qa]", f"data.questions_per_round={args.questions}",
        "train.max_rounds=1", f"train.batch_groups={args.questions}", "grounding.enable=false",
        f"data.train_files=[{world.train}]", "eval.heldout_files=[]", f"output_dir={work / f'run_{tokens}'}",
        f"train.max_steps={args.steps}", f"data.max_prompt_tokens={4 * tokens}", "logging.progress=false",
        "logging.dump_samples_every=0", "train.save_every_steps=1000"]))
    trainer = Trainer(cfg)
    trainer.engine.eos_token_ids = frozenset()  # fixed-length rollouts: the same tokens at every length
    rows = []
    for step in range(1, args.steps + 1):
        rows.append(trainer.train_step(step))
    timed = rows[1:] or rows
    total = [sum(v for k, v in r.items() if k.startswith("timing/")) for r in timed]
    stages = sorted({k for r in timed for k in r if k.startswith("timing/")})
    result = {"tokens": tokens, "step_s": statistics.median(total),
              "stages_s": {k: statistics.fmean(r.get(k, 0.0) for r in timed) for k in stages},
              "prompt_tokens_mean": statistics.fmean(r.get("responder/prompt_tokens_mean", math.nan) for r in timed),
              "trained_sequences": [r.get("train/num_sequences", 0) for r in timed]}
    print(json.dumps(result), flush=True)
    return result


def fix_the_work() -> None:
    """Benchmark patches (see the module docstring): one fixed question, a seeded coin as the rule score."""
    import random

    import spell.selfplay as selfplay
    from spell.types import Question, TaskType

    coin = random.Random(0)
    selfplay.parse_question = lambda *args, **kwargs: Question(TaskType.DOC_GENERAL_QA, "Who runs the company?",
                                                               "Mira Tessel")
    selfplay.rule_score = lambda *args: float(coin.random() < 0.5)


def plot(rows: list[dict], exponent: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    x = [r["prompt_tokens_mean"] for r in rows]
    ax.plot(x, [r["step_s"] for r in rows], marker="o", label=f"step (exponent {exponent:.2f})")
    for stage in rows[0]["stages_s"]:
        ax.plot(x, [r["stages_s"].get(stage, 0.0) for r in rows], linestyle="--", label=stage.removeprefix("timing/"))
    ax.set(xscale="log", yscale="log", xlabel="responder prompt tokens (all documents)", ylabel="seconds",
           title="SPELL step time vs context (builtin preset, CPU)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    import torch

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    fix_the_work()
    with tempfile.TemporaryDirectory() as work:
        rows = [run_length(t, args, Path(work)) for t in args.tokens]
    # x = the measured responder prompt (all documents of a set), the longest prompt of a step
    exponent = fit_exponent([r["prompt_tokens_mean"] for r in rows], [r["step_s"] for r in rows])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "rows": rows, "exponent": exponent}, indent=1) + "\n")
    plot(rows, exponent, out.with_suffix(".png"))
    largest = max(rows[-1]["stages_s"], key=rows[-1]["stages_s"].get)
    print(f"context_scaling: exponent={exponent:.2f} step@{rows[-1]['prompt_tokens_mean']:.0f}="
          f"{rows[-1]['step_s']:.1f}s largest={largest}")


if __name__ == "__main__":
    main()
