"""spell/corpus/read.py: streaming readers for folders, .txt/.md, JSONL and Parquet, and their one-line errors."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spell.corpus.options import DataBuildError
from spell.corpus.read import PARQUET_BATCH_ROWS, iter_documents


def test_folder_is_read_recursively_in_path_order_skipping_hidden_and_other_files(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / ".cache").mkdir()
    (tmp_path / "b.txt").write_text("bee")
    (tmp_path / "a" / "c.md").write_text("# see")
    (tmp_path / "a" / "d.jsonl").write_text('{"text": "dee one"}\n\n{"text": "dee three"}\n')  # line 2 blank
    (tmp_path / ".cache" / "x.txt").write_text("hidden")
    (tmp_path / "notes.pdf").write_bytes(b"%PDF")
    documents = list(iter_documents([tmp_path]))
    assert [(d.origin.removeprefix(f"{tmp_path}/"), d.text) for d in documents] == [
        ("a/c.md", "# see"), ("a/d.jsonl:1", "dee one"), ("a/d.jsonl:3", "dee three"), ("b.txt", "bee")]


def test_jsonl_text_key_and_null_text(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"body": "first"}\n{"body": null}\n')
    assert [d.text for d in iter_documents([path], text_key="body")] == ["first", ""]  # null: empty, dropped later


def test_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbfhello")
    assert [d.text for d in iter_documents([path])] == ["hello"]


def test_parquet_is_read_in_batches_with_row_origins(tmp_path):
    num_rows = 2 * PARQUET_BATCH_ROWS + 5  # three batches
    path = tmp_path / "shard.parquet"
    pq.write_table(pa.table({"content": [f"row {i}" for i in range(num_rows)], "other": list(range(num_rows))}), path)
    documents = list(iter_documents([path], text_key="content"))
    assert len(documents) == num_rows
    assert (documents[0].origin, documents[-1].origin) == (f"{path}:row 0", f"{path}:row {num_rows - 1}")
    assert documents[-1].text == f"row {num_rows - 1}"


def test_reading_streams_a_bad_line_fails_only_when_reached(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "fine"}\n{not json\n')
    documents = iter_documents([path])
    assert next(documents).text == "fine"
    with pytest.raises(DataBuildError, match=f"^{path}:2: invalid JSON"):
        next(documents)


def _bad_parquet(path):
    path.write_bytes(b"PAR1 this is not parquet PAR1")


@pytest.mark.parametrize(("name", "content", "expected"), [
    ("r.jsonl", b'{"text": "ok"}\n[1, 2]\n', r"r.jsonl:2: expected a JSON object, got list"),
    ("r.jsonl", b'{"body": "x", "title": "t"}\n',
     r"r.jsonl:1: no 'text' field \(keys: body, title\)\. Fix: pass --text-key"),
    ("r.jsonl", b'{"text": 7}\n', r"r.jsonl:1: 'text' is a int, not a string"),
    # '{"text": "caf' is 13 bytes, so the latin-1 e-acute is byte 14 of line 2
    ("r.jsonl", b'{"text": "ok"}\n{"text": "caf\xe9"}\n',
     r"r.jsonl:2: not UTF-8 \(byte 0xe9 at byte 14 of the line\)"),
    # line 2 = "ab\xff": the bad byte is the line's 3rd
    ("t.txt", b"line one\nab\xffcd\n", r"t.txt:2: not UTF-8 \(byte 0xff at byte 3 of the line\)\. Fix: save the file"),
    ("p.parquet", None, r"p.parquet: cannot read Parquet .*Fix: rewrite the file"),
    ("data.csv", b"text\nx\n", r"data.csv: unknown file type '.csv'"),
])
def test_unreadable_input_names_file_line_and_fix(tmp_path, name, content, expected):
    path = tmp_path / name
    if content is None:
        _bad_parquet(path)
    else:
        path.write_bytes(content)
    with pytest.raises(DataBuildError, match=expected):
        list(iter_documents([path]))


def test_parquet_without_the_text_column_names_the_columns(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"body": ["x"], "url": ["u"]}), path)
    with pytest.raises(DataBuildError, match=r"no column 'text' \(columns: body, url\)\. Fix: pass --text-key"):
        list(iter_documents([path]))


def test_missing_input_and_folder_without_documents(tmp_path):
    with pytest.raises(DataBuildError, match="nowhere: no such file or folder"):
        list(iter_documents([tmp_path / "nowhere"]))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.pdf").write_bytes(b"%PDF")
    with pytest.raises(DataBuildError, match=r"empty: no \.txt, \.md, \.jsonl or \.parquet file"):
        list(iter_documents([tmp_path / "empty"]))


def test_json_records_are_not_mistaken_for_text(tmp_path):
    # a .jsonl file inside a folder is read as records, not as one text document
    (tmp_path / "r.jsonl").write_text(json.dumps({"text": "a record"}) + "\n")
    assert [d.text for d in iter_documents([tmp_path])] == ["a record"]
