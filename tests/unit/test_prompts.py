"""Tests for spell.prompts: template loading/overrides, single-pass fill, and the three role renderers."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from collections import Counter

import pytest

from spell.prompts import TEMPLATE_PLACEHOLDERS, Templates, fill, join_documents, load_templates, placeholders
from spell.prompts.questioner import (
    MC_LETTERS,
    draw_target_letter,
    draw_target_letter_for,
    format_examples,
    render_questioner_prompt,
)
from spell.prompts.responder import EMPTY_CONTEXT, render_responder_prompt
from spell.prompts.verifier import render_verifier_prompt
from spell.types import MemoryExample, TaskType

TASKS = [task.value for task in TaskType]
DOCS = ["Alpha report: revenue 120 in 2021.", "Beta memo: revenue 150 in 2022.", "Gamma note: staff 40."]
EXAMPLES = [
    MemoryExample((0,), "What was Alpha's revenue in 2021?", "120"),
    MemoryExample((0, 1), "By how much did revenue grow from 2021 to 2022?", "30"),
]
# A `{name}` placeholder left in a rendered prompt (JSON like {"a": 1} does not match: the name must be bare).
LEFTOVER = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")


def all_renders(target_letter: str | None = "B") -> list[tuple[str, str]]:
    """(label, prompt) for every role x task x plain/history combination."""
    renders = []
    for task in TASKS:
        letter = target_letter if task == "doc_mc" else None
        renders.append((f"questioner/{task}", render_questioner_prompt(task, DOCS, target_letter=letter)))
        renders.append(
            (f"questioner/{task}/history", render_questioner_prompt(task, DOCS, EXAMPLES, target_letter=letter))
        )
        renders.append((f"responder/{task}", render_responder_prompt(task, join_documents(DOCS), "Why?")))
    renders.append(("verifier", render_verifier_prompt("Why?", "12.0", "12")))
    return renders


# ---------------------------------------------------------------- fill


@pytest.mark.parametrize(
    ("template", "values", "expected"),
    [
        ("Q: {question}", {"question": "Why?"}, "Q: Why?"),  # plain substitution
        ("{a}{a}", {"a": 1}, "11"),  # repeated name, non-str value -> str(1)
        ("{a} {b}", {"a": "{b}", "b": "x"}, "{b} x"),  # inserted text is not scanned again
        ("{unknown} {a}", {"a": "x"}, "{unknown} x"),  # unknown names stay as written
        ('{"answer": 1} {a}', {"a": "x"}, '{"answer": 1} x'),  # JSON braces are not placeholders
        ("{ a } {a}", {"a": "x"}, "{ a } x"),  # spaces inside braces: not a placeholder
        ("", {"a": "x"}, ""),  # empty template
    ],
)
def test_fill_substitutes_known_names_once(template, values, expected):
    assert fill(template, **values) == expected


def test_placeholders_finds_bare_names_only():
    assert placeholders('x {documents} {"a": 1} {examples}') == {"documents", "examples"}


# ---------------------------------------------------------------- built-in templates


def test_builtin_templates_have_exactly_their_placeholders():
    templates = load_templates(None)
    for name, required in TEMPLATE_PLACEHOLDERS.items():
        assert placeholders(getattr(templates, name)) == required, name


def test_template_names_match_dataclass_fields():
    assert set(TEMPLATE_PLACEHOLDERS) == set(Templates.__dataclass_fields__)


@pytest.mark.parametrize("name", sorted(TEMPLATE_PLACEHOLDERS))
def test_builtin_templates_stay_compact(name):
    # A tiny CPU model reads these too: < 250 words each, the verifier < 120.
    limit = 120 if name == "verifier" else 250
    assert len(getattr(load_templates(None), name).split()) < limit


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("history", [False, True])
def test_questioner_json_example_is_valid_json_with_task_keys(task, history):
    # spec §11.24: the authors' general-QA example had a trailing comma -> invalid JSON.
    template = load_templates(None).questioner(task, history=history)
    blocks = re.findall(r"```json\n(.*?)\n```", template, flags=re.DOTALL)
    assert len(blocks) == 1
    example = json.loads(blocks[0])
    expected_keys = {"question", "answer", "options"} if task == "doc_mc" else {"question", "answer"}
    assert set(example) == expected_keys
    if task == "docmath_qa":
        assert isinstance(example["answer"], (int, float)) and example["answer"] != 0  # one non-zero number
    if task == "doc_mc":
        assert list(example["options"]) == list(MC_LETTERS)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("history", [False, True])
def test_questioner_templates_state_the_rules(task, history):
    text = load_templates(None).questioner(task, history=history)
    assert "English" in text
    assert "Document 2" in text  # the example of a forbidden reference by number
    assert "step by step" in text
    assert "```json" in text
    if history:
        assert "clearly harder" in text and "ONE new question" in text


# ---------------------------------------------------------------- questioner


@pytest.mark.parametrize("task", TASKS)
def test_questioner_plain_shows_documents_joined_in_order(task):
    prompt = render_questioner_prompt(task, DOCS)
    # documents joined by a blank line, inside the <text> block
    assert "<text>\n" + "\n\n".join(DOCS) + "\n</text>" in prompt
    assert "### Example" not in prompt


@pytest.mark.parametrize("task", TASKS)
def test_questioner_history_lists_examples_in_order(task):
    prompt = render_questioner_prompt(task, DOCS, EXAMPLES)
    first = prompt.index("### Example 1:\nQuestion: What was Alpha's revenue in 2021?\nAnswer: 120")
    second = prompt.index("### Example 2:\nQuestion: By how much did revenue grow from 2021 to 2022?\nAnswer: 30")
    assert prompt.index("</text>") < first < second
    assert "### Example 3" not in prompt


def test_format_examples_numbers_from_one():
    assert format_examples(EXAMPLES[:1]) == "### Example 1:\nQuestion: What was Alpha's revenue in 2021?\nAnswer: 120"
    assert format_examples([]) == ""


@pytest.mark.parametrize("target_letter", [None, "A", "D"])
def test_no_placeholder_survives_any_render(target_letter):
    for label, prompt in all_renders(target_letter):
        assert LEFTOVER.search(prompt) is None, (label, LEFTOVER.search(prompt))
        assert "<correct_answer>" not in prompt, label


@pytest.mark.parametrize("history", [False, True])
def test_mc_target_letter_line_present_or_cleanly_omitted(history):
    examples = EXAMPLES if history else ()
    with_letter = render_questioner_prompt("doc_mc", DOCS, examples, target_letter="C").splitlines()
    without = render_questioner_prompt("doc_mc", DOCS, examples, target_letter=None).splitlines()
    # exactly one extra line, and it names the letter; everything else identical
    extra = [line for line in with_letter if line not in without]
    assert len(with_letter) == len(without) + 1 and len(extra) == 1
    assert '"C"' in extra[0]
    assert [line for line in with_letter if line != extra[0]] == without


def test_target_letter_rejected_outside_mc_or_abcd():
    with pytest.raises(ValueError, match="only used for doc_mc"):
        render_questioner_prompt("docmath_qa", DOCS, target_letter="A")
    with pytest.raises(ValueError, match="must be one of"):
        render_questioner_prompt("doc_mc", DOCS, target_letter="E")


def test_questioner_rejects_no_documents_and_unknown_task():
    with pytest.raises(ValueError, match="at least one document"):
        render_questioner_prompt("doc_mc", [])
    with pytest.raises(ValueError):
        render_questioner_prompt("docmath_mc", DOCS)  # the authors' misspelt task name is not a task


def test_draw_target_letter_is_uniform_over_abcd():
    rng = random.Random(1234)
    counts = Counter(draw_target_letter(rng) for _ in range(400))
    # expected 400/4 = 100 each; sd = sqrt(400 * 1/4 * 3/4) ~ 8.7, so 70..130 is about +-3.5 sd
    assert set(counts) == set(MC_LETTERS)
    assert all(70 <= counts[letter] <= 130 for letter in MC_LETTERS), counts


def test_letter_balancing_fires_for_doc_mc_only():
    rng = random.Random(7)
    letters = {draw_target_letter_for("doc_mc", rng) for _ in range(50)}
    assert letters == set(MC_LETTERS)  # fires for "doc_mc" (the authors' code never did, spec §2.5)
    assert draw_target_letter_for(TaskType.DOC_MC, rng) in MC_LETTERS
    state = rng.getstate()
    assert draw_target_letter_for("docmath_qa", rng) is None
    assert draw_target_letter_for("doc_general_qa", rng) is None
    assert rng.getstate() == state  # other tasks do not consume the rng
    assert draw_target_letter_for("doc_mc", rng, enabled=False) is None


def test_drawn_letter_reaches_the_mc_prompt():
    letter = draw_target_letter_for("doc_mc", random.Random(3))
    prompt = render_questioner_prompt("doc_mc", DOCS, target_letter=letter)
    assert f'set "answer" to "{letter}"' in prompt


def test_braces_in_documents_and_examples_are_not_resubstituted():
    docs = ["Table {documents} and {examples} and {target_letter} and {question}", 'JSON {"x": 1}']
    examples = [MemoryExample((0,), "What is {documents}?", "{examples}")]
    prompt = render_questioner_prompt("doc_mc", docs, examples, target_letter="B")
    assert 'Table {documents} and {examples} and {target_letter} and {question}\n\nJSON {"x": 1}' in prompt
    assert "Question: What is {documents}?\nAnswer: {examples}" in prompt
    assert prompt.count("Table {documents}") == 1  # documents inserted once, not expanded into themselves


# ---------------------------------------------------------------- responder and verifier


@pytest.mark.parametrize(
    ("task", "final_sentence"),
    [
        ("docmath_qa", '"Therefore, the answer is X."'),  # bare number
        ("doc_general_qa", '"The correct answer is X."'),  # short phrase
        ("doc_mc", '"The correct answer is X."'),  # a single letter
    ],
)
def test_responder_prompt_layout(task, final_sentence):
    question = "Which is larger?\nChoices:\n(A) x\n(B) y\n(C) z\n(D) w"
    prompt = render_responder_prompt(task, "D1 {question}\n\nD2", question)
    assert "<text>\nD1 {question}\n\nD2\n</text>" in prompt
    assert f"Question: {question}" in prompt
    assert prompt.index("</text>") < prompt.index("Question:") < prompt.index(final_sentence)


def test_responder_mc_asks_for_a_letter_and_docmath_for_a_number():
    assert "A, B, C or D" in render_responder_prompt("doc_mc", "d", "q")
    assert "single number" in render_responder_prompt("docmath_qa", "d", "q")


def test_responder_with_empty_context_for_grounding_filter():
    prompt = render_responder_prompt("doc_general_qa", EMPTY_CONTEXT, "Who?")
    assert f"<text>\n{EMPTY_CONTEXT}\n</text>" in prompt
    assert "Alpha report" not in prompt


def test_verifier_prompt_shows_question_both_answers_and_decision_format():
    prompt = render_verifier_prompt("How much {reference}?", "12.02", "12")
    assert "How much {reference}?" in prompt  # braces in the question stay literal
    assert "Answer 1: 12.02" in prompt and "Answer 2: 12" in prompt
    assert prompt.index("Answer 1: 12.02") < prompt.index("Answer 2: 12")
    assert "Decision: [[YES]]" in prompt and "Decision: [[NO]]" in prompt
    assert "0.15%" in prompt
    assert "Do not solve" in prompt


# ---------------------------------------------------------------- overrides


def test_override_replaces_only_the_named_template(tmp_path):
    (tmp_path / "questioner_docmath_qa.txt").write_text("CUSTOM <<{documents}>>\n", encoding="utf-8")
    (tmp_path / ".hidden").write_text("ignored", encoding="utf-8")
    templates = load_templates(tmp_path)
    assert render_questioner_prompt("docmath_qa", ["d1", "d2"], templates=templates) == "CUSTOM <<d1\n\nd2>>"
    builtin = load_templates(None)
    assert templates.verifier == builtin.verifier
    assert templates.questioner_doc_mc == builtin.questioner_doc_mc


def test_override_of_mc_template_keeps_letter_line_handling(tmp_path):
    (tmp_path / "questioner_doc_mc.txt").write_text("{documents}\nLetter: {target_letter}\nEnd", encoding="utf-8")
    templates = load_templates(str(tmp_path))
    assert render_questioner_prompt("doc_mc", ["d"], target_letter="A", templates=templates) == "d\nLetter: A\nEnd"
    assert render_questioner_prompt("doc_mc", ["d"], templates=templates) == "d\nEnd"


def test_override_with_unknown_file_name_names_the_file(tmp_path):
    (tmp_path / "questioner_docmath.txt").write_text("{documents}", encoding="utf-8")
    with pytest.raises(ValueError, match="questioner_docmath.txt"):
        load_templates(tmp_path)


def test_override_with_wrong_extension_is_rejected(tmp_path):
    (tmp_path / "verifier.md").write_text("{question} {predicted} {reference}", encoding="utf-8")
    with pytest.raises(ValueError, match="verifier.md"):
        load_templates(tmp_path)


def test_override_missing_placeholder_names_file_and_placeholder(tmp_path):
    (tmp_path / "verifier.txt").write_text("Q: {question} A1: {predicted}", encoding="utf-8")
    with pytest.raises(ValueError, match=r"verifier\.txt.*\{reference\}"):
        load_templates(tmp_path)


def test_override_undecodable_file_names_the_file(tmp_path):
    (tmp_path / "responder_doc_mc.txt").write_bytes(b"\xff\xfe{context} {question}")
    with pytest.raises(ValueError, match="responder_doc_mc.txt"):
        load_templates(tmp_path)


def test_missing_template_dir_fails_fast(tmp_path):
    with pytest.raises(FileNotFoundError, match="does_not_exist"):
        load_templates(tmp_path / "does_not_exist")


# ---------------------------------------------------------------- import boundary


def test_importing_prompts_does_not_import_torch_or_transformers():
    code = (
        "import sys\n"
        "import spell.prompts, spell.prompts.questioner, spell.prompts.responder, spell.prompts.verifier\n"
        "heavy = [m for m in ('torch', 'transformers', 'numpy', 'omegaconf', 'spell.config') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
