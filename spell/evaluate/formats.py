"""Benchmark files -> :class:`EvalItem`: the generic JSONL format, shared validation, data errors (spec §9.1).

The native loaders live in :mod:`spell.evaluate.native`; both raise :class:`DataError` with one line naming
the file, the record and the fix. The expected files:

Generic JSONL (``--benchmarks jsonl:PATH``; one JSON object per line; the built-in world writes it):
``id`` (str, unique), ``task`` (``docmath_qa`` | ``doc_general_qa`` | ``doc_mc``), ``documents``
(list[str]), ``question`` (str), ``options`` ({"A".."D": str}, doc_mc only), ``answers`` (list of gold
strings, any one counts; doc_mc: the letter), optional ``metadata`` (dict; ``length_bucket`` names the
bucket of the per-length report). The benchmark is named after the file stem.

Native files under ``--data-dir DIR`` (the first existing candidate is read):
``longbench_v2``: ``DIR/longbench_v2/data.json`` or ``DIR/data.json`` (JSON list, THUDM/LongBench-v2)
with ``_id, domain, sub_domain, difficulty, length, question, choice_A..choice_D, answer, context``.
``hotpotqa`` / ``2wikimqa`` / ``musique``: ``DIR/longbench/<name>.jsonl`` or ``DIR/<name>.jsonl``
(LongBench v1 ``data/`` files) with ``input, context, answers, length, dataset, language, all_classes, _id``.
``frames``: ``DIR/frames/frames.jsonl`` (or ``frames/frames.json``, ``DIR/frames.jsonl``), rows of
Tongyi-Zhiwen/frames: ``Prompt``, ``Answer``, ``wiki_items`` (list of {"title", "text"}); optional ``id``.
``docmath``: ``DIR/docmath/<subset>_testmini.json`` for subset in complong, compshort, simplong,
simpshort (JSON list or JSONL; ``-testmini`` and ``.jsonl`` also accepted) with ``question_id, question,
paragraphs, ground_truth`` and optional ``tables`` (list[str], appended after the paragraphs).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from spell.types import TaskType

LONGBENCH_QA = ("hotpotqa", "2wikimqa", "musique")
DOCMATH_SUBSETS = ("complong", "compshort", "simplong", "simpshort")
NATIVE_BENCHMARKS = ("longbench_v2", *LONGBENCH_QA, "frames", "docmath")
LETTERS = ("A", "B", "C", "D")


class DataError(ValueError):
    """A missing or malformed benchmark file; the message names the file, the line/field and the fix."""


@dataclass(frozen=True, slots=True)
class EvalItem:
    """One benchmark question.

    Attributes:
        benchmark: benchmark name (``hotpotqa``, ``longbench_v2``, the stem of a generic file ...).
        id: question id, unique within the benchmark (the resume key).
        task: which responder template and rule scorer apply.
        documents: the context documents, joined by ``spell.prompts.join_documents``.
        question: the question (for doc_mc without the options; see ``options``).
        answers: gold answers; the sample is right if it matches any of them (doc_mc: one letter).
        options: doc_mc options as ``(("A", text), ..., ("D", text))``, else ``()``.
        length_bucket: the benchmark's own length label, ``""`` = bucket by prompt tokens later.
        metadata: free-form details copied to the generations file.
    """

    benchmark: str
    id: str
    task: TaskType
    documents: tuple[str, ...]
    question: str
    answers: tuple[str, ...]
    options: tuple[tuple[str, str], ...] = ()
    length_bucket: str = ""
    metadata: dict = field(default_factory=dict)


def data_error(where: str, problem: str, fix: str) -> DataError:
    """A :class:`DataError` reading ``"<where>: <problem>; <fix>"`` (one line, for the CLI)."""
    return DataError(f"{where}: {problem}; {fix}")


def read_records(path: Path) -> Iterator[tuple[str, dict]]:
    """Yield ``("path:line N", record)`` for a JSONL file, or ``("path[i]", record)`` for a JSON list."""
    if path.is_dir():
        raise data_error(str(path), "is a directory, not a file", "give the path of the .jsonl/.json file inside it")
    if not path.is_file():
        raise data_error(str(path), "file not found", "check --data-dir / the jsonl: path")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise data_error(str(path), f"cannot read ({err.strerror or err})", "check the file's permissions") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        byte = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise data_error(f"{path}:line {line}", f"not UTF-8 (byte 0x{data[err.start]:02x} at byte {byte} of the line)",
                         "save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8), or re-download it") from None
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as err:
            raise data_error(
                f"{path}:{err.lineno}", f"invalid JSON ({err.msg})", "fix or re-download the file"
            ) from None
        pairs = [(f"{path}[{i}]", r) for i, r in enumerate(records)]
    else:
        pairs = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                pairs.append((f"{path}:line {number}", json.loads(line)))
            except json.JSONDecodeError as err:
                raise data_error(
                    f"{path}:line {number}", f"invalid JSON ({err.msg})", "one JSON object per line"
                ) from None
    for where, record in pairs:
        if not isinstance(record, dict):
            raise data_error(where, f"expected a JSON object, got {type(record).__name__}", "one object per record")
        yield where, record


def require_text(record: dict, key: str, where: str, *, allow_empty: bool = False) -> str:
    """``record[key]`` as a string (numbers are converted); raises :class:`DataError` if absent or empty."""
    value = record.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise data_error(where, f"field {key!r} must be a non-empty string, got {value!r:.60}", "fix the record")
    return value


def require_text_list(record: dict, key: str, where: str) -> tuple[str, ...]:
    """``record[key]`` as a non-empty tuple of strings (a lone string or number becomes a 1-tuple)."""
    value = record.get(key)
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value:
        raise data_error(where, f"field {key!r} must be a non-empty list of strings", "fix the record")
    out = []
    for entry in value:
        if isinstance(entry, bool) or not isinstance(entry, str | int | float):
            raise data_error(where, f"field {key!r} holds a non-string entry {entry!r:.40}", "use strings")
        out.append(str(entry))
    return tuple(out)


def parse_generic_record(record: dict, where: str, benchmark: str) -> EvalItem:
    """Validate one generic-format record.

    Args:
        record: the decoded JSON object.
        where: ``file:line`` for error messages.
        benchmark: the benchmark name to stamp on the item.

    Returns:
        The item.

    Raises:
        DataError: a required field is missing or has the wrong type.

    Example:
        >>> parse_generic_record({"id": "q1", "task": "doc_general_qa", "documents": ["Paris is in France."],
        ...     "question": "Where is Paris?", "answers": ["France"]}, "f:1", "demo").answers
        ('France',)
    """
    try:
        task = TaskType(record.get("task"))
    except ValueError:
        raise data_error(
            where, f"field 'task' is {record.get('task')!r}", f"use one of {[t.value for t in TaskType]}"
        ) from None
    documents = record.get("documents")
    if not isinstance(documents, list) or not all(isinstance(d, str) for d in documents):
        raise data_error(where, "field 'documents' must be a list of strings", "put each document's text in the list")
    answers = require_text_list(record, "answers", where)
    options: tuple[tuple[str, str], ...] = ()
    if task == TaskType.DOC_MC:
        raw = record.get("options")
        if not isinstance(raw, dict) or sorted(raw) != list(LETTERS):
            raise data_error(where, "doc_mc needs field 'options' with exactly the keys A, B, C, D", "add the options")
        options = tuple((letter, require_text(raw, letter, f"{where} options")) for letter in LETTERS)
        if answers[0].strip() not in LETTERS:
            raise data_error(where, f"doc_mc answer must be a letter A-D, got {answers[0]!r}", "store the letter")
        answers = (answers[0].strip(),)
    metadata = record.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise data_error(where, "field 'metadata' must be an object", "use a JSON object or drop the field")
    return EvalItem(
        benchmark=benchmark,
        id=require_text(record, "id", where),
        task=task,
        documents=tuple(documents),
        question=require_text(record, "question", where),
        answers=answers,
        options=options,
        length_bucket=str(metadata.get("length_bucket", "")),
        metadata={key: value for key, value in metadata.items() if key != "length_bucket"},
    )


def item_to_generic(item: EvalItem) -> dict:
    """The generic-format record of ``item`` (inverse of :func:`parse_generic_record`)."""
    record: dict = {"id": item.id, "task": item.task.value, "documents": list(item.documents)}
    record["question"] = item.question
    if item.options:
        record["options"] = dict(item.options)
    record["answers"] = list(item.answers)
    metadata = dict(item.metadata)
    if item.length_bucket:
        metadata["length_bucket"] = item.length_bucket
    if metadata:
        record["metadata"] = metadata
    return record


def write_generic_jsonl(items: list[EvalItem], path: str | Path) -> Path:
    """Write items in the generic format (one JSON object per line); returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as handle:
        for item in items:
            handle.write(json.dumps(item_to_generic(item), ensure_ascii=False) + "\n")
    return out


def load_generic(path: str | Path, benchmark: str | None = None) -> list[EvalItem]:
    """Load a generic-format JSONL file (schema in the module docstring).

    Raises:
        DataError: the file is missing, is not JSONL, a record is malformed or an id repeats.
    """
    path = Path(path)
    name = benchmark or path.stem
    return check_unique_ids([parse_generic_record(r, where, name) for where, r in read_records(path)], path)


def check_unique_ids(items: list[EvalItem], path: Path) -> list[EvalItem]:
    """``items`` unchanged; raises :class:`DataError` when ``path`` held no records or an id twice."""
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise data_error(str(path), f"id {item.id!r} appears twice", "ids must be unique (they key resumed runs)")
        seen.add(item.id)
    if not items:
        raise data_error(str(path), "no records", "the file is empty; point at the benchmark's data file")
    return items
