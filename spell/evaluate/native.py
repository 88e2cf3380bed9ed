"""Loaders for the native released files of the paper's six benchmarks, and benchmark-name resolution.

File names and fields are listed in :mod:`spell.evaluate.formats` (spec §9.1). Every loader returns
:class:`EvalItem`\\ s; a missing file or a malformed record raises :class:`DataError` naming the file,
the record and the fix. LongBench v1 is read from its standard (non-E) files (spec §11 item 18).
"""

from __future__ import annotations

from pathlib import Path

from spell.evaluate.formats import (
    DOCMATH_SUBSETS,
    LETTERS,
    LONGBENCH_QA,
    NATIVE_BENCHMARKS,
    DataError,
    EvalItem,
    check_unique_ids,
    data_error,
    load_generic,
    read_records,
    require_text,
    require_text_list,
)
from spell.types import TaskType

GENERIC_PREFIX = "jsonl:"


def _candidates(benchmark: str, data_dir: Path) -> list[Path]:
    match benchmark:
        case "longbench_v2":
            return [data_dir / "longbench_v2" / "data.json", data_dir / "data.json"]
        case "frames":
            return [
                data_dir / "frames" / "frames.jsonl",
                data_dir / "frames" / "frames.json",
                data_dir / "frames.jsonl",
            ]
        case name if name in LONGBENCH_QA:
            return [data_dir / "longbench" / f"{name}.jsonl", data_dir / f"{name}.jsonl"]
    raise ValueError(f"no single data file for {benchmark!r}")


def _first_existing(benchmark: str, data_dir: Path) -> Path:
    paths = _candidates(benchmark, data_dir)
    for path in paths:
        if path.is_file():
            return path
    tried = ", ".join(str(p) for p in paths)
    raise DataError(f"{benchmark}: data file not found (tried {tried}); put the released file there or fix --data-dir")


def load_longbench_v2(path: Path) -> list[EvalItem]:
    """LongBench-v2 ``data.json`` (503 four-option MC questions; ``length`` short/medium/long is the bucket)."""
    items = []
    for where, record in read_records(path):
        answer = require_text(record, "answer", where).strip()
        if answer not in LETTERS:
            raise data_error(where, f"field 'answer' must be one of A-D, got {answer!r}", "use the released data.json")
        options = tuple(
            (letter, require_text(record, f"choice_{letter}", where, allow_empty=True)) for letter in LETTERS
        )
        meta = {key: record[key] for key in ("domain", "sub_domain", "difficulty") if key in record}
        items.append(
            EvalItem(
                benchmark="longbench_v2",
                id=require_text(record, "_id", where),
                task=TaskType.DOC_MC,
                documents=(require_text(record, "context", where),),
                question=require_text(record, "question", where),
                answers=(answer,),
                options=options,
                length_bucket=str(record.get("length", "")),
                metadata=meta,
            )
        )
    return check_unique_ids(items, path)


def longbench_length_bucket(words: object) -> str:
    """LongBench-E's length buckets of a v1 record's ``length`` (word count): 0-4k, 4-8k, 8k+.

    >>> longbench_length_bucket(5200)
    '4-8k'
    """
    if isinstance(words, bool) or not isinstance(words, int | float):
        return ""
    return "0-4k" if words < 4000 else "4-8k" if words < 8000 else "8k+"


def load_longbench_v1(path: Path, benchmark: str) -> list[EvalItem]:
    """A LongBench v1 QA file (hotpotqa / 2wikimqa / musique); every entry of ``answers`` is a gold answer."""
    items = []
    for where, record in read_records(path):
        items.append(
            EvalItem(
                benchmark=benchmark,
                id=require_text(record, "_id", where),
                task=TaskType.DOC_GENERAL_QA,
                documents=(require_text(record, "context", where),),
                question=require_text(record, "input", where),
                answers=require_text_list(record, "answers", where),
                length_bucket=longbench_length_bucket(record.get("length")),
                metadata={"length_words": record.get("length")},
            )
        )
    return check_unique_ids(items, path)


def _wiki_documents(record: dict, where: str) -> tuple[str, ...]:
    wiki_items = record.get("wiki_items")
    if not isinstance(wiki_items, list) or not wiki_items:
        raise data_error(
            where,
            "field 'wiki_items' must be a non-empty list of {title, text}",
            "Frames needs its Wikipedia texts: export the Tongyi-Zhiwen/frames rows (with wiki_items) to JSONL",
        )
    documents = []
    for entry in wiki_items:
        if not isinstance(entry, dict) or not isinstance(entry.get("text"), str):
            raise data_error(where, "each wiki_items entry needs a string 'text'", "use the frames rows")
        title = entry.get("title")
        documents.append(f"{title}\n{entry['text']}" if isinstance(title, str) and title else entry["text"])
    return tuple(documents)


def load_frames(path: Path) -> list[EvalItem]:
    """Frames rows with their Wikipedia articles (``Prompt``, ``Answer``, ``wiki_items``)."""
    items = []
    for index, (where, record) in enumerate(read_records(path)):
        raw_id = record.get("id", record.get("Unnamed: 0", index))
        meta = {"reasoning_types": record["reasoning_types"]} if "reasoning_types" in record else {}
        items.append(
            EvalItem(
                benchmark="frames",
                id=str(raw_id),
                task=TaskType.DOC_GENERAL_QA,
                documents=_wiki_documents(record, where),
                question=require_text(record, "Prompt", where),
                answers=(require_text(record, "Answer", where),),
                metadata=meta,
            )
        )
    return check_unique_ids(items, path)


def _docmath_file(data_dir: Path, subset: str) -> Path:
    folder = data_dir / "docmath"
    names = [f"{subset}{sep}testmini{ext}" for sep in ("_", "-") for ext in (".json", ".jsonl")]
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise DataError(
        f"docmath: {folder / names[0]} not found (also tried {', '.join(names[1:])}); "
        f"put the DocMath-Eval testmini files for {', '.join(DOCMATH_SUBSETS)} there or fix --data-dir"
    )


def load_docmath(data_dir: Path) -> list[EvalItem]:
    """The four DocMath-Eval testmini subsets (800 questions); the bucket is ``short``/``long`` by subset."""
    items = []
    for subset in DOCMATH_SUBSETS:
        items.extend(load_docmath_file(_docmath_file(data_dir, subset), subset))
    return items


def load_docmath_file(path: Path, subset: str) -> list[EvalItem]:
    """One DocMath-Eval file (``question_id, question, paragraphs, ground_truth``, optional ``tables``)."""
    items = []
    for where, record in read_records(path):
        paragraphs = require_text_list(record, "paragraphs", where)
        tables = tuple(record["tables"]) if isinstance(record.get("tables"), list) else ()
        if record.get("ground_truth") is None:
            raise data_error(where, "field 'ground_truth' is missing", "use the testmini split (test hides it)")
        items.append(
            EvalItem(
                benchmark="docmath",
                id=f"{subset}/{require_text(record, 'question_id', where)}",
                task=TaskType.DOCMATH_QA,
                documents=paragraphs + tuple(str(t) for t in tables),
                question=require_text(record, "question", where),
                answers=(require_text(record, "ground_truth", where),),
                length_bucket="long" if subset.endswith("long") else "short",
                metadata={"subset": subset},
            )
        )
    return check_unique_ids(items, path)


def benchmark_name(spec: str) -> str:
    """The reporting name of a ``--benchmarks`` entry (a native name, or the stem of ``jsonl:PATH``)."""
    return Path(spec[len(GENERIC_PREFIX) :]).stem if spec.startswith(GENERIC_PREFIX) else spec


def load_benchmark(spec: str, data_dir: str | Path | None, limit: int | None = None) -> list[EvalItem]:
    """Load one ``--benchmarks`` entry.

    Args:
        spec: a native name (``longbench_v2``, ``hotpotqa``, ``2wikimqa``, ``musique``, ``frames``,
            ``docmath``) or ``jsonl:PATH`` for a generic-format file.
        data_dir: folder holding the native files (unused for ``jsonl:``).
        limit: keep only the first ``limit`` items (None = all).

    Returns:
        The items, in file order.

    Raises:
        DataError: unknown name, no ``--data-dir`` for a native benchmark, missing or malformed file.
    """
    if spec.startswith(GENERIC_PREFIX):
        items = load_generic(spec[len(GENERIC_PREFIX) :])
    elif spec not in NATIVE_BENCHMARKS:
        raise DataError(f"--benchmarks: unknown benchmark {spec!r}; use {', '.join(NATIVE_BENCHMARKS)} or jsonl:PATH")
    elif data_dir is None:
        raise DataError(f"--benchmarks {spec}: needs --data-dir with the released files (see `spell eval --help`)")
    elif spec == "docmath":
        items = load_docmath(Path(data_dir))
    elif spec == "longbench_v2":
        items = load_longbench_v2(_first_existing(spec, Path(data_dir)))
    elif spec == "frames":
        items = load_frames(_first_existing(spec, Path(data_dir)))
    else:
        items = load_longbench_v1(_first_existing(spec, Path(data_dir)), spec)
    return items[:limit] if limit is not None else items
