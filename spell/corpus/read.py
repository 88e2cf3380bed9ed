"""Stream raw documents from folders, text files, JSONL and Parquet, one at a time (first stage of
``spell data build``).

* a folder: every ``.txt``, ``.md``, ``.jsonl`` and ``.parquet`` file below it (recursive, sorted by path,
  hidden files and folders skipped);
* ``.txt`` / ``.md``: the whole file is one document;
* ``.jsonl``: one document per line, its text under ``text_key`` (blank lines skipped; ``null`` = empty text);
  its origin is ``path:N`` (line N);
* ``.parquet``: one document per row of the ``text_key`` column, read in record batches.

Nothing is held beyond the current document (and the current Parquet batch). Unreadable input raises
:class:`~spell.corpus.options.DataBuildError` with ``file:line`` (``file:row N`` for Parquet) and the fix.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from spell.corpus.options import DataBuildError

TEXT_SUFFIXES = (".txt", ".md")
RECORD_SUFFIXES = (".jsonl", ".parquet")
PARQUET_BATCH_ROWS = 1024


@dataclass(frozen=True, slots=True)
class RawDocument:
    """One input document: where it came from (``path``, ``path:N`` for line N, ``path:row N``) and its text."""

    origin: str
    text: str


def iter_documents(inputs: Sequence[str | Path], text_key: str = "text") -> Iterator[RawDocument]:
    """Yield every document of every input, in input order (folders: sorted file paths).

    Raises:
        DataBuildError: a missing input, an unknown file type, or an unreadable line or row.
    """
    for path in input_files(inputs):
        yield from _iter_file(path, text_key)


def input_files(inputs: Sequence[str | Path]) -> list[Path]:
    """The files behind ``inputs`` (folders expanded), checked to exist before anything is read."""
    files: list[Path] = []
    for entry in map(Path, inputs):
        if entry.is_dir():
            files.extend(_folder_files(entry))
        elif entry.is_file():
            if entry.suffix.lower() not in TEXT_SUFFIXES + RECORD_SUFFIXES:
                raise DataBuildError(f"{entry}: unknown file type {entry.suffix!r}. Fix: pass .txt, .md, .jsonl or "
                                     ".parquet files, or a folder of them")
            files.append(entry)
        else:
            raise DataBuildError(f"{entry}: no such file or folder. Fix: check the INPUT path")
    return files


def _folder_files(folder: Path) -> list[Path]:
    found = [path for path in folder.rglob("*")
             if path.suffix.lower() in TEXT_SUFFIXES + RECORD_SUFFIXES and path.is_file()
             and not any(part.startswith(".") for part in path.relative_to(folder).parts)]
    if not found:
        raise DataBuildError(f"{folder}: no .txt, .md, .jsonl or .parquet file in this folder. Fix: point INPUT at "
                             "the folder that holds your documents")
    return sorted(found, key=lambda path: path.relative_to(folder).as_posix())


def _iter_file(path: Path, text_key: str) -> Iterator[RawDocument]:
    suffix = path.suffix.lower()
    try:
        if suffix in TEXT_SUFFIXES:
            yield RawDocument(str(path), _read_text_file(path))
        elif suffix == ".jsonl":
            yield from _iter_jsonl(path, text_key)
        else:
            yield from _iter_parquet(path, text_key)
    except OSError as err:
        problem = f"{path}: cannot read ({err.strerror or err})"
        raise DataBuildError(f"{problem}. Fix: check the file's permissions") from None


def _not_utf8(where: str, byte: int, position: int) -> DataBuildError:
    return DataBuildError(f"{where}: not UTF-8 (byte 0x{byte:02x} at byte {position} of the line). Fix: save the "
                          "file as UTF-8, e.g. iconv -f latin1 -t utf-8 IN > OUT")


def _read_text_file(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        position = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise _not_utf8(f"{path}:{line}", data[err.start], position) from None


def _iter_jsonl(path: Path, text_key: str) -> Iterator[RawDocument]:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as err:
                raise _not_utf8(where, raw[err.start], err.start + 1) from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataBuildError(f"{where}: invalid JSON ({err.msg} at column {err.colno}). Fix: write one JSON "
                                     "object per line") from None
            yield RawDocument(where, _text_of(record, text_key, where))


def _text_of(record: object, text_key: str, where: str) -> str:
    """The document text of one JSONL record (``null`` counts as empty text and is dropped as too short)."""
    if not isinstance(record, dict):
        raise DataBuildError(f"{where}: expected a JSON object, got {type(record).__name__}. Fix: write one object "
                             f'per line, e.g. {{"{text_key}": "..."}}')
    if text_key not in record:
        keys = ", ".join(sorted(record)[:8]) or "none"
        raise DataBuildError(f"{where}: no {text_key!r} field (keys: {keys}). Fix: pass --text-key with the field "
                             "that holds the text")
    return _checked_text(record[text_key], text_key, where)


def _checked_text(value: object, text_key: str, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DataBuildError(f"{where}: {text_key!r} is a {type(value).__name__}, not a string. Fix: pass --text-key "
                             "with the field that holds the text")
    return value


def _iter_parquet(path: Path, text_key: str) -> Iterator[RawDocument]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (OSError, ValueError) as err:  # ArrowIOError, ArrowInvalid
        raise DataBuildError(f"{path}: cannot read Parquet ({err}). Fix: rewrite the file with pyarrow or pandas") \
            from None
    columns = parquet.schema_arrow.names
    if text_key not in columns:
        raise DataBuildError(f"{path}: no column {text_key!r} (columns: {', '.join(columns[:8])}). Fix: pass "
                             "--text-key with the column that holds the text")
    row = 0
    batches = parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=[text_key])
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (OSError, ValueError) as err:  # a damaged page
            raise DataBuildError(f"{path}:row {row}: cannot read Parquet ({err}). Fix: rewrite the file with pyarrow "
                                 "or pandas") from None
        for value in batch.column(0).to_pylist():
            where = f"{path}:row {row}"
            yield RawDocument(where, _checked_text(value, text_key, where))
            row += 1
