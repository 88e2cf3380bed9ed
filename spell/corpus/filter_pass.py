"""The streaming pass of ``spell data build``: every input document once, through the filters, into the store.

Stages, in order (a document leaves at the first that removes it; each counts what it removed):

1. ``length``: stripped characters outside ``min_chars..max_chars``;
2. ``exact_dedup``: the same normalised words as a kept document;
3. ``decontamination``: a near duplicate of, or a verbatim span from, an ``--exclude`` benchmark document;
4. ``near_dedup``: a near duplicate of a kept document;
5. ``token_budget``: more tokens than one set may hold (``max_set_tokens``).

A surviving document goes to the :class:`~spell.corpus.store.DocumentStore` and the duplicate indexes, so
later documents are compared with kept ones only. Memory per kept document: a 16-byte fingerprint, its MinHash
signature (``num_perm`` hash values) and LSH entries, and four counters; the text lives on disk (measured: 834
MiB peak for 100K documents, README "Your documents").
"""

from __future__ import annotations

import time
from array import array
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable

import numpy as np

from spell.corpus.assign import number_profile
from spell.corpus.decontam import ContaminationIndex
from spell.corpus.filters import (
    ExactDuplicateIndex,
    MinHasher,
    NearDuplicateIndex,
    fingerprint,
    length_problem,
    normalized_words,
)
from spell.corpus.options import BuildOptions
from spell.corpus.read import RawDocument
from spell.corpus.store import DocumentStore

STAGES = ("length", "exact_dedup", "decontamination", "near_dedup", "token_budget")
MAX_EXAMPLES = 5


class StageClock:
    """Wall and process-CPU seconds per named stage: ``lap(name)`` adds the time since the previous lap to ``name``.

    CPU seconds (all threads of this process) are the steadier measure on a machine shared with other work.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.cpu_seconds: dict[str, float] = defaultdict(float)
        self._last = (time.perf_counter(), time.process_time())

    def lap(self, name: str) -> None:
        now = (time.perf_counter(), time.process_time())
        self.seconds[name] += now[0] - self._last[0]
        self.cpu_seconds[name] += now[1] - self._last[1]
        self._last = now


class FilterPass:
    """Filters documents into ``store``; afterwards holds the counts, examples, timings and per-document data.

    Args:
        options: the build options (length bounds, dedup threshold, token budget ...).
        store: where kept documents go.
        hasher: MinHash signatures (shared with ``contamination``).
        count_tokens: tokens of one text.
        contamination: the ``--exclude`` index, or None.
        clock: where stage times go (a new one if None).
    """

    def __init__(self, options: BuildOptions, store: DocumentStore, hasher: MinHasher,
                 count_tokens: Callable[[str], int], contamination: ContaminationIndex | None,
                 clock: StageClock | None = None) -> None:
        self.options = options
        self.store = store
        self.hasher = hasher
        self.count_tokens = count_tokens
        self.contamination = contamination
        self.exact = ExactDuplicateIndex()
        self.near = NearDuplicateIndex(options.dedup_threshold, options.num_perm)
        self.num_read = 0
        self.removed: dict[str, Counter] = {stage: Counter() for stage in STAGES}
        self.removed_per_benchmark: Counter = Counter()
        self.examples: dict[str, list[dict]] = defaultdict(list)  # "stage/reason" -> the first few removed
        self.laps = clock if clock is not None else StageClock()
        # per kept document, in store order: tokens, words, words with a digit, table rows with a digit
        self._columns = tuple(array("q") for _ in range(4))

    def run(self, documents: Iterable[RawDocument]) -> None:
        self.laps.lap("setup")
        for document in documents:
            self.laps.lap("read")
            self.num_read += 1
            self._process(document)
        self.store.flush()
        self.laps.lap("store")

    def kept_columns(self) -> dict[str, np.ndarray]:
        """Per kept document: ``tokens``, ``words``, ``numeric_words``, ``table_rows``. Shape of each: ``[N]``."""
        names = ("tokens", "words", "numeric_words", "table_rows")
        return {name: np.frombuffer(column, dtype=np.int64).copy() for name, column in zip(names, self._columns)}

    def stage_counts(self) -> list[dict]:
        """``[{"stage", "in", "out", "removed": {reason: n}}]``, read first; each stage's out is the next one's in."""
        rows = [{"stage": "read", "in": self.num_read, "out": self.num_read, "removed": {}}]
        remaining = self.num_read
        for stage in STAGES:
            removed = dict(sorted(self.removed[stage].items()))
            rows.append({"stage": stage, "in": remaining, "out": remaining - sum(removed.values()),
                         "removed": removed})
            remaining = rows[-1]["out"]
        return rows

    def _process(self, document: RawDocument) -> None:
        options, laps = self.options, self.laps
        problem = length_problem(document.text, options.min_chars, options.max_chars)
        if problem:
            return self._remove("length", problem, {"removed": document.origin})
        laps.lap("length")
        words = normalized_words(document.text)
        key = fingerprint(words)
        first = self.exact.first(key)
        if first is not None:
            return self._remove("exact_dedup", "exact_duplicate", {"removed": document.origin, "copy of": first})
        laps.lap("exact_dedup")
        minhash = self.hasher.minhash(words)
        laps.lap("minhash")
        hit = self.contamination.match(words, minhash) if self.contamination is not None else None
        if hit is not None:
            self.removed_per_benchmark[hit.benchmark] += 1
            example = {"removed": document.origin, "benchmark": hit.benchmark}
            if hit.similarity is not None:
                example["jaccard"] = round(hit.similarity, 3)
            return self._remove("decontamination", hit.reason, example)
        laps.lap("decontamination")
        near = self.near.best_match(minhash)
        if near is not None:
            example = {"removed": document.origin, "copy of": near[0], "jaccard": round(near[1], 3)}
            return self._remove("near_dedup", "near_duplicate", example)
        laps.lap("near_dedup")
        tokens = self.count_tokens(document.text)
        if tokens > options.max_set_tokens:
            return self._remove("token_budget", "over_max_set_tokens", {"removed": document.origin, "tokens": tokens})
        laps.lap("token_budget")
        doc_id = self.store.add(document.origin, document.text)
        profile = number_profile(document.text)
        for column, value in zip(self._columns, (tokens, profile.words, profile.numeric_words, profile.table_rows)):
            column.append(value)
        laps.lap("store")
        self.exact.add(key, doc_id)
        self.near.add(doc_id, minhash)
        laps.lap("near_dedup")

    def _remove(self, stage: str, reason: str, example: dict) -> None:
        self.removed[stage][reason] += 1
        examples = self.examples[f"{stage}/{reason}"]
        if len(examples) < MAX_EXAMPLES:
            if "copy of" in example:  # a kept document's id -> where it came from
                example["copy of"] = self.store.origin(example["copy of"])
            examples.append(example)
        self.laps.lap(stage)
