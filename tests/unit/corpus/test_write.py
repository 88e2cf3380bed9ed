"""spell/corpus/write.py: docsets.jsonl / docsets.parquet in the corpus schema that spell train reads."""

from __future__ import annotations

import json

import pyarrow.parquet as pq

from spell.corpus import write
from spell.data import load_docsets
from spell.types import DocSet, TaskType

ROWS = [
    {"id": "c-000001", "documents": ["first text", "second — text"], "task": "doc_mc", "source": "c",
     "origins": ["a.txt", "b.jsonl:3"]},
    {"id": "c-000002", "documents": ["third"], "task": "docmath_qa", "source": "c", "origins": ["p.parquet:row 0"]},
]


def test_both_files_hold_the_same_rows_and_spell_data_reads_them(tmp_path, monkeypatch):
    monkeypatch.setattr(write, "PARQUET_ROWS_PER_GROUP", 1)  # one row group per row: the batching is exercised
    assert write.write_docsets(tmp_path, iter(ROWS)) == 2
    lines = (tmp_path / write.DOCSETS_JSONL).read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == ROWS
    parquet = pq.ParquetFile(tmp_path / write.DOCSETS_PARQUET)
    assert parquet.metadata.num_row_groups == 2
    assert parquet.read().to_pylist() == ROWS
    expected = [DocSet("c-000001", ("first text", "second — text"), TaskType.DOC_MC, "c"),
                DocSet("c-000002", ("third",), TaskType.DOCMATH_QA, "c")]
    for name in (write.DOCSETS_JSONL, write.DOCSETS_PARQUET):
        assert load_docsets([tmp_path / name], ["doc_mc", "docmath_qa"]) == expected
