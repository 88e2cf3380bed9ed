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
    (console or Console()).print(table)
    return plot_curves(rows, output_dir / "curves.png")


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
