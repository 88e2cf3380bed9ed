"""Tests for spell.tasks: think handling, answer regions, rule_score and extract_prediction (spec §4.2-4.5).

Run: .venv/bin/python -m pytest tests/unit/test_tasks.py
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spell.tasks import answer_region, extract_prediction, rule_score, strip_thinking, unwrap_reference
from spell.types import TaskType

TASKS = [task.value for task in TaskType]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<think>a</think>b", "b"),
        ("<think>a</think>b</think>c", "c"),  # after the LAST </think>
        ("reasoning</think>answer", "answer"),  # template-opened think: only the close tag in the completion
        ("<think>never closed", None),  # overlong thinking
        ("no tags", "no tags"),
        ("", ""),
    ],
)
def test_strip_thinking(text: str, expected: str | None) -> None:
    assert strip_thinking(text) == expected


@pytest.mark.parametrize(
    ("task", "response", "expected_len"),
    [
        ("docmath_qa", "x" * 1000, 300),  # no marker -> last 300 chars
        ("doc_general_qa", "x" * 1500, 1000),  # general QA window is 1000
        ("doc_mc", "x" * 1000, 300),
        ("docmath_qa", "the answer is 5" + "x" * 1000, 1015),  # marker -> whole text
        ("docmath_qa", "\\boxed{5}" + "x" * 1000, 1009),  # DocMath: a box also keeps the whole text
        ("doc_mc", "\\boxed{B}" + "x" * 1000, 300),  # ... but not for MC (spec §4.2)
        ("doc_mc", "<think>t</think>" + "x" * 1000, 1000),  # closed think -> all text after it
        ("docmath_qa", "x" * 100, 100),  # shorter than the window
    ],
)
def test_answer_region_lengths(task: str, response: str, expected_len: int) -> None:
    region = answer_region(task, response)
    assert region is not None and len(region) == expected_len


def test_answer_region_unclosed_think_is_none() -> None:
    assert answer_region("doc_mc", "<think>The correct answer is (B).") is None


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("The correct answer is 12.5.", "12.5"),
        ("the correct answer is: Marie Curie", "Marie Curie"),
        ("The correct answer is (B)", "(B)"),
        ("The correct answer is", "The correct answer is"),  # nothing after it: unchanged
        ("Paris", "Paris"),
    ],
)
def test_unwrap_reference(reference: str, expected: str) -> None:
    assert unwrap_reference(reference) == expected


@pytest.mark.parametrize(
    ("task", "response", "expected"),
    [
        ("docmath_qa", "<think>2+3</think>Therefore, the answer is $1,234.", "$1234"),
        ("docmath_qa", "no number given", None),
        ("doc_general_qa", "The correct answer is Marie Curie.", "Marie Curie"),
        ("doc_general_qa", "<think>The correct answer is X", None),  # unclosed think
        ("doc_mc", "The correct answer is (D).", "D"),
        ("doc_mc", "\\boxed{D}" + " filler" * 100, None),  # box outside the 300-char tail, no "answer is"
        ("doc_mc", "x" * 400 + " \\boxed{C}", "C"),  # a box in the tail window is found
    ],
)
def test_extract_prediction(task: str, response: str, expected: str | None) -> None:
    assert extract_prediction(task, response) == expected


def test_extract_prediction_marker_anywhere_keeps_whole_text() -> None:
    # "answer is" occurs -> the whole text is parsed, so a marker 700 chars from the end still counts
    response = "The correct answer is (D)." + " filler" * 100
    assert "answer is" in response and len(response) > 300
    assert extract_prediction("doc_mc", response) == "D"


@pytest.mark.parametrize(
    ("task", "response", "reference", "expected"),
    [
        ("docmath_qa", "<think>7*3=21</think>Therefore, the answer is 21.", "21", 1.0),
        ("docmath_qa", "Therefore, the answer is 21.", "The correct answer is 21", 1.0),  # wrapped reference
        ("docmath_qa", "Therefore, the answer is 2.1%.", "0.021", 1.0),  # percent scale
        ("docmath_qa", "<think>the answer is 21", "21", 0.0),  # unclosed think: no answer
        ("docmath_qa", "Therefore, the answer is 22.", "21", 0.0),
        ("doc_general_qa", "The correct answer is Paris, France.", "Paris", 1.0),
        ("doc_general_qa", "The correct answer is Paris.", "The correct answer is Paris", 1.0),
        ("doc_general_qa", "<think>x</think>Paris", "Paris", 0.0),  # no final-answer sentence
        ("doc_mc", "<think>A? B?</think>The correct answer is (B).", "B", 1.0),
        ("doc_mc", "The correct answer is (B).", "The correct answer is B", 1.0),
        ("doc_mc", "The correct answer is (A).", "B", 0.0),
        (TaskType.DOC_MC, "The correct answer is (B).", "B", 1.0),  # the enum works as well as the string
        ("docmath_qa", "", "21", 0.0),  # empty response
        ("doc_mc", "The correct answer is (B).", "", 0.0),  # empty reference
    ],
)
def test_rule_score(task: str, response: str, reference: str, expected: float) -> None:
    assert rule_score(task, response, reference) == expected


_UNRELATED_REFERENCE = {"docmath_qa": "17.25", "doc_general_qa": "zebra", "doc_mc": "C"}


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize(
    "payload",
    [
        "__import__('os').system('touch {target}')",
        "().__class__",
        "().__class__.__bases__[0].__subclasses__()",
        "eval('1+1')",
        "[x for x in ().__class__.__mro__]",
    ],
)
def test_rule_score_never_runs_code(task: str, payload: str, tmp_path) -> None:
    target = tmp_path / "pwned"
    payload = payload.format(target=target)
    for response in (f"Therefore, the answer is {payload}", f"\\boxed{{{payload}}}", payload):
        assert rule_score(task, response, _UNRELATED_REFERENCE[task]) == 0.0
        # general QA compares text, so the payload "covers" itself there; numbers and letters never match it
        covers_itself = task == "doc_general_qa" and "answer is" in response
        assert rule_score(task, response, payload) == (1.0 if covers_itself else 0.0)
        assert extract_prediction(task, response) in (None, payload, payload.split("\n")[0])
    assert not target.exists()


def test_rule_score_unknown_task_raises_value_error() -> None:
    with pytest.raises(ValueError):
        rule_score("math500", "the answer is 1", "1")


@pytest.mark.parametrize("task", TASKS)
def test_rule_score_non_string_inputs_score_zero(task: str) -> None:
    assert rule_score(task, None, "1") == 0.0  # type: ignore[arg-type]
    assert rule_score(task, "the answer is 1", None) == 0.0  # type: ignore[arg-type]
    assert extract_prediction(task, None) is None  # type: ignore[arg-type]


_MARKERS = ["the answer is ", "The correct answer is (", "\\boxed{", "</think>", "<think>", "answer is $"]
_answer_like = st.one_of(
    st.text(max_size=300),
    st.builds(
        lambda a, b, c: a + b + c,
        st.text(max_size=60),
        st.sampled_from(_MARKERS),
        st.text(alphabet="0123456789.,-+*/^()xe%$ABCDabcd{}\\ ", max_size=60),
    ),
)


@settings(deadline=200, max_examples=200)
@given(task=st.sampled_from(TASKS), response=_answer_like, reference=_answer_like)
def test_rule_score_never_raises_on_arbitrary_text(task: str, response: str, reference: str) -> None:
    assert rule_score(task, response, reference) in (0.0, 1.0)
    prediction = extract_prediction(task, response)
    assert prediction is None or isinstance(prediction, str)


def test_rule_score_is_fast_on_long_adversarial_text() -> None:
    # 200K chars of near-matches must not backtrack catastrophically (the default timeout would catch a hang)
    response = "the answer is " + "1," * 50_000 + " answer is (" * 5_000 + "\\boxed{" * 1_000
    for task in TASKS:
        assert rule_score(task, response, "1") in (0.0, 1.0)
