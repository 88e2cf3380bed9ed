"""Tests for spell/data.py: corpus validation, task assignment and the task-balanced sampler."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spell.data import CorpusError, TaskBalancedSampler, load_docsets, validate_corpus
from spell.types import DocSet, TaskType

ALL = ["docmath_qa", "doc_general_qa", "doc_mc"]


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def row(i: int, **extra: object) -> dict:
    return {"id": f"s{i}", "documents": [f"doc {i} a", f"doc {i} b"], **extra}


def test_load_valid_rows_keeps_fields_and_order(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [
        row(0, task="doc_mc", source="web", metadata={"x": 1}),  # unknown key ignored
        "",  # blank line skipped
        row(1, task="docmath_qa"),
    ])
    docsets = load_docsets([path], ["docmath_qa", "doc_mc"])
    assert docsets == [
        DocSet("s0", ("doc 0 a", "doc 0 b"), TaskType.DOC_MC, "web"),
        DocSet("s1", ("doc 1 a", "doc 1 b"), TaskType.DOCMATH_QA, ""),
    ]


def test_rows_without_task_are_round_robin_balanced(tmp_path):
    # 7 free rows over 3 tasks: least-filled first, ties to the earlier task -> 3, 2, 2
    path = write_jsonl(tmp_path / "c.jsonl", [row(i) for i in range(7)])
    counts = Counter(d.task for d in load_docsets([path], ALL))
    assert counts == {"docmath_qa": 3, "doc_general_qa": 2, "doc_mc": 2}


def test_fixed_rows_count_toward_balance(tmp_path):
    # 2 rows fixed to docmath_qa; 4 free rows fill the other two first: 2 / 2 / 2
    rows = [row(0, task="docmath_qa"), row(1, task="docmath_qa")] + [row(i) for i in range(2, 6)]
    counts = Counter(d.task for d in load_docsets([write_jsonl(tmp_path / "c.jsonl", rows)], ALL))
    assert counts == {"docmath_qa": 2, "doc_general_qa": 2, "doc_mc": 2}


def test_task_list_restricts_choice(tmp_path):
    # rows allowing only [doc_general_qa, doc_mc] never become docmath_qa; the 1 free row goes to docmath_qa
    rows = [row(i, task=["doc_general_qa", "doc_mc"]) for i in range(4)] + [row(9)]
    docsets = load_docsets([write_jsonl(tmp_path / "c.jsonl", rows)], ALL)
    by_id = {d.id: d.task for d in docsets}
    assert by_id["s9"] == "docmath_qa"
    assert Counter(by_id[f"s{i}"] for i in range(4)) == {"doc_general_qa": 2, "doc_mc": 2}


def test_assignment_is_seeded(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [row(i) for i in range(30)])
    first = [d.task for d in load_docsets([path], ALL, seed=0)]
    assert first == [d.task for d in load_docsets([path], ALL, seed=0)]
    assert first != [d.task for d in load_docsets([path], ALL, seed=1)]


def test_row_with_unconfigured_task_is_skipped_with_warning(tmp_path, caplog):
    path = write_jsonl(tmp_path / "c.jsonl", [row(0, task="doc_mc"), row(1, task="docmath_qa")])
    with caplog.at_level(logging.WARNING, logger="spell.data"):
        docsets = load_docsets([path], ["docmath_qa"])
    assert [d.id for d in docsets] == ["s1"]
    assert "skipped 1 corpus row" in caplog.text and "'s0'" in caplog.text


def test_configured_task_without_rows_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [row(0, task="docmath_qa"), row(1, task="docmath_qa")])
    with pytest.raises(CorpusError, match=r"\['doc_mc'\].*drop them from data.tasks"):
        load_docsets([path], ["docmath_qa", "doc_mc"])


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"id": "a", "documents": ["x"]', "invalid JSON"),  # truncated object
        ('["a", "b"]', "expected a JSON object"),  # array, not object
        ('{"documents": ["x"]}', "missing 'id'"),  # no id
        ('{"id": "  ", "documents": ["x"]}', "empty 'id'"),  # blank id
        ('{"id": 7, "documents": ["x"]}', "id must be a string, got int 7"),  # not "missing": it is there
        ('{"id": null, "documents": ["x"]}', "missing 'id'"),  # JSON null = absent
        ('{"id": "a"}', "'documents' must be a non-empty list"),  # no documents
        ('{"id": "a", "documents": []}', "'documents' must be a non-empty list"),  # empty list
        ('{"id": "a", "documents": "text"}', "'documents' must be a non-empty list"),  # a string, not a list
        ('{"id": "a", "documents": ["x", ""]}', "documents[1] is empty"),  # empty document
        ('{"id": "a", "documents": ["x", 3]}', "documents[1] is empty or not a string"),  # non-string document
        ('{"id": "a", "documents": ["x"], "task": "math"}', "unknown task 'math'"),  # bad task name
        ('{"id": "a", "documents": ["x"], "task": ["doc_mc", "qa"]}', "unknown task 'qa'"),  # bad name in list
        ('{"id": "a", "documents": ["x"], "task": []}', "non-empty list"),  # empty task list
        ('{"id": "a", "documents": ["x"], "source": 5}', "'source' must be a string"),  # bad source
    ],
)
def test_bad_row_reports_file_and_line(tmp_path, line, expected):
    path = write_jsonl(tmp_path / "c.jsonl", [row(0), "", line])  # the bad row is on line 3
    with pytest.raises(CorpusError) as info:
        load_docsets([path], ALL)
    assert f"{path}:3: " in str(info.value)
    assert expected in str(info.value)
    assert ". Fix: " in str(info.value).splitlines()[1]  # every row problem says how to fix it


def test_non_utf8_bytes_name_file_line_and_byte(tmp_path):
    path = tmp_path / "c.jsonl"
    bad = '{"id": "b", "documents": ["caf\u00e9"]}'.encode("latin-1")  # e-acute as latin-1 byte 0xe9
    path.write_bytes((json.dumps(row(0)) + "\n").encode() + bad + b"\n" + (json.dumps(row(2)) + "\n").encode())
    with pytest.raises(CorpusError) as info:  # a CorpusError (one clear report), not a UnicodeDecodeError
        load_docsets([path], ALL)
    # '{"id": "b", "documents": ["caf' is 30 bytes, so 0xe9 is byte 31 of line 2
    assert f"{path}:2: not UTF-8 (byte 0xe9 at byte 31 of the line). Fix: save the file as UTF-8" in str(info.value)
    assert str(info.value).startswith("1 problem(s)")  # lines 1 and 3 are read normally


def test_utf8_bom_on_the_first_line_is_accepted(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + (json.dumps(row(0)) + "\n").encode())  # as saved by some editors
    assert [d.id for d in load_docsets([path], ["doc_mc"])] == ["s0"]


def test_docset_longer_than_the_limit_is_skipped_with_a_count_and_a_warning(tmp_path, caplog):
    path = write_jsonl(tmp_path / "c.jsonl", [
        {"id": "big", "documents": ["x" * 60, "y" * 41]},  # 101 characters in total > 100
        {"id": "fits", "documents": ["x" * 60, "y" * 40]},  # exactly 100 is kept
        {"id": "huge", "documents": ["z" * 500]},
    ])
    with caplog.at_level(logging.WARNING, logger="spell.data"):
        docsets = load_docsets([path], ["doc_mc"], max_docset_chars=100)
    assert [d.id for d in docsets] == ["fits"]
    assert f"skipped 2 document set(s) longer than 100 characters in total, which cannot fit a prompt " \
           f"(e.g. {path}:1 id 'big': 101 characters). Fix:" in caplog.text
    assert [d.id for d in load_docsets([path], ["doc_mc"])] == ["big", "fits", "huge"]  # 0 = no limit
    summary = validate_corpus([path], ["doc_mc"], max_docset_chars=100)
    assert (summary["num_docsets"], summary["skipped_too_long"]) == (1, 2)


def test_a_corpus_of_only_too_long_sets_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"id": "huge", "documents": ["z" * 500]}])
    with pytest.raises(CorpusError, match=r"all 1 are longer than 100 characters \(data.max_docset_chars\)\. Fix"):
        load_docsets([path], ["doc_mc"], max_docset_chars=100)


def test_empty_file_next_to_good_ones_is_warned_about(tmp_path, caplog):
    good = write_jsonl(tmp_path / "good.jsonl", [row(0, task="doc_mc")])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")  # blank lines only: no rows
    with caplog.at_level(logging.WARNING, logger="spell.data"):
        assert [d.id for d in load_docsets([good, empty], ["doc_mc"])] == ["s0"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"{empty}: no document sets (empty file). Fix: fill it or remove it from data.train_files"]
    with pytest.raises(CorpusError, match="every file is empty"):  # nothing at all is an error, not a warning
        load_docsets([empty], ["doc_mc"])


def test_a_directory_is_not_reported_as_a_missing_file(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    write_jsonl(folder / "part-0.jsonl", [row(0)])
    with pytest.raises(CorpusError) as info:
        load_docsets([folder], ALL)
    message = str(info.value)
    assert f"{folder}: is a directory, not a file. Fix: list its .jsonl/.parquet files in data.train_files " \
           "(it holds 1: part-0.jsonl)" in message
    assert "not found" not in message


def test_all_problems_reported_at_once(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [row(0), "{bad", '{"id": "x"}', row(3), '{"id": ""}'])
    with pytest.raises(CorpusError) as info:
        load_docsets([path], ALL)
    message = str(info.value)
    assert message.startswith("3 problem(s)")
    assert all(f"{path}:{n}: " in message for n in (2, 3, 5))


def test_error_list_is_capped(tmp_path):
    # 25 bad rows: 20 listed + "... and 5 more problems"
    path = write_jsonl(tmp_path / "c.jsonl", ['{"id": "x"}'] * 25)
    with pytest.raises(CorpusError) as info:
        load_docsets([path], ALL)
    assert f"{path}:20: " in str(info.value) and f"{path}:21: " not in str(info.value)
    assert "... and 5 more problems" in str(info.value)


def test_duplicate_id_names_both_locations(tmp_path):
    first = write_jsonl(tmp_path / "a.jsonl", [row(0), row(1)])
    second = write_jsonl(tmp_path / "b.jsonl", [row(2), row(1)])
    with pytest.raises(CorpusError, match=rf"{second}:2: duplicate id 's1' \(first at {first}:2\)"):
        load_docsets([first, second], ALL)


def test_missing_file_and_unknown_extension(tmp_path):
    csv = tmp_path / "c.csv"
    csv.write_text("id,documents\n")
    with pytest.raises(CorpusError) as info:
        load_docsets([tmp_path / "nope.jsonl", csv], ALL)
    assert "nope.jsonl: file not found. Fix: check the path" in str(info.value)
    assert "unknown extension '.csv'" in str(info.value)


def test_no_files_or_bad_configured_task():
    with pytest.raises(CorpusError, match="no corpus files"):
        load_docsets([], ALL)
    with pytest.raises(CorpusError, match="unknown task"):
        load_docsets(["x.jsonl"], ["docmath"])


def test_parquet_rows_and_row_index_errors(tmp_path):
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"id": ["p0", "p1"], "documents": [["a", "b"], ["c"]], "task": [None, "doc_mc"]}),
                   good)
    docsets = load_docsets([good], ["doc_general_qa", "doc_mc"])
    assert [(d.id, d.documents, d.task) for d in docsets] == [
        ("p0", ("a", "b"), "doc_general_qa"),  # free row: doc_mc already has 1, so it fills doc_general_qa
        ("p1", ("c",), "doc_mc"),
    ]
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"id": ["p0", "p1"], "documents": [["a"], []]}), bad)
    with pytest.raises(CorpusError, match=rf"{bad}:row 1: id 'p1': 'documents'"):
        load_docsets([bad], ALL)


def _authors_table(rows: list[dict]) -> pa.Table:
    """Rows of the authors' parquet: paragraphs, question_id, data_source, extra_info, prompt (spec §2.2)."""
    return pa.table({
        "paragraphs": [r["paragraphs"] for r in rows],
        "question_id": [r["question_id"] for r in rows],
        "data_source": [r["data_source"] for r in rows],
        "extra_info": [{"index": i} for i in range(len(rows))],
        "prompt": [[{"role": "user", "content": "ignored"}] for _ in rows],
    })


def test_authors_parquet_schema_with_their_source_to_task_mapping(tmp_path):
    path = tmp_path / "authors.parquet"
    pq.write_table(_authors_table([
        {"paragraphs": ["Revenue was 5.", "Costs were 3."], "question_id": "7", "data_source": "docmath_fin"},
        {"paragraphs": ["web text one"], "question_id": "8", "data_source": "ultrafineweb_en"},
        {"paragraphs": ["web text two"], "question_id": "9", "data_source": "ultrafineweb_en"},
        {"paragraphs": ["other text"], "question_id": "10", "data_source": "mybooks"},
    ]), path)
    docsets = load_docsets([path], ALL)
    assert [(d.id, d.documents, d.source) for d in docsets] == [
        ("docmath_fin/7", ("Revenue was 5.", "Costs were 3."), "docmath_fin"),
        ("ultrafineweb_en/8", ("web text one",), "ultrafineweb_en"),
        ("ultrafineweb_en/9", ("web text two",), "ultrafineweb_en"),
        ("mybooks/10", ("other text",), "mybooks"),
    ]
    tasks = {d.id: d.task for d in docsets}
    assert tasks["docmath_fin/7"] == "docmath_qa"  # docmath* -> docmath_qa only
    # ultrafineweb* -> doc_general_qa or doc_mc, balanced: one each (docmath_qa already has its row)
    assert sorted([tasks["ultrafineweb_en/8"], tasks["ultrafineweb_en/9"]]) == ["doc_general_qa", "doc_mc"]
    assert tasks["mybooks/10"] in ALL  # a source outside their mapping may play any task
    # ultrafineweb rows never play docmath_qa, even when it is the only task configured beside them
    assert {d.task for d in load_docsets([path], ["docmath_qa", "doc_mc"]) if d.source == "ultrafineweb_en"} == {
        "doc_mc"}


def test_authors_row_problems_name_the_row_and_their_fields(tmp_path):
    path = tmp_path / "authors.parquet"
    pq.write_table(_authors_table([
        {"paragraphs": ["fine"], "question_id": "1", "data_source": ""},
        {"paragraphs": [], "question_id": "2", "data_source": "ultrafineweb"},
    ]), path)
    with pytest.raises(CorpusError) as error:
        load_docsets([path], ALL)
    message = str(error.value)
    assert f"{path}:row 0: a row with 'paragraphs' (the authors' schema) needs a non-empty string 'data_source'" \
        in message
    assert f"{path}:row 1: id 'ultrafineweb/2': 'paragraphs' must be a non-empty list of strings" in message


def test_validate_corpus_summary(tmp_path):
    rows = [
        {"id": "a", "documents": ["xx", "yyy"], "task": "docmath_qa", "source": "fin"},
        {"id": "b", "documents": ["zzzz"], "task": "doc_mc", "source": "web"},
        {"id": "c", "documents": ["q"], "task": "doc_general_qa"},  # skipped: not configured
    ]
    summary = validate_corpus([write_jsonl(tmp_path / "c.jsonl", rows)], ["docmath_qa", "doc_mc"])
    assert summary == {
        "num_docsets": 2,
        "skipped_rows": 1,
        "skipped_too_long": 0,
        "per_task": {"docmath_qa": 1, "doc_mc": 1},
        "per_source": {"fin": 1, "web": 1},
        "documents_per_set": {"min": 1, "mean": 1.5, "max": 2},  # (2 + 1) / 2
        "total_characters": 9,  # 2 + 3 + 4
    }


def make_docsets(sizes: dict[str, int]) -> list[DocSet]:
    return [DocSet(f"{task}-{i}", ("d",), TaskType(task)) for task, n in sizes.items() for i in range(n)]


def test_sampler_splits_equally_and_rotates_remainder():
    sampler = TaskBalancedSampler(make_docsets({t: 5 for t in ALL}), ALL, seed=0)
    # 7 = 3 tasks x 2 + 1: the extra goes to task 0, then task 1, then task 2
    counts = [Counter(d.task.value for d in sampler.draw(7)) for _ in range(3)]
    assert [c["docmath_qa"] for c in counts] == [3, 2, 2]
    assert [c["doc_general_qa"] for c in counts] == [2, 3, 2]
    assert [c["doc_mc"] for c in counts] == [2, 2, 3]


def test_sampler_draws_without_replacement_then_refills():
    sampler = TaskBalancedSampler(make_docsets({"docmath_qa": 4, "doc_mc": 4}), ["docmath_qa", "doc_mc"], seed=3)
    for _ in range(3):  # each draw of 8 = 4 per task is one full pass over each pool
        ids = [d.id for d in sampler.draw(8)]
        assert sorted(ids) == sorted(d.id for d in make_docsets({"docmath_qa": 4, "doc_mc": 4}))
    orders = {tuple(d.id for d in sampler.draw(8)) for _ in range(5)}
    assert len(orders) > 1  # reshuffled on refill


def test_sampler_state_round_trip_gives_identical_draws():
    docsets = make_docsets({t: 7 for t in ALL})
    sampler = TaskBalancedSampler(docsets, ALL, seed=11)
    sampler.draw(5)
    state = json.loads(json.dumps(sampler.state_dict()))  # must survive JSON
    expected = [[d.id for d in sampler.draw(5)] for _ in range(4)]
    restored = TaskBalancedSampler(docsets, ALL, seed=999)
    restored.load_state_dict(state)
    assert [[d.id for d in restored.draw(5)] for _ in range(4)] == expected


def test_sampler_rejects_state_from_another_corpus():
    state = TaskBalancedSampler(make_docsets({t: 2 for t in ALL}), ALL).state_dict()
    other = TaskBalancedSampler(make_docsets({t: 3 for t in ALL}), ALL)
    with pytest.raises(ValueError, match="same data.train_files"):
        other.load_state_dict(state)


def test_sampler_needs_every_task():
    with pytest.raises(CorpusError, match="doc_mc"):
        TaskBalancedSampler(make_docsets({"docmath_qa": 2}), ["docmath_qa", "doc_mc"])
