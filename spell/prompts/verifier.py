"""Verifier prompt (spec §2.4, §3 step 6): are two answers to a question equivalent?

The verifier compares the responder's parsed prediction ("Answer 1") with the parsed reference ("Answer 2")
without solving the question, treats numbers within 0.15% relative as equal, and ends with
"Decision: [[YES]]" or "Decision: [[NO]]", which ``spell.parsing.parse_verdict`` reads (spec §4.6).
"""

from __future__ import annotations

from spell.prompts import Templates, fill, load_templates


def render_verifier_prompt(question: str, predicted: str, reference: str, templates: Templates | None = None) -> str:
    """Build the verifier prompt for one responder answer.

    Args:
        question: the question as the questioner wrote it (for ``doc_mc`` with its options).
        predicted: the answer extracted from the responder's response.
        reference: the questioner's reference answer.
        templates: the templates to use; None means the built-in ones.

    Returns:
        The prompt text (the user turn; the chat template is applied later).

    Example:
        >>> "Answer 2: 12" in render_verifier_prompt("How many?", "12.0", "12")
        True
    """
    templates = templates or load_templates(None)
    return fill(templates.verifier, question=question, predicted=predicted, reference=reference)
