"""spell/corpus/decontam.py: benchmark formats, near-duplicate and verbatim-span contamination."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest
from corpus_texts import topic_text

from spell.corpus.decontam import ContaminationIndex, build_contamination_index, window_hashes
from spell.corpus.filters import MinHasher, normalized_words
from spell.evaluate.formats import DataError

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "eval"
HASHER = MinHasher(num_perm=128, shingle_words=5)


def _index(texts: list[str], span_words: int = 50) -> ContaminationIndex:
    index = ContaminationIndex(HASHER, threshold=0.8, span_words=span_words)
    for text in texts:
        index.add("bench", text)
    index.freeze()
    return index


def _check(index: ContaminationIndex, words: list[str]):
    return index.match(words, HASHER.minhash(words))


def test_window_hashes_are_weighted_sums_of_word_crcs():
    coefficients = np.array([1, 2], dtype=np.uint64)
    crc = {w: zlib.crc32(w.encode()) for w in "abc"}
    # windows (a, b) and (b, c): crc(a) * 1 + crc(b) * 2 and crc(b) * 1 + crc(c) * 2
    assert window_hashes(["a", "b", "c"], coefficients).tolist() == [crc["a"] + 2 * crc["b"], crc["b"] + 2 * crc["c"]]
    assert window_hashes(["a"], coefficients).tolist() == []  # shorter than a window


def test_every_run_of_span_words_is_caught_shorter_runs_below_the_window_never():
    eval_words = normalized_words(topic_text("law", 1, num_words=300))
    index = _index([" ".join(eval_words)], span_words=50)
    assert index.window == 25  # windows of ceil(50 / 2) words, taken every 25 words
    filler = normalized_words(topic_text("cook", 2, num_words=40))
    for start in range(0, 60):  # every alignment against the window grid
        # a run of 2 * 25 - 1 = 49 words always covers one whole window starting at a multiple of 25
        hit = _check(index, filler + eval_words[start:start + 49] + filler)
        assert hit is not None and (hit.reason, hit.benchmark) == ("verbatim_span", "bench"), start
        # 24 words cannot hold a 25-word window
        assert _check(index, filler + eval_words[start:start + 24] + filler) is None, start


def test_near_copy_of_an_evaluation_document_is_a_near_duplicate():
    text = topic_text("astro", 5, num_words=200)
    index = _index([text])
    words = normalized_words(text.upper())  # case does not hide a copy
    words[100] = "changed"  # 196 shingles, 5 differ: Jaccard 191 / 201 = 0.95 >= 0.8
    hit = _check(index, words)
    assert (hit.reason, hit.benchmark) == ("near_duplicate", "bench")
    assert hit.similarity == pytest.approx(191 / 201, abs=0.06)
    assert _check(index, normalized_words(topic_text("astro", 6, num_words=200))) is None


def test_repeated_evaluation_documents_are_indexed_once():
    index = _index(["same context " * 20, "same   CONTEXT " * 20, "another context entirely " * 10])
    assert index.documents_per_benchmark == {"bench": 2}


def test_formats_of_spell_eval_are_recognised_in_a_folder():
    # tests/assets/eval: documents of each benchmark (repeats and empty texts are indexed once / skipped)
    index = build_contamination_index([ASSETS], HASHER, threshold=0.8, span_words=50)
    counts = index.documents_per_benchmark
    # generic.jsonl: 3 questions with 2 + 2 + 1 documents; LongBench v1: 2 contexts per file;
    # LongBench-v2: 2 contexts; Frames: 2 + 2 wiki articles; DocMath, 5 questions over the 4 subsets:
    # paragraphs + tables 2 + 1 + 1 + 2 + (1 + 1 table) = 8
    assert counts["generic"] == 5
    assert (counts["hotpotqa"], counts["2wikimqa"], counts["musique"], counts["longbench_v2"]) == (2, 2, 2, 2)
    assert (counts["frames"], counts["docmath"]) == (4, 8)
    assert index.num_documents == sum(counts.values())


def test_unknown_format_and_empty_folder_are_data_errors(tmp_path):
    path = tmp_path / "odd.jsonl"
    path.write_text(json.dumps({"prompt": "p", "completion": "c"}) + "\n")
    with pytest.raises(DataError, match=r"odd.jsonl:line 1: unknown benchmark format \(fields: completion, prompt\)"):
        build_contamination_index([path], HASHER, 0.8, 50)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .json or .jsonl file"):
        build_contamination_index([tmp_path / "empty"], HASHER, 0.8, 50)
    with pytest.raises(DataError, match="file not found"):
        build_contamination_index([tmp_path / "missing.jsonl"], HASHER, 0.8, 50)
