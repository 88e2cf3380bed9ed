"""DocMath rule scorer: extract a number from a response, normalise it, compare with 0.15% tolerance (spec §4.3).

``extract_numeric_answer`` finds the last ``\\boxed{}`` or "answer is X"; ``normalize_number`` turns strings like
``"$1,234.5 million"`` or ``"3 x 10^6"`` into a float with :func:`spell.tasks.arith.safe_eval` (never ``eval``);
``numbers_match`` applies the authors' three acceptance rules (scale match, 3-decimal ceil, relative tolerance).
"""

from __future__ import annotations

import math
import re

from spell.tasks.arith import safe_eval

MAX_INPUT_CHARS = 500  # longer answer strings are not numbers we try to read
SCALES = (100.0, 1e3, 1e6, 1e9)  # percent vs fraction, thousand, million, billion

_PREFIX = r"-?[=≈`%$°£€¥]?\s?"
_NUMBER = r"-?[.,]*[0-9][0-9.,]*"
# Deviation: spec §4.3 - we also allow an optional ":" after "answer is" and a sign before the prefix ("-$5"),
# and X must contain a digit (the authors' [0-9.,]+ lets a bare "." shadow an earlier real answer).
_ANSWER_PATTERNS = tuple(
    re.compile(pattern, re.IGNORECASE)
    for pattern in (
        rf"the answer is:?\s*\(({_PREFIX}{_NUMBER})\)",
        rf"the answer is:?\s*({_PREFIX}{_NUMBER})",
        rf"answer is:?\s*\(({_PREFIX}{_NUMBER})\)",
        rf"answer is:?\s*({_PREFIX}{_NUMBER})",
    )
)
_SCALE_WORDS = re.compile(r"\b(?:million|billion|thousand)s?\b", re.IGNORECASE)
_CURRENCY_CODES = re.compile(r"\b(?:USD|US|RMB)\b")
_LATEX_FRAC = re.compile(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}")
_LATEX_WRAPPER = re.compile(r"\\(?:text|mathrm|textbf|mathbf)\{([^{}]*)\}")
_TIMES = re.compile(r"(?<=[\d)])\s*[x×X]\s*(?=[\d(+-])")
_DIGIT_COMMA = re.compile(r"(?<=\d),(?=\d)")
_LEADING_NON_NUMERIC = re.compile(r"^[^\d+\-.(]*")
_TRAILING_NON_NUMERIC = re.compile(r"[^\d)]*$")


def _last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}``, braces balanced; None if unclosed."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, begin = 0, start + len("\\boxed{")
    for index in range(begin - 1, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return text[begin:index]
    return None


def extract_numeric_answer(text: str) -> str | None:
    """The raw answer string of a DocMath response (spec §4.3 ``parse_model_answer``).

    ``*`` is removed first. The last ``\\boxed{}`` wins if present; otherwise the last match of the first
    matching pattern among "the answer is (X)", "the answer is X", "answer is (X)", "answer is X".
    Commas and a trailing ``.`` are removed from the result.

    Args:
        text: the responder's answer text (after think handling).

    Returns:
        The answer string, e.g. ``"$1234.5"``, or ``None`` if there is no answer.

    Example:
        >>> extract_numeric_answer("So, the answer is $1,234.5 million.")
        '$1234.5'
    """
    if not isinstance(text, str):
        return None
    text = text.replace("*", "").replace("\u2212", "-")
    if "\\boxed{" in text:
        boxed = _last_boxed(text)
        return None if boxed is None else boxed.replace(",", "").strip().rstrip(".")
    for pattern in _ANSWER_PATTERNS:
        matches = pattern.findall(text)
        if matches:
            return matches[-1].replace(",", "").strip().rstrip(".")
    return None


def _clean_latex(text: str) -> str:
    text = _LATEX_FRAC.sub(r"(\1)/(\2)", text)
    text = _LATEX_WRAPPER.sub(r"\1", text)
    for token in ("\\left", "\\right", "\\,", "\\!", "\\;"):
        text = text.replace(token, "")
    return text.replace("\\times", " × ").replace("\\cdot", " × ")


def _strip_decorations(text: str) -> str:
    """Steps 1-3 of spec §4.3 ``normalize``: currency, scale words, "=", symbols, "approximately", " or "."""
    text = _clean_latex(text.replace("\u2212", "-").strip().rstrip("."))
    text = text.replace("{", "(").replace("}", ")")  # 10^{6} -> 10^(6)
    text = _SCALE_WORDS.sub("", text)
    text = _CURRENCY_CODES.sub("", text)
    for symbol in ("£", "€", "¥"):
        text = text.replace(symbol, "")
    text = re.split(r"[=≈]", text)[-1]
    for symbol in ("`", "%", "$", "°", "\\"):
        text = text.replace(symbol, "")
    text = re.sub(r"approximately", "", text, flags=re.IGNORECASE)
    return text.split(" or ")[0].strip()


def normalize_number(text: str | float | int) -> float | None:
    """Turn an answer string into a finite float (spec §4.3 ``normalize``), without ``eval``.

    Removes currency symbols and codes, the words thousand/million/billion (the scale is matched later),
    ``%``, a trailing ``.``, "approximately", text before the last ``=``/``≈``, text after " or ", unit
    words before/after the number and thousands commas; ``a^k`` becomes ``a**k`` and ``x``/``×`` between
    numbers becomes ``*``; the rest goes to :func:`~spell.tasks.arith.safe_eval`.

    Args:
        text: the answer string (or a JSON number).

    Returns:
        The value, or ``None`` if it is not a finite number (yes/no and booleans included).

    Example:
        >>> normalize_number("approximately $1,234.5 million")
        1234.5
        >>> normalize_number("3 x 10^6 units")
        3000000.0
    """
    if isinstance(text, bool):
        return None
    if isinstance(text, int | float):
        value = float(text) if abs(text) <= 1e100 else math.inf
        return value if math.isfinite(value) else None
    if not isinstance(text, str) or len(text) > MAX_INPUT_CHARS:
        return None
    text = _strip_decorations(text)
    # Unit words around the number go; so do yes/no/true/false, which therefore give None.
    # Deviation: spec §4.3 step 3 - the authors map yes/true and no/false to booleans; DocMath answers are numbers.
    text = _LEADING_NON_NUMERIC.sub("", text)
    text = _TRAILING_NON_NUMERIC.sub("", text)
    text = _TIMES.sub("*", text.replace("^", "**"))
    text = _DIGIT_COMMA.sub("", text)
    return safe_eval(text) if text else None


def _ceil3(value: float) -> float:
    # round first so 0.123 (stored as 0.12300000000000001) does not ceil to 0.124
    return math.ceil(round(value * 1000, 6)) / 1000


def numbers_match(pred: float, gt: float, rel_tol: float = 0.0015, *, ignore_sign: bool = False) -> bool:
    """The authors' ``compare_two_numbers``: scale match, 3-decimal ceil match, or relative tolerance.

    With ``v1 = max(|p|, |g|)`` and ``v2 = min(|p|, |g|)`` it accepts if (1) for some scale s in
    {100, 1e3, 1e6, 1e9}: ``v2 <= 2*v1/s`` and ``|v2*s - v1| <= rel_tol*v1``; or (2) ``ceil3(v1) == ceil3(v2)``;
    or (3) ``|p - g| <= rel_tol*|g|``.

    Args:
        pred: predicted number.
        gt: reference number.
        rel_tol: relative tolerance (paper: 0.15%).
        ignore_sign: the authors' behaviour (rules 1-2 use absolute values). By default two non-zero numbers of
            opposite sign never match.

    Returns:
        True if the numbers match.

    Example:
        >>> numbers_match(12.5, 0.125), numbers_match(100.1, 100.0), numbers_match(-5.0, 5.0)
        (True, True, False)
    """
    if not (math.isfinite(pred) and math.isfinite(gt)):
        return False
    # Deviation: spec §4.3 - the authors ignore the sign in rules 1-2; we require equal signs unless ignore_sign.
    if not ignore_sign and pred * gt < 0:
        return False
    v1, v2 = max(abs(pred), abs(gt)), min(abs(pred), abs(gt))
    for scale in SCALES:
        if v2 <= 2 * v1 / scale and abs(v2 * scale - v1) <= rel_tol * v1:
            return True
    if _ceil3(v1) == _ceil3(v2):
        return True
    return abs(pred - gt) <= rel_tol * abs(gt)


def format_number(value: float) -> str:
    """Canonical reference string of a DocMath answer: integers without ``.0``, else Python's shortest repr.

    Example:
        >>> format_number(3.0), format_number(12.5), format_number(-0.25), format_number(1e20)
        ('3', '12.5', '-0.25', '1e+20')
    """
    if value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(float(value))


def docmath_score(response: str, reference: str, *, ignore_sign: bool = False) -> float:
    """1.0 if the response's number matches the reference number (spec §4.3), else 0.0.

    Args:
        response: the responder's answer text, after think handling (see :func:`spell.tasks.answer_region`).
        reference: the reference answer string, e.g. ``"12.5"``.
        ignore_sign: see :func:`numbers_match`.

    Returns:
        0.0 or 1.0; 0.0 when either side has no parseable number.

    Example:
        >>> docmath_score("Therefore, the answer is 12.5%.", "0.125")
        1.0
    """
    predicted_text = extract_numeric_answer(response)
    if predicted_text is None:
        return 0.0
    pred, gt = normalize_number(predicted_text), normalize_number(reference)
    if pred is None or gt is None:
        return 0.0
    return float(numbers_match(pred, gt, ignore_sign=ignore_sign))
