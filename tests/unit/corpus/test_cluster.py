"""spell/corpus/cluster.py: hierarchical k-means into sets within the size and token bounds."""

from __future__ import annotations

import numpy as np
import pytest

from spell.corpus.cluster import (
    BRANCHING,
    ClusterStats,
    SetLimits,
    _num_parts,
    cluster_sets,
    merge_small_sets,
)


def _blobs(sizes: list[int], dims: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around one axis per blob (far apart), and the blob of each row."""
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for blob, size in enumerate(sizes):
        centre = np.eye(dims)[blob]
        rows.append(centre + 0.05 * rng.standard_normal((size, dims)))
        labels += [blob] * size
    vectors = np.concatenate(rows)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True), np.array(labels)


def test_sets_respect_every_bound_and_stay_within_one_blob():
    vectors, blob = _blobs([37, 23, 41])
    tokens = np.random.default_rng(1).integers(1, 6, size=len(vectors))  # 1..5 tokens each
    limits = SetLimits(target_docs=10, min_docs=4, max_docs=15, max_tokens=40)
    stats = ClusterStats()
    sets = cluster_sets(vectors, tokens, limits, seed=0, stats=stats)
    for members in sets:
        assert limits.min_docs <= len(members) <= limits.max_docs
        assert tokens[members].sum() <= limits.max_tokens
        assert len(set(blob[members])) == 1  # related documents only
    placed = np.concatenate(sets)
    assert len(placed) == len(set(placed.tolist()))  # no document twice
    assert len(placed) + stats.dropped_documents == len(vectors)  # every document placed or counted as dropped
    assert stats.kmeans_splits >= 1


def test_same_seed_same_sets():
    vectors, _ = _blobs([30, 30], seed=3)
    tokens = np.ones(60, dtype=np.int64)
    limits = SetLimits(target_docs=8, min_docs=3, max_docs=12, max_tokens=100)
    first = cluster_sets(vectors, tokens, limits, seed=7)
    again = cluster_sets(vectors, tokens, limits, seed=7)
    assert [s.tolist() for s in first] == [s.tolist() for s in again]


def test_identical_vectors_are_packed_in_order_by_the_token_budget():
    # 6 identical documents of 4 tokens, budget 10: 4 + 4 = 8 fits, a third would make 12 -> pairs
    stats = ClusterStats()
    sets = cluster_sets(np.ones((6, 3)), np.full(6, 4), SetLimits(5, 2, 10, 10), seed=0, stats=stats)
    assert [s.tolist() for s in sets] == [[0, 1], [2, 3], [4, 5]]
    assert (stats.packed_clusters, stats.kmeans_splits) == (1, 0)


@pytest.mark.parametrize(("size", "total_tokens", "expected"), [
    (41, 10, 2),       # round(41 / 20) = 2
    (70, 10, 4),       # round(70 / 20) = round(3.5) = 4 (banker's rounding: 3.5 -> 4)
    (25, 100, 4),      # round(25 / 20) = 1, but ceil(100 / 30) = 4 sets are needed for the tokens
    (1000, 10, BRANCHING),  # round(1000 / 20) = 50, capped at 16 per level
    (3, 300, 3),       # ceil(300 / 30) = 10, but only 3 documents
])
def test_num_parts(size, total_tokens, expected):
    tokens = np.zeros(size, dtype=np.int64)
    tokens[0] = total_tokens
    assert _num_parts(np.arange(size), tokens, SetLimits(20, 1, 40, 30)) == expected


def _sets_at(points: dict[str, tuple[list[float], int]]) -> tuple[list[np.ndarray], np.ndarray]:
    """Sets of ``count`` documents all at one 2-d point, in the given order."""
    sets, vectors, start = [], [], 0
    for point, count in points.values():
        sets.append(np.arange(start, start + count))
        vectors += [point] * count
        start += count
    vectors = np.array(vectors, dtype=float)
    return sets, vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_small_sets_merge_into_the_most_similar_set_with_room():
    # A(4) and B(4) are big enough; C(1) lies next to A, D(1) between A and B, E(2) next to D.
    sets, vectors = _sets_at({"A": ([1, 0], 4), "B": ([0, 1], 4), "C": ([1, 0.1], 1), "D": ([0.8, 0.6], 1),
                              "E": ([0.6, 0.8], 2)})
    stats = ClusterStats()
    merged = merge_small_sets(sets, vectors, np.ones(12, dtype=np.int64), SetLimits(4, 3, 5, 100), stats)
    # C: cos with A 0.995 > D 0.856 > E 0.677 -> A (4 + 1 = 5 = max_docs, now full).
    # D: A is full; cos with E = 0.48 + 0.48 = 0.96 > B 0.6 -> E = {D, E}, 3 documents = min_docs: kept.
    assert [m.tolist() for m in merged] == [[0, 1, 2, 3, 8], [4, 5, 6, 7], [9, 10, 11]]
    assert (stats.merged_sets, stats.dropped_sets, stats.dropped_documents) == (2, 0, 0)


def test_small_set_without_room_is_dropped_and_counted():
    sets, vectors = _sets_at({"A": ([1, 0], 4), "B": ([0, 1], 4), "C": ([1, 1], 2)})
    stats = ClusterStats()
    # max_docs 4: A and B are full; C (2 < min 3) has nowhere to go
    merged = merge_small_sets(sets, vectors, np.ones(10, dtype=np.int64), SetLimits(4, 3, 4, 100), stats)
    assert [m.tolist() for m in merged] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert (stats.merged_sets, stats.dropped_sets, stats.dropped_documents) == (0, 1, 2)


def test_token_budget_blocks_a_merge():
    # C fits A by documents (3 + 1 <= 5) but not by tokens (2 + 2 + 2 + 5 = 11 > 10): it goes to B (3 + 5 = 8)
    sets, vectors = _sets_at({"A": ([1, 0], 3), "B": ([0, 1], 3), "C": ([1, 0.2], 1)})
    tokens = np.array([2, 2, 2, 1, 1, 1, 5])
    merged = merge_small_sets(sets, vectors, tokens, SetLimits(4, 2, 5, 10), ClusterStats())
    assert [m.tolist() for m in merged] == [[0, 1, 2], [3, 4, 5, 6]]
