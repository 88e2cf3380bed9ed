"""Rule scorers for the three task types (stage 7 of a self-play step; spec §4.2-4.5).

``rule_score(task, response, reference)`` applies the responder think handling of spec §4.2
(:func:`answer_region`), reads the answer with the task's parser and compares it with the reference.
``extract_prediction`` returns the parsed answer the verifier is shown (spec §2.4). ``strip_thinking`` (spec §4.1
step 1) lives here so that both the task scorers and :mod:`spell.parsing` can use it without an import cycle.
"""

from __future__ import annotations

import re

from spell.tasks.doc_general_qa import extract_phrase_answer, general_qa_score
from spell.tasks.doc_mc import extract_choice_letter, mc_score
from spell.tasks.docmath import docmath_score, extract_numeric_answer
from spell.types import TaskType

__all__ = ["TAIL_CHARS", "answer_region", "extract_prediction", "rule_score", "strip_thinking", "unwrap_reference"]

# Without </think> and without an answer marker only the end of a response is parsed (spec §4.2).
TAIL_CHARS = {TaskType.DOCMATH_QA: 300, TaskType.DOC_GENERAL_QA: 1000, TaskType.DOC_MC: 300}
_WRAPPED_REFERENCE = re.compile(r"\s*the correct answer is:?", re.IGNORECASE)


def strip_thinking(text: str) -> str | None:
    """The text after the reasoning block (spec §4.1 step 1, also used by §4.2 and §4.6).

    Args:
        text: a raw completion.

    Returns:
        ``None`` if ``<think>`` is opened but never closed (overlong thinking); the text after the last
        ``</think>`` if there is one; otherwise the whole text.

    Example:
        >>> strip_thinking("<think>hmm</think> Answer: 4"), strip_thinking("<think>still thinking") is None
        (' Answer: 4', True)
    """
    if not isinstance(text, str):
        return None
    close = text.rfind("</think>")
    if close >= 0:
        return text[close + len("</think>") :]
    return None if "<think>" in text else text


def answer_region(task: TaskType | str, response: str) -> str | None:
    """The part of a responder completion the task parser reads (spec §4.2).

    Args:
        task: the task type.
        response: the raw responder completion.

    Returns:
        ``None`` for an unclosed ``<think>``; the text after the last ``</think>``; else the whole text if it
        contains "answer is" (DocMath: or ``\\boxed{``); else its last 300 (general QA: 1000) characters.

    Example:
        >>> answer_region("doc_mc", "x" * 500 + " B")[-5:], len(answer_region("doc_mc", "x" * 500))
        ('xxx B', 300)
    """
    task = TaskType(task)
    text = strip_thinking(response)
    if text is None or "</think>" in response:
        return text
    has_marker = "answer is" in text.lower() or (task == TaskType.DOCMATH_QA and "\\boxed{" in text)
    return text if has_marker else text[-TAIL_CHARS[task] :]


def unwrap_reference(reference: str) -> str:
    """Accept the authors' reference form "The correct answer is X" by returning X; other strings unchanged.

    Example:
        >>> unwrap_reference("The correct answer is 12.5."), unwrap_reference("Paris")
        ('12.5', 'Paris')
    """
    wrapped = _WRAPPED_REFERENCE.match(reference)
    inner = reference[wrapped.end() :].strip().rstrip(".").strip() if wrapped else ""
    return inner or reference


def extract_prediction(task: TaskType | str, response: str) -> str | None:
    """The parsed answer of a responder completion: what the verifier is shown as "Answer 1" (spec §2.4).

    Args:
        task: the task type (``ValueError`` if unknown).
        response: the raw responder completion.

    Returns:
        The answer string (DocMath: the raw number text, e.g. ``"$1234.5"``; general QA: the phrase; MC: the
        letter), or ``None`` if the parser finds none (then no verification happens, spec §11.7).

    Example:
        >>> extract_prediction("doc_mc", "<think>A or B?</think> The correct answer is (B).")
        'B'
    """
    task = TaskType(task)
    region = answer_region(task, response) if isinstance(response, str) else None
    if region is None:
        return None
    match task:
        case TaskType.DOCMATH_QA:
            return extract_numeric_answer(region)
        case TaskType.DOC_GENERAL_QA:
            return extract_phrase_answer(region)
        case TaskType.DOC_MC:
            return extract_choice_letter(region)


def rule_score(task: TaskType | str, response: str, reference: str) -> float:
    """The rule reward of one responder completion (spec §4.2-4.5): 1.0 if correct, else 0.0.

    Never raises on any response or reference text; a non-string gives 0.0.

    Args:
        task: the task type. An unknown task is a programming error and raises ``ValueError``.
        response: the raw responder completion (think handling is applied here).
        reference: the normalised reference (``Question.answer``); "The correct answer is X" is accepted too.

    Returns:
        0.0 or 1.0.

    Example:
        >>> rule_score("docmath_qa", "<think>7*3=21</think>Therefore, the answer is 21.", "21")
        1.0
        >>> rule_score("doc_general_qa", "<think>The correct answer is Paris", "Paris")  # unclosed think
        0.0
    """
    task = TaskType(task)
    if not isinstance(response, str) or not isinstance(reference, str):
        return 0.0
    region = answer_region(task, response)
    if region is None:
        return 0.0
    reference = unwrap_reference(reference)
    match task:
        case TaskType.DOCMATH_QA:
            return docmath_score(region, reference)
        case TaskType.DOC_GENERAL_QA:
            return general_qa_score(region, reference)
        case TaskType.DOC_MC:
            return mc_score(region, reference)
