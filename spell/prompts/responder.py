"""Responder prompts (spec §2.4, §3 steps 3-4): task instruction + ``<text>`` documents + question.

Each template ends by asking for the final sentence the rule scorers parse: "Therefore, the answer is X."
(docmath_qa, X a bare number) or "The correct answer is X." (doc_general_qa; doc_mc with X a letter).
The grounding filter (spec §3 step 3) renders the same prompt with ``EMPTY_CONTEXT`` as the documents.
"""

from __future__ import annotations

from spell.prompts import Templates, fill, load_templates
from spell.types import TaskType

# What the grounding filter shows instead of the documents (the authors' literal, spec §11.10).
EMPTY_CONTEXT = "Empty"


def render_responder_prompt(
    task: TaskType | str, context: str, question: str, templates: Templates | None = None
) -> str:
    """Build the responder prompt for one question.

    Args:
        task: the task type (``docmath_qa``, ``doc_general_qa`` or ``doc_mc``).
        context: all documents of the set, already joined (see ``spell.prompts.join_documents``), or
            ``EMPTY_CONTEXT`` for the grounding filter.
        question: the question text; for ``doc_mc`` the question with its ``Choices:`` lines.
        templates: the templates to use; None means the built-in ones.

    Returns:
        The prompt text (the user turn; the chat template is applied later).

    Raises:
        ValueError: unknown task.

    Example:
        >>> "Question: Why?" in render_responder_prompt("doc_general_qa", EMPTY_CONTEXT, "Why?")
        True
    """
    templates = templates or load_templates(None)
    return fill(templates.responder(task), context=context, question=question)
