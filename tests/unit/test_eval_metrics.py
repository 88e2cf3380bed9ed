"""avg@n, unbiased pass@k (paper Eq. 11) and the paper's 4-column average, against hand computations.

Run: .venv/bin/python -m pytest tests/unit/test_eval_metrics.py -q
"""

from __future__ import annotations

import pytest

from spell.evaluate.metrics import group_metrics, paper_average, pass_at_k, summarize


@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (8, 3, 1, 3 / 8),  # pass@1 = c/n
        (8, 3, 2, 1 - 10 / 28),  # 1 - C(5,2)/C(8,2) = 1 - 10/28 = 0.642857
        (8, 3, 4, 1 - 5 / 70),  # 1 - C(5,4)/C(8,4) = 1 - 5/70 = 0.928571
        (8, 3, 8, 1.0),  # n - c = 5 < 8: any 8 samples contain a correct one
        (8, 0, 8, 0.0),  # nothing correct
        (8, 8, 1, 1.0),  # everything correct
        (4, 1, 2, 1 - 3 / 6),  # 1 - C(3,2)/C(4,2) = 0.5
    ],
)
def test_pass_at_k_matches_hand_computation(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_2_for_n8_c3_is_0_642857():
    assert round(pass_at_k(8, 3, 2), 6) == 0.642857


@pytest.mark.parametrize("n, c, k", [(8, 9, 1), (8, 3, 0), (8, 3, 9)])
def test_pass_at_k_rejects_impossible_counts(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_group_metrics_averages_per_question_then_over_questions():
    groups = [[1, 1, 1, 0, 0, 0, 0, 0], [0] * 8, [1] * 8]  # c = 3, 0, 8 with n = 8
    metrics = group_metrics(groups)
    assert metrics["n"] == 8 and metrics["num_questions"] == 3
    assert metrics["avg@n"] == pytest.approx((3 / 8 + 0 + 1) / 3)  # 0.458333
    assert metrics["pass@2"] == pytest.approx((1 - 10 / 28 + 0 + 1) / 3)  # (0.642857 + 0 + 1) / 3
    assert metrics["pass@8"] == pytest.approx((1 + 0 + 1) / 3)


def test_group_metrics_reports_pass_at_k_only_for_k_up_to_n():
    metrics = group_metrics([[1, 0, 0], [0, 0, 1]])  # n = 3: k in {1, 2}
    assert "pass@2" in metrics and "pass@4" not in metrics and "pass@8" not in metrics
    assert metrics["pass@2"] == pytest.approx(1 - 1 / 3)  # 1 - C(2,2)/C(3,2) = 2/3 for both questions


def test_group_metrics_empty():
    assert group_metrics([]) == {"num_questions": 0, "n": 0}


def _row(avg: float, pass8: float) -> dict:
    return {"avg@n": avg, "pass@1": avg, "pass@8": pass8}


def test_paper_average_is_mean_of_four_columns_with_lb_mqa_averaged_first():
    rows = {
        "docmath": _row(0.40, 0.60),
        "frames": _row(0.30, 0.50),
        "hotpotqa": _row(0.60, 0.90),
        "2wikimqa": _row(0.30, 0.60),
        "musique": _row(0.30, 0.30),
        "longbench_v2": _row(0.20, 0.40),
    }
    average = paper_average(rows)
    assert average["columns"]["LB-MQA"]["avg@n"] == pytest.approx(0.40)  # (0.6 + 0.3 + 0.3) / 3
    assert average["avg@n"] == pytest.approx(0.325)  # (0.40 + 0.30 + 0.40 + 0.20) / 4, not the 6-task 0.35
    assert average["pass@8"] == pytest.approx((0.6 + 0.5 + 0.6 + 0.4) / 4)  # LB-MQA pass@8 = 1.8/3 = 0.6
    assert average["complete"] and average["missing"] == []


def test_paper_average_table1_example_from_the_spec():
    rows = {"docmath": {"avg@n": 0.109}, "frames": {"avg@n": 0.279}, "longbench_v2": {"avg@n": 0.312}}
    rows |= {"hotpotqa": {"avg@n": 0.367}, "2wikimqa": {"avg@n": 0.367}, "musique": {"avg@n": 0.367}}
    assert round(100 * paper_average(rows)["avg@n"], 1) == 26.7  # (10.9 + 27.9 + 36.7 + 31.2) / 4 = 26.675


def test_paper_average_with_missing_columns_is_partial():
    average = paper_average({"frames": _row(0.5, 1.0), "hotpotqa": _row(0.1, 0.2)})
    assert average["avg@n"] == pytest.approx(0.3)  # (0.5 + 0.1) / 2 over the columns present
    assert average["missing"] == ["DocMath", "LB-V2"] and not average["complete"]


def test_paper_average_falls_back_to_each_benchmark_when_no_paper_benchmark_ran():
    average = paper_average({"world_a": _row(0.2, 0.4), "world_b": _row(0.6, 0.8)})
    assert set(average["columns"]) == {"world_a", "world_b"}
    assert average["avg@n"] == pytest.approx(0.4) and not average["complete"]


def test_paper_average_drops_a_pass_at_k_not_every_column_has():
    average = paper_average({"frames": _row(0.5, 1.0), "docmath": {"avg@n": 0.1, "pass@1": 0.1}})
    assert "pass@8" not in average and average["pass@1"] == pytest.approx(0.3)


def _records(benchmark: str, item_id: str, scores: list[float], bucket: str = "") -> list[dict]:
    return [
        {"benchmark": benchmark, "id": item_id, "sample_index": i, "score": s, "length_bucket": bucket}
        for i, s in enumerate(scores)
    ]


def test_summarize_groups_by_benchmark_question_and_bucket():
    records = _records("frames", "q1", [1, 0], "short") + _records("frames", "q2", [0, 0], "long")
    records += _records("docmath", "d1", [1, 1])
    results = summarize(records)
    assert results["frames"]["avg@n"] == pytest.approx(0.25)  # (1/2 + 0) / 2
    assert results["frames"]["pass@2"] == pytest.approx(0.5)  # (1 + 0) / 2
    assert results["frames"]["buckets"]["short"]["avg@n"] == pytest.approx(0.5)
    assert results["frames"]["buckets"]["long"]["avg@n"] == 0.0
    assert results["docmath"]["buckets"] == {
        "all": {"num_questions": 1, "n": 2, "avg@n": 1.0, "pass@1": 1.0, "pass@2": 1.0}
    }
    assert results["average"]["avg@n"] == pytest.approx((1.0 + 0.25) / 2)  # DocMath and Frames columns
