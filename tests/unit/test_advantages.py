"""Tests for spell.advantages (Eq. 8-9, spec §7.1).

Run: .venv/bin/python -m pytest tests/unit/test_advantages.py
"""

import doctest
import math

import pytest

from spell import advantages
from spell.advantages import assign_advantages, group_zscore, questioner_advantages, questioner_advantages_by_rank
from spell.types import Role, RoleSample, TaskType

EPS = 1e-6


def test_doctests_pass():
    result = doctest.testmod(advantages)
    assert result.attempted >= 2
    assert result.failed == 0


def test_group_zscore_binary_group():
    # rewards [1,0,1,0]: mean .5, unbiased std sqrt(4 * .25 / 3) = sqrt(1/3) = .57735 -> ±.5/.57735 = ±.86603
    assert group_zscore([1.0, 0.0, 1.0, 0.0], ["g"] * 4) == pytest.approx([0.86603, -0.86603] * 2, abs=1e-5)


def test_group_zscore_uses_unbiased_std():
    # [1, 0, 0, 0]: mean .25; sum sq dev = .5625 + 3 * .0625 = .75
    #   unbiased std sqrt(.75 / 3) = .5 -> 1: .75/.5 = 1.5, 0: -.25/.5 = -.5
    #   (population std sqrt(.75/4) = .4330 would give 1.7321 / -.5774)
    assert group_zscore([1.0, 0.0, 0.0, 0.0], ["g"] * 4) == pytest.approx([1.5, -0.5, -0.5, -0.5], abs=1e-5)


def test_group_zscore_interleaved_groups_keep_input_order():
    rewards = [1.0, 2.0, 0.0, 4.0, 1.0]
    ids = ["a", "b", "a", "b", "a"]
    # a = [1, 0, 1]: mean 2/3, dev (1/3, -2/3, 1/3), unbiased var (1/9 + 4/9 + 1/9) / 2 = 1/3, std .57735
    #   -> (.57735, -1.1547, .57735)
    # b = [2, 4]: mean 3, unbiased std sqrt((1 + 1) / 1) = 1.41421 -> (-.70711, .70711)
    expected = [0.57735, -0.70711, -1.15470, 0.70711, 0.57735]
    assert group_zscore(rewards, ids) == pytest.approx(expected, abs=1e-5)


def test_group_zscore_eps_is_added_to_std():
    # [1, 0]: mean .5, std sqrt(.5) = .70711 -> .5 / (.70711 + eps)
    out = group_zscore([1.0, 0.0], [0, 0], eps=0.1)
    assert out[0] == pytest.approx(0.5 / (math.sqrt(0.5) + 0.1))
    assert out[1] == pytest.approx(-out[0])


def test_group_zscore_constant_group_is_zero():
    assert group_zscore([0.0] * 8, ["g"] * 8) == [0.0] * 8  # (0 - 0) / (0 + eps)
    assert group_zscore([1.0] * 3, ["g"] * 3) == [0.0] * 3


def test_group_zscore_single_sample_group_uses_mean_0_std_1():
    # authors' convention: (r - 0) / (1 + eps), not 0 and not NaN
    assert group_zscore([-0.5, 1.0, 0.0], ["solo", "x", "x"]) == pytest.approx(
        [-0.5 / (1 + EPS), 0.70711, -0.70711], abs=1e-5
    )


def test_group_zscore_length_mismatch():
    with pytest.raises(ValueError):
        group_zscore([1.0, 0.0], ["g"])
    assert group_zscore([], []) == []


# Questioner rewards of one batch: math = [1.0, -1.0, 0.0], mc = [0.325, -0.5]
QUE_REWARDS = [1.0, 0.325, -1.0, 0.0, -0.5]
QUE_TASKS = ["docmath_qa", "doc_mc", "docmath_qa", "docmath_qa", "doc_mc"]


def test_questioner_advantages_per_task():
    # math [1, -1, 0]: mean 0, unbiased std sqrt(2/2) = 1 -> (1, -1, 0)
    # mc [.325, -.5]: mean -.0875, std sqrt(2 * .4125^2) = .58336 -> ±.70711
    out = questioner_advantages(QUE_REWARDS, QUE_TASKS)
    assert out == pytest.approx([1.0, 0.70711, -1.0, 0.0, -0.70711], abs=1e-5)


def test_questioner_advantages_batch_scope_differs():
    # all five: mean (1 + .325 - 1 + 0 - .5) / 5 = -.035
    #   dev (1.035, .36, -.965, .035, -.465); sq sum 1.071225 + .1296 + .931225 + .001225 + .216225 = 2.3495
    #   unbiased std sqrt(2.3495 / 4) = .76640
    out = questioner_advantages(QUE_REWARDS, QUE_TASKS, scope="batch")
    expected = [1.035 / 0.76640, 0.36 / 0.76640, -0.965 / 0.76640, 0.035 / 0.76640, -0.465 / 0.76640]
    assert out == pytest.approx(expected, abs=1e-4)
    with pytest.raises(ValueError):
        questioner_advantages(QUE_REWARDS, QUE_TASKS, scope="global")


def _sample(role, task, group_id, reward):
    return RoleSample(role=role, task=task, group_id=group_id, prompt_ids=(1,), completion_ids=(2,), reward=reward)


def test_assign_advantages_mixed_batch():
    r, v, q = Role.RESPONDER, Role.VERIFIER, Role.QUESTIONER
    m, c = TaskType.DOCMATH_QA, TaskType.DOC_MC
    samples = [
        _sample(r, m, "u1", 1.0),
        _sample(q, m, "u1", 1.0),
        _sample(v, m, "u1", -1.0),  # verifier group reuses the responder uid: must not be mixed with it
        _sample(r, m, "u1", 0.0),
        _sample(v, m, "u1", 1.0),
        _sample(v, m, "u1", 1.0),
        _sample(q, c, "u2", -0.5),
        _sample(q, m, "u3", -1.0),
        _sample(q, c, "u4", 0.325),
        _sample(q, m, "u5", 0.0),
    ]
    assign_advantages(samples)
    got = [s.advantage for s in samples]
    # responders u1 [1, 0]: ±.70711
    # verifiers u1 [-1, 1, 1]: mean 1/3, dev (-4/3, 2/3, 2/3), var (16/9 + 4/9 + 4/9) / 2 = 4/3, std 1.1547
    #   -> (-1.1547, .57735, .57735)
    # questioners per task as in test_questioner_advantages_per_task: math [1, -1, 0], mc [-.70711, .70711]
    expected = [0.70711, 1.0, -1.1547, -0.70711, 0.57735, 0.57735, -0.70711, -1.0, 0.70711, 0.0]
    assert got == pytest.approx(expected, abs=1e-4)


def test_assign_advantages_batch_scope_changes_only_questioners():
    samples = [_sample(Role.RESPONDER, TaskType.DOC_MC, "g", x) for x in (1.0, 0.0)]
    samples += [_sample(Role.QUESTIONER, t, f"q{i}", x) for i, (x, t) in enumerate(zip(QUE_REWARDS, QUE_TASKS))]
    assign_advantages(samples, questioner_scope="batch")
    assert [s.advantage for s in samples[:2]] == pytest.approx([0.70711, -0.70711], abs=1e-5)
    expected = questioner_advantages(QUE_REWARDS, QUE_TASKS, scope="batch")
    assert [s.advantage for s in samples[2:]] == pytest.approx(expected)
    assert samples[2].advantage == pytest.approx(1.035 / 0.76640, abs=1e-4)  # not the per-task 1.0


# ---- Eq. 9 across ranks (torchrun): the z-score spans the union of the ranks' questioner samples ----

# rank 0: task A [1.0, -1.0]; rank 1: task A [0.5], task B [0.0, -0.5]
RANK_REWARDS = [[1.0, -1.0], [0.5, 0.0, -0.5]]
RANK_TASKS = [["A", "A"], ["A", "B", "B"]]


def test_eq9_across_ranks_hand_computed_advantages_for_a_2_rank_toy_batch_equal_the_1_rank_ones():
    # per task over the union: A [1, -1, .5]: mean 1/6, dev (5/6, -7/6, 1/3), sq sum (25 + 49 + 4)/36 = 13/6,
    #   unbiased var 13/12, std 1.040833 -> (.80064, -1.12090, .32026)
    #   B [0, -.5]: mean -.25, std sqrt(2 * .0625) = .353553 -> (.70711, -.70711)
    by_rank = questioner_advantages_by_rank(RANK_REWARDS, RANK_TASKS)
    assert by_rank[0] == pytest.approx([0.80064, -1.12090], abs=1e-5)
    assert by_rank[1] == pytest.approx([0.32026, 0.70711, -0.70711], abs=1e-5)
    one_rank = questioner_advantages([1.0, -1.0, 0.5, 0.0, -0.5], ["A", "A", "A", "B", "B"])
    assert by_rank[0] + by_rank[1] == one_rank  # exactly the 1-rank batch
    # rank by rank (the old behaviour) differs: rank 0's A [1, -1] -> ±.70711, rank 1's lone A 0.5 -> .5
    assert questioner_advantages(RANK_REWARDS[0], RANK_TASKS[0]) == pytest.approx([0.70711, -0.70711], abs=1e-5)


def test_eq9_across_ranks_batch_scope():
    # all five [1, -1, .5, 0, -.5]: mean 0, sq sum 2.5, unbiased std sqrt(2.5 / 4) = .790569
    by_rank = questioner_advantages_by_rank(RANK_REWARDS, RANK_TASKS, scope="batch")
    assert by_rank == [pytest.approx([1.26491, -1.26491], abs=1e-5), pytest.approx([0.63246, 0.0, -0.63246], abs=1e-5)]


def test_eq9_one_rank_and_empty_ranks():
    assert questioner_advantages_by_rank([QUE_REWARDS], [QUE_TASKS]) == [questioner_advantages(QUE_REWARDS, QUE_TASKS)]
    # a rank without questioner samples gets [] and does not move the others' statistics
    assert questioner_advantages_by_rank([[], QUE_REWARDS], [[], QUE_TASKS]) == [
        [], questioner_advantages(QUE_REWARDS, QUE_TASKS)]
    with pytest.raises(ValueError):
        questioner_advantages_by_rank([[1.0]], [["A"], ["B"]])


def test_assign_advantages_takes_precomputed_questioner_advantages():
    samples = [_sample(Role.RESPONDER, TaskType.DOC_MC, "g", x) for x in (1.0, 0.0)]
    samples += [_sample(Role.QUESTIONER, TaskType.DOC_MC, f"q{i}", x) for i, x in enumerate((1.0, -1.0))]
    assign_advantages(samples, questioner_values=[0.25, -0.75])  # e.g. rank 0's share of a union z-score
    assert [s.advantage for s in samples] == pytest.approx([0.70711, -0.70711, 0.25, -0.75], abs=1e-5)
    with pytest.raises(ValueError, match="1 questioner advantages for 2"):
        assign_advantages(samples, questioner_values=[0.0])
