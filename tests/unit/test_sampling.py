"""Tests for spell.sampling (dynamic sampling, spec §3 steps 9-13).

Run: .venv/bin/python -m pytest tests/unit/test_sampling.py
"""

import random

import pytest

from spell.sampling import draw_questioner_negatives, draw_verifier_groups, draw_verifier_groups_by_rank

# ---- draw_questioner_negatives ----


def _pool():
    return {
        "docmath_qa": [f"m{i}" for i in range(10)],
        "doc_general_qa": [f"g{i}" for i in range(2)],
        "doc_mc": [f"c{i}" for i in range(5)],
    }


def test_negatives_follow_good_count_order_and_carry_shortfall():
    good = {"doc_mc": 3, "docmath_qa": 1, "doc_general_qa": 4}
    drawn = draw_questioner_negatives(good, _pool(), 1.0, random.Random(0))
    # order by good count: general_qa (4) -> mc (3) -> math (1)
    # general_qa wants 4, has 2 -> takes 2, carry 2; mc wants 3+2 = 5, has 5 -> takes 5;
    # math wants 1 + 0 = 1 -> takes 1. Total 8 = sum of good counts.
    assert [d[0] for d in drawn] == ["g", "g", "c", "c", "c", "c", "c", "m"]
    assert sorted(drawn[:2]) == ["g0", "g1"]
    assert sorted(drawn[2:7]) == ["c0", "c1", "c2", "c3", "c4"]
    assert len(set(drawn)) == len(drawn)  # without replacement


def test_negatives_ratio_scales_with_int_truncation():
    good = {"docmath_qa": 3, "doc_mc": 3}
    # ratio .5: int(.5 * 3) = 1 per task; ties (3 = 3) broken by name: doc_mc before docmath_qa
    drawn = draw_questioner_negatives(good, _pool(), 0.5, random.Random(1))
    assert [d[0] for d in drawn] == ["c", "m"]
    assert draw_questioner_negatives(good, _pool(), 0.0, random.Random(1)) == []  # ratio 0 disables


def test_negatives_tasks_without_good_samples_absorb_carry_last():
    good = {"doc_general_qa": 5}  # wants 5, pool has 2 -> carry 3
    drawn = draw_questioner_negatives(good, _pool(), 1.0, random.Random(2))
    # then the tasks with no good samples, by name: doc_mc (takes 3 of 5), docmath_qa (wants 0)
    assert [d[0] for d in drawn] == ["g", "g", "c", "c", "c"]


def test_negatives_task_without_pool_passes_its_quota_on():
    good = {"docmath_qa": 4, "doc_mc": 1}
    pool = {"doc_mc": ["c0", "c1", "c2"]}
    # math wants 4, has nothing -> carry 4; mc wants 1 + 4 = 5, has 3 -> takes all 3 (short by 2)
    drawn = draw_questioner_negatives(good, pool, 1.0, random.Random(3))
    assert sorted(drawn) == ["c0", "c1", "c2"]


def test_negatives_are_reproducible_with_the_same_seed_and_vary_across_seeds():
    good = {"docmath_qa": 4}
    first = draw_questioner_negatives(good, _pool(), 1.0, random.Random(7))
    second = draw_questioner_negatives(good, _pool(), 1.0, random.Random(7))
    assert first == second
    draws = {tuple(draw_questioner_negatives(good, _pool(), 1.0, random.Random(s))) for s in range(20)}
    assert len(draws) > 1  # really random: 4 of 10 has 5040 ordered outcomes


def test_negatives_reject_negative_ratio():
    with pytest.raises(ValueError):
        draw_questioner_negatives({"doc_mc": 1}, _pool(), -1.0, random.Random(0))


# ---- draw_verifier_groups ----


def test_verifier_quota_matches_authors_default():
    groups = [f"v{i}" for i in range(40)]
    drawn = draw_verifier_groups(groups, 1024, 0.125, 8, random.Random(0))
    assert len(drawn) == 16  # int(1024 * .125 / 8) = 16 groups = 128 sequences
    assert len(set(drawn)) == 16 and set(drawn) <= set(groups)
    assert drawn == draw_verifier_groups(groups, 1024, 0.125, 8, random.Random(0))  # seeded


@pytest.mark.parametrize(
    ("available", "num_sequences", "ratio", "votes", "expected_len"),
    [
        (15, 1024, 0.125, 8, 0),  # quota 16 > 15 available: verifier update skipped
        (16, 1024, 0.125, 8, 16),  # exactly enough
        (10, 64, 0.125, 8, 1),  # int(64 * .125 / 8) = 1
        (10, 63, 0.125, 8, 0),  # int(.984) = 0: nothing to draw
        (10, 40, 0.5, 4, 5),  # int(40 * .5 / 4) = 5
        (10, 1024, 0.0, 8, 0),  # ratio 0
        (0, 1024, 0.125, 8, 0),  # no trainable groups
    ],
)
def test_verifier_quota_table(available, num_sequences, ratio, votes, expected_len):
    groups = list(range(available))
    assert len(draw_verifier_groups(groups, num_sequences, ratio, votes, random.Random(0))) == expected_len


def test_verifier_groups_reject_bad_arguments():
    with pytest.raises(ValueError):
        draw_verifier_groups([1], 8, 0.125, 0, random.Random(0))
    with pytest.raises(ValueError):
        draw_verifier_groups([1], 8, -0.1, 8, random.Random(0))


# ---- draw_verifier_groups_by_rank (torchrun: one draw over the union of the ranks' pools) ----


def test_verifier_quota_across_ranks_is_global_and_split_by_owner():
    # responder counts 8 and 0, ratio .5, G_v 2 -> global quota int(8 * .5 / 2) = 2 groups.
    # Rank by rank (the old rule): rank 0 quota 2 > its 1 group -> skipped; rank 1 quota int(0) = 0 -> nothing.
    assert draw_verifier_groups(["a0"], 8, 0.5, 2, random.Random(0)) == []
    assert draw_verifier_groups(["b0", "b1", "b2"], 0, 0.5, 2, random.Random(0)) == []
    # Union pool [(0, 0), (1, 0), (1, 1), (1, 2)] has 4 >= 2 groups: 2 drawn. random.Random(0).sample(union, 2)
    # = [(1, 2), (1, 0)] -> both on rank 1; random.Random(2) gives [(0, 0), (1, 2)] -> one each.
    assert draw_verifier_groups_by_rank([1, 3], [8, 0], 0.5, 2, random.Random(0)) == [[], [2, 0]]
    assert draw_verifier_groups_by_rank([1, 3], [8, 0], 0.5, 2, random.Random(2)) == [[0], [2]]
    for seed in range(20):
        drawn = draw_verifier_groups_by_rank([1, 3], [8, 0], 0.5, 2, random.Random(seed))
        assert len(drawn[0]) + len(drawn[1]) == 2 and set(drawn[0]) <= {0} and set(drawn[1]) <= {0, 1, 2}


def test_verifier_quota_across_ranks_skips_when_the_union_pool_is_short():
    # global quota int((8 + 8) * .5 / 2) = 4 > 1 + 2 groups: nobody trains the verifier this step
    assert draw_verifier_groups_by_rank([1, 2], [8, 8], 0.5, 2, random.Random(0)) == [[], []]


@pytest.mark.parametrize(
    ("available", "num_sequences", "ratio", "votes"),
    [(40, 1024, 0.125, 8), (16, 1024, 0.125, 8), (15, 1024, 0.125, 8), (10, 40, 0.5, 4), (3, 63, 0.125, 8)],
)
def test_verifier_draw_with_one_rank_equals_draw_verifier_groups(available, num_sequences, ratio, votes):
    groups = [f"v{i}" for i in range(available)]
    old_rng, new_rng = random.Random(7), random.Random(7)
    expected = draw_verifier_groups(groups, num_sequences, ratio, votes, old_rng)
    (mine,) = draw_verifier_groups_by_rank([available], [num_sequences], ratio, votes, new_rng)
    assert [groups[i] for i in mine] == expected  # same groups, same order
    assert new_rng.getstate() == old_rng.getstate()  # and the same draws from the rng


def test_verifier_draw_across_ranks_rejects_mismatched_lists():
    with pytest.raises(ValueError):
        draw_verifier_groups_by_rank([1, 2], [8], 0.5, 2, random.Random(0))
