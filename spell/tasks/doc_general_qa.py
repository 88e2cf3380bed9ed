"""General document QA rule scorer: "answer is" extraction and cover exact match (spec §4.4).

The training reward is ``sub_em_strict`` (CEM): the normalised reference must occur inside the normalised
prediction, and both must be non-empty (paper App. F.6: the loose variant that also accepts pred ⊂ gt is
hacked by short outputs). ``exact_match`` and ``f1_score`` are the usual SQuAD metrics, for evaluation.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter

ANSWER_PHRASES = ("the answer is", "correct answer is", "answer is")  # case-sensitive, tried in this order
_SPECIAL_TOKENS = re.compile(r"<｜[^｜]{0,64}｜>|<\|[^|<>]{0,64}\|>")  # DeepSeek <｜...｜> and <|...|> tokens
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_ASCII_PUNCTUATION = frozenset(string.punctuation)


def extract_phrase_answer(text: str) -> str | None:
    """The answer phrase of a general-QA response (spec §4.4 ``parse_model_answer``).

    ``*`` and special tokens are removed; the first of "the answer is", "correct answer is", "answer is"
    (case-sensitive) that occurs is located, and the first line of the text after its **last** occurrence,
    stripped of whitespace and ``.``, is the answer.

    Args:
        text: the responder's answer text (after think handling).

    Returns:
        The phrase, or ``None`` if no phrase marker occurs, the remainder is empty, or it is the template
        placeholder "insert answer here".

    Example:
        >>> extract_phrase_answer("Both reports agree. The correct answer is **Marie Curie**.")
        'Marie Curie'
    """
    if not isinstance(text, str):
        return None
    text = _SPECIAL_TOKENS.sub("", text.replace("*", ""))
    phrase = next((p for p in ANSWER_PHRASES if p in text), None)
    # Deviation: spec §4.4 - with no marker phrase we return None (no answer) rather than scoring free text,
    # which would let long outputs cover the reference by chance.
    if phrase is None:
        return None
    remainder = text[text.rfind(phrase) + len(phrase) :].strip().strip(".")
    if "insert answer here" in remainder.lower():
        return None
    lines = remainder.splitlines()
    answer = lines[0].strip().strip(".").strip() if lines else ""
    return answer or None


def _is_punctuation(char: str) -> bool:
    return char in _ASCII_PUNCTUATION or unicodedata.category(char).startswith("P")


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower-case, drop punctuation, drop the articles a/an/the, collapse whitespace.

    Deviation: spec §4.4 - Unicode punctuation (category P*, e.g. curly quotes) is dropped too, not only ASCII.

    Example:
        >>> normalize_answer("The  Eiffel-Tower!")
        'eiffeltower'
    """
    text = "".join(char for char in text.lower() if not _is_punctuation(char))
    return " ".join(_ARTICLES.sub(" ", text).split())


def sub_em_strict(pred: str, gt: str) -> float:
    """Cover exact match: 1.0 iff normalised ``gt`` is a substring of normalised ``pred``, both non-empty.

    Example:
        >>> sub_em_strict("It was Marie Curie in 1903", "marie curie"), sub_em_strict("Curie", "Marie Curie")
        (1.0, 0.0)
    """
    pred_norm, gt_norm = normalize_answer(pred), normalize_answer(gt)
    return float(bool(pred_norm) and bool(gt_norm) and gt_norm in pred_norm)


def exact_match(pred: str, gt: str) -> float:
    """1.0 iff the normalised strings are equal.

    Example:
        >>> exact_match("the Nile.", "Nile")
        1.0
    """
    return float(normalize_answer(pred) == normalize_answer(gt))


def f1_score(pred: str, gt: str) -> float:
    """Token-level F1 between the normalised strings (SQuAD); two empty strings give 1.0, one empty 0.0.

    Example:
        >>> f1_score("new york city", "New York")  # precision 2/3, recall 1 -> 2*(2/3)/(5/3) = 0.8
        0.8
    """
    pred_tokens, gt_tokens = normalize_answer(pred).split(), normalize_answer(gt).split()
    if not pred_tokens or not gt_tokens:
        return float(pred_tokens == gt_tokens)
    common = sum((Counter(pred_tokens) & Counter(gt_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(gt_tokens)
    return 2 * precision * recall / (precision + recall)


def general_qa_score(response: str, reference: str) -> float:
    """The general-QA rule reward: ``sub_em_strict`` of the extracted phrase against the reference.

    Args:
        response: the responder's answer text, after think handling (see :func:`spell.tasks.answer_region`).
        reference: the reference phrase.

    Returns:
        0.0 or 1.0; 0.0 when no answer phrase is found.

    Example:
        >>> general_qa_score("The correct answer is the city of Paris.", "Paris")
        1.0
    """
    predicted = extract_phrase_answer(response)
    if predicted is None or not isinstance(reference, str):
        return 0.0
    return sub_em_strict(predicted, reference)
