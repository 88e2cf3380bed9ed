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


def write_run_summary(output_dir: Path, console: Console | None = None, extra: dict | None = None) -> Path | None:
    """Print the summary table and write ``curves.png``; returns the plot path (None without metrics)."""
    path = output_dir / "metrics.jsonl"
    rows = read_metrics(path) if path.exists() else []
    if not rows:
        return None
    table = Table(title=f"SPELL run summary ({len(rows)} steps, {output_dir})")
    for column in ("metric", f"step {rows[0]['step']}", f"step {rows[-1]['step']}"):
        table.add_column(column)
    for key in SUMMARY_KEYS:
        table.add_row(key, f"{_value(rows[0], key):.4g}", f"{_value(rows[-1], key):.4g}")
    for key, (before, after) in (extra or {}).items():
        table.add_row(key, f"{before:.4g}", f"{after:.4g}")
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
