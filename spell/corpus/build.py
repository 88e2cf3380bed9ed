"""``spell data build``: raw documents -> SPELL document sets, as the paper built its corpus (App. E.1).

    read (stream) -> length / exact / contamination / near-duplicate / token-budget filters -> spill to disk
    -> TF-IDF + SVD (or --embed-model) vectors -> hierarchical k-means into sets -> tasks -> docsets + report

Everything is written into a hidden temporary folder beside ``--out`` and renamed into place at the end, so a
failed or interrupted build leaves no half-written output (a killed process may leave its hidden
``.NAME.partial-*`` folder; delete it). An existing non-empty ``--out`` is refused, or with ``--overwrite``
moved aside to ``NAME.replaced-TIME`` (as ``spell train`` does with run folders; nothing is deleted).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from spell.corpus.assign import NumberProfile, assign_tasks, is_number_heavy
from spell.corpus.cluster import ClusterStats, SetLimits, cluster_sets
from spell.corpus.decontam import build_contamination_index
from spell.corpus.filter_pass import STAGES, FilterPass, StageClock
from spell.corpus.filters import MinHasher
from spell.corpus.options import BuildOptions, DataBuildError
from spell.corpus.read import input_files, iter_documents
from spell.corpus.store import DocumentStore
from spell.corpus.tokens import token_counter
from spell.corpus.write import DOCSETS_JSONL, DOCSETS_PARQUET, write_docsets, write_report
from spell.types import TaskType

logger = logging.getLogger(__name__)

SPILL_FOLDER = "_spill"


def _progress(items: Iterable, description: str, total: int | None = None) -> Iterable:
    """A tqdm bar on stderr when it is a terminal (silent otherwise)."""
    from tqdm.auto import tqdm

    return tqdm(items, desc=description, total=total, unit=" docs", disable=None, mininterval=1.0, leave=False)


def build_docsets(options: BuildOptions) -> dict:
    """Run the whole build into ``options.out``.

    Returns:
        The report (also written to ``report.json``).

    Raises:
        DataBuildError: unreadable input, a bad option, or no document set left; nothing is written.
        DataError: an unreadable ``--exclude`` benchmark file; nothing is written.
    """
    out = Path(options.out)
    _check_output_folder(out, options.overwrite)
    files = input_files(options.inputs)
    count_tokens = token_counter(options.tokenizer)
    work = _make_partial_folder(out)
    try:
        report = _build_into(work, files, options, count_tokens)
        _publish(work, out, options.overwrite)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return report


def _build_into(work: Path, files: list[Path], options: BuildOptions, count_tokens: Callable[[str], int]) -> dict:
    clock = StageClock()
    hasher = MinHasher(options.num_perm, options.shingle_words)
    contamination = None
    if options.exclude:
        logger.info("indexing the --exclude benchmark documents")
        contamination = build_contamination_index(options.exclude, hasher, options.dedup_threshold,
                                                  options.exclude_span_words)
    clock.lap("index_exclusions")
    (work / SPILL_FOLDER).mkdir()
    store = DocumentStore(work / SPILL_FOLDER / "documents.sqlite")
    try:
        filtering = FilterPass(options, store, hasher, count_tokens, contamination, clock)
        filtering.run(_progress(iter_documents(files, options.text_key), "read + filter"))
        columns = filtering.kept_columns()
        report = _base_report(options, files, filtering, contamination)
        _check_enough(len(store), options, report)
        sets, tasks = _group(store, columns, options, report, clock)
        write_docsets(work, _progress(_rows(store, sets, tasks, options.docset_id_prefix), "write", len(sets)))
        clock.lap("write")
    finally:
        store.close()
    shutil.rmtree(work / SPILL_FOLDER)
    for key, seconds in (("timing_s", clock.seconds), ("cpu_s", clock.cpu_seconds)):
        report[key] = {stage: round(value, 3) for stage, value in seconds.items()}
        report[key]["total"] = round(sum(seconds.values()), 3)
    sizes = np.array([len(s) for s in sets])
    set_tokens = np.array([int(columns["tokens"][s].sum()) for s in sets])
    write_report(work, report, sizes, set_tokens)
    logger.info("%d document sets from %d documents", len(sets), report["inputs"]["documents"])
    return report


def _group(store: DocumentStore, columns: dict[str, np.ndarray], options: BuildOptions, report: dict,
           clock: StageClock) -> tuple[list[np.ndarray], list]:
    """Vectors -> sets -> tasks; fills the clustering, sets and stage parts of ``report``."""
    logger.info("%d documents kept; computing their %s vectors", len(store),
                "--embed-model" if options.embed_model else "TF-IDF + SVD")
    vectors = _vectors(store, options)
    clock.lap("features")
    logger.info("clustering into sets of about %d documents (hierarchical k-means)", options.set_size)
    limits = SetLimits(options.set_size, options.min_set_size, options.set_size_limit, options.max_set_tokens)
    stats = ClusterStats()
    sets = cluster_sets(vectors, columns["tokens"], limits, options.seed, stats)
    clock.lap("cluster")
    kept = sum(len(s) for s in sets)
    dropped = {"in_sets_below_min_set_size": stats.dropped_documents} if stats.dropped_documents else {}
    report["stages"].append({"stage": "clustering", "in": len(store), "out": kept, "removed": dropped})
    report["clustering"] = {"features": f"model {options.embed_model}" if options.embed_model else "tfidf-svd",
                            **dataclasses.asdict(stats)}
    if not sets:
        raise DataBuildError(f"no document set: the {len(store)} kept documents formed no set of --min-set-size="
                             f"{options.min_set_size} within --max-set-tokens={options.max_set_tokens}. Fix: add "
                             "documents or lower --min-set-size")
    profiles = [_profile(columns, s) for s in sets]
    tasks = assign_tasks([is_number_heavy(p) for p in profiles], options.docmath, options.seed)
    report["sets"] = _set_summary(sets, tasks, columns["tokens"], options)
    report["train_overrides"] = train_overrides(options.out, list(report["sets"]["per_task"]))
    return sets, tasks


def train_overrides(out: str, tasks: list[str]) -> str:
    """The ``spell validate`` / ``spell train`` overrides that use this corpus (its tasks, if not all three).

    >>> train_overrides("data/mine", ["doc_general_qa", "docmath_qa", "doc_mc"])
    'data.train_files=[data/mine/docsets.parquet]'
    >>> train_overrides("data/mine", ["doc_mc", "doc_general_qa"]).split()[1:]
    ['data.tasks=[doc_general_qa,doc_mc]', 'verifier.tasks=[doc_general_qa,doc_mc]']
    """
    overrides = f"data.train_files=[{Path(out).as_posix()}/{DOCSETS_PARQUET}]"
    if len(tasks) < len(TaskType):  # the default data.tasks (and verifier.tasks) name all three
        names = ",".join(sorted(tasks))
        overrides += f" data.tasks=[{names}] verifier.tasks=[{names}]"
    return overrides


def _vectors(store: DocumentStore, options: BuildOptions) -> np.ndarray:
    from spell.corpus.features import model_vectors, tfidf_vectors

    texts = _progress(store.texts(), "features", len(store))
    if options.embed_model:
        return model_vectors(texts, len(store), options.embed_model)
    return tfidf_vectors(texts, len(store), options.seed)


def _profile(columns: dict[str, np.ndarray], members: np.ndarray) -> NumberProfile:
    return NumberProfile(int(columns["words"][members].sum()), int(columns["numeric_words"][members].sum()),
                         int(columns["table_rows"][members].sum()))


def _rows(store: DocumentStore, sets: list[np.ndarray], tasks: list, prefix: str) -> Iterator[dict]:
    for number, (members, task) in enumerate(zip(sets, tasks), start=1):
        origins, documents = zip(*store.records(members.tolist()))
        yield {"id": f"{prefix}-{number:06d}", "documents": list(documents), "task": task.value,
               "source": prefix, "origins": list(origins)}


def _check_enough(num_kept: int, options: BuildOptions, report: dict) -> None:
    if num_kept >= options.min_set_size:
        return
    stages = "; ".join(f"{s['stage']} kept {s['out']}" for s in report["stages"])
    raise DataBuildError(f"only {num_kept} document(s) survived the filters ({stages}), fewer than --min-set-size="
                         f"{options.min_set_size}. Fix: add documents or loosen --min-chars/--max-chars")


def _base_report(options: BuildOptions, files: list[Path], filtering: FilterPass, contamination) -> dict:
    benchmarks = {}
    if contamination is not None:
        benchmarks = {name: {"documents": count, "removed": filtering.removed_per_benchmark[name]}
                      for name, count in contamination.documents_per_benchmark.items()}
    options_dict = {key: value for key, value in dataclasses.asdict(options).items() if key != "overwrite"}
    return {
        "options": {**options_dict, "max_set_size": options.set_size_limit, "id_prefix": options.docset_id_prefix},
        "inputs": {"files": len(files), "documents": filtering.num_read},
        "stages": filtering.stage_counts(),
        "decontamination": {"benchmarks": benchmarks,
                            "documents_indexed": contamination.num_documents if contamination else 0},
        "near_dedup": {"lsh_bands": filtering.near.bands[0], "lsh_rows_per_band": filtering.near.bands[1],
                       "candidates_checked": filtering.near.candidates_checked},
        "examples": {key: filtering.examples[key] for key in sorted(filtering.examples, key=_stage_order)},
        "outputs": [DOCSETS_JSONL, DOCSETS_PARQUET],
    }


def _stage_order(example_key: str) -> int:
    """Position of an examples key (``stage/reason``) in the filter order."""
    return STAGES.index(example_key.split("/", 1)[0])


def _set_summary(sets: list[np.ndarray], tasks: list, tokens: np.ndarray, options: BuildOptions) -> dict:
    sizes = [len(s) for s in sets]
    totals = [int(tokens[s].sum()) for s in sets]
    histogram: dict[str, int] = {}
    for size in sorted(sizes):
        histogram[str(size)] = histogram.get(str(size), 0) + 1
    per_task = {task.value: sum(t == task for t in tasks) for task in dict.fromkeys(sorted(tasks))}
    return {
        "count": len(sets),
        "per_task": per_task,
        "documents": {"total": sum(sizes), "min": min(sizes), "mean": round(float(np.mean(sizes)), 2),
                      "max": max(sizes), "histogram": histogram},
        "tokens": {"min": min(totals), "mean": round(float(np.mean(totals)), 1), "max": max(totals),
                   "budget": options.max_set_tokens},
        "token_counter": f"tokenizer {options.tokenizer}" if options.tokenizer else "estimate",
    }


# ---- atomic output folder ----

def _check_output_folder(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise DataBuildError(f"--out {out}: is a file. Fix: pass a folder path")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise DataBuildError(f"--out {out}: folder is not empty. Fix: pass a new folder, or --overwrite to move it "
                             f"aside to {out.name}.replaced-TIME (kept, not deleted)")


def _make_partial_folder(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    work = out.parent / f".{out.name}.partial-{os.getpid()}-{time.time_ns()}"
    work.mkdir()
    return work


def _publish(work: Path, out: Path, overwrite: bool) -> None:
    """Rename ``work`` to ``out``; a non-empty ``out`` is moved aside first (with --overwrite)."""
    from spell.rl.rundir import move_aside

    if out.is_dir() and any(out.iterdir()):
        _check_output_folder(out, overwrite)  # it may have filled up while we were building
        moved = move_aside(out)
        logger.warning("--overwrite: moved the old %s aside to %s (nothing deleted)", out, moved)
    elif out.is_dir():
        out.rmdir()
    os.replace(work, out)
