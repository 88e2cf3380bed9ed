"""The corpus of document sets (spec §2.1-2.2): JSONL/Parquet rows -> validated ``DocSet``s, and the task sampler.

Row schema (one JSON object per JSONL line, or one Parquet row):

* ``id`` (str, required, unique across all files): the document set's name; with the task it keys the memory.
* ``documents`` (list of non-empty str, required, at least one): the cluster's documents, in order.
* ``task`` (optional): one of ``docmath_qa``, ``doc_general_qa``, ``doc_mc`` (the set plays only that task),
  or a list of them (the tasks it may play); missing = any configured task.
* ``source`` (optional str): free-form origin tag, used only for reporting.
* Other keys (e.g. ``metadata``) are ignored. Blank JSONL lines are skipped.

Every row is validated before training starts; all problems (up to 20) are reported together as
``file:line: problem. Fix: ...`` in one :class:`CorpusError`. Rows whose tasks are all missing from
``data.tasks`` are skipped with a warning. Each set plays exactly one task. Flexible rows are spread so that
the configured tasks get balanced counts: a seeded shuffle, then each row goes to its least-filled allowed
task (round-robin when every task is allowed). This is the authors' equal split (spec §2.2), but seeded.
:class:`TaskBalancedSampler` is the authors' domain sampler: an equal share per task in every draw, drawn
without replacement from a per-task shuffled list that is refilled when it runs out.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from spell.types import DocSet, TaskType

logger = logging.getLogger(__name__)

MAX_REPORTED_ERRORS = 20
_TASK_NAMES = ", ".join(t.value for t in TaskType)


class CorpusError(ValueError):
    """A problem in the training corpus, naming the file and line (or Parquet row) and how to fix it."""


@dataclass(frozen=True, slots=True)
class _Row:
    """One validated row before task assignment."""

    location: str
    id: str
    documents: tuple[str, ...]
    allowed: tuple[TaskType, ...] | None  # None = every configured task
    source: str


class _Errors:
    """Collects problems; keeps the first ``MAX_REPORTED_ERRORS`` and counts the rest."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.count = 0

    def add(self, message: str) -> None:
        self.count += 1
        if len(self.messages) < MAX_REPORTED_ERRORS:
            self.messages.append(message)

    def raise_if_any(self) -> None:
        if not self.count:
            return
        lines = list(self.messages)
        if self.count > len(self.messages):
            lines.append(f"... and {self.count - len(self.messages)} more problems")
        raise CorpusError(f"{self.count} problem(s) in the training corpus:\n  " + "\n  ".join(lines))


def _iter_file(path: Path, errors: _Errors) -> Iterator[tuple[str, object]]:
    """Yield ``(location, raw row)`` for every row of one file; unreadable rows are reported to ``errors``."""
    if not path.is_file():
        errors.add(f"{path}: file not found. Fix: check the path in data.train_files")
        return
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with path.open(encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    yield f"{path}:{line_number}", json.loads(line)
                except json.JSONDecodeError as err:
                    errors.add(f"{path}:{line_number}: invalid JSON ({err.msg} at column {err.colno}). "
                               "Fix: write one JSON object per line")
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except (OSError, ValueError) as err:  # pyarrow's ArrowIOError / ArrowInvalid
            errors.add(f"{path}: cannot read Parquet ({err}). Fix: write the file with pyarrow or pandas")
            return
        for index, row in enumerate(rows):
            yield f"{path}:row {index}", row
    else:
        errors.add(f"{path}: unknown extension {path.suffix!r}. Fix: use .jsonl or .parquet")


def _parse_task_field(value: object) -> tuple[tuple[TaskType, ...] | None, str | None]:
    """``(allowed tasks or None, error)`` for the optional ``task`` field."""
    if value is None:
        return None, None
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list | tuple) or not names:
        return None, f"'task' must be a task name or a non-empty list of them, got {value!r}"
    tasks: list[TaskType] = []
    for name in names:
        if not isinstance(name, str) or name not in TaskType.__members__.values():
            return None, f"unknown task {name!r}. Fix: use one of {_TASK_NAMES}"
        if TaskType(name) not in tasks:
            tasks.append(TaskType(name))
    return tuple(tasks), None


def _parse_row(location: str, raw: object) -> tuple[_Row | None, str | None]:
    """Validate one raw row: ``(row, None)`` or ``(None, "location: problem. Fix: ...")``."""
    if not isinstance(raw, dict):
        return None, f"{location}: expected a JSON object, got {type(raw).__name__}"
    row_id = raw.get("id")
    if not isinstance(row_id, str) or not row_id.strip():
        return None, f"{location}: missing or empty 'id'. Fix: give every row a unique non-empty string id"
    documents = raw.get("documents")
    if not isinstance(documents, list | tuple) or not documents:
        return None, f"{location}: id {row_id!r}: 'documents' must be a non-empty list of strings"
    for index, doc in enumerate(documents):
        if not isinstance(doc, str) or not doc.strip():
            return None, (f"{location}: id {row_id!r}: documents[{index}] is empty or not a string. "
                          "Fix: remove it or give it text")
    allowed, problem = _parse_task_field(raw.get("task"))
    if problem:
        return None, f"{location}: id {row_id!r}: {problem}"
    source = raw.get("source") or ""
    if not isinstance(source, str):
        return None, f"{location}: id {row_id!r}: 'source' must be a string, got {type(source).__name__}"
    return _Row(location, row_id, tuple(documents), allowed, source), None


def _read_rows(paths: Sequence[str | Path]) -> list[_Row]:
    """Read and validate every row of every file; raise one CorpusError listing all problems."""
    errors = _Errors()
    rows: list[_Row] = []
    first_seen: dict[str, str] = {}
    for path in paths:
        for location, raw in _iter_file(Path(path), errors):
            row, problem = _parse_row(location, raw)
            if problem:
                errors.add(problem)
            elif row.id in first_seen:
                errors.add(f"{location}: duplicate id {row.id!r} (first at {first_seen[row.id]}). "
                           "Fix: make ids unique across all data.train_files")
            else:
                first_seen[row.id] = location
                rows.append(row)
    errors.raise_if_any()
    return rows


def _check_tasks(tasks: Sequence[str]) -> list[TaskType]:
    if not tasks:
        raise CorpusError(f"no tasks configured. Fix: set data.tasks to some of {_TASK_NAMES}")
    unknown = [t for t in tasks if t not in TaskType.__members__.values()]
    if unknown:
        raise CorpusError(f"unknown task(s) {unknown} in data.tasks. Fix: use some of {_TASK_NAMES}")
    return [TaskType(t) for t in tasks]


def _assign_tasks(rows: list[_Row], tasks: list[TaskType], seed: int) -> tuple[list[DocSet], int]:
    """Give each row one configured task; returns (docsets in corpus order, number of skipped rows)."""
    counts = dict.fromkeys(tasks, 0)
    chosen: dict[int, TaskType] = {}
    flexible: list[tuple[int, list[TaskType]]] = []
    skipped: list[_Row] = []
    for index, row in enumerate(rows):
        allowed = [t for t in tasks if row.allowed is None or t in row.allowed]
        if not allowed:
            skipped.append(row)
        elif len(allowed) == 1:
            chosen[index] = allowed[0]
            counts[allowed[0]] += 1
        else:
            flexible.append((index, allowed))
    random.Random(seed).shuffle(flexible)
    # Most constrained rows first (stable, so the seeded order survives among equals), then fill the
    # least-filled task; ties go to the earlier configured task -> plain round-robin when all are allowed.
    flexible.sort(key=lambda item: len(item[1]))
    for index, allowed in flexible:
        task = min(allowed, key=lambda t: (counts[t], tasks.index(t)))
        chosen[index] = task
        counts[task] += 1
    if skipped:
        example = skipped[0]
        logger.warning("skipped %d corpus row(s) whose task is not in data.tasks=%s (e.g. %s id %r task %s)",
                       len(skipped), [t.value for t in tasks], example.location, example.id,
                       [t.value for t in example.allowed or ()])
    empty = [t.value for t in tasks if counts[t] == 0]
    if empty:
        raise CorpusError(f"no document set is assigned to task(s) {empty}. "
                          "Fix: drop them from data.tasks or add rows that allow them")
    docsets = [DocSet(rows[i].id, rows[i].documents, chosen[i], rows[i].source) for i in sorted(chosen)]
    return docsets, len(skipped)


def load_docsets(paths: Sequence[str | Path], tasks: Sequence[str], seed: int = 0) -> list[DocSet]:
    """Read, validate and task-assign the corpus.

    Args:
        paths: ``.jsonl`` and/or ``.parquet`` files (schema in the module docstring).
        tasks: the configured task types (``data.tasks``).
        seed: seed of the assignment of rows that allow several tasks.

    Returns:
        One ``DocSet`` per kept row, in file/row order, each with its assigned task.

    Raises:
        CorpusError: missing files, unreadable rows or invalid fields (all listed at once), or a
            configured task with no document set.
    """
    return _load(paths, tasks, seed)[0]


def _load(paths: Sequence[str | Path], tasks: Sequence[str], seed: int) -> tuple[list[DocSet], int]:
    if not paths:
        raise CorpusError("no corpus files given. Fix: list .jsonl/.parquet files in data.train_files")
    task_types = _check_tasks(tasks)
    return _assign_tasks(_read_rows(paths), task_types, seed)


def validate_corpus(paths: Sequence[str | Path], tasks: Sequence[str], seed: int = 0) -> dict:
    """Check the corpus and summarise it (for ``spell validate``).

    Args:
        paths: corpus files.
        tasks: the configured task types.
        seed: assignment seed (as in :func:`load_docsets`).

    Returns:
        ``{"num_docsets", "skipped_rows", "per_task": {task: n}, "per_source": {source: n},
        "documents_per_set": {"min", "mean", "max"}, "total_characters"}``.

    Raises:
        CorpusError: as :func:`load_docsets`.
    """
    docsets, skipped = _load(paths, tasks, seed)
    doc_counts = [len(d.documents) for d in docsets]
    per_source: dict[str, int] = {}
    for docset in docsets:
        per_source[docset.source] = per_source.get(docset.source, 0) + 1
    return {
        "num_docsets": len(docsets),
        "skipped_rows": skipped,
        "per_task": {t: sum(d.task == t for d in docsets) for t in _check_tasks(tasks)},
        "per_source": per_source,
        "documents_per_set": {"min": min(doc_counts), "mean": sum(doc_counts) / len(doc_counts),
                              "max": max(doc_counts)},
        "total_characters": sum(len(text) for d in docsets for text in d.documents),
    }


class TaskBalancedSampler:
    """Infinite per-task sampler (spec §2.2 domain sampler): each draw splits ``n`` equally over the tasks.

    Within a task, document sets are drawn without replacement from a shuffled list that is refilled and
    reshuffled when it runs out, so every set is seen once per pass. The remainder of ``n / len(tasks)``
    goes to the first tasks, starting one task later on each call, so counts stay balanced over calls.

    Args:
        docsets: the corpus (each set's ``task`` decides its pool).
        tasks: the configured tasks, in order; every one must have at least one set.
        seed: seed of this sampler's own ``random.Random``.
    """

    def __init__(self, docsets: Sequence[DocSet], tasks: Sequence[str], seed: int = 0) -> None:
        self.tasks = _check_tasks(tasks)
        self._pools = {t: [d for d in docsets if d.task == t] for t in self.tasks}
        empty = [t.value for t, pool in self._pools.items() if not pool]
        if empty:
            raise CorpusError(f"no document set for task(s) {empty}. Fix: drop them from data.tasks or add rows")
        self._rng = random.Random(seed)
        self._queues: dict[TaskType, list[int]] = {t: [] for t in self.tasks}
        self._remainder_start = 0

    def _next_index(self, task: TaskType) -> int:
        queue = self._queues[task]
        if not queue:
            queue.extend(range(len(self._pools[task])))
            self._rng.shuffle(queue)
        return queue.pop()

    def draw(self, n: int) -> list[DocSet]:
        """Draw ``n`` document sets, grouped by task in configured order.

        Args:
            n: how many sets (e.g. ``data.questions_per_round``).

        Returns:
            ``n`` sets; a set repeats within one draw only if its task's pool is smaller than its share.
        """
        if n < 0:
            raise ValueError(f"cannot draw {n} document sets")
        num_tasks = len(self.tasks)
        base, remainder = divmod(n, num_tasks)
        drawn: list[DocSet] = []
        for position, task in enumerate(self.tasks):
            extra = 1 if (position - self._remainder_start) % num_tasks < remainder else 0
            drawn.extend(self._pools[task][self._next_index(task)] for _ in range(base + extra))
        self._remainder_start = (self._remainder_start + remainder) % num_tasks
        return drawn

    def state_dict(self) -> dict:
        """The sampler's position as plain JSON-able data (for checkpoints)."""
        version, internal, gauss = self._rng.getstate()
        return {
            "rng_state": [version, list(internal), gauss],
            "queues": {t.value: list(q) for t, q in self._queues.items()},
            "remainder_start": self._remainder_start,
            "pool_sizes": {t.value: len(p) for t, p in self._pools.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` output; the next draws equal those of the saved sampler.

        Raises:
            ValueError: the corpus or task list differs from the one the state was saved with.
        """
        sizes = {t.value: len(p) for t, p in self._pools.items()}
        if state["pool_sizes"] != sizes:
            raise ValueError(f"sampler state was saved for task pool sizes {state['pool_sizes']}, but the corpus "
                             f"now gives {sizes}. Fix: resume with the same data.train_files and data.tasks")
        version, internal, gauss = state["rng_state"]
        self._rng.setstate((version, tuple(internal), gauss))
        self._queues = {TaskType(t): list(q) for t, q in state["queues"].items()}
        self._remainder_start = int(state["remainder_start"])
