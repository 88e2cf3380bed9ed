"""Tests for spell/report.py's held-out change: the first and the last evaluation paired question by question."""

from __future__ import annotations

import json

import pytest

from spell.report import _builtin_world, format_heldout_change, heldout_change, truth_accuracies


def _scores(folder, step, scores):
    folder.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"id": f"q{i}", "task": "doc_mc" if i % 2 else "doc_general_qa", "score": s})
             for i, s in enumerate(scores)]
    (folder / f"step_{step:06d}.jsonl").write_text("\n".join(lines) + "\n")


def test_heldout_change_pairs_the_first_and_last_evaluation(tmp_path):
    _scores(tmp_path / "heldout", 0, [0, 0, 1, 1, 0, 0])
    _scores(tmp_path / "heldout", 5, [0.5, 0, 1, 1, 0, 0])  # an intermediate evaluation is ignored
    _scores(tmp_path / "heldout", 10, [1, 1, 1, 1, 0, 0])
    change = heldout_change(tmp_path)
    assert (change["from_step"], change["to_step"]) == (0, 10)
    overall = change["tasks"]["all"]
    # 2 of 6 to 4 of 6: 33.3% -> 66.7%; diffs [1, 1, 0, 0, 0, 0]: mean 1/3, sd sqrt((2*(2/3)^2 + 4*(1/3)^2)/5)
    # = sqrt(0.26667) = 0.5164, se = 0.5164 / sqrt(6) = 0.2108
    assert overall["questions"] == 6 and overall["delta"] == pytest.approx(100 / 3)
    assert overall["se"] == pytest.approx(21.08, abs=0.01)
    assert overall["low"] <= overall["delta"] <= overall["high"]
    assert change["tasks"]["doc_general_qa"]["delta"] == pytest.approx(100 / 3)  # q0, q2, q4: 0 -> 1 once
    text = format_heldout_change(change)
    first = "held-out all (step 0 -> 10): 33.3% -> 66.7% (+33.3 points, SE 21.1, 95% CI ["
    assert text.splitlines()[0].startswith(first)


def test_no_change_without_two_evaluations(tmp_path):
    assert heldout_change(tmp_path) is None
    _scores(tmp_path / "heldout", 0, [1, 0])
    assert heldout_change(tmp_path) is None


def test_builtin_world_is_recognised_by_its_manifest(tmp_path):
    world = tmp_path / "world"
    world.mkdir()
    (world / "manifest.json").write_text(json.dumps({"generator": "spell.world"}))
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(f"data:\n  train_files: [{world / 'train.jsonl'}]\n")
    assert _builtin_world(run) == world
    (world / "manifest.json").write_text(json.dumps({"generator": "someone else"}))
    assert _builtin_world(run) is None


def test_truth_table_shows_each_window_and_what_the_questioner_was_paid(tmp_path, monkeypatch):
    import spell.builtin.diagnose as diagnose

    run = tmp_path / "run"
    (run / "samples").mkdir(parents=True)
    monkeypatch.setattr("spell.report._builtin_world", lambda output_dir: tmp_path / "world")
    seen = []

    def fake_diagnose_run(run_dir, world, windows):  # a fake: the table's layout, not the diagnosis, is tested
        seen.append(windows)
        return {f"steps {a}-{b}": {"all": {"reference_true": 0.3, "questioner_reward_true_ref": 0.15,
                                           "questioner_reward_wrong_ref": 0.46,
                                           "responder_matches_wrong_ref": 0.28}} for a, b in windows}

    monkeypatch.setattr(diagnose, "diagnose_run", fake_diagnose_run)
    table = truth_accuracies(run, last_step=20)
    assert seen == [[(1, 3), (18, 20)]]
    headers = [c.header for c in table.columns]
    assert headers[-2:] == ["paid true ref", "paid wrong ref"]
    last = [list(c.cells)[1] for c in table.columns]
    assert last[0] == "18-20" and last[headers.index("reference")] == "0.30"
    assert last[-2:] == ["0.15", "0.46"] and last[headers.index("verifier")] == "-"
    assert last[headers.index("agree wrong ref")] == "0.28"
