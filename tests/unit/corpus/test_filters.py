"""spell/corpus/filters.py: length bounds, exact fingerprints, MinHash-LSH near duplicates."""

from __future__ import annotations

import pytest
from corpus_texts import topic_text

from spell.corpus.filters import (
    ExactDuplicateIndex,
    MinHasher,
    NearDuplicateIndex,
    fingerprint,
    length_problem,
    normalized_words,
)


@pytest.mark.parametrize(("text", "expected"), [
    ("x" * 99, "too_short"),            # 99 < 100
    ("x" * 100, None),                  # bounds are inclusive
    ("  " + "x" * 100 + "\n\n", None),  # surrounding whitespace does not count
    ("x" * 200, None),
    ("x" * 201, "too_long"),            # 201 > 200
])
def test_length_problem_bounds(text, expected):
    assert length_problem(text, min_chars=100, max_chars=200) == expected


def test_fingerprint_ignores_case_spacing_and_punctuation():
    original = fingerprint(normalized_words("The court ruled: appeal denied."))
    assert fingerprint(normalized_words("the   COURT ruled -- appeal\ndenied")) == original
    assert fingerprint(normalized_words("The court ruled: appeal granted.")) != original


def test_exact_index_keeps_the_first_id():
    index = ExactDuplicateIndex()
    index.add(b"k", 3)
    index.add(b"k", 7)
    assert (index.first(b"k"), index.first(b"other"), len(index)) == (3, None, 1)


def _replace(words: list[str], positions: range) -> list[str]:
    return [f"other{i}" if i in positions else word for i, word in enumerate(words)]


def test_near_duplicate_found_and_scored_unrelated_and_half_changed_not():
    hasher = MinHasher(num_perm=128, shingle_words=5)
    index = NearDuplicateIndex(threshold=0.8, num_perm=128)
    words = normalized_words(topic_text("astro", 1, num_words=200))
    index.add(0, hasher.minhash(words))
    index.add(1, hasher.minhash(normalized_words(topic_text("cook", 1, num_words=200))))
    # one word changed at position 100: the 5 shingles starting at 96..100 differ -> 191 shared of 196 + 5 = 201
    # distinct shingles, Jaccard 191 / 201 = 0.950; 128 permutations estimate it to within a few hundredths
    key, similarity = index.best_match(hasher.minhash(_replace(words, range(100, 101))))
    assert key == 0 and similarity == pytest.approx(191 / 201, abs=0.06)
    assert index.best_match(hasher.minhash(words)) == (0, 1.0)  # an exact copy: every permutation agrees
    # the last 100 words changed: shingles starting at 0..95 shared -> Jaccard 96 / (196 + 100) = 0.32 < 0.8
    assert index.best_match(hasher.minhash(_replace(words, range(100, 200)))) is None
    assert index.best_match(hasher.minhash(normalized_words(topic_text("law", 1, num_words=200)))) is None
