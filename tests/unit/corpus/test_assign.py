"""spell/corpus/assign.py: number-heavy sets and the seeded, balanced task split."""

from __future__ import annotations

from collections import Counter

from spell.corpus.assign import NumberProfile, assign_tasks, is_number_heavy, number_profile
from spell.types import TaskType


def test_number_profile_of_prose_and_of_a_financial_paragraph():
    prose = number_profile("The court heard the appeal in the spring and ruled for the plaintiff.")
    assert (prose.words, prose.numeric_words, is_number_heavy(prose)) == (13, 0, False)
    report = number_profile("Revenue rose 12% to $4.5 billion in 2023 from $4.0 billion in 2022.")
    # 13 words, 5 hold a digit (12%, $4.5, 2023, $4.0, 2022.): 5 / 13 = 0.38 >= 0.08
    assert (report.words, report.numeric_words, is_number_heavy(report)) == (13, 5, True)


def test_table_rows_make_a_set_number_heavy_even_in_long_prose():
    table = "\n".join(f"| year {2019 + i} | revenue | {100 + i} |" for i in range(5))
    profile = number_profile(table) + NumberProfile(words=10_000)  # 5 rows with figures, numbers diluted by prose
    assert profile.table_rows == 5 and is_number_heavy(profile)


def test_general_sets_split_in_halves_docmath_only_when_asked():
    heavy = [True, False, True, False, False, False, False]
    tasks = assign_tasks(heavy, docmath=True, seed=0)
    assert [t for t, h in zip(tasks, heavy) if h] == [TaskType.DOCMATH_QA] * 2
    # 5 general sets alternate after a shuffle: 3 general QA, 2 MC
    assert Counter(t for t, h in zip(tasks, heavy) if not h) == {TaskType.DOC_GENERAL_QA: 3, TaskType.DOC_MC: 2}
    # without --docmath every set is general: 7 -> 4 + 3
    assert Counter(assign_tasks(heavy, docmath=False, seed=0)) == {TaskType.DOC_GENERAL_QA: 4, TaskType.DOC_MC: 3}


def test_assignment_is_seeded():
    heavy = [False] * 12
    assert assign_tasks(heavy, False, seed=3) == assign_tasks(heavy, False, seed=3)
    assert assign_tasks(heavy, False, seed=3) != assign_tasks(heavy, False, seed=4)
