"""Role-specific dynamic sampling: which rollouts enter the training batch (paper §3.3, spec §3 steps 9-13, §6).

Responder groups are kept when their rewards vary; questioner negatives are drawn per task to match the
positives; verifier groups are drawn to a fixed quota (counted over all ranks under torchrun). Every draw takes
an injected ``random.Random`` so a seeded run is reproducible. Stdlib only.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from typing import TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


def draw_questioner_negatives(
    good_counts: Mapping[str, int],
    pool: Mapping[str, Sequence[T]],
    ratio: float,
    rng: random.Random,
) -> list[T]:
    """Draw questioner negatives (bad_format / bad_ground / zero_variance samples), stratified per task.

    Spec §3 step 12: tasks are visited in decreasing order of their good (positive) count, ties broken by
    task name so the order is deterministic. Each task wants ``int(ratio * good) + carry`` negatives and
    gives ``min(want, available)`` drawn without replacement from its pool; the shortfall carries over to
    the next task. Tasks that have a pool but no good samples come last (by name), so they can absorb the
    remaining carry. The caller truncates to a multiple of the world size if needed.

    Args:
        good_counts: task -> number of positive questioner samples in the batch.
        pool: task -> the negative samples available for that task.
        ratio: negatives per positive (paper 1: "an equal number"; 0 disables negatives).
        rng: the random source.

    Returns:
        The drawn negatives, grouped by task in visiting order.

    Raises:
        ValueError: if ``ratio`` is negative.
    """
    if ratio < 0:
        raise ValueError(f"draw_questioner_negatives: ratio must be >= 0, got {ratio}")
    with_good = sorted((t for t, n in good_counts.items() if n > 0), key=lambda t: (-good_counts[t], str(t)))
    without_good = sorted((t for t in pool if good_counts.get(t, 0) <= 0), key=str)
    drawn: list[T] = []
    carry = 0
    for task in with_good + without_good:
        want = int(ratio * good_counts.get(task, 0)) + carry
        available = list(pool.get(task, ()))
        take = min(want, len(available))
        drawn.extend(rng.sample(available, take))
        carry = want - take
    if carry:
        logger.debug("questioner negatives short by %d (pool exhausted)", carry)
    return drawn


def draw_verifier_groups(
    groups: Sequence[T],
    num_responder_sequences: int,
    update_ratio: float,
    votes_per_group: int,
    rng: random.Random,
) -> list[T]:
    """Draw the verifier groups trained this step (spec §3 step 13, §5.4).

    The quota is ``int(num_responder_sequences * update_ratio / votes_per_group)`` groups, i.e.
    ``update_ratio`` verifier *sequences* per responder sequence (authors: int(1024 * 0.125 / 8) = 16 groups
    = 128 sequences, as many as there are questions). If fewer trainable groups are available than the
    quota, nothing is drawn and the verifier is not updated this step (authors' behaviour, spec §11.9).

    Args:
        groups: the trainable verifier groups (already filtered by ``verifier_group_trainable``).
        num_responder_sequences: responder sequences in this step's batch.
        update_ratio: verifier sequences per responder sequence.
        votes_per_group: G_v, the votes (sequences) in one verifier group.
        rng: the random source.

    Returns:
        ``quota`` groups drawn uniformly without replacement (in draw order), or ``[]``.

    Raises:
        ValueError: if ``votes_per_group < 1`` or ``update_ratio < 0``.
    """
    if votes_per_group < 1:
        raise ValueError(f"draw_verifier_groups: votes_per_group must be >= 1, got {votes_per_group}")
    if update_ratio < 0:
        raise ValueError(f"draw_verifier_groups: update_ratio must be >= 0, got {update_ratio}")
    quota = int(num_responder_sequences * update_ratio / votes_per_group)
    if quota <= 0:
        return []
    if len(groups) < quota:
        logger.debug("verifier update skipped: %d trainable groups < quota %d", len(groups), quota)
        return []
    return rng.sample(list(groups), quota)


def draw_verifier_groups_by_rank(
    pool_sizes: Sequence[int],
    responder_counts: Sequence[int],
    update_ratio: float,
    votes_per_group: int,
    rng: random.Random,
) -> list[list[int]]:
    """The verifier draw of :func:`draw_verifier_groups` over the UNION of all ranks' pools (data parallel).

    The quota comes from the global responder count, the skip rule looks at the global pool, and ``quota``
    groups are drawn uniformly without replacement from the pools concatenated in rank order; each rank then
    keeps the drawn groups it owns. Every rank must call this with the same arguments and an ``rng`` in the
    same state, so all ranks agree on the draw. With one rank the draw equals ``draw_verifier_groups`` on
    that rank's pool with the same ``rng`` (``random.sample`` depends only on the population's length).

    Args:
        pool_sizes: every rank's number of trainable verifier groups, indexed by rank.
        responder_counts: every rank's responder sequences in this step's batch, indexed by rank.
        update_ratio: verifier sequences per responder sequence.
        votes_per_group: G_v, the votes (sequences) in one verifier group.
        rng: the random source, in the same state on every rank.

    Returns:
        For every rank, the indices into its own pool of the groups it trains on, in draw order.

    Example:
        >>> # global quota int((4 + 4) * 1.0 / 4) = 2 of 1 + 1 groups: each rank keeps its own
        >>> draw_verifier_groups_by_rank([1, 1], [4, 4], 1.0, 4, random.Random(0))
        [[0], [0]]
    """
    if len(pool_sizes) != len(responder_counts):
        raise ValueError(f"draw_verifier_groups_by_rank: {len(pool_sizes)} pool sizes "
                         f"but {len(responder_counts)} responder counts")
    union = [(rank, index) for rank, size in enumerate(pool_sizes) for index in range(size)]
    drawn = draw_verifier_groups(union, sum(responder_counts), update_ratio, votes_per_group, rng)
    return [[index for owner, index in drawn if owner == rank] for rank in range(len(pool_sizes))]
