"""Tests for spell.tasks.docmath: numeric answer extraction, normalisation and the 0.15% comparison (spec §4.3).

Run: .venv/bin/python -m pytest tests/unit/test_docmath.py
"""

from __future__ import annotations

import pytest

from spell.tasks.docmath import (
    docmath_score,
    extract_numeric_answer,
    format_number,
    normalize_number,
    numbers_match,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Therefore, the answer is 42.", "42"),  # sentence period removed
        ("the answer is $1,234.5 million", "$1234.5"),  # prefix kept, commas removed, unit not captured
        ("The Answer Is (-7.5)", "-7.5"),  # case-insensitive, parenthesised form
        ("Therefore, the answer is **12.5%**.", "12.5"),  # '*' removed; '%' after the number is not captured
        ("the answer is: 3", "3"),  # optional colon (our extension)
        ("the answer is -$5", "-$5"),  # sign before the prefix (our extension)
        ("answer is ≈ 0.33", "≈ 0.33"),  # prefix symbol, then one space
        ("the answer is 1. Wait, the answer is 2.", "2"),  # last match of the first matching pattern
        ("The answer is 42. I am sure the answer is.", "42"),  # a bare '.' cannot shadow the real answer
        ("So \\boxed{1,234.} and then the answer is 7", "1234"),  # boxed wins over "answer is"
        ("\\boxed{a} then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),  # last box, nested braces balanced
        ("\\boxed{12", None),  # unclosed box
        ("the total is 42", None),  # no marker
        ("the answer is unknown", None),  # marker without a number
        ("", None),
        ("the answer is \u22127", "-7"),  # unicode minus
    ],
)
def test_extract_numeric_answer(text: str, expected: str | None) -> None:
    assert extract_numeric_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("42", 42.0),
        ("42.", 42.0),  # trailing period
        ("1,234,567", 1234567.0),  # thousands separators
        ("$1,234.5 million", 1234.5),  # currency and scale word removed (scale is matched later)
        ("£3.2 billion", 3.2),
        ("€7 thousand", 7.0),
        ("USD 45", 45.0),  # currency code
        ("12.5%", 12.5),
        ("approximately 17.3", 17.3),
        ("x = 5 kg", 5.0),  # text after the last '=', unit word stripped
        ("≈ 0.33", 0.33),
        ("0.5 or 50%", 0.5),  # text before " or "
        ("45 per share", 45.0),  # trailing unit words
        ("about 12 days", 12.0),  # leading and trailing words
        ("10^3", 1000.0),  # caret power
        ("3 x 10^6 units", 3_000_000.0),  # ' x ' multiplication
        ("2.5×10^{3}", 2500.0),  # '×' and LaTeX braces
        ("\\frac{1}{4}", 0.25),  # LaTeX fraction
        ("\\$5.2\\text{ million}", 5.2),  # LaTeX escapes and \text
        ("1.2e-3", 0.0012),  # scientific notation
        ("(5)", 5.0),  # parentheses
        ("\u22127", -7.0),  # unicode minus
        ("-$5", -5.0),
        (3, 3.0),  # JSON number
        (2.5, 2.5),
        ("yes", None),  # booleans are not numbers here (deviation)
        ("True", None),
        (True, None),  # a JSON boolean
        ("12 to 15", None),  # a range is not one number
        ("Q3 2021", None),
        ("", None),
        ("   ", None),
        ("1" * 600, None),  # longer than MAX_INPUT_CHARS
        (float("nan"), None),
        (10**200, None),  # beyond the magnitude bound
        ("__import__('os').system('true')", None),  # code is never run
        ("().__class__", None),
    ],
)
def test_normalize_number(text: str | float, expected: float | None) -> None:
    result = normalize_number(text)
    if expected is None:
        assert result is None
    else:
        assert result == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("pred", "gt", "expected"),
    [
        (100.0, 100.0, True),  # identical
        (100.14, 100.0, True),  # |0.14| <= 0.0015*100 = 0.15 (rule 3)
        (100.2, 100.0, False),  # 0.2 > 0.15; ceil3 100.2 != 100.0; no scale
        (12.5, 0.125, True),  # scale 100: 0.125*100 = 12.5, percent vs fraction
        (1234.5, 1_234_500_000.0, True),  # scale 1e6: 1234.5*1e6 = 1.2345e9
        (3.2, 3_200_000_000.0, True),  # scale 1e9
        (7.0, 7000.0, True),  # scale 1e3
        (7.0, 70.0, False),  # x10 is not a known scale
        (0.1234, 0.1231, True),  # ceil3: both -> 0.124
        (0.1 + 0.2, 0.2995, True),  # ceil3: 0.30000000000000004 -> 0.3 (rounded first, not 0.301); 0.2995 -> 0.3
        (0.3005, 0.2995, False),  # ceil3 0.301 vs 0.3; |0.001| > 0.0015*0.2995 = 0.00045
        (0.0001, 0.0009, True),  # ceil3: both -> 0.001 (the authors' loose rule for tiny numbers)
        (-5.0, 5.0, False),  # opposite signs never match by default (deviation)
        (-12.5, -0.125, True),  # same sign, scale 100
        (-100.1, -100.0, True),  # same sign, rule 3
        (0.0, 0.0, True),  # |0-0| <= 0
        (float("inf"), 1.0, False),  # non-finite
        (float("nan"), float("nan"), False),
    ],
)
def test_numbers_match(pred: float, gt: float, expected: bool) -> None:
    assert numbers_match(pred, gt) is expected


def test_numbers_match_0123_vs_01231_by_rule3() -> None:
    # |0.123 - 0.1231| = 0.0001 <= 0.0015*0.1231 = 0.000185 -> rule 3 accepts although ceil3 differs
    assert numbers_match(0.123, 0.1231)
    # |0.123 - 0.1235| = 0.0005 > 0.0015*0.1235 = 0.000185 and ceil3 0.123 != 0.124 -> no
    assert not numbers_match(0.123, 0.1235)


def test_numbers_match_ignore_sign_reproduces_authors() -> None:
    # authors: rules 1-2 use |p|, |g| -> -5 vs 5 has equal ceil3 (5.0)
    assert numbers_match(-5.0, 5.0, ignore_sign=True)
    # rule 1 with signs ignored: 12.5 vs -0.125 -> scale 100
    assert numbers_match(12.5, -0.125, ignore_sign=True)
    assert not numbers_match(12.5, -0.125)


def test_numbers_match_rel_tol_is_a_parameter() -> None:
    # |101 - 100| = 1 <= 0.01*100 -> yes at 1%, no at 0.15%
    assert numbers_match(101.0, 100.0, rel_tol=0.01)
    assert not numbers_match(101.0, 100.0)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (3.0, "3"),  # integral floats lose the .0
        (12.5, "12.5"),
        (-0.25, "-0.25"),
        (1e20, "1e+20"),  # large values use repr
        (1 / 3, "0.3333333333333333"),
        (1234567.0, "1234567"),
    ],
)
def test_format_number_is_canonical_and_round_trips(value: float, expected: str) -> None:
    assert format_number(value) == expected
    assert normalize_number(expected) == value


@pytest.mark.parametrize(
    ("response", "reference", "expected"),
    [
        ("Therefore, the answer is 12.5.", "12.5", 1.0),
        ("Therefore, the answer is 12.5%.", "0.125", 1.0),  # percent vs fraction
        ("Therefore, the answer is $1,234.5 million.", "1234500000", 1.0),  # scale 1e6
        ("Therefore, the answer is 12.6.", "12.5", 0.0),  # 0.8% off
        ("\\boxed{3 \\times 10^{6}}", "3000000", 1.0),  # LaTeX in a box
        ("I cannot tell.", "12.5", 0.0),  # no answer
        ("Therefore, the answer is 5.", "not a number", 0.0),  # unparseable reference
        ("Therefore, the answer is -5.", "5", 0.0),  # sign error
        ("\\boxed{__import__('os').system('true')}", "0", 0.0),  # code in a box is not run
    ],
)
def test_docmath_score(response: str, reference: str, expected: float) -> None:
    assert docmath_score(response, reference) == expected
