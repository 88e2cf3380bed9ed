"""Document filters of ``spell data build`` (paper App. E.1 steps 1-2): length, exact and near duplicates.

Documents are compared as *normalised words*: NFKC, case-folded, ``\\w+`` runs, so spacing, punctuation and
case never hide a copy. Exact duplicates share the hash of their normalised words. Near duplicates have a
Jaccard similarity of word shingles (``shingle_words`` consecutive words) at or above the threshold
(paper: 0.8), estimated from 128-permutation MinHash signatures (datasketch) and found through MinHash LSH.
LSH candidates are confirmed by their signatures' Jaccard estimate, so the bands lean to recall
(:data:`LSH_WEIGHTS`). A document is compared with the documents kept before it: the first copy wins.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

import numpy as np
from datasketch import MinHash, MinHashLSH

# Fixed, not the build's --seed: which documents are duplicates must not depend on the seed.
MINHASH_SEED = 1
# (false-positive weight, false-negative weight) of datasketch's band search. At threshold 0.8 and 128
# permutations: 12 bands of 10 rows, so a pair at Jaccard 0.8 / 0.9 becomes a candidate with probability
# 0.74 / 0.994 (equal weights: 9 x 13 rows, 0.40 / 0.93). False candidates are rejected by the estimate.
# Deviation: paper_map #43 - bands weighted to recall, candidates confirmed (the paper states only 0.8 / 128).
LSH_WEIGHTS = (0.2, 0.8)
_WORD = re.compile(r"\w+")


def normalized_words(text: str) -> list[str]:
    """The words two documents are compared by.

    >>> normalized_words("The  CAFÉ's menu -- 2 items.")
    ['the', 'café', 's', 'menu', '2', 'items']
    """
    return _WORD.findall(unicodedata.normalize("NFKC", text).casefold())


def length_problem(text: str, min_chars: int, max_chars: int) -> str | None:
    """``"too_short"``, ``"too_long"`` or None, by the stripped text's characters (bounds inclusive)."""
    num_chars = len(text.strip())
    if num_chars < min_chars:
        return "too_short"
    return "too_long" if num_chars > max_chars else None


def fingerprint(words: list[str]) -> bytes:
    """A 128-bit hash of the normalised words (exact-duplicate key)."""
    return hashlib.blake2b(" ".join(words).encode("utf-8"), digest_size=16).digest()


def shingles(words: list[str], size: int) -> list[bytes]:
    """The ``size``-word shingles of ``words`` (a shorter text is one shingle).

    >>> shingles(["a", "b", "c"], 2)
    [b'a b', b'b c']
    """
    if not words:
        return []
    return [" ".join(words[i:i + size]).encode("utf-8") for i in range(max(1, len(words) - size + 1))]


class MinHasher:
    """MinHash signatures of shingle sets, all with the same permutations.

    Args:
        num_perm: number of permutations (signature length).
        shingle_words: words per shingle.
    """

    def __init__(self, num_perm: int, shingle_words: int) -> None:
        self._template = MinHash(num_perm=num_perm, seed=MINHASH_SEED)
        self.num_perm = num_perm
        self.shingle_words = shingle_words

    def minhash(self, words: list[str]) -> MinHash:
        signature = self._template.copy()  # reuses the permutations; a new MinHash would redraw them
        signature.update_batch(shingles(words, self.shingle_words))
        return signature


class NearDuplicateIndex:
    """An LSH index of MinHash signatures that answers "which indexed document is this a near-copy of?".

    Args:
        threshold: Jaccard similarity at or above which two documents are near duplicates.
        num_perm: the signatures' length.
    """

    def __init__(self, threshold: float, num_perm: int) -> None:
        self.threshold = threshold
        self._lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=LSH_WEIGHTS)
        self._signatures: dict[int, np.ndarray] = {}
        self.candidates_checked = 0  # LSH candidates compared by signature, over all queries

    @property
    def bands(self) -> tuple[int, int]:
        """(number of LSH bands, rows per band)."""
        return self._lsh.b, self._lsh.r

    def __len__(self) -> int:
        return len(self._signatures)

    def add(self, key: int, minhash: MinHash) -> None:
        self._lsh.insert(key, minhash, check_duplication=False)
        self._signatures[key] = minhash.hashvalues

    def best_match(self, minhash: MinHash) -> tuple[int, float] | None:
        """``(key, estimated Jaccard)`` of the most similar indexed document at or above the threshold, or None.

        Ties go to the smaller key (the earlier document).
        """
        candidates = sorted(self._lsh.query(minhash))
        if not candidates:
            return None
        self.candidates_checked += len(candidates)
        stacked = np.stack([self._signatures[key] for key in candidates])  # [C, num_perm]
        similarity = (stacked == minhash.hashvalues).mean(axis=1)  # [C]
        best = int(np.argmax(similarity))
        return (candidates[best], float(similarity[best])) if similarity[best] >= self.threshold else None


class ExactDuplicateIndex:
    """Fingerprints of kept documents -> the id of the first document with those words."""

    def __init__(self) -> None:
        self._first: dict[bytes, int] = {}

    def __len__(self) -> int:
        return len(self._first)

    def first(self, key: bytes) -> int | None:
        return self._first.get(key)

    def add(self, key: bytes, doc_id: int) -> None:
        self._first.setdefault(key, doc_id)
