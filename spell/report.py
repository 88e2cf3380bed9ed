"""End-of-run summary: a table of the first and last values of the key metrics and a PNG of their curves."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from rich.console import Console
from rich.table import Table

logger = logging.getLogger(__name__)

SUMMARY_KEYS = (
    "heldout/accuracy", "heldout/doc_general_qa", "heldout/docmath_qa", "heldout/doc_mc",
    "questioner/valid_rate", "questioner/bad_format_rate", "questioner/bad_ground_rate",
    "questioner/zero_variance_rate", "questioner/dropped_rate", "responder/reward_mean",
    "responder/num_groups", "verifier/agreement_with_rule", "verifier/invalid_rate",
    "memory/size", "train/loss", "train/entropy", "train/num_sequences",
)


def read_metrics(path: Path) -> list[dict]:
    """The rows of a metrics.jsonl (a truncated last line is ignored)."""
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _value(row: dict, key: str) -> float:
    value = row.get(key)
    return math.nan if value is None else float(value)


def write_run_summary(output_dir: Path, console: Console | None = None) -> Path | None:
    """Print the summary table and write ``curves.png``; returns the plot path (None without metrics)."""
    path = output_dir / "metrics.jsonl"
    rows = read_metrics(path) if path.exists() else []
    if not rows:
        return None
    table = Table(title=f"SPELL run summary (steps {rows[0]['step']}-{rows[-1]['step']}, {output_dir})")
    for column in ("metric", "first (step)", "last (step)"):
        table.add_column(column)
    for key in SUMMARY_KEYS:
        seen = [(r["step"], _value(r, key)) for r in rows if r.get(key) is not None]
        if seen:
            (first_step, first), (last_step, last) = seen[0], seen[-1]
            table.add_row(key, f"{first:.4g} ({first_step})", f"{last:.4g} ({last_step})")
    console = console or Console()
    console.print(table)
    change = heldout_change(output_dir)
    if change:
        console.print(format_heldout_change(change))
    truth = truth_accuracies(output_dir, rows[-1]["step"])
    if truth:
        console.print(truth)
    return plot_curves(rows, output_dir / "curves.png")


def _read_scores(path: Path) -> dict[str, dict]:
    return {row["id"]: row for row in map(json.loads, path.read_text(encoding="utf-8").splitlines())}


def heldout_change(output_dir: Path) -> dict | None:
    """The paired held-out change between the first and the last evaluation (``heldout/step_*.jsonl``): overall
    and per task, ``(delta, standard error, 95% low, 95% high)`` in points, over the questions both scored."""
    from spell.heldout import paired_bootstrap

    files = sorted((output_dir / "heldout").glob("step_*.jsonl"))
    if len(files) < 2:
        return None
    first, last = _read_scores(files[0]), _read_scores(files[-1])
    shared = [key for key in first if key in last]
    if not shared:
        return None
    groups = {"all": shared}
    for key in shared:
        groups.setdefault(first[key]["task"], []).append(key)
    out = {"from_step": int(files[0].stem.split("_")[1]), "to_step": int(files[-1].stem.split("_")[1]), "tasks": {}}
    for name, keys in groups.items():
        before, after = [first[k]["score"] for k in keys], [last[k]["score"] for k in keys]
        stats = paired_bootstrap(before, after)
        out["tasks"][name] = {"questions": len(keys), "before": 100 * sum(before) / len(keys),
                              "after": 100 * sum(after) / len(keys), **dict(zip(("delta", "se", "low", "high"),
                                                                              (100 * v for v in stats)))}
    return out


def format_heldout_change(change: dict) -> str:
    """One line per task: ``held-out T (step a -> b): x% -> y% (+d points, SE s, 95% CI [l, h], n questions)``."""
    lines = []
    for name, t in change["tasks"].items():
        verdict = "learned" if t["low"] > 0 else ("got worse" if t["high"] < 0 else "no significant change")
        interval = f"95% CI [{t['low']:+.1f}, {t['high']:+.1f}]"
        lines.append(f"held-out {name} (step {change['from_step']} -> {change['to_step']}): {t['before']:.1f}% -> "
                     f"{t['after']:.1f}% ({t['delta']:+.1f} points, SE {t['se']:.1f}, {interval}, "
                     f"{t['questions']} questions): {verdict}")
    return "\n".join(lines)


def truth_accuracies(output_dir: Path, last_step: int, window: int = 3) -> Table | None:
    """For a run on the built-in world with sample dumps: each role's accuracy by the world's own facts over the
    first and the last ``window`` steps (:mod:`spell.builtin.diagnose`); None otherwise."""
    world = _builtin_world(output_dir)
    if world is None or not (output_dir / "samples").is_dir():
        return None
    from spell.builtin.diagnose import diagnose_run

    windows = [(1, min(window, last_step)), (max(1, last_step - window + 1), last_step)]
    report = diagnose_run(output_dir, world, windows)
    columns = {"valid_rate": "valid", "solver_parsed_rate": "known", "reference_true": "reference",
               "responder_true": "responder", "verifier_true": "verifier", "reward_true": "reward",
               "responder_matches_wrong_ref": "agree wrong ref",
               "questioner_reward_true_ref": "paid true ref", "questioner_reward_wrong_ref": "paid wrong ref"}
    table = Table(title="how often each role is right by the world's facts (all tasks; known = questions the world "
                        "can answer, the rest are over those; agree wrong ref = responses matching a wrong "
                        "reference; paid = mean questioner reward for a true / wrong reference)")
    table.add_column("steps")
    for header in columns.values():
        table.add_column(header)
    for name, by_task in report.items():
        row = by_task.get("all", {})
        table.add_row(name.removeprefix("steps "), *("-" if row.get(k) is None else f"{row[k]:.2f}" for k in columns))
    return table


def _builtin_world(output_dir: Path) -> Path | None:
    """The built-in world folder a run trained on (from its config.yaml), or None."""
    import yaml

    config = output_dir / "config.yaml"
    if not config.exists():
        return None
    files = (yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("data", {}).get("train_files") or []
    folder = Path(files[0]).parent if files else None
    manifest = folder / "manifest.json" if folder else None
    if manifest is None or not manifest.exists():
        return None
    return folder if json.loads(manifest.read_text(encoding="utf-8")).get("generator") == "spell.world" else None


def plot_curves(rows: list[dict], out: Path) -> Path:
    """One small panel per summary metric over steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in SUMMARY_KEYS if any(r.get(k) is not None for r in rows)]
    cols = 4
    nrows = max(1, math.ceil(len(keys) / cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 2.6 * nrows), squeeze=False)
    steps = [r["step"] for r in rows]
    for ax, key in zip(axes.flat, keys):
        ax.plot(steps, [_value(r, key) for r in rows], marker="o", markersize=3)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
