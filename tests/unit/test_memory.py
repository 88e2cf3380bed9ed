"""Tests for spell.memory (history memory / curriculum, spec §2.3).

Run: .venv/bin/python -m pytest tests/unit/test_memory.py
"""

import json
import random

import pytest

from spell.memory import HistoryMemory
from spell.types import DocSet, MemoryExample, TaskType

MC = TaskType.DOC_MC


def _docset(num_docs=12, docset_id="set-1", task=MC):
    return DocSet(id=docset_id, documents=tuple(f"doc {i}" for i in range(num_docs)), task=task)


def _example(evidence, question="What is x?", answer="A"):
    return MemoryExample(evidence=tuple(evidence), question=question, answer=answer)


# ---- select_evidence ----


def test_empty_memory_draws_sorted_distinct_indices():
    memory = HistoryMemory()
    evidence, examples = memory.select_evidence(_docset(12), 5, random.Random(0))
    assert examples == []
    assert len(evidence) == 5 and len(set(evidence)) == 5
    assert list(evidence) == sorted(evidence)
    assert all(0 <= i < 12 for i in evidence)


def test_empty_memory_caps_at_docset_size():
    evidence, _ = HistoryMemory().select_evidence(_docset(3), 5, random.Random(0))
    assert evidence == (0, 1, 2)  # min(5, 3) = all three documents


def test_memory_grows_the_context_with_new_documents():
    memory, docset = HistoryMemory(), _docset(12)
    assert memory.add(docset.id, MC, _example((1, 4, 7)), 0.5)
    assert memory.add(docset.id, MC, _example((1, 4, 7, 9), "Harder?"), 0.25)
    evidence, examples = memory.select_evidence(docset, 5, random.Random(1))
    # hist = {1, 4, 7, 9}; 5 new indices from the 8 others -> 9 documents in total
    assert set(evidence) >= {1, 4, 7, 9}
    assert len(evidence) == 9 and list(evidence) == sorted(evidence)
    assert [e.question for e in examples] == ["What is x?", "Harder?"]  # oldest first


def test_memory_context_stops_growing_when_the_set_is_used_up():
    memory, docset = HistoryMemory(), _docset(6)
    memory.add(docset.id, MC, _example((0, 1, 2, 3)), 0.5)
    evidence, _ = memory.select_evidence(docset, 5, random.Random(0))
    assert evidence == (0, 1, 2, 3, 4, 5)  # min(5, 2 remaining) = 2 new


def test_memory_ignores_evidence_beyond_a_shrunk_docset():
    memory, docset = HistoryMemory(), _docset(4)
    memory.add(docset.id, MC, _example((1, 9)), 0.5)  # index 9 does not exist in a 4-document set
    evidence, _ = memory.select_evidence(docset, 1, random.Random(0))
    assert 1 in evidence and 9 not in evidence and len(evidence) == 2


def test_memory_keys_are_per_task_and_docset():
    memory = HistoryMemory()
    memory.add("set-1", MC, _example((0,)), 0.5)
    assert memory.examples("set-1", "doc_mc") == [_example((0,))]  # enum and string keys agree
    assert memory.examples("set-1", TaskType.DOCMATH_QA) == []
    assert memory.examples("set-2", MC) == []
    _, examples = memory.select_evidence(_docset(12, "set-1", TaskType.DOCMATH_QA), 5, random.Random(0))
    assert examples == []


# ---- admission ----


@pytest.mark.parametrize(
    ("admission", "mean", "expected"),
    [
        ("paper", 0.0, False),  # all wrong
        ("paper", 0.125, True),
        ("paper", 0.875, True),
        ("paper", 1.0, False),  # all right: r_que = 0, not admitted by the paper
        ("authors", 0.0, False),
        ("authors", 0.005, False),  # below cached_lower .01
        ("authors", 0.01, True),
        ("authors", 1.0, True),  # the authors also store questions every responder solved
        ("authors", 1.01, False),
    ],
)
def test_admits(admission, mean, expected):
    assert HistoryMemory(admission=admission).admits(mean) is expected


def test_add_refuses_unadmitted_questions():
    memory = HistoryMemory()
    assert memory.add("s", MC, _example((0,)), 1.0) is False
    assert len(memory) == 0 and memory.num_keys() == 0


# ---- dedup and eviction ----


def test_dedup_really_blocks_a_repeated_question():
    memory = HistoryMemory()
    assert memory.add("s", MC, _example((0, 1), "What is  the Total?", "B"), 0.5) is True
    # same question up to case and whitespace, different evidence and answer: refused
    assert memory.add("s", MC, _example((2, 3), "what is the\ntotal?", "C"), 0.5) is False
    # identical (question, answer) pair: refused
    assert memory.add("s", MC, _example((0, 1), "What is  the Total?", "B"), 0.5) is False
    # a new question with the same answer letter is fine
    assert memory.add("s", MC, _example((0, 1), "Which year?", "B"), 0.5) is True
    assert [e.question for e in memory.examples("s", MC)] == ["What is  the Total?", "Which year?"]


def test_dedup_off_admits_repeats():
    memory = HistoryMemory(dedup=False)
    assert memory.add("s", MC, _example((0,)), 0.5)
    assert memory.add("s", MC, _example((0,)), 0.5)
    assert len(memory) == 2


def test_oldest_entry_is_evicted_and_then_can_return():
    memory = HistoryMemory(size=2)
    for name in ("q1", "q2", "q3"):
        assert memory.add("s", MC, _example((0,), name), 0.5)
    assert [e.question for e in memory.examples("s", MC)] == ["q2", "q3"]
    assert memory.add("s", MC, _example((0,), "q1"), 0.5)  # q1 was evicted, so it is no longer a repeat
    assert len(memory) == 2


def test_len_and_num_keys():
    memory = HistoryMemory(size=3)
    memory.add("a", MC, _example((0,), "q1"), 0.5)
    memory.add("a", MC, _example((0,), "q2"), 0.5)
    memory.add("b", MC, _example((0,), "q1"), 0.5)
    memory.add("a", TaskType.DOCMATH_QA, _example((0,), "q1"), 0.5)
    assert len(memory) == 4 and memory.num_keys() == 3


def test_constructor_validates():
    with pytest.raises(ValueError):
        HistoryMemory(size=0)
    with pytest.raises(ValueError):
        HistoryMemory(admission="always")


# ---- state_dict ----


def _filled_memory():
    memory = HistoryMemory(size=2, admission="authors")
    memory.add("set-1", MC, _example((1, 4), "q1", "A"), 0.5)
    memory.add("set-1", MC, _example((1, 4, 6), "q2", "D"), 1.0)
    memory.add("set-1", MC, _example((1, 4, 6, 8), "q3", "C"), 0.75)  # evicts q1
    memory.add("set-2", TaskType.DOCMATH_QA, _example((0,), "q1", "12.5"), 0.5)
    return memory


def test_state_dict_round_trips_through_json():
    memory = _filled_memory()
    state = json.loads(json.dumps(memory.state_dict()))
    restored = HistoryMemory(size=2, admission="authors")
    restored.load_state_dict(state)
    assert restored.state_dict() == memory.state_dict()
    assert len(restored) == 3 and restored.num_keys() == 2
    assert restored.examples("set-1", MC) == memory.examples("set-1", MC)
    # same behaviour afterwards: the same seeded draw, the same dedup decisions
    docset = _docset(12, "set-1")
    assert restored.select_evidence(docset, 5, random.Random(3)) == memory.select_evidence(docset, 5, random.Random(3))
    assert restored.add("set-1", MC, _example((0,), "Q2"), 0.5) is False  # still a repeat after reload
    assert restored.add("set-1", MC, _example((0,), "q1"), 0.5) is True  # q1 was evicted before saving


def test_load_state_dict_replaces_contents_and_keeps_own_size():
    memory = HistoryMemory(size=1)
    memory.add("old", MC, _example((0,), "stale"), 0.5)
    memory.load_state_dict(_filled_memory().state_dict())
    assert memory.examples("old", MC) == []
    assert [e.question for e in memory.examples("set-1", MC)] == ["q3"]  # size 1 keeps the newest
