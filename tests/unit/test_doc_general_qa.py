"""Tests for spell.tasks.doc_general_qa: "answer is" extraction, SQuAD normalisation, CEM, EM and F1 (spec §4.4).

Run: .venv/bin/python -m pytest tests/unit/test_doc_general_qa.py
"""

from __future__ import annotations

import pytest

from spell.tasks.doc_general_qa import (
    exact_match,
    extract_phrase_answer,
    f1_score,
    general_qa_score,
    normalize_answer,
    sub_em_strict,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The correct answer is Marie Curie.", "Marie Curie"),  # "correct answer is" found, '.' stripped
        ("The correct answer is **Marie Curie**.", "Marie Curie"),  # markdown bold removed
        ("So the answer is 1903\nBecause ...", "1903"),  # first line only
        ("the answer is X. Then, the answer is Y.", "Y"),  # after the LAST occurrence
        # "the answer is" (checked first) occurs, so its last occurrence decides, not the later phrase
        ("Maybe the answer is Oslo. The correct answer is Paris.", "Oslo. The correct answer is Paris"),
        ("The Answer is Rome", None),  # case-sensitive: none of the phrases occurs ("Answer is" != "answer is")
        ("Final: answer is   Rome  ", "Rome"),  # whitespace stripped
        ("The correct answer is [insert answer here].", None),  # template placeholder
        ("The correct answer is .", None),  # empty after stripping
        ("Rome", None),  # no phrase at all -> no answer (deviation)
        ("The correct answer is Zürich<｜end▁of▁sentence｜>", "Zürich"),  # DeepSeek special token removed
        ("", None),
    ],
)
def test_extract_phrase_answer(text: str, expected: str | None) -> None:
    assert extract_phrase_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Eiffel Tower", "eiffel tower"),  # lower-case, article removed
        ("  a  cat,  an apple! ", "cat apple"),  # punctuation, articles and whitespace
        ("“Quoted”", "quoted"),  # unicode quotes are punctuation too (deviation)
        ("theatre", "theatre"),  # 'the' only as a whole word
        ("U.S.A.", "usa"),
        ("", ""),
    ],
)
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


@pytest.mark.parametrize(
    ("pred", "gt", "expected"),
    [
        ("It was Marie Curie in 1903", "Marie Curie", 1.0),  # gt inside pred
        ("Curie", "Marie Curie", 0.0),  # pred inside gt is NOT enough (strict)
        ("The", "the", 0.0),  # both normalise to '' -> 0
        ("Paris", "", 0.0),  # empty gt
        ("", "Paris", 0.0),
        ("paris!", "Paris", 1.0),
    ],
)
def test_sub_em_strict(pred: str, gt: str, expected: float) -> None:
    assert sub_em_strict(pred, gt) == expected


@pytest.mark.parametrize(
    ("pred", "gt", "expected"),
    [
        ("the Nile.", "Nile", 1.0),
        ("Nile river", "Nile", 0.0),
        ("", "", 1.0),  # both empty
    ],
)
def test_exact_match(pred: str, gt: str, expected: float) -> None:
    assert exact_match(pred, gt) == expected


@pytest.mark.parametrize(
    ("pred", "gt", "expected"),
    [
        ("new york city", "New York", 0.8),  # P = 2/3, R = 2/2 -> 2*(2/3)*1/(5/3) = 0.8
        ("york", "new york", 2 / 3),  # P = 1, R = 1/2 -> 2*0.5/1.5 = 2/3
        ("x b b", "b b c", 2 / 3),  # common = 2 (b twice): P = R = 2/3 -> 2/3
        ("a b b", "b b c", 0.8),  # article "a" dropped: P = 2/2, R = 2/3 -> 2*(2/3)/(5/3) = 0.8
        ("paris", "london", 0.0),  # no common token
        ("the", "", 1.0),  # both empty after normalisation
        ("paris", "", 0.0),  # one empty
    ],
)
def test_f1_score(pred: str, gt: str, expected: float) -> None:
    assert f1_score(pred, gt) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("response", "reference", "expected"),
    [
        ("The correct answer is the city of Paris.", "Paris", 1.0),
        ("The correct answer is Lyon.", "Paris", 0.0),
        ("Paris is mentioned, but no final sentence.", "Paris", 0.0),  # no phrase -> no answer
        ("The correct answer is The.", "the", 0.0),  # both normalise to empty
    ],
)
def test_general_qa_score(response: str, reference: str, expected: float) -> None:
    assert general_qa_score(response, reference) == expected
