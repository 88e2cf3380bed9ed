"""The on-disk spill of kept documents: an SQLite file in the build's temporary folder.

The filter stage streams every kept document's text into it, so memory holds only hashes, signatures and a few
numbers per document; later stages read the texts back in order (features, token counts) or by id (writing sets).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

_WRITE_BATCH = 1000
_READ_BATCH = 500  # below SQLite's limit on query parameters


class DocumentStore:
    """Append-only document store; ids are 0, 1, 2, ... in insertion order.

    Args:
        path: the SQLite file to create (it must not exist).
    """

    def __init__(self, path: Path) -> None:
        self._connection = sqlite3.connect(path)
        self._connection.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;"
            "CREATE TABLE docs (id INTEGER PRIMARY KEY, origin TEXT NOT NULL, text TEXT NOT NULL);")
        self._pending: list[tuple[int, str, str]] = []
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, origin: str, text: str) -> int:
        """Store one document; returns its id."""
        doc_id = self._count
        self._pending.append((doc_id, origin, text))
        self._count += 1
        if len(self._pending) >= _WRITE_BATCH:
            self.flush()
        return doc_id

    def flush(self) -> None:
        self._connection.executemany("INSERT INTO docs VALUES (?, ?, ?)", self._pending)
        self._connection.commit()
        self._pending.clear()

    def texts(self, ids: Sequence[int] | None = None) -> Iterator[str]:
        """The texts of ``ids`` (default: all), in the order given."""
        for _, text in self.records(range(self._count) if ids is None else ids):
            yield text

    def records(self, ids: Sequence[int]) -> Iterator[tuple[str, str]]:
        """``(origin, text)`` of each id, in the order given."""
        self.flush()
        for start in range(0, len(ids), _READ_BATCH):
            chunk = [int(i) for i in ids[start:start + _READ_BATCH]]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT id, origin, text FROM docs WHERE id IN ({marks})"
            rows = {doc_id: (origin, text) for doc_id, origin, text in self._connection.execute(query, chunk)}
            yield from (rows[i] for i in chunk)

    def origin(self, doc_id: int) -> str:
        self.flush()
        return self._connection.execute("SELECT origin FROM docs WHERE id = ?", (int(doc_id),)).fetchone()[0]

    def close(self) -> None:
        self._connection.close()
