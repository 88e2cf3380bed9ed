"""Synthetic token tasks that grow in-context retrieval (induction heads) before any QA (issue 5, stage 1).

Generators over token ids, deterministic given the ``random.Random`` passed in: ``copy`` (a sequence, a
separator, the sequence again), ``kv`` (key -> value pairs, then queried keys), ``lookup`` (train documents,
then a unique span of them to continue) and ``doclm`` (next-token prediction on documents). Each returns an
:class:`Example` whose ``mask`` marks the scored tokens. Stdlib only.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

SYNTHETIC_KINDS = ("copy", "kv", "lookup", "doclm")


@dataclass(frozen=True, slots=True)
class Example:
    """A training sequence: ``ids`` and ``mask`` (1 = this token is predicted and scored), same length."""

    ids: list[int]
    mask: list[int]


@dataclass(frozen=True, slots=True)
class SyntheticVocab:
    """Token ids the generators use: random tokens are drawn from ``[low, high)``; ``sep`` starts the
    queries, ``arrow`` separates key and value, ``end`` closes a value or copy."""

    low: int
    high: int
    sep: int
    arrow: int
    end: int

    def random_tokens(self, rng: random.Random, n: int) -> list[int]:
        """``n`` uniform token ids from ``[low, high)``."""
        return [rng.randrange(self.low, self.high) for _ in range(n)]


def copy_example(rng: random.Random, vocab: SyntheticVocab, max_items: int = 96) -> Example:
    """``x SEP x END``; the loss covers the second ``x`` and ``END``.

    >>> ex = copy_example(random.Random(0), SyntheticVocab(10, 20, 1, 2, 3), max_items=8)
    >>> n = (len(ex.ids) - 2) // 2; ex.ids[:n] == ex.ids[n + 1:-1], sum(ex.mask) == n + 1
    (True, True)
    """
    items = vocab.random_tokens(rng, rng.randint(4, max_items))
    ids = items + [vocab.sep] + items + [vocab.end]
    mask = [0] * (len(items) + 1) + [1] * (len(items) + 1)
    return Example(ids, mask)


def kv_example(rng: random.Random, vocab: SyntheticVocab, max_pairs: int = 24, num_queries: int = 4) -> Example:
    """``k -> v END`` pairs (keys 1-3 tokens, values 1-3 tokens, keys distinct), ``SEP``, then queried pairs;
    the loss covers the queried values and their ``END``."""
    pairs: dict[tuple[int, ...], list[int]] = {}
    target = rng.randint(4, max_pairs)
    while len(pairs) < target:
        pairs[tuple(vocab.random_tokens(rng, rng.randint(1, 3)))] = vocab.random_tokens(rng, rng.randint(1, 3))
    ids: list[int] = []
    for key, value in pairs.items():
        ids += [*key, vocab.arrow, *value, vocab.end]
    ids.append(vocab.sep)
    mask = [0] * len(ids)
    for key in rng.sample(list(pairs), min(num_queries, len(pairs))):
        value = pairs[key]
        ids += [*key, vocab.arrow, *value, vocab.end]
        mask += [0] * (len(key) + 1) + [1] * (len(value) + 1)
    return Example(ids, mask)


def _unique_spans(context: Sequence[int], prefix: int, rng: random.Random, count: int) -> list[int]:
    """Start positions whose ``prefix``-token span occurs exactly once in ``context`` (random order)."""
    seen: dict[tuple[int, ...], int] = {}
    for start in range(len(context) - prefix + 1):
        key = tuple(context[start:start + prefix])
        seen[key] = seen.get(key, 0) + 1
    starts = [s for s in range(len(context) - prefix - 3) if seen[tuple(context[s:s + prefix])] == 1]
    return rng.sample(starts, min(count, len(starts)))


def lookup_example(rng: random.Random, vocab: SyntheticVocab, documents: Sequence[Sequence[int]], *,
                   max_docs: int = 5, num_queries: int = 4) -> Example:
    """Documents (1-``max_docs`` of ``documents``, tokenized), ``SEP``, then queries: a unique 3-token span of
    the documents followed by the next 2-6 tokens and ``END``; the loss covers the continuation and ``END``."""
    chosen = rng.sample(range(len(documents)), rng.randint(1, min(max_docs, len(documents))))
    context = [t for i in chosen for t in documents[i]]
    ids, mask = list(context) + [vocab.sep], [0] * (len(context) + 1)
    for start in _unique_spans(context, 3, rng, num_queries):
        length = rng.randint(2, 6)
        follow = context[start + 3:start + 3 + length]
        ids += [*context[start:start + 3], *follow, vocab.end]
        mask += [0, 0, 0] + [1] * (len(follow) + 1)
    return Example(ids, mask)


def doclm_example(rng: random.Random, documents: Sequence[Sequence[int]], max_docs: int = 5) -> Example:
    """Plain next-token prediction over 1-``max_docs`` concatenated documents (loss on every token but the
    first)."""
    chosen = rng.sample(range(len(documents)), rng.randint(1, min(max_docs, len(documents))))
    ids = [t for i in chosen for t in documents[i]]
    return Example(ids, [0] + [1] * (len(ids) - 1))


def synthetic_example(rng: random.Random, vocab: SyntheticVocab, documents: Sequence[Sequence[int]],
                      weights: Sequence[float] = (0.35, 0.25, 0.25, 0.15)) -> Example:
    """One example of a kind drawn with ``weights`` over :data:`SYNTHETIC_KINDS`.

    Args:
        rng: the random source.
        vocab: token ids for the random-token tasks.
        documents: tokenized train documents for ``lookup`` and ``doclm``.
        weights: mixture weights of copy, kv, lookup, doclm.

    Returns:
        The example.
    """
    kind = rng.choices(SYNTHETIC_KINDS, weights=weights)[0]
    if kind == "copy":
        return copy_example(rng, vocab)
    if kind == "kv":
        return kv_example(rng, vocab)
    if kind == "lookup":
        return lookup_example(rng, vocab, documents)
    return doclm_example(rng, documents)
