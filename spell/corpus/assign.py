"""Task of each document set (paper App. E.1 step 4; authors' code: one task per cluster, equal splits).

With ``--docmath``, a number-heavy set (:func:`is_number_heavy`) plays ``docmath_qa``: its questions need
figures to compute with, as the paper's DocMath reports. Every other set plays ``doc_general_qa`` or ``doc_mc``,
half each: a seeded shuffle, then alternating (the authors split their Ultra-FineWeb clusters in equal halves,
unseeded). Each row of the output carries its one task.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from spell.types import TaskType

GENERAL_TASKS = (TaskType.DOC_GENERAL_QA, TaskType.DOC_MC)
# A set is number-heavy when at least this share of its words hold a digit (English prose: about 1-3%,
# financial report paragraphs: 15-35%) ...
NUMBER_SHARE_MIN = 0.08
# ... or when it has this many table rows with a figure (a line with 2+ cell separators | or tab, and a digit).
TABLE_ROWS_MIN = 5
_DIGIT = re.compile(r"\d")


@dataclass(frozen=True, slots=True)
class NumberProfile:
    """Counts behind :func:`is_number_heavy`, additive over the documents of a set."""

    words: int = 0
    numeric_words: int = 0
    table_rows: int = 0

    def __add__(self, other: NumberProfile) -> NumberProfile:
        return NumberProfile(self.words + other.words, self.numeric_words + other.numeric_words,
                             self.table_rows + other.table_rows)


def number_profile(text: str) -> NumberProfile:
    """Words, words holding a digit, and table rows holding a digit.

    >>> number_profile("Revenue was 12.5 in 2023.\\n| year | revenue |\\n| 2023 | 12.5 |")
    NumberProfile(words=15, numeric_words=4, table_rows=1)
    """
    words = text.split()
    rows = sum(1 for line in text.splitlines()
               if (line.count("|") >= 2 or line.count("\t") >= 2) and _DIGIT.search(line))
    return NumberProfile(len(words), sum(1 for w in words if _DIGIT.search(w)), rows)


def is_number_heavy(profile: NumberProfile) -> bool:
    """Whether a set with this profile should play ``docmath_qa``.

    >>> is_number_heavy(NumberProfile(words=100, numeric_words=8, table_rows=0))  # 8 / 100 = 0.08
    True
    >>> is_number_heavy(NumberProfile(words=100, numeric_words=7, table_rows=4))
    False
    """
    share = profile.numeric_words / profile.words if profile.words else 0.0
    return share >= NUMBER_SHARE_MIN or profile.table_rows >= TABLE_ROWS_MIN


def assign_tasks(number_heavy: Sequence[bool], docmath: bool, seed: int) -> list[TaskType]:
    """One task per set.

    Args:
        number_heavy: per set, :func:`is_number_heavy`.
        docmath: whether number-heavy sets play ``docmath_qa`` (``--docmath``).
        seed: seed of the general/MC split.

    Returns:
        The task of each set, in the given order.

    Example:
        >>> tasks = assign_tasks([True, False, False, True, False], docmath=True, seed=0)
        >>> [t.value for t in tasks].count("docmath_qa"), sorted(t.value for t in tasks[1:3] + tasks[4:])
        (2, ['doc_general_qa', 'doc_general_qa', 'doc_mc'])
    """
    # Deviation: paper_map #47 - docmath_qa by content (the paper's DocMath sets came from DocMath-Eval).
    tasks: list[TaskType | None] = [TaskType.DOCMATH_QA if docmath and heavy else None for heavy in number_heavy]
    general = [index for index, task in enumerate(tasks) if task is None]
    random.Random(seed).shuffle(general)
    for position, index in enumerate(general):
        tasks[index] = GENERAL_TASKS[position % len(GENERAL_TASKS)]
    return [task for task in tasks if task is not None]
