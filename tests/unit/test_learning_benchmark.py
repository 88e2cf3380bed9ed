"""Tests for benchmarks/learning.py's bookkeeping: merging per-seed parts and the per-task deltas."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def learning(load_benchmark):
    return load_benchmark("learning")


def _run(seed, a0, a1, mc0, mc1):
    return {"seed": seed, "a0": a0, "a1": a1, "cpu_s": 10.0 * (seed + 1),
            "initial": {"heldout/accuracy": a0, "heldout/doc_mc": mc0},
            "final": {"heldout/accuracy": a1, "heldout/doc_mc": mc1}}


def test_merge_per_seed_parts_keeps_every_run_in_seed_order(learning):
    parts = [learning.summarise({name: [_run(seed, *values)]}, [seed])
             for name, seed, values in [("rlvr", 2, (0.2, 0.5, 0.3, 0.3)), ("spell", 1, (0.2, 0.4, 0.2, 0.4)),
                                        ("spell", 0, (0.2, 0.3, 0.2, 0.1))]]
    merged = learning.merge_parts(parts)
    assert merged["seeds"] == [0, 1, 2]
    assert list(merged["variants"]) == ["spell", "rlvr"]  # VARIANTS order, not file order
    spell = merged["variants"]["spell"]
    assert spell["a1"] == [30.0, 40.0]  # seed 0 first although its part came last
    assert spell["delta_mean"] == 15.0  # mean(30, 40) - mean(20, 20) = 35 - 20
    assert spell["delta_std"] == 5.0  # pstdev(10, 20)
    assert spell["cpu_s_mean"] == 15.0  # mean(10, 20)
    assert merged["delta_mean"] == 15.0  # the headline is full SPELL's


def test_task_delta_in_points(learning):
    summary = learning.summarise({"spell": [_run(0, 0.2, 0.3, 0.25, 0.5), _run(1, 0.2, 0.3, 0.25, 0.0)]}, [0, 1])
    variant = summary["variants"]["spell"]
    assert learning._task_delta(variant, "doc_mc") == "+0.00"  # mean(50, 0) - 25
    assert learning._task_delta(variant, "docmath_qa") == "-"  # not logged


def test_truth_table_averages_each_role_over_seeds(learning):
    runs = [_run(0, 0.2, 0.3, 0.2, 0.2), _run(1, 0.2, 0.3, 0.2, 0.2)]
    runs[0]["truth"] = {"steps 1-3": {"reference_true": 0.1, "responder_true": 0.2, "verifier_true": 0.5}}
    runs[1]["truth"] = {"steps 1-3": {"reference_true": 0.3, "responder_true": None, "verifier_true": 0.7,
                                      "questioner_reward_wrong_ref": 0.6}}
    lines = learning.truth_table(learning.summarise({"spell": runs}, [0, 1]))
    # reference: mean(0.1, 0.3) = 0.20; responder: only seed 0 measured it; verifier mean(0.5, 0.7) = 0.60;
    # questioner reward on wrong references: only seed 1 measured it
    assert lines[-1] == "| spell | 1-3 | 0.20 | 0.20 | 0.60 | - | - | - | 0.60 |"


def test_per_seed_cell_and_gap_to_full_spell(learning):
    spell = [_run(0, 0.20, 0.25, 0.2, 0.2), _run(1, 0.20, 0.22, 0.2, 0.2)]
    spell[0]["paired"] = {"delta": 5.0, "se": 0.9, "low": 3.2, "high": 6.8}
    frozen = [_run(1, 0.20, 0.21, 0.2, 0.2), _run(2, 0.20, 0.30, 0.2, 0.2)]
    # seed 0: +5 points with SE 0.9; seed 1: +2 points, no paired record (an older part)
    assert learning.per_seed_cell(spell) == "s0: +5.00 (0.90); s1: +2.00"
    # only seed 1 ran both: spell +2 - frozen +1 = +1 point; seed 2 has no full-SPELL run to pair with
    assert learning.gap_cell(spell, frozen) == "+1.00 (1 seeds)"
    assert learning.gap_cell(spell, [_run(5, 0.2, 0.2, 0.2, 0.2)]) == "-"


def test_base_line_reports_step_zero_per_task(learning):
    summary = learning.summarise({"spell": [_run(0, 0.25, 0.3, 0.5, 0.5)]}, [0])
    assert learning.base_line(summary) == ["Base policy (no training, step 0 of each run): 25.0% (doc_mc 50.00%)"]


def test_merge_fills_paired_change_from_the_run_folder(learning, tmp_path):
    folder = tmp_path / "spell_seed0" / "heldout"
    folder.mkdir(parents=True)
    before, after = [0, 0, 1, 1], [1, 0, 1, 1]  # one of four questions flips right: +25 points, SE 0.5/sqrt(4)
    for step, scores in ((0, before), (60, after)):
        rows = [json.dumps({"id": f"q{i}", "task": "doc_mc", "score": s}) for i, s in enumerate(scores)]
        (folder / f"step_{step:06d}.jsonl").write_text("\n".join(rows) + "\n")
    part = learning.summarise({"spell": [_run(0, 0.5, 0.75, 0.5, 0.75)]}, [0])
    merged = learning.merge_parts([part], tmp_path)
    paired = merged["variants"]["spell"]["runs"][0]["paired"]
    assert (paired["delta"], paired["se"]) == (25.0, 25.0)
    assert learning.merge_parts([learning.summarise({"spell": [_run(1, 0.5, 0.5, 0.5, 0.5)]}, [1])],
                                tmp_path)["variants"]["spell"]["runs"][0].get("paired") is None  # no folder
