"""Parse questioner and verifier completions into typed results (stage 4 and 8 of a step; spec §4.1, §4.6).

``parse_question`` turns a questioner completion into a :class:`~spell.types.Question` or a
:class:`~spell.types.Rejection` (``bad_format``: penalised, ``dropped``: not trained); ``parse_verdict`` turns a
verifier completion into a :class:`~spell.types.Verdict`. Model output is data: nothing here raises on any text,
and JSON is read with a strict ``json.loads`` (no repair; the prompts' own JSON examples are valid). A completion
longer than ``max_chars`` is not parsed at all (``bad_format`` / ``invalid``): an engine cannot return more than
``max_new_tokens`` tokens, so only a runaway or corrupt output gets there, and it must not cost a second a parse.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from spell.tasks import strip_thinking
from spell.tasks.doc_general_qa import ANSWER_PHRASES, extract_phrase_answer
from spell.tasks.doc_mc import LETTERS, format_mc_question, parse_letter
from spell.tasks.docmath import extract_numeric_answer, format_number, normalize_number
from spell.types import Question, QuestionStatus, Rejection, TaskType, Verdict

__all__ = [
    "MAX_COMPLETION_CHARS",
    "completion_char_limit",
    "extract_json_block",
    "parse_question",
    "parse_verdict",
    "remove_control_chars",
    "strip_thinking",
]

MAX_TRAILING_OBJECT_STARTS = 64  # '{' positions tried when looking for a bare object at the end of the text
# Longest completion the parsers read by default: 16 characters per token (English BPE averages about 4) at
# the default 4,096-token budget. Parsing is linear, but 1 MB of code fences takes about a second.
CHARS_PER_TOKEN_CAP = 16
MAX_COMPLETION_CHARS = CHARS_PER_TOKEN_CAP * 4096
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_NO_JSON = object()
_MARKER = re.compile(r"\[\[\s*(YES|NO)\s*\]\]", re.IGNORECASE)
_DECISION = re.compile(r"decision\s*[:：]([^\n]*)", re.IGNORECASE)
_YES_WORD, _NO_WORD = re.compile(r"\bYES\b"), re.compile(r"\bNO\b")


def completion_char_limit(max_new_tokens: int) -> int:
    """The ``max_chars`` for completions of at most ``max_new_tokens`` tokens (never below the default cap).

    Example:
        >>> completion_char_limit(1024), completion_char_limit(20480)
        (65536, 327680)
    """
    return max(MAX_COMPLETION_CHARS, CHARS_PER_TOKEN_CAP * max_new_tokens)


def remove_control_chars(text: str) -> str:
    """Drop characters with code point < 32 except ``\\n``, ``\\r``, ``\\t`` (spec §4.1 step 2).

    Example:
        >>> remove_control_chars('{"a":\\x01 1}\\n')
        '{"a": 1}\\n'
    """
    return _CONTROL_CHARS.sub("", text)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _loads(text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):  # JSONDecodeError is a ValueError; deep nesting recurses
        return _NO_JSON


def _fenced_blocks(text: str) -> tuple[list[str], list[str]]:
    """Contents of closed ``` blocks: (tagged ```json, untagged ```), each in text order."""
    tagged: list[str] = []
    untagged: list[str] = []
    for body in text.split("```")[1:-1:2]:  # odd pieces are inside a fence that is also closed
        info, _, content = body.partition("\n")
        info = info.strip()
        if info.lower().startswith("json") and (len(info) == 4 or info[4:].lstrip()[:1] in ("{", "[")):
            tagged.append(info[4:] + "\n" + content)
        elif not info or info[0] in "{[":
            untagged.append(body)
    return tagged, untagged


def _trailing_object(text: str) -> Any:
    """A JSON object that ends the text (after whitespace), e.g. a bare ``{...}`` after the reasoning."""
    stripped = text.rstrip()
    if not stripped.endswith("}"):
        return _NO_JSON
    starts = [match.start() for match in re.finditer(r"\{", stripped)][-MAX_TRAILING_OBJECT_STARTS:]
    decoder = json.JSONDecoder(parse_constant=_reject_constant)
    for start in starts:  # earliest first, so the outermost object wins over the ones nested in it
        try:
            value, end = decoder.raw_decode(stripped, start)
        except (ValueError, RecursionError):
            continue
        if end == len(stripped):
            return value
    return _NO_JSON


def extract_json_block(text: str) -> object | None:
    """The questioner's JSON answer (spec §4.1 step 3, extended).

    Tried in order, the first candidate that parses wins (whatever its type): ```json blocks from the last to
    the first, then untagged ``` blocks from the last to the first, then the whole text, then a bare JSON
    object that ends the text. Parsing is strict ``json.loads``: trailing commas, NaN/Infinity are invalid.

    Args:
        text: the completion after think handling and control-character removal.

    Returns:
        The parsed JSON value, or ``None`` if no candidate parses.

    Example:
        >>> extract_json_block('Draft ```json\\n{"a": 1,}\\n``` final ```json\\n{"a": 2}\\n```')
        {'a': 2}
        >>> extract_json_block('Reasoning... {"a": [1, 2]}')
        {'a': [1, 2]}
    """
    if not isinstance(text, str):
        return None
    tagged, untagged = _fenced_blocks(text)
    for candidate in [*reversed(tagged), *reversed(untagged), text]:
        value = _loads(candidate)
        if value is not _NO_JSON:
            return value
    value = _trailing_object(text)
    return None if value is _NO_JSON else value


def _bad(reason: str, raw: str) -> Rejection:
    return Rejection(status=QuestionStatus.BAD_FORMAT, reason=reason, raw=raw)


def _dropped(reason: str, raw: str) -> Rejection:
    return Rejection(status=QuestionStatus.DROPPED, reason=reason, raw=raw)


def _parse_docmath(question: str, answer: Any, raw: str) -> Question | Rejection:
    # Deviation: spec §4.1 step 5 - a JSON boolean is bad_format (Python's bool is an int, the authors accept it).
    if isinstance(answer, bool) or not isinstance(answer, str | int | float):
        return _bad("docmath answer must be a number or a string", raw)
    if isinstance(answer, str) and ("answer is" in answer.lower() or "\\boxed{" in answer):
        answer = extract_numeric_answer(answer) or answer
    value = normalize_number(answer)
    if value is None:
        return _dropped("docmath answer is not a number", raw)
    if value == 0:
        return _dropped("docmath answer is zero", raw)
    return Question(TaskType.DOCMATH_QA, question.strip(), format_number(value), raw_question=question)


def _parse_general_qa(
    question: str, answer: Any, raw: str, max_answer_tokens: int, count_tokens: Callable[[str], int] | None
) -> Question | Rejection:
    if not isinstance(answer, str) or not answer.strip():
        return _bad("general-QA answer must be a non-empty string", raw)
    if any(phrase in answer for phrase in ANSWER_PHRASES):
        extracted = extract_phrase_answer(answer)
        if extracted is None:
            return _bad("general-QA answer is empty after 'answer is'", raw)
        answer = extracted
    answer = answer.strip()
    num_tokens = count_tokens(answer) if count_tokens is not None else len(answer.split())
    if num_tokens > max_answer_tokens:
        return _dropped(f"general-QA answer has {num_tokens} > {max_answer_tokens} tokens", raw)
    return Question(TaskType.DOC_GENERAL_QA, question.strip(), answer, raw_question=question)


def _parse_mc(question: str, answer: Any, options: Any, raw: str) -> Question | Rejection:
    if not isinstance(answer, str):
        return _bad("MC answer must be a string", raw)
    if not isinstance(options, dict) or set(options) != set(LETTERS):
        return _bad("MC options must be an object with exactly the keys A, B, C, D", raw)
    if not all(isinstance(text, str) and text.strip() for text in options.values()):
        return _bad("MC options must be non-empty strings", raw)
    # Deviation: spec §4.1 step 5 - repeated options (compared case- and space-insensitively) are bad_format:
    # with two identical choices the question has no single right letter and its reward would be noise.
    if len({" ".join(text.split()).casefold() for text in options.values()}) < len(LETTERS):
        return _bad("MC options must be four different texts", raw)
    letter = parse_letter(answer)
    if letter is None:
        return _bad("MC answer is not one of A, B, C, D", raw)
    pairs = tuple((key, options[key].strip()) for key in LETTERS)
    return Question(TaskType.DOC_MC, format_mc_question(question, pairs), letter, raw_question=question, options=pairs)


def parse_question(
    text: str,
    task: TaskType | str,
    *,
    max_answer_tokens: int = 40,
    count_tokens: Callable[[str], int] | None = None,
    max_chars: int = MAX_COMPLETION_CHARS,
) -> Question | Rejection:
    """Validate a questioner completion (spec §4.1). Never raises.

    Args:
        text: the raw questioner completion.
        task: the task type the question was asked for (an unknown task gives bad_format, as in the spec).
        max_answer_tokens: general-QA answers longer than this are dropped (authors: 40 policy tokens).
        count_tokens: token counter for that limit; default: whitespace-separated words.
        max_chars: a longer completion is bad_format without being parsed (see
            :func:`completion_char_limit`).

    Returns:
        A :class:`Question` (DocMath reference: :func:`~spell.tasks.docmath.format_number`, e.g. ``"12.5"``,
        ``"3"``; MC: the letter, with the options in ``question``), or a :class:`Rejection` with status
        ``bad_format`` (longer than ``max_chars``, no JSON object, missing/mistyped fields, bad options or
        letter) or ``dropped`` (unclosed ``<think>``, DocMath answer zero or unparseable, general-QA answer too
        long).

    Example:
        >>> parse_question('<think>...</think>```json\\n{"question": "Total?", "answer": "$12.50"}\\n```',
        ...                "docmath_qa").answer
        '12.5'
        >>> parse_question('{"question": "Who?", "answer": 7}', "doc_general_qa").status
        <QuestionStatus.BAD_FORMAT: 'bad_format'>
    """
    if not isinstance(text, str):
        return _bad("completion is not a string", "")
    try:
        task = TaskType(task)
    except (ValueError, TypeError):
        return _bad(f"unknown task {task!r}", text)
    if len(text) > max_chars:
        return _bad(f"completion has {len(text)} > {max_chars} characters (not parsed)", text)
    body = strip_thinking(text)
    if body is None:
        return _dropped("unclosed <think>", text)
    payload = extract_json_block(remove_control_chars(body))
    if not isinstance(payload, dict):
        return _bad("no JSON object", text)
    question = payload.get("question")
    # Deviation: spec §4.1 step 5 - an empty or blank question is bad_format too (the authors check the type only).
    if not isinstance(question, str) or not question.strip():
        return _bad("question must be a non-empty string", text)
    answer = payload.get("answer")
    match task:
        case TaskType.DOCMATH_QA:
            return _parse_docmath(question, answer, text)
        case TaskType.DOC_GENERAL_QA:
            return _parse_general_qa(question, answer, text, max_answer_tokens, count_tokens)
        case TaskType.DOC_MC:
            return _parse_mc(question, answer, payload.get("options"), text)


def _decision_line_verdict(text: str) -> Verdict | None:
    lines = _DECISION.findall(text)
    if not lines:
        return None
    words = set(re.findall(r"\b(yes|no)\b", lines[-1], re.IGNORECASE))
    kinds = {word.upper() for word in words}
    if len(kinds) != 1:
        return None
    return Verdict.YES if kinds == {"YES"} else Verdict.NO


def parse_verdict(text: str, *, max_chars: int = MAX_COMPLETION_CHARS) -> Verdict:
    """A verifier completion's decision (spec §4.6, made robust). Never raises.

    A completion longer than ``max_chars`` is INVALID without being read. After think handling (unclosed
    ``<think>`` -> INVALID) the first rule that decides wins:

    1. ``[[YES]]`` / ``[[NO]]`` markers (any case): the **last** marker wins.
    2. The last "Decision:" line, if it holds exactly one of the words yes/no (any case).
    3. Standalone upper-case words ``YES`` / ``NO`` (word boundaries, so NOTE, NONE, YESTERDAY do not count):
       exactly one kind present decides; both or neither -> INVALID.

    Deviation: spec §4.6 - the authors use case-sensitive substring tests, so "NOTE: ... [[YES]]" is INVALID
    and "NONE ... YES" is NO; with both markers present they return INVALID, we take the last marker.

    Args:
        text: the raw verifier completion.
        max_chars: longest completion read (see :func:`completion_char_limit`).

    Returns:
        ``Verdict.YES``, ``Verdict.NO`` or ``Verdict.INVALID`` (equal to "yes"/"no"/"invalid").

    Example:
        >>> parse_verdict("NOTE: same value. Decision: [[YES]]") == "yes"
        True
        >>> parse_verdict("<think>They differ, so [[NO]]") == "invalid"
        True
    """
    if not isinstance(text, str) or len(text) > max_chars:
        return Verdict.INVALID
    body = strip_thinking(text)
    if body is None:
        return Verdict.INVALID
    markers = _MARKER.findall(body)
    if markers:
        return Verdict.YES if markers[-1].upper() == "YES" else Verdict.NO
    decided = _decision_line_verdict(body)
    if decided is not None:
        return decided
    has_yes, has_no = bool(_YES_WORD.search(body)), bool(_NO_WORD.search(body))
    if has_yes != has_no:
        return Verdict.YES if has_yes else Verdict.NO
    return Verdict.INVALID
