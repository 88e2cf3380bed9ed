"""A safe evaluator for the small arithmetic expressions found in numeric answers (spec §4.3 step 6).

The authors' DocMath normaliser calls ``eval()`` on model text; we never do. The expression is parsed with
``ast`` and only numbers, ``+ - * / **``, unary signs and parentheses are evaluated, with the input length,
exponent and every intermediate magnitude bounded. Anything else gives ``None``.
"""

from __future__ import annotations

import ast
import math
import operator

MAX_EXPONENT = 100.0  # |k| bound for a ** k, enough for 10^k scale notation
MAX_MAGNITUDE = 1e100  # bound on every literal and intermediate result

_BINARY_OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


class _Unsupported(Exception):
    """Raised internally for any node, value or size outside the whitelist."""


def _bounded(value: float) -> float:
    if not math.isfinite(value) or abs(value) > MAX_MAGNITUDE:
        raise _Unsupported
    return value


def _power(base: float, exponent: float) -> float:
    if abs(exponent) > MAX_EXPONENT:
        raise _Unsupported
    result = base**exponent
    if isinstance(result, complex):  # negative base with a fractional exponent
        raise _Unsupported
    return result


def _evaluate(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant):
        # bool is an int subclass: True/False are names in source, but guard anyway
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise _Unsupported
        return _bounded(float(node.value))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        operand = _evaluate(node.operand)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp):
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow):
            return _bounded(_power(left, right))
        op = _BINARY_OPS.get(type(node.op))
        if op is None:
            raise _Unsupported
        return _bounded(op(left, right))
    raise _Unsupported


def safe_eval(expr: str, max_chars: int = 200) -> float | None:
    """Evaluate a whitelisted arithmetic expression.

    Args:
        expr: text such as ``"1.5*10**6"`` or ``"-(3+4)/2"``. Python numeric literals only (``1e3``, ``1_000``).
        max_chars: longer inputs (after stripping) are refused.

    Returns:
        The value as a finite float, or ``None`` for anything unsupported: names, calls, attributes,
        strings, division by zero, ``|exponent| > 100``, ``|value| > 1e100``, complex results, syntax errors.

    Example:
        >>> safe_eval("2*(3+4)**2")
        98.0
        >>> safe_eval("__import__('os').system('true')") is None
        True
    """
    if not isinstance(expr, str):
        return None
    expr = expr.strip()
    if not expr or len(expr) > max_chars:
        return None
    try:
        tree = ast.parse(expr, mode="eval")
        return _evaluate(tree)
    except (_Unsupported, SyntaxError, ValueError, ZeroDivisionError, OverflowError, RecursionError, MemoryError):
        return None
