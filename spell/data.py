"""The corpus of document sets (spec §2.1-2.2): JSONL/Parquet rows -> validated ``DocSet``s, and the task sampler.

Row schema (one JSON object per JSONL line, or one Parquet row):

* ``id`` (str, required, unique across all files): the document set's name; with the task it keys the memory.
* ``documents`` (list of non-empty str, required, at least one): the cluster's documents, in order.
* ``task`` (optional): one of ``docmath_qa``, ``doc_general_qa``, ``doc_mc`` (the set plays only that task),
  or a list of them (the tasks it may play); missing = any configured task.
* ``source`` (optional str): free-form origin tag, used only for reporting.
* Other keys (e.g. ``metadata``) are ignored. Blank JSONL lines are skipped.

The authors' rows (spec §2.2) are read too: a row with ``paragraphs`` and no ``documents`` is one document
set with ``documents = paragraphs``, ``id = "{data_source}/{question_id}"`` (both required) and ``source =
data_source``; its task follows their ``data_source`` mapping (:data:`AUTHORS_SOURCE_TASKS`: ``docmath*`` ->
``docmath_qa``, ``ultrafineweb*`` -> ``doc_general_qa`` or ``doc_mc``; any other source -> any task) unless the
row has a ``task``. ``extra_info`` and ``prompt`` are ignored.

Every row is validated before training starts; all problems (up to 20) are reported together as
``file:line: problem. Fix: ...`` in one :class:`CorpusError` (bytes that are not UTF-8 name their line and
byte). Rows whose tasks are all missing from ``data.tasks``, and sets longer in total than
``data.max_docset_chars`` characters (they can never fit a prompt), are skipped with a count and a warning;
an empty file among the corpus files is warned about. Each set plays exactly one task. Flexible rows are spread so that
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
# The authors' data.tasks config: data_source prefix -> the tasks its clusters play (spec §2.2).
AUTHORS_SOURCE_TASKS = (("docmath", ("docmath_qa",)), ("ultrafineweb", ("doc_general_qa", "doc_mc")))


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


def _missing_file_problem(path: Path) -> str:
    """Why ``path`` (not a regular file) cannot be read, with the fix."""
    if path.is_dir():
        inside = sorted(p.name for p in path.iterdir() if p.suffix.lower() in (".jsonl", ".parquet"))
        example = f" (it holds {len(inside)}: {', '.join(inside[:3])}{', ...' if len(inside) > 3 else ''})"
        return (f"{path}: is a directory, not a file. Fix: list its .jsonl/.parquet files in data.train_files"
                + (example if inside else ""))
    if path.exists():
        return f"{path}: not a regular file. Fix: point data.train_files at .jsonl/.parquet files"
    return f"{path}: file not found. Fix: check the path in data.train_files"


def _iter_jsonl(path: Path, errors: _Errors) -> Iterator[tuple[str, object]]:
    # Read bytes, so a byte that is not UTF-8 is reported with its line and position instead of a traceback.
    with path.open("rb") as handle:
        for line_number, raw_line in enumerate(handle, start=1):
            try:
                line = raw_line.decode("utf-8-sig" if line_number == 1 else "utf-8")
            except UnicodeDecodeError as err:
                errors.add(f"{path}:{line_number}: not UTF-8 (byte 0x{raw_line[err.start]:02x} at byte "
                           f"{err.start + 1} of the line). Fix: save the file as UTF-8 "
                           "(e.g. iconv -f latin1 -t utf-8 in.jsonl > out.jsonl)")
                continue
            if not line.strip():
                continue
            try:
                yield f"{path}:{line_number}", json.loads(line)
            except json.JSONDecodeError as err:
                errors.add(f"{path}:{line_number}: invalid JSON ({err.msg} at column {err.colno}). "
                           "Fix: write one JSON object per line")


def _iter_file(path: Path, errors: _Errors) -> Iterator[tuple[str, object]]:
    """Yield ``(location, raw row)`` for every row of one file; unreadable rows are reported to ``errors``."""
    if not path.is_file():
        errors.add(_missing_file_problem(path))
        return
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        try:
            yield from _iter_jsonl(path, errors)
        except OSError as err:
            errors.add(f"{path}: cannot read ({err.strerror or err}). Fix: check the file's permissions")
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
        return None, (f"'task' must be a task name or a non-empty list of them, got {value!r:.60}. "
                      f"Fix: use one of {_TASK_NAMES}, a list of them, or drop 'task' (any task)")
    tasks: list[TaskType] = []
    for name in names:
        if not isinstance(name, str) or name not in TaskType.__members__.values():
            return None, f"unknown task {name!r}. Fix: use one of {_TASK_NAMES}"
        if TaskType(name) not in tasks:
            tasks.append(TaskType(name))
    return tuple(tasks), None


def _from_authors_schema(location: str, raw: dict) -> tuple[dict | None, str | None]:
    """An authors' row (``paragraphs``, ``question_id``, ``data_source``) as a row of our schema, or a problem."""
    question_id, data_source = raw.get("question_id"), raw.get("data_source")
    if not isinstance(data_source, str) or not data_source.strip():
        return None, (f"{location}: a row with 'paragraphs' (the authors' schema) needs a non-empty string "
                      "'data_source'. Fix: add it, or name the column 'documents' and add an 'id'")
    if isinstance(question_id, bool) or not isinstance(question_id, str | int) or not str(question_id).strip():
        return None, (f"{location}: a row with 'paragraphs' (the authors' schema) needs a 'question_id' (string or "
                      "integer). Fix: add it, or name the column 'documents' and add an 'id'")
    task = raw.get("task")
    if task is None:
        task = next((list(tasks) for prefix, tasks in AUTHORS_SOURCE_TASKS
                     if data_source.lower().startswith(prefix)), None)
    return {"id": f"{data_source}/{question_id}", "documents": raw.get("paragraphs"), "task": task,
            "source": data_source}, None


def _parse_row(location: str, raw: object) -> tuple[_Row | None, str | None]:
    """Validate one raw row: ``(row, None)`` or ``(None, "location: problem. Fix: ...")``."""
    if not isinstance(raw, dict):
        return None, (f"{location}: expected a JSON object, got {type(raw).__name__}. "
                      'Fix: write one object per row, e.g. {"id": "s1", "documents": ["..."]}')
    documents_key = "documents"
    if "documents" not in raw and "paragraphs" in raw:
        raw, problem = _from_authors_schema(location, raw)
        if problem:
            return None, problem
        documents_key = "paragraphs"
    row_id = raw.get("id")
    if row_id is None:
        return None, f"{location}: missing 'id'. Fix: give every row a unique non-empty string id"
    if not isinstance(row_id, str):
        return None, (f"{location}: id must be a string, got {type(row_id).__name__} {row_id!r:.40}. "
                      "Fix: quote it (\"id\": \"7\", not \"id\": 7)")
    if not row_id.strip():
        return None, f"{location}: empty 'id'. Fix: give every row a unique non-empty string id"
    documents = raw.get("documents")
    if not isinstance(documents, list | tuple) or not documents:
        return None, (f"{location}: id {row_id!r}: '{documents_key}' must be a non-empty list of strings. "
                      f'Fix: put the texts in a JSON list, e.g. "{documents_key}": ["first text", "second text"]')
    for index, doc in enumerate(documents):
        if not isinstance(doc, str) or not doc.strip():
            return None, (f"{location}: id {row_id!r}: {documents_key}[{index}] is empty or not a string. "
                          "Fix: remove it or give it text")
    allowed, problem = _parse_task_field(raw.get("task"))
    if problem:
        return None, f"{location}: id {row_id!r}: {problem}"
    source = raw.get("source") or ""
    if not isinstance(source, str):
        return None, (f"{location}: id {row_id!r}: 'source' must be a string, got {type(source).__name__}. "
                      "Fix: make it a string or drop it")
    return _Row(location, row_id, tuple(documents), allowed, source), None


def _read_rows(paths: Sequence[str | Path], max_docset_chars: int) -> tuple[list[_Row], int]:
    """Read and validate every row of every file; raise one CorpusError listing all problems.

    Returns the kept rows and the number of rows skipped as longer than ``max_docset_chars`` (0 = no limit).
    """
    errors = _Errors()
    rows: list[_Row] = []
    too_long: list[tuple[_Row, int]] = []
    first_seen: dict[str, str] = {}
    for path in paths:
        num_rows, num_errors = 0, errors.count
        for location, raw in _iter_file(Path(path), errors):
            num_rows += 1
            row, problem = _parse_row(location, raw)
            if problem:
                errors.add(problem)
            elif row.id in first_seen:
                errors.add(f"{location}: duplicate id {row.id!r} (first at {first_seen[row.id]}). "
                           "Fix: make ids unique across all data.train_files")
            else:
                first_seen[row.id] = location
                num_chars = sum(len(doc) for doc in row.documents)
                if max_docset_chars and num_chars > max_docset_chars:
                    too_long.append((row, num_chars))
                else:
                    rows.append(row)
        if num_rows == 0 and errors.count == num_errors:
            logger.warning("%s: no document sets (empty file). Fix: fill it or remove it from data.train_files", path)
    errors.raise_if_any()
    if too_long:
        row, num_chars = too_long[0]
        logger.warning("skipped %d document set(s) longer than %d characters in total, which cannot fit a prompt "
                       "(e.g. %s id %r: %d characters). Fix: split them into smaller sets, or raise "
                       "data.max_docset_chars (0 = 8 x data.max_prompt_tokens)", len(too_long), max_docset_chars,
                       row.location, row.id, num_chars)
    if not rows:
        reason = (f"all {len(too_long)} are longer than {max_docset_chars} characters (data.max_docset_chars)"
                  if too_long else "every file is empty")
        raise CorpusError(f"no usable document set in data.train_files: {reason}. "
                          "Fix: add document sets that fit data.max_prompt_tokens")
    return rows, len(too_long)


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


def load_docsets(paths: Sequence[str | Path], tasks: Sequence[str], seed: int = 0,
                 max_docset_chars: int = 0) -> list[DocSet]:
    """Read, validate and task-assign the corpus.

    Args:
        paths: ``.jsonl`` and/or ``.parquet`` files (schema in the module docstring).
        tasks: the configured task types (``data.tasks``).
        seed: seed of the assignment of rows that allow several tasks.
        max_docset_chars: sets whose documents hold more characters in total are skipped with a warning
            (``DataConfig.docset_char_limit``); 0 = no limit.

    Returns:
        One ``DocSet`` per kept row, in file/row order, each with its assigned task.

    Raises:
        CorpusError: missing files, unreadable rows or invalid fields (all listed at once), no usable row,
            or a configured task with no document set.
    """
    return load_corpus(paths, tasks, seed, max_docset_chars)[0]


def load_corpus(paths: Sequence[str | Path], tasks: Sequence[str], seed: int = 0,
                max_docset_chars: int = 0) -> tuple[list[DocSet], dict]:
    """:func:`load_docsets` plus the summary ``spell validate`` prints (see :func:`validate_corpus`)."""
    if not paths:
        raise CorpusError("no corpus files given. Fix: list .jsonl/.parquet files in data.train_files")
    task_types = _check_tasks(tasks)
    rows, too_long = _read_rows(paths, max_docset_chars)
    docsets, skipped = _assign_tasks(rows, task_types, seed)
    return docsets, _summary(docsets, task_types, skipped, too_long)


def validate_corpus(paths: Sequence[str | Path], tasks: Sequence[str], seed: int = 0,
                    max_docset_chars: int = 0) -> dict:
    """Check the corpus and summarise it (for ``spell validate``).

    Args:
        paths: corpus files.
        tasks: the configured task types.
        seed: assignment seed (as in :func:`load_docsets`).
        max_docset_chars: as in :func:`load_docsets`.

    Returns:
        ``{"num_docsets", "skipped_rows", "skipped_too_long", "per_task": {task: n}, "per_source":
        {source: n}, "documents_per_set": {"min", "mean", "max"}, "total_characters"}``.

    Raises:
        CorpusError: as :func:`load_docsets`.
    """
    return load_corpus(paths, tasks, seed, max_docset_chars)[1]


def _summary(docsets: list[DocSet], tasks: list[TaskType], skipped: int, too_long: int) -> dict:
    doc_counts = [len(d.documents) for d in docsets]
    per_source: dict[str, int] = {}
    for docset in docsets:
        per_source[docset.source] = per_source.get(docset.source, 0) + 1
    return {
        "num_docsets": len(docsets),
        "skipped_rows": skipped,
        "skipped_too_long": too_long,
        "per_task": {t: sum(d.task == t for d in docsets) for t in tasks},
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

    def docset_ids(self) -> list[str]:
        """The ids of the document sets this sampler draws from."""
        return [d.id for pool in self._pools.values() for d in pool]

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
