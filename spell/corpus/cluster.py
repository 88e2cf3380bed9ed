"""Hierarchical k-means of document vectors into document sets (paper App. E.1 step 3: clusters of ~20).

A cluster becomes a set when it holds at most ``max_docs`` documents and ``max_tokens`` tokens. A larger one
is split by seeded k-means into k = round(size / target) parts (at least 2, at most :data:`BRANCHING`, so a
big corpus is cut level by level rather than by one k-means with thousands of centres), and each part is
handled the same way. A cluster k-means cannot split (identical vectors) is packed in document order. Then
every set with fewer than ``min_docs`` documents is merged into the set with the most similar centroid that
still has room; what finds no room is dropped and counted. Every final set therefore has ``min_docs`` to
``max_docs`` documents and at most ``max_tokens`` tokens (each document must fit ``max_tokens`` alone).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

BRANCHING = 16
KMEANS_INITS = 1  # scikit-learn's own default for k-means++ initialisation


@dataclass(frozen=True, slots=True)
class SetLimits:
    """Bounds of one document set: documents ``min_docs..max_docs``, target ``target_docs``, ``max_tokens``."""

    target_docs: int
    min_docs: int
    max_docs: int
    max_tokens: int


@dataclass(slots=True)
class ClusterStats:
    """What clustering did: clusters split by k-means, packed in order, small sets merged, documents dropped."""

    kmeans_splits: int = 0
    packed_clusters: int = 0
    merged_sets: int = 0
    dropped_sets: int = 0
    dropped_documents: int = 0


def cluster_sets(vectors: np.ndarray, tokens: np.ndarray, limits: SetLimits, seed: int,
                 stats: ClusterStats | None = None) -> list[np.ndarray]:
    """Group documents into sets within ``limits``.

    Args:
        vectors: document vectors (L2-normalised). Shape: ``[N, D]``.
        tokens: tokens per document, each at most ``limits.max_tokens``. Shape: ``[N]``.
        limits: the set bounds.
        seed: k-means seed.
        stats: filled with counts, if given.

    Returns:
        The sets as sorted arrays of row indices into ``vectors``, in the clustering's depth-first order.
    """
    stats = stats if stats is not None else ClusterStats()
    assert len(vectors) == len(tokens), f"{len(vectors)} vectors but {len(tokens)} token counts"
    assert not len(tokens) or tokens.max() <= limits.max_tokens, "documents above the token budget reach clustering"
    leaves = split_until_fit(vectors, tokens, limits, seed, stats)
    return merge_small_sets(leaves, vectors, tokens, limits, stats)


# Deviation: paper_map #46 - a set must also fit the token budget (the paper states only the ~20 average).
def _fits(indices: np.ndarray, tokens: np.ndarray, limits: SetLimits) -> bool:
    return len(indices) <= limits.max_docs and int(tokens[indices].sum()) <= limits.max_tokens


def split_until_fit(vectors: np.ndarray, tokens: np.ndarray, limits: SetLimits, seed: int,
                    stats: ClusterStats) -> list[np.ndarray]:
    """Recursive k-means (depth first, iterative) until every cluster fits ``limits``."""
    leaves: list[np.ndarray] = []
    pending = [np.arange(len(vectors))] if len(vectors) else []
    while pending:
        indices = pending.pop()
        if _fits(indices, tokens, limits):
            leaves.append(indices)
            continue
        parts = _kmeans_split(vectors, tokens, indices, limits, seed)
        if len(parts) < 2:
            stats.packed_clusters += 1
            leaves.extend(pack_in_order(indices, tokens, limits))
            continue
        stats.kmeans_splits += 1
        pending.extend(reversed(parts))
    return leaves


def _num_parts(indices: np.ndarray, tokens: np.ndarray, limits: SetLimits) -> int:
    """round(size / target), raised to what the token budget needs, within 2..BRANCHING and the size."""
    by_docs = round(len(indices) / limits.target_docs)
    by_tokens = -(-int(tokens[indices].sum()) // limits.max_tokens)
    return min(max(2, by_docs, by_tokens), BRANCHING, len(indices))


def _kmeans_split(vectors: np.ndarray, tokens: np.ndarray, indices: np.ndarray, limits: SetLimits,
                  seed: int) -> list[np.ndarray]:
    from sklearn.cluster import KMeans

    k = _num_parts(indices, tokens, limits)
    points = vectors[indices]
    if not np.ptp(points, axis=0).any():  # all vectors identical: nothing for k-means to separate
        return [indices]
    with warnings.catch_warnings():  # fewer distinct points than k: some clusters stay empty, that is fine
        warnings.simplefilter("ignore")
        labels = KMeans(n_clusters=k, n_init=KMEANS_INITS, random_state=seed).fit_predict(points)
    parts = [indices[labels == label] for label in range(k)]
    return [part for part in parts if len(part)]


def pack_in_order(indices: np.ndarray, tokens: np.ndarray, limits: SetLimits) -> list[np.ndarray]:
    """Cut ``indices`` into consecutive runs that fit ``limits`` (greedy; each document fits alone).

    >>> limits = SetLimits(target_docs=2, min_docs=1, max_docs=2, max_tokens=10)
    >>> [s.tolist() for s in pack_in_order(np.arange(4), np.array([3, 3, 9, 1]), limits)]
    [[0, 1], [2, 3]]
    """
    runs: list[list[int]] = [[]]
    used = 0
    for index in indices:
        cost = int(tokens[index])
        if runs[-1] and (len(runs[-1]) == limits.max_docs or used + cost > limits.max_tokens):
            runs.append([])
            used = 0
        runs[-1].append(int(index))
        used += cost
    return [np.array(run, dtype=np.int64) for run in runs if run]


def merge_small_sets(sets: list[np.ndarray], vectors: np.ndarray, tokens: np.ndarray, limits: SetLimits,
                     stats: ClusterStats) -> list[np.ndarray]:
    """Merge each set below ``min_docs`` (in order) into the most similar set with room; drop what is left.

    Similarity is the cosine of the two sets' mean vectors; ties go to the earlier set. The merged set keeps the
    absorbing set's place in the order.
    """
    groups = [np.sort(s) for s in sets]
    centroids = np.stack([_unit(vectors[g].mean(axis=0)) for g in groups]) if groups else np.zeros((0, 1))
    sizes = np.array([len(g) for g in groups])
    budgets = np.array([int(tokens[g].sum()) for g in groups])
    for small in range(len(groups)):
        if not 0 < sizes[small] < limits.min_docs:
            continue
        room = (sizes > 0) & (sizes + sizes[small] <= limits.max_docs)
        room &= budgets + budgets[small] <= limits.max_tokens
        room[small] = False
        if not room.any():
            continue
        similarity = np.where(room, centroids @ centroids[small], -np.inf)
        target = int(np.argmax(similarity))
        groups[target] = np.sort(np.concatenate([groups[target], groups[small]]))
        centroids[target] = _unit(vectors[groups[target]].mean(axis=0))
        sizes[target], budgets[target] = len(groups[target]), int(tokens[groups[target]].sum())
        sizes[small], budgets[small] = 0, 0
        stats.merged_sets += 1
    kept = [g for g, size in zip(groups, sizes) if size >= limits.min_docs]
    stats.dropped_sets = sum(1 for size in sizes if 0 < size < limits.min_docs)
    stats.dropped_documents = int(sum(size for size in sizes if 0 < size < limits.min_docs))
    return kept


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector
