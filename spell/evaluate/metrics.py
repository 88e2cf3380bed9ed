"""Evaluation metrics (spec §9.3): avg@n, unbiased pass@k (paper Eq. 11) and the paper's 4-column average.

Scores are per-sample 0/1 values grouped by question. avg@n is the mean over questions of the mean over
that question's samples (the paper's reported score). pass@k = 1 - C(n-c, k) / C(n, k) per question,
averaged over questions, for k in {1, 2, 4, 8} with k <= n (spec §11 item 19: not a bootstrap best-of-k).
The paper's Avg. is the mean of four columns, DocMath, Frames, LB-MQA (the mean of HotpotQA, 2Wiki and
MuSiQue) and LB-V2 (spec §9.1, §11 item 20: not the 6-task mean). All values are fractions in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

PASS_KS = (1, 2, 4, 8)
# Table 1 columns: (column name, benchmarks averaged into it).
PAPER_COLUMNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("DocMath", ("docmath",)),
    ("Frames", ("frames",)),
    ("LB-MQA", ("hotpotqa", "2wikimqa", "musique")),
    ("LB-V2", ("longbench_v2",)),
)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased probability that at least one of k samples drawn without replacement from n is correct.

    Args:
        n: samples drawn for the question.
        c: how many of them were correct (0 <= c <= n).
        k: the budget (1 <= k <= n).

    Returns:
        1 - C(n-c, k) / C(n, k).

    Example:
        >>> round(pass_at_k(8, 3, 2), 6)  # 1 - C(5,2)/C(8,2) = 1 - 10/28
        0.642857
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def group_metrics(score_groups: Sequence[Sequence[float]], ks: Sequence[int] = PASS_KS) -> dict[str, float]:
    """avg@n and pass@k over questions, each given as its list of 0/1 sample scores.

    Args:
        score_groups: one list of sample scores per question (a score counts as correct when >= 0.5).
        ks: the pass@k budgets to report; only k <= the smallest group size are kept.

    Returns:
        ``{"num_questions", "n", "avg@n", "pass@1", ...}``; ``n`` is the smallest number of samples of a
        question (all questions have the same n in a finished run). Empty input gives ``num_questions = 0``.

    Example:
        >>> group_metrics([[1, 0], [0, 0]])  # avg = (0.5 + 0) / 2; pass@2 = (1 + 0) / 2
        {'num_questions': 2, 'n': 2, 'avg@n': 0.25, 'pass@1': 0.25, 'pass@2': 0.5}
    """
    groups = [list(g) for g in score_groups if len(g) > 0]
    if not groups:
        return {"num_questions": 0, "n": 0}
    n_min = min(len(g) for g in groups)
    correct = [sum(1 for s in g if s >= 0.5) for g in groups]
    out: dict[str, float] = {"num_questions": len(groups), "n": n_min}
    out["avg@n"] = sum(c / len(g) for c, g in zip(correct, groups)) / len(groups)
    for k in ks:
        if k <= n_min:
            out[f"pass@{k}"] = sum(pass_at_k(len(g), c, k) for c, g in zip(correct, groups)) / len(groups)
    return out


def metric_keys(metrics: Mapping[str, float]) -> list[str]:
    """The averaged metric names present in a metrics dict (``avg@n``, ``pass@k`` ...), in report order."""
    return [key for key in ("avg@n", *(f"pass@{k}" for k in PASS_KS)) if key in metrics]


def _mean_of(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Per metric, the mean over rows that all have it (so pass@8 is dropped if one row has n < 8)."""
    keys = [key for key in metric_keys(rows[0]) if all(key in row for row in rows)]
    return {key: sum(row[key] for row in rows) / len(rows) for key in keys}


def paper_average(per_benchmark: Mapping[str, Mapping[str, float]]) -> dict:
    """The paper's Table 1 "Avg.": the mean of the four columns, each column's metrics averaged first.

    LB-MQA averages whichever of hotpotqa / 2wikimqa / musique were run. When none of the paper's
    benchmarks were run (e.g. only ``jsonl:`` files), each benchmark is its own column instead.

    Args:
        per_benchmark: ``{benchmark: group_metrics(...)}``.

    Returns:
        ``{"avg@n": .., "pass@k": .., "columns": {column: {metric: value}}, "missing": [column, ...],
        "complete": bool}``; ``complete`` is True only when all four paper columns (with all three
        LongBench QA sets) are present.

    Example:
        >>> rows = {"docmath": {"avg@n": 0.109}, "frames": {"avg@n": 0.279}, "hotpotqa": {"avg@n": 0.367},
        ...         "longbench_v2": {"avg@n": 0.312}}
        >>> round(paper_average(rows)["avg@n"], 5)  # (10.9 + 27.9 + 36.7 + 31.2) / 4 = 26.675
        0.26675
    """
    scored = {name: row for name, row in per_benchmark.items() if "avg@n" in row}
    columns: dict[str, dict[str, float]] = {}
    missing, complete = [], True
    for column, members in PAPER_COLUMNS:
        rows = [scored[m] for m in members if m in scored]
        complete = complete and len(rows) == len(members)
        if rows:
            columns[column] = _mean_of(rows)
        else:
            missing.append(column)
    if not columns:
        columns = {name: {k: row[k] for k in metric_keys(row)} for name, row in scored.items()}
        complete = False
    if not columns:
        return {"columns": {}, "missing": missing, "complete": False}
    return {**_mean_of(list(columns.values())), "columns": columns, "missing": missing, "complete": complete}


def summarize(records: Sequence[Mapping]) -> dict:
    """results.json content from generation records (one per sample).

    Args:
        records: dicts with at least ``benchmark``, ``id``, ``sample_index``, ``score`` and optionally
            ``length_bucket``.

    Returns:
        ``{benchmark: {**group_metrics, "buckets": {bucket: group_metrics}}, "average": paper_average}``,
        benchmarks in first-seen order, buckets sorted by name.
    """
    grouped: dict[str, dict[str, dict[int, float]]] = {}
    buckets: dict[str, dict[str, str]] = {}
    for record in records:
        name, item_id = str(record["benchmark"]), str(record["id"])
        grouped.setdefault(name, {}).setdefault(item_id, {})[int(record["sample_index"])] = float(record["score"])
        buckets.setdefault(name, {})[item_id] = str(record.get("length_bucket") or "all")
    results: dict = {}
    for name, items in grouped.items():
        scores = {item_id: [s for _, s in sorted(samples.items())] for item_id, samples in items.items()}
        row: dict = group_metrics(list(scores.values()))
        by_bucket: dict[str, list[list[float]]] = {}
        for item_id, item_scores in scores.items():
            by_bucket.setdefault(buckets[name][item_id], []).append(item_scores)
        row["buckets"] = {bucket: group_metrics(groups) for bucket, groups in sorted(by_bucket.items())}
        results[name] = row
    results["average"] = paper_average({name: row for name, row in results.items()})
    return results
