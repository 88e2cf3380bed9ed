"""Neutral filler text that pads world documents to a target context length (issue 5).

Filler sentences are built from a small fixed vocabulary of town-life phrases. They name no entity, hold no
digit and use none of the fact templates' key words (founded, bought, CEO, born, revenue ...), so they can
never state or contradict a fact: they only make the facts harder to find. Lengths are counted with
:func:`approx_tokens` (words x 1.3, rounded up), the world's tokenizer-free token estimate.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

TOKENS_PER_WORD = 1.3  # a rough BPE rate for this plain English; chars / 4 gives similar numbers here

PLACE_SUBJECTS = (
    "The old market", "The main road", "A small park", "The town hall", "The train station", "The local school",
    "The river bank", "The north gate", "A quiet street", "The public library", "The bus stop", "The city square",
)
PLACE_PREDICATES = (
    "is busy in the morning", "is quiet at night", "has many trees", "is painted white", "is near the bakery",
    "is cleaned every week", "has a few benches", "is open to everyone", "looks nice in spring",
    "is full of birds in summer", "is lit by lamps at night", "is a good place to rest",
)
PEOPLE_SUBJECTS = ("Many workers", "Most guests", "Some children", "Local people", "Older people", "Young people")
PEOPLE_PREDICATES = (
    "like to walk by the water", "enjoy warm bread", "read the news", "take the bus to work",
    "play games in the park", "talk about the weather", "drink tea after lunch", "buy fruit at the market",
)
SENTENCES_PER_PARAGRAPH = (3, 6)


def approx_tokens(text: str) -> int:
    """Approximate token count: whitespace-separated words times 1.3, rounded up.

    Example:
        >>> approx_tokens("Torav Mills makes glass.")
        6
    """
    return math.ceil(len(text.split()) * TOKENS_PER_WORD)


def filler_sentence(rng: random.Random) -> str:
    """One neutral sentence, e.g. ``"The old market is quiet at night."``."""
    if rng.random() < 0.6:
        return f"{rng.choice(PLACE_SUBJECTS)} {rng.choice(PLACE_PREDICATES)}."
    return f"{rng.choice(PEOPLE_SUBJECTS)} {rng.choice(PEOPLE_PREDICATES)}."


def filler_paragraphs(rng: random.Random, num_tokens: int,
                      count_tokens: Callable[[str], int] | None = None) -> list[str]:
    """Paragraphs of 3-6 filler sentences (the last may be shorter) whose length first reaches ``num_tokens``.

    Args:
        rng: the random source.
        num_tokens: how many tokens to produce (<= 0 gives no paragraph).
        count_tokens: a tokenizer's count of a text; None = the words x 1.3 estimate. Each sentence is counted
            with its leading space, as it sits in the document.

    Returns:
        The paragraphs, each a single line.
    """
    paragraphs: list[str] = []
    used = 0  # words (estimate; not per-paragraph rounded tokens, so the total lands just above) or tokens

    def reached() -> bool:
        return (used if count_tokens else used * TOKENS_PER_WORD) >= num_tokens

    while not reached():
        sentences: list[str] = []
        for _ in range(rng.randint(*SENTENCES_PER_PARAGRAPH)):
            sentences.append(filler_sentence(rng))
            used += count_tokens(" " + sentences[-1]) if count_tokens else len(sentences[-1].split())
            if reached():
                break
        paragraphs.append(" ".join(sentences))
    return paragraphs


def filler_vocabulary() -> frozenset[str]:
    """Every lowercase word the filler can produce (names must avoid them)."""
    phrases = PLACE_SUBJECTS + PLACE_PREDICATES + PEOPLE_SUBJECTS + PEOPLE_PREDICATES
    return frozenset(word.lower() for phrase in phrases for word in phrase.split())
