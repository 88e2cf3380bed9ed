"""Role rewards: verifier majority vote (Eq. 4), responder (Eq. 6), verifier (Eq. 5), questioner (Eq. 7).

Stage 9 of the self-play step (spec §5). Pure functions over plain values: votes are ``Verdict`` members or
their strings (``"yes"``, ``"no"``, ``"invalid"``), choices are the ``spell.types`` enums or their strings.
Stdlib + ``spell.types`` only. The verifier label filter (spec §5.4) lives here too.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from spell.types import MajorityRule, QuestionerRewardMapping, QuestionStatus, RewardCombine, Verdict, VerifierLabel

# The verdict as a reward value: YES counts as a correct answer (1), NO as a wrong one (0).
_VERDICT_VALUE = {Verdict.YES: 1.0, Verdict.NO: 0.0}


def _as_verdict(vote: Verdict | str) -> Verdict:
    """Coerce ``"YES"``/``"yes"``/``Verdict.YES`` to a member; unknown strings are a programming error."""
    return Verdict(str(vote).strip().lower())


def has_reward_variance(rewards: Sequence[float]) -> bool:
    """True when a group's rewards differ, i.e. the group carries a learning signal (sample std > 0).

    The one definition of "zero reward variance" (spec §3 step 9): fewer than two rewards, or all equal, is
    none. ``max > min`` is exactly "std > 0" for finite values, without round-off in a computed std.

    >>> has_reward_variance([1.0, 0.0]), has_reward_variance([1.0, 1.0]), has_reward_variance([0.5])
    (True, False, False)
    """
    return len(rewards) >= 2 and max(rewards) > min(rewards)


def majority_vote(votes: Sequence[Verdict | str], rule: MajorityRule | str = "strict") -> Verdict:
    """Combine the G_v verdicts on one responder answer into one verdict (Eq. 4, spec §5.1).

    ``strict`` (default, paper Eq. 4 over the *valid* votes): YES if #YES > #valid/2, NO if #NO > #valid/2,
    else INVALID. With two outcomes this only happens on a tie, or when there are no valid votes at all;
    INVALID means "no verifier signal", so :func:`responder_reward` falls back to the rule score.

    ``plurality`` (authors' code): the most common vote *including* INVALID ones; ties go to the value seen
    first (``Counter.most_common`` order), so the result may be INVALID even when valid votes exist.

    Args:
        votes: the parsed verdicts (``Verdict`` members or their string values).
        rule: ``"strict"`` or ``"plurality"`` (a :class:`MajorityRule`).

    Returns:
        ``Verdict.YES``, ``Verdict.NO`` or ``Verdict.INVALID`` (also for an empty vote list).

    Raises:
        ValueError: for an unknown rule or vote string.

    Example:
        >>> majority_vote(["yes", "yes", "no", "invalid"])  # 2 of 3 valid votes say YES: 2 > 1.5
        <Verdict.YES: 'yes'>
        >>> majority_vote(["yes", "no"])  # tie: no verifier signal
        <Verdict.INVALID: 'invalid'>
        >>> majority_vote(["invalid", "invalid", "yes"], rule="plurality")
        <Verdict.INVALID: 'invalid'>
    """
    verdicts = [_as_verdict(v) for v in votes]
    match MajorityRule(rule):
        case MajorityRule.STRICT:
            num_yes = verdicts.count(Verdict.YES)
            num_no = verdicts.count(Verdict.NO)
            num_valid = num_yes + num_no
            if num_yes > num_valid / 2:  # num_valid == 0 gives 0 > 0: False
                return Verdict.YES
            if num_no > num_valid / 2:
                return Verdict.NO
            return Verdict.INVALID
        case MajorityRule.PLURALITY:
            if not verdicts:
                return Verdict.INVALID
            # Counter keeps first-seen order and most_common is a stable sort: ties go to the first seen.
            return Counter(verdicts).most_common(1)[0][0]
    raise AssertionError(f"unhandled majority rule {rule!r}")  # unreachable: MajorityRule(rule) validated


def responder_reward(rule_score: float, majority: Verdict | str | None, combine: RewardCombine | str = "max") -> float:
    """Combine the rule score with the verifier majority (Eq. 6, spec §5.2).

    A majority of YES counts as 1.0 and NO as 0.0. ``None`` (answer not verified: verifier off, task not
    verified, or no parsable prediction) and INVALID (no majority) give the rule score alone.

    Args:
        rule_score: R_rule in [0, 1] (0.0 or 1.0 for the built-in tasks).
        majority: the verifier majority, or None when the answer was not verified.
        combine: ``max`` (paper), ``mean``, ``min`` or ``sum`` (a :class:`RewardCombine`).

    Returns:
        The responder reward.

    Example:
        >>> responder_reward(0.0, "yes")  # max(0, 1): the verifier rescues a mis-parsed correct answer
        1.0
        >>> responder_reward(1.0, None)
        1.0
    """
    combine = RewardCombine(combine)
    rule = float(rule_score)
    if majority is None or _as_verdict(majority) is Verdict.INVALID:
        return rule
    verifier_value = _VERDICT_VALUE[_as_verdict(majority)]
    match combine:
        case RewardCombine.MAX:
            return max(rule, verifier_value)
        case RewardCombine.MEAN:
            return (rule + verifier_value) / 2
        case RewardCombine.MIN:
            return min(rule, verifier_value)
        case RewardCombine.SUM:
            return rule + verifier_value
    raise AssertionError(f"unhandled combine {combine!r}")  # unreachable


def verifier_rewards(
    votes: Sequence[Verdict | str], majority: Verdict | str, invalid_reward: float = -1.0
) -> list[float]:
    """Reward each verdict of one group by its agreement with the majority (Eq. 5, spec §5.3).

    1.0 if the vote equals the majority, 0.0 if it differs, ``invalid_reward`` if the vote itself is
    INVALID (authors: -1; the paper's indicator would give 0). A group whose majority is INVALID gets 0.0
    for every valid vote, but such a group is never trained (:func:`verifier_group_trainable` is False).

    Args:
        votes: the verdicts of one group.
        majority: the group's majority verdict.
        invalid_reward: reward for an unparseable verdict.

    Returns:
        One reward per vote, in input order.

    Example:
        >>> verifier_rewards(["yes", "no", "invalid"], "yes")
        [1.0, 0.0, -1.0]
    """
    majority = _as_verdict(majority)
    rewards = []
    for vote in map(_as_verdict, votes):
        if vote is Verdict.INVALID:
            rewards.append(float(invalid_reward))
        else:
            rewards.append(1.0 if vote is majority else 0.0)
    return rewards


def verifier_group_trainable(
    votes: Sequence[Verdict | str],
    majority: Verdict | str | None,
    rule_score: float,
    low: float = 0.51,
    high: float = 0.99,
    label: VerifierLabel | str = "maj_cons",
) -> bool:
    """Whether one verifier group may enter the verifier buffer (spec §5.4).

    ``agree`` = fraction of the *valid* votes equal to the majority. The group is kept when
    ``low <= agree <= high`` (the defaults drop unanimous groups and ties; with 8 valid votes 5/8, 6/8 and
    7/8 pass) and, for ``label="maj_cons"``, the majority also equals the rule score (YES <-> 1.0,
    NO <-> 0.0). ``label="maj"`` is the ablation "w/o update consistency" (window only). An INVALID or
    missing majority, or no valid votes, gives False.

    Args:
        votes: the verdicts of one group.
        majority: the group's majority verdict (None when not verified).
        rule_score: R_rule of the judged responder answer.
        low: lowest admissible agreement (authors 0.51).
        high: highest admissible agreement (authors 0.99).
        label: ``maj_cons`` or ``maj`` (a :class:`VerifierLabel`).

    Returns:
        True if the group is trainable.

    Example:
        >>> verifier_group_trainable(["yes"] * 6 + ["no"] * 2, "yes", 1.0)  # agree 6/8 = 0.75, YES == 1.0
        True
    """
    label = VerifierLabel(label)
    if majority is None or _as_verdict(majority) is Verdict.INVALID:
        return False
    majority = _as_verdict(majority)
    valid = [v for v in map(_as_verdict, votes) if v is not Verdict.INVALID]
    if not valid:
        return False
    agree = sum(v is majority for v in valid) / len(valid)
    if not low <= agree <= high:
        return False
    return label is VerifierLabel.MAJ or _VERDICT_VALUE[majority] == rule_score


def questioner_reward(
    status: QuestionStatus | str,
    mean_responder_reward: float | None,
    mapping: QuestionerRewardMapping | str = "gaussian",
    *,
    mu: float = 0.5,
    sigma: float = 0.5 / 3,
    bad_format: float = -1.0,
    bad_ground: float = -0.5,
    zero_variance: float = 0.0,
) -> float:
    """The questioner reward (Eq. 7, spec §5.5).

    ``bad_format`` / ``bad_ground`` / ``zero_variance`` statuses give their fixed values. A ``valid``
    question maps the mean combined responder reward r̄ (which must be given): r̄ <= 0 or r̄ >= 1 gives the
    zero-variance value (no learning signal), otherwise

    * ``gaussian`` (SPELL): exp(-(r̄ - mu)² / (2 sigma²)), peaking at r̄ = mu;
    * ``reverse`` (AZR-style): 1 - r̄;
    * ``rzero`` (R-Zero-style): 1 - 2|r̄ - 0.5|.

    Args:
        status: the question's :class:`QuestionStatus` (or its string).
        mean_responder_reward: r̄ over the G responder rewards; required for ``valid``, ignored otherwise.
        mapping: ``gaussian``, ``reverse`` or ``rzero`` (a :class:`QuestionerRewardMapping`).
        mu: centre of the Gaussian (paper 0.5).
        sigma: width of the Gaussian (paper 0.5/3, so 3 sigma covers [0, 1]).
        bad_format: reward for an unparseable question (paper -1).
        bad_ground: reward for a question answerable without the documents (paper -0.5).
        zero_variance: reward when all responders agree (paper 0).

    Returns:
        The questioner reward.

    Raises:
        ValueError: for ``dropped`` (dropped samples are never trained: calling this is a programming
            error), for ``valid`` without r̄, or for an unknown status or mapping.

    Example:
        >>> questioner_reward("valid", 0.5)  # exp(0)
        1.0
        >>> round(questioner_reward("valid", 2 / 8), 3)  # exp(-0.0625 / 0.0556) = exp(-1.125)
        0.325
        >>> questioner_reward("bad_ground", None)
        -0.5
    """
    status = QuestionStatus(status)
    mapping = QuestionerRewardMapping(mapping)
    match status:
        case QuestionStatus.BAD_FORMAT:
            return float(bad_format)
        case QuestionStatus.BAD_GROUND:
            return float(bad_ground)
        case QuestionStatus.ZERO_VARIANCE:
            return float(zero_variance)
        case QuestionStatus.DROPPED:
            raise ValueError("questioner_reward: dropped questions are never trained and have no reward")
    if mean_responder_reward is None:
        raise ValueError("questioner_reward: a valid question needs mean_responder_reward")
    mean = float(mean_responder_reward)
    if mean <= 0.0 or mean >= 1.0:
        return float(zero_variance)
    match mapping:
        case QuestionerRewardMapping.GAUSSIAN:
            # Eq. 7: a Gaussian centred at mu; 3 sigma = 0.5 makes it ~0.011 at the ends of [0, 1].
            return math.exp(-((mean - mu) ** 2) / (2 * sigma**2))
        case QuestionerRewardMapping.REVERSE:
            return 1.0 - mean
        case QuestionerRewardMapping.RZERO:
            return 1.0 - 2.0 * abs(mean - 0.5)
    raise AssertionError(f"unhandled mapping {mapping!r}")  # unreachable
