"""Held-out labelled questions of the built-in world in the evaluation harness's generic JSONL format (issue 5).

:class:`QuestionWriter` picks a question kind for a document set (the task is given; the hop count follows
``HOP_CYCLE`` per task: half 1-hop, a third 2-hop, a sixth 3-hop, each falling back to fewer hops when the
set lacks the documents), and writes one generic record (see :mod:`spell.evaluate.formats`). ``doc_mc``
options are same-type distractors (names from the same set first, then from other sets of the same split;
nearby years for years, other hobbies for hobbies) and the correct letters are balanced: every block of four
MC questions uses A-D once.
"""

from __future__ import annotations

import random
from collections import defaultdict

from spell.builtin.world.entities import HOBBIES, SetPlan
from spell.builtin.world.filler import approx_tokens
from spell.builtin.world.kinds import KINDS_BY_TASK, QuestionKind
from spell.tasks.docmath import format_number

LETTERS = ("A", "B", "C", "D")
HOP_CYCLE = (1, 2, 1, 3, 1, 2)
YEAR_OFFSETS = (-6, -5, -4, -3, -2, -1, 1, 2, 3, 4, 5, 6)


def available_kinds(task: str, doc_kinds: list[str] | tuple[str, ...]) -> list[QuestionKind]:
    """The kinds of ``task`` whose documents are all in ``doc_kinds``."""
    present = set(doc_kinds)
    return [kind for kind in KINDS_BY_TASK[task] if present.issuperset(kind.docs)]


def answer_text(answer: str | float) -> str:
    """The gold string: names and years unchanged, numbers rounded to 2 decimals without a trailing ``.0``.

    Example:
        >>> answer_text(12.0), answer_text(-3.456), answer_text("Melin College")
        ('12', '-3.46', 'Melin College')
    """
    if isinstance(answer, str):
        return answer
    return format_number(round(answer, 2))


class QuestionWriter:
    """Writes the held-out questions of one split, keeping the per-task schedules and the MC letter balance.

    Args:
        rng: the random source for kinds' choices (years), distractors and letters.
        pool: names of each entity type over all sets of the split (MC distractors when a set has too few).
    """

    def __init__(self, rng: random.Random, pool: dict[str, list[str]]) -> None:
        self._rng = rng
        self._pool = pool
        self._task_counts: dict[str, int] = defaultdict(int)
        self._kind_counts: dict[tuple[str, int], int] = defaultdict(int)
        self._letters: list[str] = []

    def pick_kind(self, task: str, doc_kinds: list[str]) -> QuestionKind:
        """The next kind for ``task``: the scheduled hop count (or fewer), cycling through that hop's kinds."""
        kinds = available_kinds(task, doc_kinds)
        if not kinds:
            raise ValueError(f"no {task} question fits documents {doc_kinds}")
        wanted = HOP_CYCLE[self._task_counts[task] % len(HOP_CYCLE)]
        self._task_counts[task] += 1
        offered = sorted({k.hops for k in kinds})
        hops = max((h for h in offered if h <= wanted), default=offered[0])
        same_hops = [k for k in kinds if k.hops == hops]
        slot = (task, hops)
        kind = same_hops[self._kind_counts[slot] % len(same_hops)]
        self._kind_counts[slot] += 1
        return kind

    def next_letter(self) -> str:
        """The correct letter of the next MC question (each block of four is a shuffled A-D)."""
        if not self._letters:
            self._letters = self._rng.sample(LETTERS, len(LETTERS))
        return self._letters.pop()

    def distractors(self, plan: SetPlan, answer_type: str, answer: str) -> list[str]:
        """Three wrong options of the answer's type."""
        if answer_type == "year":
            offsets = self._rng.sample(YEAR_OFFSETS, 3)
            return [str(int(answer) + offset) for offset in offsets]
        if answer_type == "hobby":
            return self._rng.sample([h for h in HOBBIES if h != answer], 3)
        local = [name for name in plan.names_by_type()[answer_type] if name != answer]
        chosen = self._rng.sample(local, min(3, len(local)))
        if len(chosen) < 3:
            spare = [name for name in self._pool[answer_type] if name != answer and name not in chosen]
            chosen += self._rng.sample(spare, 3 - len(chosen))
        return chosen

    def options(self, plan: SetPlan, kind: QuestionKind, answer: str) -> tuple[dict[str, str], str]:
        """``(options A-D, correct letter)`` with the answer at a balanced letter."""
        letter = self.next_letter()
        wrong = self.distractors(plan, kind.answer_type, answer)
        texts = iter(wrong)
        return {key: answer if key == letter else next(texts) for key in LETTERS}, letter

    def write(self, plan: SetPlan, documents: list[str], doc_kinds: list[str], task: str, number: int) -> dict:
        """One generic-format record for ``task`` on this set.

        Args:
            plan: the set's entities and numbers.
            documents: the rendered documents, in order.
            doc_kinds: the kind of each document.
            task: ``docmath_qa``, ``doc_general_qa`` or ``doc_mc``.
            number: the question's number within the set (for its id).

        Returns:
            ``{"id", "task", "documents", "question", ["options"], "answers", "metadata"}``; metadata has
            ``hops``, ``needed_docs`` (document indices), ``kind``, ``args``, ``set_id`` and ``approx_tokens``.
        """
        kind = self.pick_kind(task, doc_kinds)
        question, answer, args = kind.build(plan, self._rng)
        gold = answer_text(answer)
        record: dict = {"id": f"{plan.set_id}-q{number}", "task": task, "documents": documents, "question": question}
        if task == "doc_mc":
            record["options"], gold = self.options(plan, kind, gold)
        record["answers"] = [gold]
        record["metadata"] = {
            "hops": kind.hops,
            "needed_docs": sorted(doc_kinds.index(d) for d in kind.docs),
            "kind": kind.name,
            "args": args,
            "set_id": plan.set_id,
            "approx_tokens": sum(approx_tokens(d) for d in documents),
        }
        return record
