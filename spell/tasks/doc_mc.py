"""Multiple-choice rule scorer: letter extraction and the LongBench-v2 question layout (spec §4.5, §2.4).

The responder sees the question followed by ``Choices:`` and the lines ``(A) ...`` to ``(D) ...``; its answer
letter is read from the last ``\\boxed{X}`` / "correct answer is (X)" / "answer is X" and must be upper-case.
The reward is letter equality.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

LETTERS = ("A", "B", "C", "D")

# Deviation: spec §4.5 - "(?![A-Za-z])" stops "answer is Because" reading as B, and \boxed{(A)} is accepted.
_LETTER_PATTERNS = tuple(
    re.compile(pattern, re.IGNORECASE)
    for pattern in (
        r"\\boxed\{\(?([A-D])\)?\}",
        r"correct answer is \(([A-D])\)",
        r"correct answer is ([A-D])(?![A-Za-z])",
        r"answer is \(([A-D])\)",
        r"answer is ([A-D])(?![A-Za-z])",
    )
)
_BARE_LETTER = re.compile(r"\s*\(?([A-D])\)?\.?\s*")


def extract_choice_letter(text: str) -> str | None:
    """The answer letter of an MC response (spec §4.5).

    ``*`` is removed; the patterns ``\\boxed{X}``, "correct answer is (X)", "correct answer is X",
    "answer is (X)", "answer is X" are tried in order (case-insensitive) and the last match of the first
    matching pattern is taken. It counts only if it is an upper-case A-D.

    Args:
        text: the responder's answer text (after think handling).

    Returns:
        ``"A"`` to ``"D"``, or ``None``.

    Example:
        >>> extract_choice_letter("The correct answer is (C)."), extract_choice_letter("the answer is a dog")
        ('C', None)
    """
    if not isinstance(text, str):
        return None
    text = text.replace("*", "")
    for pattern in _LETTER_PATTERNS:
        matches = pattern.findall(text)
        if matches:
            letter = matches[-1]
            return letter if letter in LETTERS else None
    return None


def parse_letter(text: str) -> str | None:
    """A reference letter: a bare ``"B"`` / ``"(B)"`` / ``"B."``, else :func:`extract_choice_letter`.

    Example:
        >>> parse_letter(" (B) "), parse_letter("The correct answer is D"), parse_letter("b")
        ('B', 'D', None)
    """
    if not isinstance(text, str):
        return None
    bare = _BARE_LETTER.fullmatch(text)
    return bare.group(1) if bare else extract_choice_letter(text)


def format_mc_question(question: str, options: Sequence[tuple[str, str]] | Mapping[str, str]) -> str:
    """The responder's MC question in LongBench-v2 layout.

    Args:
        question: the question text.
        options: ``(letter, text)`` pairs in display order, or a mapping letter -> text.

    Returns:
        ``"{question}\\n\\nChoices:\\n(A) ...\\n(B) ..."``.

    Example:
        >>> print(format_mc_question("Which is larger?", [("A", "1"), ("B", "2")]))
        Which is larger?
        <BLANKLINE>
        Choices:
        (A) 1
        (B) 2
    """
    pairs = options.items() if isinstance(options, Mapping) else options
    lines = [f"({letter}) {text}" for letter, text in pairs]
    return question.strip() + "\n\nChoices:\n" + "\n".join(lines)


def mc_score(response: str, reference: str) -> float:
    """1.0 iff the response's letter equals the reference letter.

    Args:
        response: the responder's answer text, after think handling (see :func:`spell.tasks.answer_region`).
        reference: the reference letter (``"B"``; "The correct answer is B" also works).

    Returns:
        0.0 or 1.0.

    Example:
        >>> mc_score("... so the correct answer is (B).", "B"), mc_score("The answer is b.", "B")
        (1.0, 0.0)
    """
    predicted, gt = extract_choice_letter(response), parse_letter(reference)
    return float(predicted is not None and predicted == gt)
