"""Tests for spell.tasks.arith.safe_eval: the whitelist evaluator that replaces the authors' eval().

Run: .venv/bin/python -m pytest tests/unit/test_arith.py
"""

from __future__ import annotations

import pytest

from spell.tasks.arith import MAX_MAGNITUDE, safe_eval


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("42", 42.0),
        ("  -3.5 ", -3.5),  # surrounding whitespace is stripped
        ("2*(3+4)**2", 98.0),  # 7**2 = 49, * 2 = 98
        ("10**-3", 0.001),  # negative exponent
        ("1.5*10**6", 1_500_000.0),
        ("-(3+4)/2", -3.5),
        ("+5 - -5", 10.0),  # unary plus and minus
        ("1e3", 1000.0),  # Python float literal
        ("1_000", 1000.0),  # underscore literal
        ("2**0.5*2**0.5", 2.0000000000000004),  # float arithmetic, not exact
        ("10**100", 1e100),  # exponent and magnitude exactly at the bound
        ("7/2", 3.5),  # true division
    ],
)
def test_safe_eval_accepts_arithmetic(expr: str, expected: float) -> None:
    assert safe_eval(expr) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    "expr",
    [
        "__import__('os').system('true')",  # call + attribute
        "().__class__",  # attribute access on a tuple
        "open('/etc/passwd')",  # call
        "x",  # name
        "True",  # a name in source, not a number
        "'12'",  # string literal
        "1j",  # complex literal
        "[1, 2]",  # list
        "1 if 1 else 2",  # conditional expression
        "lambda: 1",  # lambda
        "1 < 2",  # comparison
        "7 // 2",  # floor division is not whitelisted
        "7 % 2",  # neither is modulo
        "1 << 3",  # nor shifts
        "1; 2",  # statements: syntax error in eval mode
        "1/0",  # division by zero
        "0**-1",  # zero to a negative power
        "(-8)**(1/3)",  # complex result
        "2**101",  # |exponent| > 100
        "9**99**2",  # exponent 9801 after right-assoc evaluation
        "1e200",  # literal above MAX_MAGNITUDE
        "1e99*1e99",  # product above MAX_MAGNITUDE
        "1e999",  # inf literal
        "",  # empty
        "   ",  # blank
        "1" * 201,  # longer than max_chars
        "\x00",  # null byte
        "1 +",  # syntax error
    ],
)
def test_safe_eval_rejects_everything_else(expr: str) -> None:
    assert safe_eval(expr) is None


def test_safe_eval_does_not_execute_injected_code(tmp_path) -> None:
    target = tmp_path / "pwned"
    assert safe_eval(f"__import__('os').system('touch {target}')", max_chars=1000) is None
    assert not target.exists()


def test_safe_eval_max_chars_is_a_parameter() -> None:
    expr = "+".join(["1"] * 150)  # 299 chars: 150 ones summed
    assert safe_eval(expr) is None
    assert safe_eval(expr, max_chars=300) == 150.0


@pytest.mark.parametrize(
    "expr",
    [
        "(" * 190 + "1" + ")" * 190,  # deep parentheses
        "-" * 900 + "1",  # long unary chain
        "2**" * 300 + "2",  # long power tower
    ],
)
def test_safe_eval_deep_nesting_returns_without_raising(expr: str) -> None:
    result = safe_eval(expr, max_chars=2000)
    assert result is None or abs(result) <= MAX_MAGNITUDE


def test_safe_eval_non_string_is_none() -> None:
    assert safe_eval(12) is None  # type: ignore[arg-type]
