"""History memory: the per-(task, document set) record of solved questions that drives the curriculum.

Spec §2.3 / paper §3.1: each key keeps the last L (question, answer) pairs with the evidence they were
asked over. The questioner sees the remembered documents plus up to m new ones and the remembered pairs as
examples, so its context grows as the memory fills (stage 1 and stage 14 of the self-play step).
Stdlib + ``spell.types`` only; ``state_dict()`` is plain JSON for checkpoints.
"""

from __future__ import annotations

import logging
import random
from collections import deque

from spell.types import DocSet, MemoryAdmission, MemoryExample, TaskType

logger = logging.getLogger(__name__)

_Key = tuple[str, str]  # (task, docset_id)


def _key(docset_id: str, task: TaskType | str) -> _Key:
    return (str(task), str(docset_id))


def _normalise_question(text: str) -> str:
    """Lowercase and collapse whitespace: the dedup identity of a question."""
    return " ".join(text.lower().split())


class HistoryMemory:
    """A bounded deque of :class:`MemoryExample` per (task, document set id).

    Entries store the *cumulative* evidence their question was asked over (authors' code, spec §11.4), not
    the paper's C_new alone, so evicting an entry never removes documents that a remembered question
    depends on; the context only grows. This is a deliberate deviation from the paper's formula.

    Args:
        size: L, entries kept per key; the oldest is evicted (paper 3).
        admission: ``paper`` admits 0 < r̄ < 1 (Alg. 1 line 20, r_que > 0); ``authors`` admits
            0.01 <= r̄ <= 1.0, so questions that every responder solved are stored too (spec §11.3).
        dedup: refuse an entry whose question (lowercased, whitespace collapsed) is already stored for the
            key; this also refuses a repeated (question, answer) pair. An answer alone is not a dedup key,
            since MC letters and small numbers legitimately repeat.
    """

    def __init__(self, size: int = 3, admission: MemoryAdmission | str = "paper", dedup: bool = True) -> None:
        if size < 1:
            raise ValueError(f"HistoryMemory: size must be >= 1, got {size}")
        self.size = size
        self.admission = MemoryAdmission(admission)
        self.dedup = dedup
        self._entries: dict[_Key, deque[MemoryExample]] = {}

    def __len__(self) -> int:
        """Total number of remembered examples over all keys."""
        return sum(len(entries) for entries in self._entries.values())

    def num_keys(self) -> int:
        """Number of (task, document set) keys with at least one example."""
        return sum(1 for entries in self._entries.values() if entries)

    def examples(self, docset_id: str, task: TaskType | str) -> list[MemoryExample]:
        """The remembered examples of one key, oldest first (empty if none)."""
        return list(self._entries.get(_key(docset_id, task), ()))

    def select_evidence(
        self, docset: DocSet, num_docs: int, rng: random.Random
    ) -> tuple[tuple[int, ...], list[MemoryExample]]:
        """Choose the documents and examples for one questioner prompt (spec §2.3).

        Empty memory: ``min(num_docs, n_docs)`` distinct random indices, sorted, and no examples.
        Otherwise: the sorted union of the entries' evidence, plus ``min(num_docs, #remaining)`` new indices
        drawn from the documents not yet in it, so the context grows until the set is used up.

        Args:
            docset: the document set (its ``task`` and ``id`` form the key).
            num_docs: m, new documents per prompt (paper 5).
            rng: the random source.

        Returns:
            ``(evidence, examples)``: sorted document indices and the remembered examples, oldest first.
        """
        num_total = len(docset.documents)
        entries = self._entries.get(_key(docset.id, docset.task), ())
        # Indices beyond the set (only possible if the corpus changed under a resumed run) are ignored.
        remembered = {i for entry in entries for i in entry.evidence if 0 <= i < num_total}
        remaining = [i for i in range(num_total) if i not in remembered]
        new = rng.sample(remaining, min(max(num_docs, 0), len(remaining)))
        return tuple(sorted(remembered.union(new))), list(entries)

    def admits(self, mean_reward: float) -> bool:
        """Whether a question with mean responder reward r̄ may enter the memory (see ``admission``)."""
        if self.admission is MemoryAdmission.PAPER:
            return 0.0 < mean_reward < 1.0
        return 0.01 <= mean_reward <= 1.0

    def add(self, docset_id: str, task: TaskType | str, example: MemoryExample, mean_reward: float) -> bool:
        """Remember a solved question, evicting the key's oldest entry when full.

        ``example.evidence`` should be the *cumulative* evidence the question was asked over (the whole
        tuple from :meth:`select_evidence`), as in the authors' code.

        Args:
            docset_id: the document set id.
            task: the task type.
            example: the evidence, question and reference answer.
            mean_reward: r̄, the mean combined responder reward of the question.

        Returns:
            True if stored; False if not admitted or (with ``dedup``) a repeat.
        """
        # Deviation: spec §2.3/§11.4 - we store the cumulative evidence (authors' code), not the paper's C_new,
        # so evicting an entry never drops documents that a remembered question depends on.
        if not self.admits(mean_reward):
            return False
        entries = self._entries.setdefault(_key(docset_id, task), deque(maxlen=self.size))
        # Deviation: spec §11.2 - the authors' dedup never blocks a push; ours really refuses a repeated question.
        if self.dedup:
            question = _normalise_question(example.question)
            if any(_normalise_question(e.question) == question for e in entries):
                return False
        entries.append(example)
        return True

    def state_dict(self) -> dict:
        """The memory as plain JSON-able data (lists, strings, numbers), keys in insertion order."""
        return {
            "size": self.size,
            "admission": str(self.admission),
            "dedup": self.dedup,
            "entries": [
                {
                    "task": task,
                    "docset_id": docset_id,
                    "examples": [
                        {"evidence": list(e.evidence), "question": e.question, "answer": e.answer} for e in entries
                    ],
                }
                for (task, docset_id), entries in self._entries.items()
            ],
        }

    def load_state_dict(self, state: dict) -> None:
        """Replace the contents with a :meth:`state_dict`.

        This instance's ``size``, ``admission`` and ``dedup`` (from the current config) are kept; if ``size``
        shrank, each key keeps its newest entries.
        """
        if state.get("size", self.size) != self.size:
            logger.warning("memory size changed from %s to %s on load; keeping the newest entries",
                           state["size"], self.size)
        self._entries = {}
        for item in state["entries"]:
            examples = (
                MemoryExample(tuple(int(i) for i in e["evidence"]), str(e["question"]), str(e["answer"]))
                for e in item["examples"]
            )
            self._entries[_key(item["docset_id"], item["task"])] = deque(examples, maxlen=self.size)


def merge_memory_states(states: list[dict]) -> dict:
    """One :meth:`HistoryMemory.state_dict` holding the entries of several (e.g. one per saved rank).

    Ranks play disjoint document sets, so their keys are disjoint; a key held by several states (a task with
    fewer sets than ranks is played by every rank) keeps the first state's entries.

    >>> entry = lambda docset_id, examples: {"task": "t", "docset_id": docset_id, "examples": examples}
    >>> a, b = {"size": 3, "entries": [entry("x", [])]}, {"size": 3, "entries": [entry("x", [1]), entry("y", [])]}
    >>> [(e["docset_id"], e["examples"]) for e in merge_memory_states([a, b])["entries"]]
    [('x', []), ('y', [])]
    """
    if not states:
        raise ValueError("merge_memory_states: no states to merge")
    merged = {key: value for key, value in states[0].items() if key != "entries"}
    seen: dict[tuple[str, str], dict] = {}
    for state in states:
        for entry in state["entries"]:
            seen.setdefault((str(entry["task"]), str(entry["docset_id"])), entry)
    merged["entries"] = list(seen.values())
    return merged
