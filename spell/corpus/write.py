"""Outputs of ``spell data build``: the document sets and the report.

``docsets.jsonl`` and ``docsets.parquet`` hold the same rows in the corpus schema ``spell train`` reads
(:mod:`spell.data`): ``id``, ``documents``, ``task``, ``source``, plus ``origins`` (where each document came
from, ``file``, ``file:line`` or ``file:row N``; ignored by training). Both are written as a stream, and
their bytes depend only on the input and the options. ``report.json`` / ``report.md`` say what each stage
kept and removed; ``cluster_sizes.png`` and ``set_tokens.png`` are histograms of the sets.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

DOCSETS_JSONL = "docsets.jsonl"
DOCSETS_PARQUET = "docsets.parquet"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
SIZES_PNG = "cluster_sizes.png"
TOKENS_PNG = "set_tokens.png"
PARQUET_ROWS_PER_GROUP = 256


def write_docsets(folder: Path, rows: Iterable[dict]) -> int:
    """Write ``rows`` (dicts with id, documents, task, source, origins) to both files; returns the row count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("id", pa.string()), ("documents", pa.list_(pa.string())), ("task", pa.string()),
                        ("source", pa.string()), ("origins", pa.list_(pa.string()))])
    count = 0
    batch: list[dict] = []
    with (folder / DOCSETS_JSONL).open("w", encoding="utf-8") as jsonl, \
            pq.ParquetWriter(folder / DOCSETS_PARQUET, schema) as parquet:
        for row in rows:
            jsonl.write(json.dumps(row, ensure_ascii=False) + "\n")
            batch.append(row)
            if len(batch) == PARQUET_ROWS_PER_GROUP:
                parquet.write_table(pa.Table.from_pylist(batch, schema=schema))
                batch = []
            count += 1
        if batch:
            parquet.write_table(pa.Table.from_pylist(batch, schema=schema))
    return count


def write_report(folder: Path, report: dict, set_sizes: np.ndarray, set_tokens: np.ndarray) -> None:
    """``report.json``, ``report.md`` and the two histogram PNGs."""
    (folder / REPORT_JSON).write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    (folder / REPORT_MD).write_text(render_markdown(report), encoding="utf-8")
    _histogram(set_sizes, folder / SIZES_PNG, "documents per set", integer_bins=True)
    _histogram(set_tokens, folder / TOKENS_PNG, f"tokens per set ({report['sets']['token_counter']})",
               integer_bins=False)


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def _stage_rows(report: dict) -> list[str]:
    lines = ["| stage | in | out | removed |", "|---|---|---|---|"]
    for stage in report["stages"]:
        removed = ", ".join(f"{reason} {count:,}" for reason, count in stage["removed"].items() if count) or "-"
        lines.append(f"| {stage['stage']} | {stage['in']:,} | {stage['out']:,} | {removed} |")
    return lines


def _benchmark_rows(report: dict) -> list[str]:
    benchmarks = report["decontamination"]["benchmarks"]
    if not benchmarks:
        return ["No `--exclude` files: no decontamination."]
    lines = ["| benchmark | documents indexed | training documents removed |", "|---|---|---|"]
    lines += [f"| {name} | {row['documents']:,} | {row['removed']:,} |" for name, row in benchmarks.items()]
    return lines


def _example_rows(report: dict) -> list[str]:
    lines = []
    for reason, examples in report["examples"].items():
        for example in examples:
            detail = ", ".join(f"{key} {value}" for key, value in example.items() if key != "removed")
            lines.append(f"- {reason}: `{example['removed']}` ({detail})")
    return lines or ["None removed."]


def render_markdown(report: dict) -> str:
    """The human-readable report."""
    sets = report["sets"]
    docs, tokens, clustering = sets["documents"], sets["tokens"], report["clustering"]
    lines = [
        "# spell data build report", "",
        f"{report['inputs']['files']:,} input file(s), {report['inputs']['documents']:,} documents -> "
        f"**{sets['count']:,} document sets** with {docs['total']:,} documents (seed {report['options']['seed']}).",
        "", "## Stages", "", *_stage_rows(report),
        "", "## Decontamination", "", *_benchmark_rows(report),
        "", "## Removed documents (first examples)", "", *_example_rows(report),
        "", "## Document sets", "",
        "Tasks: " + ", ".join(f"{task} {count:,}" for task, count in sets["per_task"].items()) + ".",
        f"Documents per set: min {docs['min']}, mean {_number(docs['mean'])}, max {docs['max']}. "
        f"Tokens per set ({sets['token_counter']}): min {tokens['min']:,}, mean {_number(tokens['mean'])}, "
        f"max {tokens['max']:,}.",
        f"Clustering ({clustering['features']}): {clustering['kmeans_splits']:,} k-means splits, "
        f"{clustering['packed_clusters']:,} clusters packed in order, {clustering['merged_sets']:,} small sets "
        f"merged, {clustering['dropped_sets']:,} dropped ({clustering['dropped_documents']:,} documents).",
        "", f"Use it: `spell validate --config CONFIG {report['train_overrides']}`, then `spell train` with the same "
        "arguments.",
        "", f"![documents per set]({SIZES_PNG}) ![tokens per set]({TOKENS_PNG})",
        "", "## Time", "", "| stage | wall s | CPU s |", "|---|---|---|",
        *(f"| {stage} | {wall:.2f} | {report['cpu_s'][stage]:.2f} |" for stage, wall in report["timing_s"].items()),
    ]
    return "\n".join(lines) + "\n"


def _histogram(values: np.ndarray, path: Path, xlabel: str, integer_bins: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    if len(values):
        bins = np.arange(values.min(), values.max() + 2) - 0.5 if integer_bins else min(40, max(1, len(values)))
        ax.hist(values, bins=bins, color="C0", edgecolor="white")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("document sets")
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
