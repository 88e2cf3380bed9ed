"""Benchmark loaders: every native fixture format, the generic JSONL format, and one-line data errors.

Run: .venv/bin/python -m pytest tests/unit/test_eval_formats.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spell.evaluate.formats import DataError, EvalItem, load_generic, write_generic_jsonl
from spell.evaluate.native import benchmark_name, load_benchmark, longbench_length_bucket
from spell.types import TaskType

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "eval"


def test_longbench_v2_fixture_is_mc_with_letters_and_length_buckets():
    items = load_benchmark("longbench_v2", ASSETS)
    assert [i.id for i in items] == ["66f36490821e116aacb2cc22", "66ebed525a08c7b9b35e1cb4"]
    first = items[0]
    assert first.task == TaskType.DOC_MC and first.answers == ("C",)
    assert first.options == (("A", "Oslo"), ("B", "Lisbon"), ("C", "Tallinn"), ("D", "Dublin"))
    assert [i.length_bucket for i in items] == ["short", "medium"]  # the release's own length labels
    assert first.metadata["difficulty"] == "easy" and first.documents[0].startswith("Harbor Freight")


@pytest.mark.parametrize(
    "name, ids, buckets",
    [
        ("hotpotqa", ["hp-0001", "hp-0002"], ["0-4k", "4-8k"]),  # length 31 and 5200 words
        ("2wikimqa", ["2w-0001", "2w-0002"], ["0-4k", "8k+"]),  # 20 and 9000 words
        ("musique", ["mu-0001", "mu-0002"], ["0-4k", "0-4k"]),
    ],
)
def test_longbench_v1_fixtures_read_input_context_answers(name, ids, buckets):
    items = load_benchmark(name, ASSETS)
    assert [i.id for i in items] == ids
    assert [i.length_bucket for i in items] == buckets
    assert all(i.task == TaskType.DOC_GENERAL_QA and i.benchmark == name for i in items)
    assert items[0].question.endswith("?") and items[0].documents[0].startswith("Passage 1")


def test_longbench_v1_keeps_every_gold_answer():
    musique = load_benchmark("musique", ASSETS)
    assert musique[0].answers == ("about 450,000", "450,000")


def test_frames_fixture_joins_title_and_text_per_wiki_item():
    items = load_benchmark("frames", ASSETS)
    assert [i.id for i in items] == ["0", "1"]
    assert items[0].answers == ("Tori",)
    assert items[0].documents == (
        "Song Festival\nThe anthem of the Song Festival was composed by Peeter Org.",
        "Peeter Org\nPeeter Org was born in Tori in 1870.",
    )
    assert items[0].length_bucket == ""  # no native bucket: bucketed by prompt tokens later


def test_docmath_reads_all_four_testmini_subsets():
    items = load_benchmark("docmath", ASSETS)
    # 2 complong + 1 compshort + 1 simplong + 1 simpshort
    assert [i.metadata["subset"] for i in items] == ["complong", "complong", "compshort", "simplong", "simpshort"]
    assert items[0].answers == ("250.5",) and items[3].answers == ("42",)
    assert [i.length_bucket for i in items] == ["long", "long", "short", "long", "short"]
    assert items[4].documents[-1].startswith("| Item")  # optional `tables` appended after the paragraphs
    assert all(i.task == TaskType.DOCMATH_QA for i in items)


def test_generic_fixture_covers_all_three_tasks():
    items = load_benchmark(f"jsonl:{ASSETS / 'generic.jsonl'}", None)
    assert [i.task for i in items] == [TaskType.DOC_GENERAL_QA, TaskType.DOCMATH_QA, TaskType.DOC_MC]
    assert {i.benchmark for i in items} == {"generic"}  # named after the file stem
    assert items[2].options[1] == ("B", "Latvia") and items[2].answers == ("B",)
    assert items[0].length_bucket == "short" and items[0].metadata["hops"] == 2


def test_generic_roundtrip_through_writer(tmp_path):
    item = EvalItem(
        "x",
        "q1",
        TaskType.DOC_MC,
        ("doc {with} braces",),
        "Q?",
        ("D",),
        (("A", "a"), ("B", "b"), ("C", "c"), ("D", "d")),
        "long",
        {"hops": 3},
    )
    path = write_generic_jsonl([item], tmp_path / "out.jsonl")
    assert load_generic(path, "x") == [item]


def test_limit_keeps_the_first_items():
    assert [i.id for i in load_benchmark("hotpotqa", ASSETS, limit=1)] == ["hp-0001"]


def test_benchmark_name_of_generic_spec_is_the_file_stem():
    assert benchmark_name("jsonl:/data/world_heldout.jsonl") == "world_heldout"
    assert benchmark_name("frames") == "frames"


def test_longbench_length_bucket_ignores_non_numbers():
    assert longbench_length_bucket(None) == "" and longbench_length_bucket(8000) == "8k+"


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD = {"id": "a", "task": "doc_general_qa", "documents": ["d"], "question": "q?", "answers": ["x"]}


@pytest.mark.parametrize(
    "second_line, expected",
    [
        ("{not json", "line 2: invalid JSON"),  # broken JSON names the line
        (json.dumps({**GOOD, "id": "b", "task": "essay"}), "line 2: field 'task'"),  # unknown task
        (json.dumps({**GOOD, "id": "b", "answers": []}), "field 'answers'"),  # empty gold list
        (json.dumps({**GOOD, "id": "b", "documents": "d"}), "field 'documents'"),  # not a list
        (json.dumps({**GOOD, "id": "b", "question": ""}), "field 'question'"),  # empty question
        (json.dumps({**GOOD, "id": "b", "task": "doc_mc"}), "options"),  # MC without options
        (json.dumps({**GOOD, "id": "b", "task": "doc_mc", "options": dict(zip("ABCD", "wxyz"))}), "letter"),
        (json.dumps(GOOD), "id 'a' appears twice"),  # duplicate id breaks resume
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_generic_malformed_record_gives_one_line_error(tmp_path, second_line, expected):
    path = _write_lines(tmp_path / "bad.jsonl", [json.dumps(GOOD), second_line])
    with pytest.raises(DataError) as err:
        load_generic(path)
    message = str(err.value)
    assert expected in message and str(path) in message and "\n" not in message


def test_missing_native_file_lists_the_paths_tried(tmp_path):
    with pytest.raises(DataError, match=r"hotpotqa: data file not found \(tried .*longbench/hotpotqa.jsonl"):
        load_benchmark("hotpotqa", tmp_path)


def test_missing_docmath_subset_names_the_file(tmp_path):
    (tmp_path / "docmath").mkdir()
    with pytest.raises(DataError, match="complong_testmini.json not found"):
        load_benchmark("docmath", tmp_path)


def test_longbench_v2_bad_answer_letter_is_reported(tmp_path):
    record = json.loads((ASSETS / "longbench_v2" / "data.json").read_text())[0] | {"answer": "E"}
    (tmp_path / "data.json").write_text(json.dumps([record]))
    with pytest.raises(DataError, match=r"data.json\[0\]: field 'answer' must be one of A-D"):
        load_benchmark("longbench_v2", tmp_path)


def test_frames_without_wiki_items_is_reported(tmp_path):
    _write_lines(tmp_path / "frames.jsonl", [json.dumps({"Prompt": "q?", "Answer": "a"})])
    with pytest.raises(DataError, match="line 1: field 'wiki_items'"):
        load_benchmark("frames", tmp_path)


def test_docmath_test_split_without_ground_truth_is_reported(tmp_path):
    (tmp_path / "docmath").mkdir()
    for subset in ("complong", "compshort", "simplong", "simpshort"):
        record = {"question_id": "q", "question": "q?", "paragraphs": ["p"]}
        (tmp_path / "docmath" / f"{subset}_testmini.json").write_text(json.dumps([record]))
    with pytest.raises(DataError, match="ground_truth"):
        load_benchmark("docmath", tmp_path)


@pytest.mark.parametrize(
    "spec, data_dir, expected",
    [
        ("narrativeqa", ASSETS, "unknown benchmark"),  # not one of the six
        ("frames", None, "needs --data-dir"),  # native benchmark without a data folder
        ("jsonl:/nonexistent/x.jsonl", None, "file not found"),
    ],
)
def test_bad_benchmark_spec(spec, data_dir, expected):
    with pytest.raises(DataError, match=expected):
        load_benchmark(spec, data_dir)


def test_empty_file_is_an_error(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match="no records"):
        load_generic(tmp_path / "empty.jsonl")


def test_non_utf8_file_names_the_line_and_byte(tmp_path):
    path = tmp_path / "latin1.jsonl"
    second = json.dumps({**GOOD, "id": "b", "question": "caf\u00e9?"}, ensure_ascii=False)
    path.write_bytes((json.dumps(GOOD) + "\n").encode() + second.encode("latin-1") + b"\n")
    with pytest.raises(DataError) as err:
        load_generic(path)
    offset = second.encode("latin-1").index(b"\xe9") + 1  # 1-based byte of the line
    assert str(err.value) == (f"{path}:line 2: not UTF-8 (byte 0xe9 at byte {offset} of the line); save the file as "
                              "UTF-8 (e.g. iconv -f latin1 -t utf-8), or re-download it")


def test_a_directory_is_not_reported_as_a_missing_file(tmp_path):
    with pytest.raises(DataError, match="is a directory, not a file") as err:
        load_generic(tmp_path)
    assert "not found" not in str(err.value)
