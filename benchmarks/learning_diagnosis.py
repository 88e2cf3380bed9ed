"""Truth accuracies of a self-play run on the built-in world, per role and task, early vs late (issue 12).

Reads a run's sample dumps (``samples/step_*.jsonl``, on by default in the ``builtin`` preset) and judges every
question, reference, response and vote by the world's own facts (:mod:`spell.builtin.diagnose`).

    .venv/bin/python benchmarks/learning_diagnosis.py runs/builtin --windows 1-3 18-20
Writes benchmarks/results/learning_diagnosis.json and prints one markdown table per window.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ("questioner_samples", "answered_rate", "valid_rate", "valid_rate_without_history",
           "valid_rate_with_history", "solver_parsed_rate", "reference_true", "responder_true",
           "responder_matches_reference", "responder_matches_wrong_ref", "valid_rate_true_ref",
           "valid_rate_wrong_ref",
           "verifier_true", "verifier_yes_on_wrong", "verifier_yes_on_right",
           "reward_true")


def markdown(report: dict) -> str:
    lines = []
    for window, by_task in report.items():
        lines += [f"### {window}", "", "| task | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
        for task, row in by_task.items():
            cells = ["-" if row.get(c) is None else (str(row[c]) if c == "questioner_samples" else f"{row[c]:.2f}")
                     for c in COLUMNS]
            lines.append(f"| {task} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from spell.builtin.diagnose import diagnose_run
    from spell.report import _builtin_world

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--windows", nargs="+", default=["1-3", "18-20"], help="step ranges FIRST-LAST")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "learning_diagnosis.json")
    args = parser.parse_args(argv)
    world = _builtin_world(args.run)
    if world is None:
        raise SystemExit(f"{args.run}: not a run on the built-in world (its config.yaml names no spell.world corpus)")
    windows = [tuple(int(x) for x in w.split("-")) for w in args.windows]
    report = diagnose_run(args.run, world, windows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"run": str(args.run), "world": str(world), "report": report}, indent=1) + "\n")
    print(markdown(report))


if __name__ == "__main__":
    main()
