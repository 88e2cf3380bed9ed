"""Hand-made corpora for the ``spell data build`` tests: seeded word salads over three topic vocabularies.

Two texts of :func:`topic_text` with different (topic, number) share almost no 5-word shingle, so any duplicate
a test finds is one it planted; texts of one topic share their vocabulary, so TF-IDF clusters them together.
"""

from __future__ import annotations

import random
from pathlib import Path

TOPICS = {
    "astro": "star planet orbit galaxy telescope comet nebula moon solar gravity light cluster dwarf giant".split(),
    "cook": "flour butter oven sugar salt pepper onion garlic simmer roast bake knead dough sauce broth".split(),
    "law": "court judge appeal statute contract plaintiff defendant ruling verdict counsel clause tort jury".split(),
}


def topic_text(topic: str, number: int, num_words: int = 60) -> str:
    """A deterministic text of ``num_words`` words from ``topic``'s vocabulary (about 8 characters a word)."""
    rng = random.Random(f"{topic}-{number}")
    words = [rng.choice(TOPICS[topic]) + rng.choice(("", "s", "ed", "ing", "er")) for _ in range(num_words)]
    return " ".join(words) + "."


def write_folder(root: Path, texts: dict[str, str]) -> Path:
    """Write ``{relative path: text}`` under ``root``; returns ``root``."""
    for name, text in texts.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root
