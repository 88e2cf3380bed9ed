"""Tests for spell.tasks.doc_mc: MC letter extraction, reference letters and the LongBench-v2 layout (spec §4.5).

Run: .venv/bin/python -m pytest tests/unit/test_doc_mc.py
"""

from __future__ import annotations

import pytest

from spell.tasks.doc_mc import extract_choice_letter, format_mc_question, mc_score, parse_letter


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The correct answer is (C).", "C"),  # pattern 2
        ("The correct answer is C", "C"),  # pattern 3
        ("The answer is (B)", "B"),  # pattern 4
        ("answer is D.", "D"),  # pattern 5
        ("\\boxed{A}", "A"),  # pattern 1
        ("\\boxed{(A)}", "A"),  # parenthesised box (our extension)
        ("\\boxed{B} ... The correct answer is (C).", "B"),  # first matching pattern wins, not the last in text
        ("The correct answer is (A). No wait, the correct answer is (D).", "D"),  # last match
        ("The **correct answer is (B)**", "B"),  # '*' removed
        ("The answer is a dog", None),  # 'a' matched case-insensitively but lower-case -> None
        ("The answer is b.", None),  # lower-case letter -> None
        ("The answer is Because of X, the answer is C", "C"),  # 'Because' is not B (deviation)
        ("The answer is E", None),  # outside A-D
        ("I choose B", None),  # no marker
        ("", None),
    ],
)
def test_extract_choice_letter(text: str, expected: str | None) -> None:
    assert extract_choice_letter(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("B", "B"),
        (" (C) ", "C"),
        ("D.", "D"),
        ("The correct answer is A", "A"),
        ("b", None),  # lower-case
        ("E", None),
        ("B and C", None),
    ],
)
def test_parse_letter(text: str, expected: str | None) -> None:
    assert parse_letter(text) == expected


def test_format_mc_question_longbench_layout() -> None:
    options = [("A", "12"), ("B", "13"), ("C", "14"), ("D", "15")]
    expected = "How many?\n\nChoices:\n(A) 12\n(B) 13\n(C) 14\n(D) 15"
    assert format_mc_question("  How many? ", options) == expected
    assert format_mc_question("How many?", dict(options)) == expected  # a mapping works too


@pytest.mark.parametrize(
    ("response", "reference", "expected"),
    [
        ("The correct answer is (B).", "B", 1.0),
        ("The correct answer is (B).", "C", 0.0),
        ("The correct answer is (B).", "The correct answer is B", 1.0),  # wrapped reference
        ("The answer is b.", "B", 0.0),  # lower-case prediction is no answer
        ("no letter here", "B", 0.0),
        ("The correct answer is (B).", "not a letter", 0.0),  # unparseable reference
    ],
)
def test_mc_score(response: str, reference: str, expected: float) -> None:
    assert mc_score(response, reference) == expected
