"""Build the built-in world (issue 5): ``train.jsonl``, ``heldout.jsonl``, ``world.json`` and ``manifest.json``.

Deterministic from the seed: the same arguments give byte-identical files (no timestamps, no absolute paths).
Train rows (JSONL or Parquet) follow the corpus schema of :mod:`spell.data` and carry no answers; held-out rows
follow the generic JSONL format of :mod:`spell.evaluate.formats`; ``train_labelled.jsonl`` holds labelled
questions over the train sets in the same format, for the RLVR baseline only. ``world.json`` lists every
set's entities and facts (with the verbatim evidence and its document index) so answers can be re-derived;
``manifest.json`` records the arguments, counts, approximate token sizes (words x 1.3) and file hashes.
CLI: ``spell world build``.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from spell.builtin.world.entities import HOBBIES, ORG_SUFFIXES, SECTORS, NamePool, SetPlan, make_plan
from spell.builtin.world.filler import TOKENS_PER_WORD, approx_tokens, filler_vocabulary
from spell.builtin.world.questions import QuestionWriter
from spell.builtin.world.render import DOC_KINDS, MAX_DOCS, MIN_DOCS, Fact, render_set, template_vocabulary
from spell.corpus.tokens import token_counter

logger = logging.getLogger(__name__)

WORLD_VERSION = "2"  # 2: held-out names halved to make a validation split; 5 held-out questions per set
TASKS = ("docmath_qa", "doc_general_qa", "doc_mc")
TRAIN_LABELLED = "train_labelled.jsonl"  # generic eval format, questions over the train sets (RLVR baseline)
NUM_DECOYS = 3  # extra never-mentioned names per type in the held-out MC distractor pool


@dataclass(frozen=True, slots=True)
class WorldPaths:
    """Where a built world lives."""

    root: Path
    train: Path
    heldout: Path
    world: Path
    manifest: Path
    validation: Path


@dataclass(frozen=True, slots=True)
class _BuiltSet:
    plan: SetPlan
    kinds: list[str]
    documents: list[str]
    facts: list[Fact]


def _reserved_words() -> frozenset[str]:
    extra = {word.lower() for phrase in ORG_SUFFIXES + SECTORS + HOBBIES for word in phrase.split()}
    return template_vocabulary() | filler_vocabulary() | extra


def _build_split(split: str, count: int, seed: int, doc_kinds: tuple[str, ...], target_tokens: int | None,
                 filler: bool, count_tokens: Callable[[str], int] | None = None) -> tuple[list[_BuiltSet], NamePool]:
    """Plan and render ``count`` sets of one split; each set has its own seeded random source."""
    names = NamePool(random.Random(f"{seed}/names/{split}"), split=split, reserved=_reserved_words())
    built = []
    for index in range(count):
        rng = random.Random(f"{seed}/{split}/{index}")
        plan = make_plan(rng, names, f"world-{split}-{index:05d}", split)
        kinds = rng.sample(doc_kinds, len(doc_kinds))  # document order varies per set
        documents, facts = render_set(plan, kinds, rng, target_tokens=target_tokens, filler=filler,
                                      count_tokens=count_tokens)
        built.append(_BuiltSet(plan, kinds, documents, facts))
    return built, names


def _distractor_pool(sets: list[_BuiltSet], names: NamePool) -> dict[str, list[str]]:
    """Names of each type over the split, plus a few decoys so every type has enough MC distractors."""
    pool: dict[str, list[str]] = {}
    for item in sets:
        for kind, values in item.plan.names_by_type().items():
            pool.setdefault(kind, []).extend(values)
    decoy = {
        "person": lambda: f"{names.word()} {names.word()}",
        "org": lambda: f"{names.word()} {ORG_SUFFIXES[0]}",
        "college": lambda: f"{names.word()} College",
        "event": lambda: f"{names.word()} Fair",
    }
    for kind in ("person", "org", "city", "college", "event", "region", "river"):
        make = decoy.get(kind, names.word)
        pool.setdefault(kind, []).extend(make() for _ in range(NUM_DECOYS))
    return pool


def _question_records(sets: list[_BuiltSet], names: NamePool, seed: int, questions_per_set: int,
                      tag: str = "questions") -> list[dict]:
    """``questions_per_set`` questions per set; tasks rotate so each gets a third of them."""
    writer = QuestionWriter(random.Random(f"{seed}/{tag}"), _distractor_pool(sets, names))
    records = []
    for index, item in enumerate(sets):
        for number in range(questions_per_set):
            task = TASKS[(index * questions_per_set + number) % len(TASKS)]
            records.append(writer.write(item.plan, item.documents, item.kinds, task, number))
    return records


def _world_record(item: _BuiltSet) -> dict:
    return {
        "id": item.plan.set_id,
        "split": item.plan.split,
        "doc_kinds": item.kinds,
        "entities": item.plan.names_by_type(),
        "facts": [fact.to_dict() for fact in item.facts],
    }


def _write_jsonl(rows: list[dict], path: Path) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def _write_parquet(rows: list[dict], path: Path) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as err:  # pragma: no cover - pyarrow is a core dependency
        raise ImportError("--format parquet needs pyarrow: pip install pyarrow") from err
    columns = {key: [row[key] for row in rows] for key in ("id", "documents", "task", "source")}
    pq.write_table(pa.table(columns), path)


def _token_stats(counts: list[int]) -> dict:
    if not counts:
        return {"min": 0, "mean": 0, "max": 0}
    return {"min": min(counts), "mean": round(statistics.fmean(counts), 1), "max": max(counts)}


def _file_entry(path: Path) -> dict:
    data = path.read_bytes()
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _check_arguments(num_train_sets: int, num_heldout_sets: int, docs_per_set: int, target_tokens: int | None,
                     questions_per_set: int, output_format: str, num_validation_sets: int = 0) -> None:
    if num_train_sets < 0 or num_heldout_sets < 0 or num_validation_sets < 0:
        raise ValueError(f"set counts must be >= 0, got {num_train_sets} train, {num_heldout_sets} held-out and "
                         f"{num_validation_sets} validation")
    if not MIN_DOCS <= docs_per_set <= MAX_DOCS:
        raise ValueError(f"docs_per_set must be in [{MIN_DOCS}, {MAX_DOCS}], got {docs_per_set}")
    if target_tokens is not None and target_tokens <= 0:
        raise ValueError(f"target_tokens must be > 0 or None, got {target_tokens}")
    if questions_per_set < 1:
        raise ValueError(f"questions_per_set must be >= 1, got {questions_per_set}")
    if output_format not in ("jsonl", "parquet"):
        raise ValueError(f"output_format must be 'jsonl' or 'parquet', got {output_format!r}")


def build_world(
    out_dir: str | Path,
    *,
    seed: int = 0,
    num_train_sets: int = 300,
    num_heldout_sets: int = 240,
    docs_per_set: int = 5,
    target_tokens: int | None = None,
    filler: bool = True,
    questions_per_set: int = 5,
    output_format: str = "jsonl",
    tokenizer: str | Path | None = None,
    num_validation_sets: int | None = None,
) -> WorldPaths:
    """Generate the world and write its files into ``out_dir`` (created if missing, files overwritten).

    Args:
        out_dir: output folder.
        seed: the world seed; the same arguments give byte-identical files.
        num_train_sets: document sets of the training corpus (no labels; at most about 1,400).
        num_heldout_sets: document sets of the held-out question set (at most about 240): final numbers only.
        docs_per_set: documents per set, 3-8 (the first N of :data:`~spell.builtin.world.render.DOC_KINDS`).
        target_tokens: pad every set with neutral filler to about this many tokens in total (counted with
            ``tokenizer``); None = no filler (about 500-700 tokens per 5-document set).
        filler: False never pads, even with ``target_tokens``.
        questions_per_set: questions per held-out (and validation) set (tasks rotate over the questions).
        output_format: ``"jsonl"`` or ``"parquet"`` for the training corpus (held-out is always JSONL).
        tokenizer: a Hugging Face tokenizer folder whose counts ``target_tokens`` means (the manifest then also
            reports the sets' token counts with it); None = the words x 1.3 estimate.
        num_validation_sets: document sets of the validation question set (``validation.jsonl``, names
            disjoint from train and held-out: tune every choice on it); None = as many as held-out.

    Returns:
        The paths of the written files.

    Raises:
        ValueError: an argument is out of range.
    """
    num_validation_sets = num_heldout_sets if num_validation_sets is None else num_validation_sets
    _check_arguments(num_train_sets, num_heldout_sets, docs_per_set, target_tokens, questions_per_set,
                     output_format, num_validation_sets)
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    doc_kinds = DOC_KINDS[:docs_per_set]
    count_tokens = token_counter(str(tokenizer)) if tokenizer is not None else None
    split = functools.partial(_build_split, seed=seed, doc_kinds=doc_kinds, target_tokens=target_tokens,
                              filler=filler, count_tokens=count_tokens)
    train, train_names = split("train", num_train_sets)
    heldout, questions = _labelled_split(split("heldout", num_heldout_sets), seed, questions_per_set, "questions")
    validation, validation_questions = _labelled_split(split("validation", num_validation_sets), seed,
                                                       questions_per_set, "validation-questions")
    # Labelled questions over the TRAIN sets: only for the RLVR baseline (SPELL never reads them).
    train_questions = _question_records(train, train_names, seed, 1, tag="train-questions")
    train_rows = [{"id": s.plan.set_id, "documents": s.documents, "task": list(TASKS), "source": "world"}
                  for s in train]
    paths = WorldPaths(root, root / f"train.{output_format}", root / "heldout.jsonl", root / "world.json",
                       root / "manifest.json", root / "validation.jsonl")
    stale = root / ("train.jsonl" if output_format == "parquet" else "train.parquet")
    stale.unlink(missing_ok=True)  # a corpus left by an earlier build in the other format would be read as current
    (_write_parquet if output_format == "parquet" else _write_jsonl)(train_rows, paths.train)
    _write_jsonl(questions, paths.heldout)
    _write_jsonl(validation_questions, paths.validation)
    _write_jsonl(train_questions, root / TRAIN_LABELLED)
    world = {"generator": "spell.world", "version": WORLD_VERSION, "seed": seed,
             "sets": [_world_record(s) for s in train + heldout + validation]}
    paths.world.write_text(json.dumps(world, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    arguments = {"num_train_sets": num_train_sets, "num_heldout_sets": num_heldout_sets,
                 "num_validation_sets": num_validation_sets,
                 "docs_per_set": docs_per_set, "target_tokens": target_tokens, "filler": filler,
                 "questions_per_set": questions_per_set, "output_format": output_format,
                 "tokenizer": None if tokenizer is None else str(tokenizer)}
    manifest = _manifest(seed, arguments, train, heldout, questions, paths, len(validation_questions), count_tokens)
    paths.manifest.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    logger.info("world built in %s: %d train sets, %d held-out questions", root, len(train), len(questions))
    return paths


def _labelled_split(built: tuple[list[_BuiltSet], NamePool], seed: int, questions_per_set: int,
                    tag: str) -> tuple[list[_BuiltSet], list[dict]]:
    """A labelled split (held-out, validation): its sets and ``questions_per_set`` questions over each."""
    sets, names = built
    return sets, _question_records(sets, names, seed, questions_per_set, tag=tag)


def _manifest(seed: int, arguments: dict, train: list[_BuiltSet], heldout: list[_BuiltSet], questions: list[dict],
              paths: WorldPaths, validation_questions: int, count_tokens: Callable[[str], int] | None) -> dict:
    """Arguments, counts, approximate (and, with a tokenizer, counted) tokens per set, hashes of the other files."""
    manifest = {
        "generator": "spell.world",
        "version": WORLD_VERSION,
        "seed": seed,
        "arguments": arguments,
        "token_estimate": f"ceil(whitespace words x {TOKENS_PER_WORD}) per document, summed over the set",
        "counts": _counts(train, questions),
        "approx_tokens_per_set": {split: _token_stats([sum(approx_tokens(d) for d in s.documents) for s in sets])
                                  for split, sets in (("train", train), ("heldout", heldout))},
        "files": {p.name: _file_entry(p) for p in (paths.train, paths.heldout, paths.validation, paths.world)},
    }
    manifest["counts"]["validation_questions"] = validation_questions
    if count_tokens is not None:
        manifest["tokens_per_set"] = {split: _token_stats([sum(count_tokens(d) for d in s.documents) for s in sets])
                                      for split, sets in (("train", train), ("heldout", heldout))}
    return manifest


def _counts(train: list[_BuiltSet], questions: list[dict]) -> dict:
    by_task: dict[str, int] = {}
    by_hops: dict[str, int] = {}
    for record in questions:
        by_task[record["task"]] = by_task.get(record["task"], 0) + 1
        hops = str(record["metadata"]["hops"])
        by_hops[hops] = by_hops.get(hops, 0) + 1
    return {
        "train_sets": len(train),
        "train_documents": sum(len(s.documents) for s in train),
        "heldout_questions": len(questions),
        "heldout_by_task": dict(sorted(by_task.items())),
        "heldout_by_hops": dict(sorted(by_hops.items())),
    }


def add_world_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``spell world build`` options to ``parser``."""
    parser.add_argument("--out", default="data/world", help="output folder (default: data/world)")
    parser.add_argument("--seed", type=int, default=0, help="world seed (same seed -> identical files)")
    parser.add_argument("--num-train", type=int, default=300, help="training document sets (no labels)")
    parser.add_argument("--num-heldout", type=int, default=240,
                        help="held-out document sets (labelled questions, final numbers only)")
    parser.add_argument("--num-validation", type=int, default=None,
                        help="validation document sets (labelled questions for tuning; default: as many as held-out)")
    parser.add_argument("--docs-per-set", type=int, default=5, help=f"documents per set, {MIN_DOCS}-{MAX_DOCS}")
    parser.add_argument("--questions-per-set", type=int, default=5,
                        help="questions per held-out and validation set")
    parser.add_argument("--target-tokens", type=int, default=None,
                        help="pad each set with neutral filler to about this many tokens (of --tokenizer)")
    parser.add_argument("--tokenizer", default="builtin",
                        help="tokenizer folder that counts --target-tokens; 'builtin' = the shipped policy's, "
                             "'none' = the words x 1.3 estimate")
    parser.add_argument("--no-filler", action="store_true", help="never add filler text")
    parser.add_argument("--format", choices=("jsonl", "parquet"), default="jsonl", help="training corpus format")


def _cli_tokenizer(name: str) -> str | None:
    if name == "none":
        return None
    if name == "builtin":
        from spell.builtin.defaults import SHIPPED_POLICY

        return str(SHIPPED_POLICY)
    return name


def run_world_build(args: argparse.Namespace) -> int:
    """Run ``spell world build`` from parsed arguments; returns the exit code (2 on bad arguments)."""
    try:
        paths = build_world(
            args.out, seed=args.seed, num_train_sets=args.num_train, num_heldout_sets=args.num_heldout,
            num_validation_sets=args.num_validation,
            docs_per_set=args.docs_per_set, target_tokens=args.target_tokens, filler=not args.no_filler,
            questions_per_set=args.questions_per_set, output_format=args.format,
            tokenizer=_cli_tokenizer(args.tokenizer) if args.target_tokens else None,
        )
    except ValueError as err:
        logger.error("spell world build: %s", err)
        return 2
    manifest = json.loads(paths.manifest.read_text(encoding="utf-8"))
    tokens = manifest.get("tokens_per_set", manifest["approx_tokens_per_set"])["train"]
    logger.info("train corpus: %s (%d sets); held-out questions: %s (%s); tokens per set (%s): %s",
                paths.train, manifest["counts"]["train_sets"], paths.heldout, manifest["counts"]["heldout_by_task"],
                manifest["arguments"]["tokenizer"] or "words x 1.3", tokens)
    return 0
