"""Tests for benchmarks/context_gain.py's bookkeeping: the paired change per task and the report rows."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def context_gain(load_benchmark):
    return load_benchmark("context_gain")


def _scores(task_scores):
    return [{"id": f"q{i}", "task": task, "score": score} for i, (task, score) in enumerate(task_scores)]


def test_compare_pairs_questions_overall_and_per_task(context_gain):
    before = _scores([("doc_mc", 0), ("doc_mc", 1), ("doc_general_qa", 0), ("doc_general_qa", 0)])
    after = _scores([("doc_mc", 1), ("doc_mc", 1), ("doc_general_qa", 1), ("doc_general_qa", 0)])
    out = context_gain.compare(before, after)
    # all: 1/4 -> 3/4 = 25% -> 75%, +50 points; diffs [1, 0, 1, 0]: sd 0.5774, se 0.5774 / 2 = 28.87 points
    assert (out["all"]["a0"], out["all"]["a1"], out["all"]["delta"]) == (25.0, 75.0, 50.0)
    assert out["all"]["se"] == pytest.approx(28.87) and out["all"]["questions"] == 4
    # MC: 1/2 -> 2/2; general QA: 0/2 -> 1/2
    assert out["doc_mc"]["delta"] == 50.0 and out["doc_general_qa"]["a1"] == 50.0
    assert out["all"]["ci"][0] <= 50.0 <= out["all"]["ci"][1]


def test_compare_refuses_unpaired_lists(context_gain):
    with pytest.raises(ValueError):
        context_gain.compare(_scores([("doc_mc", 0)]), _scores([("doc_mc", 0), ("doc_mc", 1)]))


def test_report_has_one_row_per_length(context_gain, tmp_path, monkeypatch):
    monkeypatch.setattr(context_gain, "RESULTS", tmp_path)
    row = {"tokens": 0, "prompt_tokens_mean": 729.3, "eval_s": [1, 1],
           **context_gain.compare(_scores([("doc_mc", 0)] * 2), _scores([("doc_mc", 1), ("doc_mc", 0)]))}
    context_gain.write_reports({"run": "r", "checkpoint": "step_000020", "split": "heldout",
                                "rows": [row, {**row, "tokens": 2000}]}, "cg")
    lines = (tmp_path / "cg.md").read_text().splitlines()
    assert lines[-2].startswith("| as shipped | 729.3 | 0.0 | 50.0 | +50.00 |")
    assert lines[-1].startswith("| 2000 |") and lines[-1].endswith("| - | +50.00 | - |")
