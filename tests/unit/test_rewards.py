"""Tests for spell.rewards (Eq. 4-7, spec §5).

Run: .venv/bin/python -m pytest tests/unit/test_rewards.py
"""

import doctest
import math

import pytest

from spell import rewards
from spell.rewards import (
    majority_vote,
    questioner_reward,
    responder_reward,
    verifier_group_trainable,
    verifier_rewards,
)
from spell.types import MajorityRule, QuestionerRewardMapping, QuestionStatus, Verdict

Y, N, X = Verdict.YES, Verdict.NO, Verdict.INVALID


def test_doctests_pass():
    result = doctest.testmod(rewards)
    assert result.attempted >= 8
    assert result.failed == 0


# ---- majority_vote ----

@pytest.mark.parametrize(
    ("votes", "expected"),
    [
        ([Y] * 5 + [N] * 3, Y),  # 5 > 8/2
        ([Y] * 4 + [N] * 4, X),  # tie 4 = 4: no signal
        ([N] * 5 + [Y] * 3, N),  # 5 NO > 4
        ([Y] * 3 + [N] * 2 + [X] * 3, Y),  # valid = 5: 3 YES > 2.5 (invalid votes do not count)
        ([Y] * 2 + [N] * 2 + [X] * 4, X),  # valid = 4: tie
        ([Y] + [X] * 7, Y),  # valid = 1: 1 > 0.5
        ([X] * 8, X),  # no valid votes
        ([], X),  # nothing at all
        (["yes", "no", "YES"], Y),  # plain strings, case-insensitive
    ],
)
def test_majority_vote_strict(votes, expected):
    assert majority_vote(votes) is expected
    assert majority_vote(votes, rule=MajorityRule.STRICT) is expected


@pytest.mark.parametrize(
    ("votes", "expected"),
    [
        ([X, X, X, Y, Y, N, N, N], X),  # plurality of 3 is tied between X and N: X seen first
        ([N, N, N, X, X, X, Y, Y], N),  # same counts, N seen first
        ([Y] * 3 + [X] * 5, X),  # invalid wins the plurality (strict would say YES)
        ([Y, N], Y),  # 1-1 tie: first seen
        ([N, Y], N),
        ([], X),
    ],
)
def test_majority_vote_plurality_counts_invalid_and_breaks_ties_first_seen(votes, expected):
    assert majority_vote(votes, rule="plurality") is expected


def test_majority_vote_rejects_unknown_rule_and_vote():
    with pytest.raises(ValueError):
        majority_vote([Y], rule="unanimous")
    with pytest.raises(ValueError):
        majority_vote(["maybe"])


# ---- responder_reward ----

@pytest.mark.parametrize(
    ("rule", "majority", "combine", "expected"),
    [
        (0.0, Y, "max", 1.0),  # max(0, 1)
        (1.0, N, "max", 1.0),  # max(1, 0)
        (0.0, N, "max", 0.0),
        (0.0, Y, "mean", 0.5),  # (0 + 1) / 2
        (1.0, N, "min", 0.0),  # min(1, 0)
        (1.0, Y, "sum", 2.0),  # 1 + 1
        (0.0, X, "max", 0.0),  # invalid majority: rule score alone
        (1.0, X, "min", 1.0),  # rule alone, not min(1, anything)
        (1.0, None, "sum", 1.0),  # not verified: rule alone
        (0.0, "yes", "max", 1.0),  # plain string majority
    ],
)
def test_responder_reward(rule, majority, combine, expected):
    assert responder_reward(rule, majority, combine) == expected


# ---- verifier_rewards ----

def test_verifier_rewards_agreement_and_invalid_penalty():
    votes = [Y, N, X, Y]
    assert verifier_rewards(votes, Y) == [1.0, 0.0, -1.0, 1.0]
    assert verifier_rewards(votes, N) == [0.0, 1.0, -1.0, 0.0]
    assert verifier_rewards(votes, Y, invalid_reward=0.0) == [1.0, 0.0, 0.0, 1.0]  # paper's indicator


def test_verifier_rewards_invalid_majority_gives_no_credit():
    # majority INVALID: valid votes do not equal it (0.0); invalid votes still get the penalty
    assert verifier_rewards([Y, X], X) == [0.0, -1.0]


# ---- verifier_group_trainable ----

@pytest.mark.parametrize(
    ("votes", "majority", "rule", "label", "expected"),
    [
        ([Y] * 6 + [N] * 2, Y, 1.0, "maj_cons", True),  # agree 6/8 = .75 in [.51, .99], YES == 1.0
        ([Y] * 5 + [N] * 3, Y, 1.0, "maj_cons", True),  # 5/8 = .625
        ([Y] * 7 + [N] * 1, Y, 1.0, "maj_cons", True),  # 7/8 = .875
        ([Y] * 8, Y, 1.0, "maj_cons", False),  # unanimous: 1.0 > .99
        ([Y] * 4 + [N] * 4, Y, 1.0, "maj", False),  # 4/8 = .5 < .51 (e.g. a plurality tie)
        ([Y] * 6 + [N] * 2, Y, 0.0, "maj_cons", False),  # majority YES disagrees with rule 0
        ([Y] * 6 + [N] * 2, Y, 0.0, "maj", True),  # ablation: window only
        ([N] * 6 + [Y] * 2, N, 0.0, "maj_cons", True),  # NO == 0.0, agree .75
        ([N] * 6 + [Y] * 2, N, 1.0, "maj_cons", False),
        ([Y] * 3 + [N] * 1 + [X] * 4, Y, 1.0, "maj_cons", True),  # valid = 4: agree 3/4 = .75
        ([Y] * 3 + [X] * 5, Y, 1.0, "maj_cons", False),  # valid = 3, agree 3/3 = 1.0 > .99
        ([Y] * 6 + [N] * 2, X, 1.0, "maj", False),  # invalid majority
        ([Y] * 6 + [N] * 2, None, 1.0, "maj", False),  # not verified
        ([X] * 8, Y, 1.0, "maj", False),  # no valid votes
    ],
)
def test_verifier_group_trainable(votes, majority, rule, label, expected):
    assert verifier_group_trainable(votes, majority, rule, label=label) is expected


def test_verifier_group_trainable_custom_window():
    votes = [Y] * 8  # agree 8/8 = 1.0
    assert verifier_group_trainable(votes, Y, 1.0, low=0.5, high=1.0) is True
    votes = [Y] * 6 + [N] * 2  # agree .75
    assert verifier_group_trainable(votes, Y, 1.0, low=0.8, high=1.0) is False


# ---- questioner_reward ----

# Eq. 7 with mu = .5, sigma = .5/3: 2 sigma^2 = 2/36 = 1/18, so r_que = exp(-18 (k/8 - .5)^2)
#   k=1: (.375)^2 = .140625 -> exp(-2.53125) = .0796 ; k=2: (.25)^2 = .0625 -> exp(-1.125) = .3247
#   k=3: (.125)^2 = .015625 -> exp(-.28125) = .7548 ; k=4: exp(0) = 1 ; k=5..7 mirror k=3..1
@pytest.mark.parametrize(
    ("k", "expected"),
    [(1, 0.080), (2, 0.325), (3, 0.755), (4, 1.0), (5, 0.755), (6, 0.325), (7, 0.080)],
)
def test_questioner_reward_gaussian_table_for_group_of_8(k, expected):
    assert questioner_reward("valid", k / 8) == pytest.approx(expected, abs=5e-4)
    assert questioner_reward(QuestionStatus.VALID, k / 8, QuestionerRewardMapping.GAUSSIAN) == pytest.approx(
        math.exp(-18 * (k / 8 - 0.5) ** 2), rel=1e-12
    )


@pytest.mark.parametrize(
    ("mapping", "mean", "expected"),
    [
        ("reverse", 0.25, 0.75),  # 1 - .25
        ("reverse", 0.875, 0.125),  # 1 - .875
        ("rzero", 0.5, 1.0),  # 1 - 2 * 0
        ("rzero", 0.25, 0.5),  # 1 - 2 * .25
        ("rzero", 0.875, 0.25),  # 1 - 2 * .375
    ],
)
def test_questioner_reward_other_mappings(mapping, mean, expected):
    assert questioner_reward("valid", mean, mapping) == pytest.approx(expected)


@pytest.mark.parametrize("mapping", ["gaussian", "reverse", "rzero"])
@pytest.mark.parametrize("mean", [0.0, 1.0, -0.2, 1.5])  # all wrong, all right, and out-of-range values
def test_questioner_reward_valid_without_variance_gets_zero_variance_value(mapping, mean):
    assert questioner_reward("valid", mean, mapping) == 0.0
    assert questioner_reward("valid", mean, mapping, zero_variance=-0.1) == -0.1


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("bad_format", -1.0),
        (QuestionStatus.BAD_FORMAT, -1.0),
        ("bad_ground", -0.5),
        ("zero_variance", 0.0),
    ],
)
def test_questioner_reward_bad_cases_ignore_mean(status, expected):
    assert questioner_reward(status, None) == expected
    assert questioner_reward(status, 0.5) == expected  # r̄ ignored: a bad case never gets the Gaussian


def test_questioner_reward_custom_penalties_and_gaussian_shape():
    assert questioner_reward("bad_format", None, bad_format=0.0) == 0.0  # ablation "w/o format penalty"
    assert questioner_reward("bad_ground", None, bad_ground=-0.25) == -0.25
    # sigma = .25, mu = .25, r̄ = .5: exp(-(.25)^2 / (2 * .0625)) = exp(-.5) = .60653
    assert questioner_reward("valid", 0.5, mu=0.25, sigma=0.25) == pytest.approx(0.60653, abs=1e-5)


def test_questioner_reward_errors():
    with pytest.raises(ValueError, match="dropped"):
        questioner_reward("dropped", 0.5)
    with pytest.raises(ValueError, match="mean_responder_reward"):
        questioner_reward("valid", None)
    with pytest.raises(ValueError):
        questioner_reward("valid", 0.5, "linear")
    with pytest.raises(ValueError):
        questioner_reward("great", 0.5)


def test_has_reward_variance_is_the_one_zero_variance_rule():
    from spell.rewards import has_reward_variance

    assert has_reward_variance([0.0, 1.0, 1.0])
    assert not has_reward_variance([0.5, 0.5, 0.5])  # all equal: no learning signal
    assert not has_reward_variance([1.0])  # a lone reward has no sample std
    assert not has_reward_variance([])
