"""Decontamination (paper App. E.1: deduplication "also removes overlap with all evaluation benchmarks").

``--exclude PATH...`` names benchmark files in the formats ``spell eval`` reads (generic JSONL and the native
LongBench v1 / LongBench-v2 / Frames / DocMath files; a folder = every ``.json``/``.jsonl`` file below it), the
format told by the first record's fields. Every context document of every question is indexed twice:

* its MinHash signature, in an LSH index: a training document whose Jaccard similarity with an evaluation
  document reaches the dedup threshold is a **near duplicate**;
* hashes of its ``w``-word windows taken every ``w`` words, ``w = ceil(span_words / 2)``: a training document
  that shares a verbatim run of ``span_words`` or more (normalised) words with an evaluation document holds
  one whole such window, since a run of ``2w - 1 <= span_words`` words always covers one window start. Runs
  of ``w`` to ``span_words - 1`` words are caught when they happen to cover one. This catches a short excerpt
  of a long context, which is far below the Jaccard threshold. Memory: one 8-byte hash per ``w`` evaluation
  words.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datasketch import MinHash

from spell.corpus.filters import MinHasher, NearDuplicateIndex, fingerprint, normalized_words
from spell.evaluate.formats import DataError, EvalItem, load_generic, read_records
from spell.evaluate.native import load_docmath_file, load_frames, load_longbench_v1, load_longbench_v2

# Window-hash coefficients: any fixed odd 64-bit numbers (evaluation and training windows share them).
_COEFFICIENT_SEED = 2509_23863


@dataclass(frozen=True, slots=True)
class Contamination:
    """Why a training document was dropped: ``near_duplicate`` or ``verbatim_span`` of ``benchmark``."""

    reason: str
    benchmark: str
    similarity: float | None = None


class ContaminationIndex:
    """Evaluation documents, indexed for near-duplicate and verbatim-span lookups.

    Args:
        hasher: the build's MinHasher (training signatures must come from the same permutations).
        threshold: the near-duplicate Jaccard threshold.
        span_words: the verbatim run (in normalised words) that always counts as contamination.
    """

    def __init__(self, hasher: MinHasher, threshold: float, span_words: int) -> None:
        self._hasher = hasher
        self._near = NearDuplicateIndex(threshold, hasher.num_perm)
        self.window = (span_words + 1) // 2
        rng = np.random.default_rng(_COEFFICIENT_SEED)
        self._coefficients = rng.integers(1, 2**63, size=self.window, dtype=np.uint64) | np.uint64(1)
        self._document_benchmark: list[int] = []  # index key -> benchmark number
        self._seen: set[bytes] = set()
        self._pending: list[tuple[np.ndarray, int]] = []
        self._span_hashes = np.zeros(0, dtype=np.uint64)  # sorted
        self._span_benchmark = np.zeros(0, dtype=np.int32)  # parallel to _span_hashes
        self.benchmarks: list[str] = []
        self.documents_per_benchmark: dict[str, int] = {}

    def add(self, benchmark: str, text: str) -> None:
        """Index one evaluation document (a repeated document is indexed once)."""
        words = normalized_words(text)
        key = fingerprint(words)
        if not words or key in self._seen:
            return
        self._seen.add(key)
        if benchmark not in self.documents_per_benchmark:
            self.benchmarks.append(benchmark)
            self.documents_per_benchmark[benchmark] = 0
        self.documents_per_benchmark[benchmark] += 1
        number = self.benchmarks.index(benchmark)
        self._near.add(len(self._document_benchmark), self._hasher.minhash(words))
        self._document_benchmark.append(number)
        windows = window_hashes(words, self._coefficients)[:: self.window]
        if len(windows):
            self._pending.append((windows, number))

    def freeze(self) -> None:
        """Sort the window hashes for lookups (call after the last :meth:`add`)."""
        if not self._pending:
            return
        hashes = np.concatenate([self._span_hashes, *(w for w, _ in self._pending)])
        owners = np.concatenate([self._span_benchmark, *(np.full(len(w), n, np.int32) for w, n in self._pending)])
        order = np.argsort(hashes, kind="stable")
        self._span_hashes, self._span_benchmark = hashes[order], owners[order]
        self._pending.clear()

    @property
    def num_documents(self) -> int:
        return len(self._document_benchmark)

    def match(self, words: list[str], minhash: MinHash) -> Contamination | None:
        """Whether a training document (its normalised words and signature) copies an evaluation document."""
        # Deviation: paper_map #44 - besides the paper's near-duplicate test, a shared verbatim run counts too.
        near = self._near.best_match(minhash)
        if near is not None:
            return Contamination("near_duplicate", self.benchmarks[self._document_benchmark[near[0]]], near[1])
        if not len(self._span_hashes):
            return None
        windows = window_hashes(words, self._coefficients)
        positions = np.minimum(np.searchsorted(self._span_hashes, windows), len(self._span_hashes) - 1)
        hits = np.flatnonzero(self._span_hashes[positions] == windows)
        if not len(hits):
            return None
        return Contamination("verbatim_span", self.benchmarks[int(self._span_benchmark[positions[hits[0]]])])


def window_hashes(words: list[str], coefficients: np.ndarray) -> np.ndarray:
    """64-bit hashes of every run of ``len(coefficients)`` consecutive words (empty if the text is shorter).

    Each word is hashed with CRC-32; a window's hash is ``sum_j crc(word_{i+j}) * c_j mod 2^64``.
    Shape: ``[len(words) - len(coefficients) + 1]``.
    """
    size = len(coefficients)
    count = len(words) - size + 1
    if count < 1:
        return np.zeros(0, dtype=np.uint64)
    word_hashes = np.fromiter((zlib.crc32(w.encode("utf-8")) for w in words), dtype=np.uint64, count=len(words))
    out = np.zeros(count, dtype=np.uint64)
    for j in range(size):
        out += word_hashes[j:j + count] * coefficients[j]  # uint64 arithmetic wraps: mod 2^64
    return out


def build_contamination_index(paths: Sequence[str | Path], hasher: MinHasher, threshold: float,
                              span_words: int) -> ContaminationIndex:
    """Read every ``--exclude`` benchmark file and index its documents.

    Raises:
        DataError: a missing file, an unknown format, or a malformed record (one line, with the fix).
    """
    index = ContaminationIndex(hasher, threshold, span_words)
    for path in benchmark_files(paths):
        for item in _loader_for(path)(path):
            for document in item.documents:
                index.add(item.benchmark, document)
    index.freeze()
    return index


def benchmark_files(paths: Sequence[str | Path]) -> Iterator[Path]:
    """The files behind ``--exclude`` (a folder: its ``.json``/``.jsonl`` files, sorted, hidden ones skipped)."""
    for path in map(Path, paths):
        if not path.is_dir():
            yield path  # read_records reports a missing file
            continue
        found = sorted(p for p in path.rglob("*") if p.suffix in (".json", ".jsonl") and p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        if not found:
            raise DataError(f"--exclude {path}: no .json or .jsonl file in this folder; point it at benchmark files")
        yield from found


def _loader_for(path: Path) -> Callable[[Path], list[EvalItem]]:
    """The ``spell eval`` loader whose format matches the first record's fields."""
    first = next(read_records(path), None)
    if first is None:
        raise DataError(f"--exclude {path}: no records; point it at a benchmark file")
    where, record = first
    fields = set(record)
    if {"documents", "question"} <= fields:
        return load_generic
    if {"context", "choice_A"} <= fields:
        return load_longbench_v2
    if {"context", "input"} <= fields:
        return lambda p: load_longbench_v1(p, p.stem)
    if "wiki_items" in fields:
        return load_frames
    if {"paragraphs", "question_id"} <= fields:
        return lambda p: load_docmath_file(p, p.stem.replace("_testmini", "").replace("-testmini", ""))
    raise DataError(f"--exclude {where}: unknown benchmark format (fields: {', '.join(sorted(fields)[:8])}); use the "
                    "generic JSONL of `spell eval` (id, task, documents, question, answers) or a native file")
