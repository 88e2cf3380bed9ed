"""Fixtures for the ``spell data build`` tests (texts from :mod:`corpus_texts`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from corpus_texts import TOPICS, topic_text, write_folder


@pytest.fixture()
def three_topic_folder(tmp_path) -> Path:
    """30 distinct .txt documents, 10 per topic, in one folder per topic."""
    return write_folder(tmp_path / "docs", {f"{topic}/{n:02d}.txt": topic_text(topic, n)
                                            for topic in TOPICS for n in range(10)})


@pytest.fixture()
def eval_file(tmp_path) -> Path:
    """A generic-format benchmark (``spell eval``) with one long context of 300 words."""
    path = tmp_path / "bench.jsonl"
    record = {"id": "q1", "task": "doc_general_qa", "documents": [topic_text("law", 999, num_words=300)],
              "question": "Who ruled?", "answers": ["the judge"]}
    path.write_text(json.dumps(record) + "\n", encoding="utf-8")
    return path
