"""Questioner prompts (spec §2.3-2.5; Alg. 1 lines 4-6): documents + remembered examples -> one new (q, a).

With an empty memory the plain template is used; otherwise the "with history" template shows the remembered
``### Example i:`` pairs and asks for one clearly harder, different question. For ``doc_mc`` a target letter,
drawn uniformly from A-D, is written into the prompt so that correct answers are balanced over letters.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from spell.prompts import Templates, fill, join_documents, load_templates
from spell.types import MemoryExample, TaskType

MC_LETTERS: tuple[str, ...] = ("A", "B", "C", "D")

_TARGET_LETTER_LINE = re.compile(r"^[^\n]*\{target_letter\}[^\n]*(?:\n|$)", re.MULTILINE)


def draw_target_letter(rng: random.Random) -> str:
    """Draw the letter the correct ``doc_mc`` option must sit under, uniformly from A-D (spec §2.5).

    Args:
        rng: the seeded random generator to draw from.

    Returns:
        One of ``"A"``, ``"B"``, ``"C"``, ``"D"``.

    Example:
        >>> draw_target_letter(random.Random(0)) in MC_LETTERS
        True
    """
    return rng.choice(MC_LETTERS)


def draw_target_letter_for(task: TaskType | str, rng: random.Random, *, enabled: bool = True) -> str | None:
    """The target letter for one questioner prompt: drawn for ``doc_mc`` when enabled, else None.

    Other tasks do not consume ``rng``.

    Args:
        task: the task type of the prompt.
        rng: the seeded random generator to draw from.
        enabled: ``questioner.balance_mc_letters``; False always returns None.

    Returns:
        A letter A-D for ``doc_mc`` when enabled, else None.
    """
    # Deviation: spec §2.5/§11.1 - the authors test task == "docmath_mc" so it never fires; we fire for doc_mc.
    if enabled and TaskType(task) is TaskType.DOC_MC:
        return draw_target_letter(rng)
    return None


def format_examples(examples: Sequence[MemoryExample]) -> str:
    """The remembered (question, answer) pairs as ``### Example i:`` sections, numbered from 1, in order.

    Example:
        >>> format_examples([MemoryExample((0,), "How many?", "3")])
        '### Example 1:\\nQuestion: How many?\\nAnswer: 3'
    """
    sections = [
        f"### Example {number}:\nQuestion: {example.question}\nAnswer: {example.answer}"
        for number, example in enumerate(examples, start=1)
    ]
    return "\n\n".join(sections)


def render_questioner_prompt(
    task: TaskType | str,
    documents: Sequence[str],
    examples: Sequence[MemoryExample] = (),
    *,
    target_letter: str | None = None,
    templates: Templates | None = None,
) -> str:
    """Build the questioner prompt for one document set (spec §2.3).

    Args:
        task: the task type (``docmath_qa``, ``doc_general_qa`` or ``doc_mc``).
        documents: the evidence documents, in index order; joined with a blank line.
        examples: remembered (q, a) pairs of this document set and task; non-empty selects the
            "with history" template.
        target_letter: ``doc_mc`` only: the letter the correct option must have (see
            :func:`draw_target_letter_for`). None drops the template line(s) that mention it.
        templates: the templates to use; None means the built-in ones.

    Returns:
        The prompt text (the user turn; the chat template is applied later).

    Raises:
        ValueError: unknown task, no documents, a letter outside A-D, or a letter for a non-MC task.
    """
    task = TaskType(task)
    if not documents:
        raise ValueError("render_questioner_prompt needs at least one document")
    if target_letter is not None and task is not TaskType.DOC_MC:
        raise ValueError(f"target_letter is only used for doc_mc, got it for task {task.value!r}")
    if target_letter is not None and target_letter not in MC_LETTERS:
        raise ValueError(f"target_letter must be one of {MC_LETTERS}, got {target_letter!r}")
    templates = templates or load_templates(None)
    template = templates.questioner(task, history=bool(examples))
    if target_letter is None:
        # Remove the whole sentence about the target letter before filling, so no placeholder survives.
        template = _TARGET_LETTER_LINE.sub("", template)
    return fill(
        template,
        documents=join_documents(documents),
        examples=format_examples(examples),
        target_letter=target_letter or "",
    )
