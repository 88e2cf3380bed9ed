"""Evaluation reports: ``results.json``, a markdown table shaped like the paper's Table 1, a pass@k plot.

The markdown leads with one Table 1 row (DocMath / Frames / LB-MQA / LB-V2 / Avg., avg@n in percent,
spec §10.1), then per-benchmark and per-length-bucket tables with avg@n and pass@k. With ``--compare``
the other run's row is added and the Avg. gain shown as "(+x)"; its pass@k curves are overlaid dashed
on the plot (Fig. 3 style: pass@k against k, one line per benchmark plus the 4-column average).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from spell.evaluate.metrics import PAPER_COLUMNS, PASS_KS, metric_keys

RESULTS_FILE = "results.json"
MARKDOWN_FILE = "results.md"
PLOT_FILE = "passk.png"


class ResultsFileError(ValueError):
    """A ``--compare`` results file that is missing or not a results.json."""


def write_results(path: str | Path, results: Mapping) -> Path:
    """Write ``results`` as indented JSON; returns the path."""
    path = Path(path)
    path.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def load_results(path: str | Path) -> dict:
    """Read a results.json (``--compare``); a folder means its results.json.

    Raises:
        ResultsFileError: missing file, invalid JSON or no ``average`` entry.
    """
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResultsFileError(f"--compare {path}: file not found; point at another run's results.json") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ResultsFileError(f"--compare {path}: not readable JSON ({err}); use a results.json") from None
    if not isinstance(results, dict) or not isinstance(results.get("average"), dict):
        raise ResultsFileError(f"--compare {path}: no 'average' entry; is it a results.json from `spell eval`?")
    return results


def benchmark_rows(results: Mapping) -> dict[str, dict]:
    """The per-benchmark entries of a results dict (everything except ``average``)."""
    return {name: row for name, row in results.items() if name != "average" and isinstance(row, dict)}


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _table_columns(results: Mapping, compare: Mapping | None) -> list[str]:
    columns = [name for name, _ in PAPER_COLUMNS]
    present = set(results["average"].get("columns", {}))
    if compare is not None:
        present |= set(compare["average"].get("columns", {}))
    if not present & set(columns):
        return sorted(present)
    return columns


def _table1_row(label: str, results: Mapping, columns: list[str], gain: float | None) -> str:
    average = results["average"]
    cells = [_pct(average.get("columns", {}).get(column, {}).get("avg@n")) for column in columns]
    avg = f"**{_pct(average.get('avg@n'))}**"
    if gain is not None:
        avg += f" ({gain:+.1f})"
    return "| " + " | ".join([label, *cells, avg]) + " |"


def render_markdown(
    results: Mapping, label: str, compare: Mapping | None = None, compare_label: str = "compare", note: str = ""
) -> str:
    """The results as markdown: a Table 1 row (+ the compare row), then per-benchmark and per-bucket tables.

    Args:
        results: this run's results (see :func:`spell.evaluate.metrics.summarize`).
        label: this run's model name.
        compare: another run's results, or None.
        compare_label: its name.
        note: one line of run settings printed under the title.

    Returns:
        The markdown text.
    """
    columns = _table_columns(results, compare)
    lines = [f"# Evaluation: {label}", ""]
    if note:
        lines += [note, ""]
    lines += ["| Model | " + " | ".join([*columns, "Avg."]) + " |", "|---" * (len(columns) + 2) + "|"]
    if compare is not None:
        lines.append(_table1_row(compare_label, compare, columns, None))
    gain = None
    if compare is not None and "avg@n" in results["average"] and "avg@n" in compare["average"]:
        # The gain of the printed (rounded) numbers, as Table 1 does: 40.6 - 26.7 = +13.9.
        gain = round(100 * results["average"]["avg@n"], 1) - round(100 * compare["average"]["avg@n"], 1)
    lines.append(_table1_row(label, results, columns, gain))
    if not results["average"].get("complete", False):
        lines += ["", "Avg. = mean of the columns present (not all of the paper's benchmarks were run)."]
    keys = ["avg@n", *(f"pass@{k}" for k in PASS_KS)]
    lines += ["", "## Per benchmark (percent)", ""]
    lines += ["| Benchmark | Questions | n | " + " | ".join(keys) + " |", "|---" * (len(keys) + 3) + "|"]
    for name, row in benchmark_rows(results).items():
        cells = [_pct(row.get(key)) for key in keys]
        lines.append(f"| {name} | {row.get('num_questions', 0)} | {row.get('n', 0)} | " + " | ".join(cells) + " |")
    lines += ["", "## Per length bucket (percent)", ""]
    lines += ["| Benchmark | Bucket | Questions | " + " | ".join(keys) + " |", "|---" * (len(keys) + 3) + "|"]
    for name, row in benchmark_rows(results).items():
        for bucket, stats in row.get("buckets", {}).items():
            cells = [_pct(stats.get(key)) for key in keys]
            lines.append(f"| {name} | {bucket} | {stats.get('num_questions', 0)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _curve(metrics: Mapping) -> tuple[list[int], list[float]]:
    ks = [int(key.split("@")[1]) for key in metric_keys(metrics) if key.startswith("pass@")]
    return ks, [100 * metrics[f"pass@{k}"] for k in ks]


def plot_passk(
    results: Mapping, path: str | Path, label: str, compare: Mapping | None = None, compare_label: str = "compare"
) -> Path:
    """Plot pass@k (percent) against k: one line per benchmark and the average; ``compare`` dashed.

    Args:
        results: this run's results.
        path: the PNG to write.
        label: this run's name (legend).
        compare: another run's results to overlay, or None.
        compare_label: its name (legend).

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    runs = [(results, label, "-")] + ([(compare, compare_label, "--")] if compare is not None else [])
    names = list(benchmark_rows(results))
    if compare is not None:
        names += [name for name in benchmark_rows(compare) if name not in names]
    colors = {name: f"C{i % 10}" for i, name in enumerate([*names, "average"])}
    for run, run_label, style in runs:
        for name, metrics in [*benchmark_rows(run).items(), ("average", run["average"])]:
            ks, values = _curve(metrics)
            if ks:
                width = 2.5 if name == "average" else 1.5
                ax.plot(ks, values, style, marker="o", color=colors[name], lw=width, label=f"{name} ({run_label})")
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(PASS_KS), [str(k) for k in PASS_KS])
    ax.set_xlabel("k (samples)")
    ax.set_ylabel("pass@k (%)")
    ax.set_title("Unbiased pass@k")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
