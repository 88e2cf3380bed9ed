"""Tests for spell.parsing: questioner JSON validation and verifier verdicts (spec §4.1, §4.6).

Run: .venv/bin/python -m pytest tests/unit/test_parsing.py
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spell.parsing import (
    MAX_COMPLETION_CHARS,
    completion_char_limit,
    extract_json_block,
    parse_question,
    parse_verdict,
    remove_control_chars,
)
from spell.types import Question, QuestionStatus, Rejection, TaskType, Verdict

TASKS = [task.value for task in TaskType]


def _block(payload: str, tag: str = "json") -> str:
    return f"```{tag}\n{payload}\n```"


def _q(question: object = "What is the total?", answer: object = 12.5, **extra: object) -> str:
    """A questioner completion: some reasoning, then the JSON in a ```json block."""
    return "Step 1: add the two figures.\n" + _block(json.dumps({"question": question, "answer": answer, **extra}))


# ---------------------------------------------------------------- control characters and JSON blocks


def test_remove_control_chars_keeps_newlines_tabs_and_unicode() -> None:
    assert remove_control_chars("a\x00b\x1fc\td\ne\rf\x7fé") == "abc\td\ne\rf\x7fé"  # only ord < 32 goes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (_block('{"a": 1}'), {"a": 1}),  # one block
        (_block('{"a": 1}') + " then " + _block('{"a": 2}'), {"a": 2}),  # last block first
        (_block('{"a": 1}') + " then " + _block('{"a": 2,}'), {"a": 1}),  # last has a trailing comma: earlier wins
        (_block('{"a": 1,}'), None),  # trailing comma is invalid JSON (strict json.loads)
        (_block("[1, 2]") + _block('{"a": 1}', tag=""), [1, 2]),  # the first candidate that parses wins, any type
        (_block('{"a": 1}', tag=""), {"a": 1}),  # untagged fence as a fallback
        (_block('{"a": 1,}') + _block('{"b": 2}', tag=""), {"b": 2}),  # tagged invalid, untagged valid
        (_block('{"a": 1}', tag="python"), None),  # other languages are not candidates
        ('```json {"a": 1}```', {"a": 1}),  # one-line block
        (_block('{"a": 1}', tag="JSON"), {"a": 1}),  # tag case-insensitive
        ('{"a": 1}', {"a": 1}),  # the whole string
        ('  "just a string"  ', "just a string"),  # whole string parses to a non-object
        ('I reason first.\nFinal: {"q": "x", "n": {"m": 2}}\n', {"q": "x", "n": {"m": 2}}),  # bare object at end
        ('```json\n{"a": 1}', {"a": 1}),  # unclosed fence: found as the bare object at the end
        ('{"a": 1} and then more words', None),  # object not at the end
        ('{"a": NaN}', None),  # NaN is not JSON
        (
            _block('{"question": "東京の人口は？", "answer": "1,400万"}'),
            {"question": "東京の人口は？", "answer": "1,400万"},
        ),
        ("", None),  # empty
        ("no json here", None),
        ("[" * 50_000, None),  # deep nesting: RecursionError is caught
    ],
)
def test_extract_json_block(text: str, expected: object) -> None:
    assert extract_json_block(text) == expected


# ---------------------------------------------------------------- parse_question: shared rules


@pytest.mark.parametrize(
    ("text", "task", "reason_part"),
    [
        ("", "docmath_qa", "no JSON"),  # empty completion
        ("I could not write a question.", "doc_mc", "no JSON"),
        (_block('{"question": "Q?", "answer": "A",}'), "doc_general_qa", "no JSON"),  # trailing comma
        (_block('["Q?", "A"]'), "doc_general_qa", "no JSON object"),  # JSON but not an object
        (_block('{"answer": 3}'), "docmath_qa", "question"),  # missing question
        (_q(question=7), "docmath_qa", "question"),  # question not a string
        (_q(question="   "), "doc_general_qa", "question"),  # blank question (deviation)
        (_q(), "math500", "unknown task"),  # unknown task is bad_format (spec §4.1 step 4)
        ('<think>{"question": "Q?", "answer": 3}</think> done', "docmath_qa", "no JSON"),  # JSON only inside think
    ],
)
def test_parse_question_bad_format_shared(text: str, task: str, reason_part: str) -> None:
    result = parse_question(text, task)
    assert isinstance(result, Rejection)
    assert result.status == "bad_format"
    assert reason_part in result.reason
    assert result.raw == text


def test_parse_question_unclosed_think_is_dropped() -> None:
    result = parse_question("<think>" + _q(), "docmath_qa")
    assert isinstance(result, Rejection) and result.status == QuestionStatus.DROPPED


def test_parse_question_non_string_is_bad_format() -> None:
    result = parse_question(None, "docmath_qa")  # type: ignore[arg-type]
    assert isinstance(result, Rejection) and result.status == "bad_format"


def test_parse_question_removes_control_chars_before_json() -> None:
    # a raw \x01 inside a JSON string is invalid JSON; spec §4.1 step 2 removes it first
    text = _block('{"question": "Total\x01?", "answer": 5}')
    result = parse_question(text, "docmath_qa")
    assert isinstance(result, Question) and result.question == "Total?"


def test_parse_question_uses_text_after_think_and_last_block() -> None:
    text = "<think>" + _q(answer=1) + "</think>" + _q(answer=2) + "\nRevised:\n" + _q(answer=3)
    result = parse_question(text, "docmath_qa")
    assert isinstance(result, Question) and result.answer == "3"


# ---------------------------------------------------------------- parse_question: docmath_qa


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (12.5, "12.5"),  # JSON float
        (3.0, "3"),  # integral float -> no ".0" (format_number)
        (7, "7"),  # JSON int
        ("$1,234.50", "1234.5"),  # currency and separators normalised
        ("12.5%", "12.5"),  # percent sign removed, value kept in percent units
        ("Therefore, the answer is 42.", "42"),  # "answer is" extracted first
        ("\\boxed{-0.25}", "-0.25"),  # boxed extracted
        ("2.5 million", "2.5"),  # scale word dropped (matched by the scale rule later)
    ],
)
def test_parse_question_docmath_valid(answer: object, expected: str) -> None:
    result = parse_question(_q(question="  What is the total?  ", answer=answer), "docmath_qa")
    assert isinstance(result, Question)
    assert result == Question(
        TaskType.DOCMATH_QA, "What is the total?", expected, raw_question="  What is the total?  "
    )


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        (0, "dropped"),  # zero answer
        ("0.0", "dropped"),
        ("N/A", "dropped"),  # unparseable
        ("__import__('os').system('true')", "dropped"),  # code is never run: just unparseable
        ([1, 2], "bad_format"),  # not str/int/float
        ({"v": 1}, "bad_format"),
        (None, "bad_format"),  # JSON null or missing
        (True, "bad_format"),  # JSON boolean (deviation: the authors' bool-is-int accepts it)
    ],
)
def test_parse_question_docmath_rejections(answer: object, status: str) -> None:
    result = parse_question(_q(answer=answer), "docmath_qa")
    assert isinstance(result, Rejection) and result.status == status


# ---------------------------------------------------------------- parse_question: doc_general_qa


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("  Marie Curie ", "Marie Curie"),  # stripped
        ("The correct answer is Marie Curie.", "Marie Curie"),  # "answer is" extracted
        ("Zürich–Genève line", "Zürich–Genève line"),  # unicode kept
        (" ".join(["w"] * 40), " ".join(["w"] * 40)),  # exactly 40 tokens is allowed
    ],
)
def test_parse_question_general_qa_valid(answer: str, expected: str) -> None:
    result = parse_question(_q(question="Who?", answer=answer), "doc_general_qa")
    assert isinstance(result, Question)
    assert (result.task, result.question, result.answer, result.options) == (
        TaskType.DOC_GENERAL_QA,
        "Who?",
        expected,
        (),
    )


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        (1903, "bad_format"),  # numeric JSON answer is bad format (spec §11.11)
        ("", "bad_format"),  # empty
        ("   ", "bad_format"),
        (None, "bad_format"),
        ("The correct answer is [insert answer here].", "bad_format"),  # placeholder only
        (" ".join(["w"] * 41), "dropped"),  # 41 > 40 whitespace tokens
    ],
)
def test_parse_question_general_qa_rejections(answer: object, status: str) -> None:
    result = parse_question(_q(answer=answer), "doc_general_qa")
    assert isinstance(result, Rejection) and result.status == status


def test_parse_question_general_qa_custom_token_counter_and_limit() -> None:
    text = _q(answer="abcdef")
    assert parse_question(text, "doc_general_qa", count_tokens=len, max_answer_tokens=5).status == "dropped"  # 6 > 5
    assert isinstance(parse_question(text, "doc_general_qa", count_tokens=len, max_answer_tokens=6), Question)


# ---------------------------------------------------------------- parse_question: doc_mc

_OPTIONS = {"A": "12", "B": " 13 ", "C": "14", "D": "15"}


@pytest.mark.parametrize("answer", ["B", " B ", "(B)", "B.", "The correct answer is B"])
def test_parse_question_mc_valid(answer: str) -> None:
    result = parse_question(_q(question="How many?", answer=answer, options=_OPTIONS), "doc_mc")
    assert isinstance(result, Question)
    assert result.answer == "B"
    assert result.question == "How many?\n\nChoices:\n(A) 12\n(B) 13\n(C) 14\n(D) 15"  # option text stripped
    assert result.raw_question == "How many?"
    assert result.options == (("A", "12"), ("B", "13"), ("C", "14"), ("D", "15"))


@pytest.mark.parametrize(
    ("answer", "options"),
    [
        ("b", _OPTIONS),  # lower-case letter
        ("E", _OPTIONS),  # outside A-D
        (2, _OPTIONS),  # not a string
        ("B", None),  # options missing
        ("B", ["12", "13", "14", "15"]),  # a list, not an object
        ("B", {"A": "12", "B": "13", "C": "14"}),  # missing D
        ("B", {**_OPTIONS, "E": "16"}),  # extra key
        ("B", {"a": "12", "b": "13", "c": "14", "d": "15"}),  # lower-case keys
        ("B", {**_OPTIONS, "C": ""}),  # empty option
        ("B", {**_OPTIONS, "C": 14}),  # non-string option
        ("B", {**_OPTIONS, "C": "13"}),  # B and C both "13" (B is " 13 " before stripping)
        ("B", {**_OPTIONS, "D": "Twelve  Oaks", "A": "twelve oaks"}),  # same text up to case and spaces
    ],
)
def test_parse_question_mc_bad_format(answer: object, options: object) -> None:
    result = parse_question(_q(answer=answer, options=options), "doc_mc")
    assert isinstance(result, Rejection) and result.status == "bad_format"


def test_parse_question_mc_repeated_option_reason() -> None:
    result = parse_question(_q(answer="C", options={"A": "1971", "B": "1974", "C": "1971", "D": "1980"}), "doc_mc")
    assert isinstance(result, Rejection) and "four different" in result.reason


# ---------------------------------------------------------------- parse_question: never raises

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=12,
)
_payloads = st.fixed_dictionaries(
    {},
    optional={
        "question": _json_values,
        "answer": _json_values,
        "options": st.dictionaries(st.sampled_from("ABCDEa"), _json_values, max_size=5) | _json_values,
    },
)


@st.composite
def _questioner_like(draw: st.DrawFn) -> str:
    body = json.dumps(draw(_payloads))
    cut = draw(st.integers(0, len(body)))
    body = draw(st.sampled_from([body, body[:cut], body[:-1] + ",}", body.replace('"', "'")]))  # valid or broken
    wrapper = draw(st.sampled_from(["{}", "```json\n{}\n```", "```\n{}\n```", "<think>x</think>{}", "<think>{}"]))
    return draw(st.text(max_size=40)) + wrapper.replace("{}", body) + draw(st.text(max_size=40))


@settings(deadline=200, max_examples=200)
@given(text=st.one_of(st.text(max_size=500), _questioner_like()), task=st.sampled_from([*TASKS, "other"]))
def test_parse_question_never_raises(text: str, task: str) -> None:
    result = parse_question(text, task)
    assert isinstance(result, Question | Rejection)
    if isinstance(result, Rejection):
        assert result.status in ("bad_format", "dropped")
    else:
        assert result.question and result.answer


@pytest.mark.parametrize(
    "text",
    [
        "{" * 200_000 + "}",  # many '{' starts, none decodes
        '{"a":' * 3_000 + "1" + "}" * 3_000,  # very deep valid-looking object
        "```" * 50_000,  # many empty fences
        "x" * 1_000_000,  # long plain text
    ],
)
def test_parse_question_pathological_inputs_are_bad_format(text: str) -> None:
    # speed is measured in benchmarks, never asserted in tests; the cap bounds the work on long inputs
    result = parse_question(text, "docmath_qa")
    assert isinstance(result, Rejection) and result.status == "bad_format"


def test_parse_question_one_megabyte_of_code_fences_is_bad_format_unparsed() -> None:
    text = "```" * 350_000  # 1.05 MB of empty fences: about a second to parse without the cap
    result = parse_question(text, "doc_general_qa")
    assert isinstance(result, Rejection) and result.status == "bad_format"  # a status, not an exception
    assert result.reason == f"completion has 1050000 > {MAX_COMPLETION_CHARS} characters (not parsed)"


def test_parse_question_char_cap_applies_before_parsing_and_keeps_normal_results() -> None:
    text = _q()
    assert parse_question(text, "docmath_qa", max_chars=len(text)) == parse_question(text, "docmath_qa")  # at cap
    padded = text + " " * MAX_COMPLETION_CHARS  # valid JSON, but longer than the default cap
    assert parse_question(padded, "docmath_qa").status == "bad_format"
    # a budget of 20,480 tokens (a reasoning model) allows 16 x 20,480 characters: the same text parses
    assert parse_question(padded, "docmath_qa", max_chars=completion_char_limit(20_480)).answer == "12.5"


def test_completion_char_limit_is_16_chars_per_token_and_never_below_the_default() -> None:
    assert MAX_COMPLETION_CHARS == 65_536  # 16 x the default 4,096-token budget
    assert completion_char_limit(8) == MAX_COMPLETION_CHARS
    assert completion_char_limit(10_000) == 160_000


# ---------------------------------------------------------------- parse_verdict


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Explanation: both are 12.5.\nDecision: [[YES]]", "yes"),
        ("Explanation: 12.5 vs 13.\nDecision: [[NO]]", "no"),
        ("NOTE: the units differ but values agree.\nDecision: [[YES]]", "yes"),  # authors: "NO" in NOTE -> invalid
        ("NONE of the digits differ. [[YES]]", "yes"),  # authors: NONE counts as NO
        ("I first said [[YES]] but on reflection [[NO]]", "no"),  # both markers: the last wins (authors: invalid)
        ("Decision: [[ yes ]]", "yes"),  # marker case and spaces tolerated
        ("Decision: Yes, they match.", "yes"),  # decision line without brackets
        ("Decision: no", "no"),
        ("Decision:\n[[NO]]", "no"),  # marker on the next line
        ("Decision: yes or no, hard to say", "invalid"),  # ambiguous decision line, no upper-case words
        ("YES", "yes"),  # bare upper-case word
        ("NO", "no"),
        ("YES, though NO one would say so", "invalid"),  # both words, no marker
        ("YESTERDAY we NOTED it", "invalid"),  # word boundaries: neither YES nor NO
        ("NONE of this matters. YES.", "yes"),  # NONE is not NO
        ("they are equivalent", "invalid"),  # no decision at all
        ("<think>[[NO]]</think>Decision: [[YES]]", "yes"),  # reasoning ignored
        ("<think>Probably [[YES]]", "invalid"),  # unclosed think
        ("", "invalid"),
        ("Decision: [[YES]] ✅ — équivalent", "yes"),  # unicode around the marker
    ],
)
def test_parse_verdict(text: str, expected: str) -> None:
    assert parse_verdict(text) == expected


def test_parse_verdict_over_the_char_cap_is_invalid_unread() -> None:
    assert parse_verdict("[[YES]] " * 130_000) is Verdict.INVALID  # 1 MB of markers: never read
    padded = "Decision: [[YES]]" + " " * MAX_COMPLETION_CHARS
    assert parse_verdict(padded) is Verdict.INVALID
    assert parse_verdict(padded, max_chars=len(padded)) is Verdict.YES  # at the cap it is read as before


def test_parse_verdict_returns_verdict_enum() -> None:
    assert parse_verdict("[[YES]]") is Verdict.YES
    assert parse_verdict(None) is Verdict.INVALID  # type: ignore[arg-type]


@settings(deadline=200, max_examples=200)
@given(text=st.text(max_size=500))
def test_parse_verdict_never_raises(text: str) -> None:
    assert parse_verdict(text) in (Verdict.YES, Verdict.NO, Verdict.INVALID)
