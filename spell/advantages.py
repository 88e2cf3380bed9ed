"""Role-specific advantages: group z-scores for responders/verifiers (Eq. 8), task z-scores for questioners (Eq. 9).

Stage 11 of the self-play step (spec §7.1). One scalar advantage per sequence, broadcast to its completion
tokens by the loss. The std is the unbiased (n - 1) one, as ``torch.std`` in the authors' code, with
ε = 1e-6. Pure python (math only, no torch), so it runs in microseconds on the ~1.4K sequences of a batch.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Sequence

from spell.types import AdvantageScope, Role, RoleSample


def group_zscore(rewards: Sequence[float], group_ids: Sequence[Hashable], eps: float = 1e-6) -> list[float]:
    """Normalise each reward within its group: (r - mean_g) / (std_g + eps), unbiased std.

    A group of one sample has no std; like the authors' code (verl's GRPO), it uses mean 0 and std 1, so
    its advantage is r / (1 + eps). A group whose rewards are all equal gets advantage 0.

    Args:
        rewards: one reward per sample. Shape: [N].
        group_ids: the group of each sample (any hashable). Shape: [N].
        eps: added to the std.

    Returns:
        The advantages, in input order. Shape: [N].

    Raises:
        ValueError: if the two sequences differ in length.

    Example:
        >>> [round(a, 4) for a in group_zscore([1.0, 0.0, 1.0, 0.0], ["g"] * 4)]  # .5 / sqrt(1/3)
        [0.866, -0.866, 0.866, -0.866]
        >>> [round(a, 7) for a in group_zscore([0.5], ["solo"])]  # size-1 group: (0.5 - 0) / (1 + 1e-6)
        [0.4999995]
    """
    if len(rewards) != len(group_ids):
        raise ValueError(f"group_zscore: {len(rewards)} rewards but {len(group_ids)} group ids")
    members: dict[Hashable, list[int]] = defaultdict(list)
    for index, group_id in enumerate(group_ids):
        members[group_id].append(index)
    advantages = [0.0] * len(rewards)
    for indices in members.values():
        values = [float(rewards[i]) for i in indices]
        if len(values) == 1:
            mean, std = 0.0, 1.0  # authors' convention for a lone sample
        else:
            mean = sum(values) / len(values)
            std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
        for i, value in zip(indices, values):
            advantages[i] = (value - mean) / (std + eps)
    return advantages


def questioner_advantages(
    rewards: Sequence[float],
    tasks: Sequence[str],
    scope: AdvantageScope | str = "per_task",
    eps: float = 1e-6,
) -> list[float]:
    """Questioner advantages (Eq. 9, REINFORCE++-baseline style; spec §7.1, §11.12).

    ``per_task`` (authors' code): z-score over the questioner samples of the same task, positives and
    negatives (bad_format / bad_ground / zero_variance) together. ``batch`` (paper text): one z-score over
    all questioner samples of the batch.

    Args:
        rewards: questioner rewards. Shape: [N_que].
        tasks: the task of each questioner sample. Shape: [N_que].
        scope: ``per_task`` or ``batch`` (an :class:`AdvantageScope`).
        eps: added to the std.

    Returns:
        The advantages, in input order.
    """
    match AdvantageScope(scope):
        case AdvantageScope.PER_TASK:
            return group_zscore(rewards, [str(t) for t in tasks], eps)
        case AdvantageScope.BATCH:
            if len(rewards) != len(tasks):
                raise ValueError(f"questioner_advantages: {len(rewards)} rewards but {len(tasks)} tasks")
            return group_zscore(rewards, ["batch"] * len(rewards), eps)
    raise AssertionError(f"unhandled scope {scope!r}")  # unreachable: AdvantageScope(scope) validated


def questioner_advantages_by_rank(
    rewards_by_rank: Sequence[Sequence[float]],
    tasks_by_rank: Sequence[Sequence[str]],
    scope: AdvantageScope | str = "per_task",
    eps: float = 1e-6,
) -> list[list[float]]:
    """Each rank's questioner advantages, normalised over the UNION of all ranks' questioner samples (Eq. 9).

    Under data parallelism every rank builds part of the batch; Eq. 9's statistics span the whole batch, so
    the z-score is taken over the ranks' samples concatenated in rank order, then split back. With one rank
    this is :func:`questioner_advantages` itself.

    Args:
        rewards_by_rank: every rank's questioner rewards, indexed by rank (what ``all_gather_object`` returns).
        tasks_by_rank: the task of each of those samples, same layout.
        scope: ``per_task`` or ``batch``.
        eps: added to the std.

    Returns:
        Every rank's advantages, indexed by rank, each in that rank's input order.

    Example:
        >>> by_rank = questioner_advantages_by_rank([[1.0], [0.0]], [["t"], ["t"]])  # mean .5, std sqrt(.5)
        >>> [[round(a, 4) for a in rank] for rank in by_rank]  # not size-1 groups: (±.5) / .7071
        [[0.7071], [-0.7071]]
    """
    if len(rewards_by_rank) != len(tasks_by_rank):
        raise ValueError(f"questioner_advantages_by_rank: {len(rewards_by_rank)} reward lists "
                         f"but {len(tasks_by_rank)} task lists")
    union = questioner_advantages([r for rank in rewards_by_rank for r in rank],
                                  [t for rank in tasks_by_rank for t in rank], scope, eps)
    per_rank, start = [], 0
    for rewards in rewards_by_rank:
        per_rank.append(union[start: start + len(rewards)])
        start += len(rewards)
    return per_rank


def assign_advantages(
    samples: list[RoleSample],
    questioner_scope: AdvantageScope | str = "per_task",
    questioner_values: Sequence[float] | None = None,
) -> None:
    """Fill ``sample.advantage`` for a whole mixed-role batch, in place (Eq. 8-9).

    Responders and verifiers are normalised within their ``group_id`` (Eq. 8); groups never mix roles, so a
    verifier group may reuse a responder group's id. Questioners go through :func:`questioner_advantages`,
    unless their advantages were computed elsewhere (over all ranks: :func:`questioner_advantages_by_rank`).

    Args:
        samples: the batch; ``reward``, ``role``, ``task`` and ``group_id`` are read.
        questioner_scope: ``per_task`` or ``batch``.
        questioner_values: the questioner samples' advantages in batch order; None computes them over
            this batch.

    Raises:
        ValueError: if ``questioner_values`` does not have one value per questioner sample.
    """
    grouped = [s for s in samples if s.role != Role.QUESTIONER]
    group_keys = [(str(s.role), s.group_id) for s in grouped]
    for sample, advantage in zip(grouped, group_zscore([s.reward for s in grouped], group_keys)):
        sample.advantage = advantage
    questioners = [s for s in samples if s.role == Role.QUESTIONER]
    if questioner_values is None:
        questioner_values = questioner_advantages([s.reward for s in questioners], [s.task for s in questioners],
                                                  questioner_scope)
    if len(questioner_values) != len(questioners):
        raise ValueError(f"assign_advantages: {len(questioner_values)} questioner advantages "
                         f"for {len(questioners)} questioner samples")
    for sample, advantage in zip(questioners, questioner_values):
        sample.advantage = advantage
