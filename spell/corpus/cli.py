"""Arguments of ``spell data build`` (wired into ``spell/cli.py``); defaults are the paper's (App. E.1)."""

from __future__ import annotations

import argparse
import logging

from spell.corpus.options import DEFAULT_MAX_SET_TOKENS, BuildOptions

logger = logging.getLogger(__name__)


def add_build_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``spell data build`` options to ``parser``."""
    add = parser.add_argument
    add("inputs", nargs="+", metavar="INPUT",
        help="folders (their .txt/.md/.jsonl/.parquet files, recursive), .txt/.md files, .jsonl or .parquet files")
    add("--out", required=True, help="output folder: docsets.jsonl, docsets.parquet, report.json/.md, PNGs")
    add("--seed", type=int, default=0, help="seeds SVD, k-means and task assignment (same seed, same bytes)")
    add("--text-key", default="text", help="JSONL field / Parquet column with the text (default: text)")
    add("--min-chars", type=int, default=100, help="drop shorter documents (paper: 100)")
    add("--max-chars", type=int, default=32768, help="drop longer documents (paper: 32,768)")
    add("--dedup-threshold", type=float, default=0.8, help="near-duplicate Jaccard similarity (paper: 0.8)")
    add("--num-perm", type=int, default=128, help="MinHash permutations (paper: 128)")
    add("--shingle-words", type=int, default=5, help="words per MinHash shingle (default: 5)")
    add("--exclude", nargs="+", action="extend", default=[], metavar="PATH",
        help="benchmark files (or folders of them) in a `spell eval` format; training documents copying them are "
        "dropped (repeatable; give INPUTs before it)")
    add("--exclude-span-words", type=int, default=50,
        help="a verbatim run of this many words shared with a benchmark document is contamination (default: 50)")
    add("--set-size", type=int, default=20, help="target documents per set (paper: about 20)")
    add("--min-set-size", type=int, default=6, help="smaller clusters are merged or dropped (default: 6 = the "
        "questioner's 5 documents + 1 distractor)")
    add("--max-set-size", type=int, default=0, help="larger clusters are split (default 0 = 2 x --set-size)")
    add("--max-set-tokens", type=int, default=DEFAULT_MAX_SET_TOKENS,
        help=f"token budget of one set (default: {DEFAULT_MAX_SET_TOKENS} = 16K prompt - 1,024)")
    add("--tokenizer", metavar="PATH", help="count tokens with this local tokenizer folder (default: an estimate, "
        "max(chars / 4, words))")
    add("--embed-model", metavar="PATH", help="cluster on mean-pooled hidden states of this local model folder "
        "(default: TF-IDF + SVD)")
    add("--docmath", action="store_true", help="number- and table-heavy sets play docmath_qa")
    add("--id-prefix", help="set ids are PREFIX-000001, ... (default: the --out folder's name)")
    add("--overwrite", action="store_true", help="move a non-empty --out aside to OUT.replaced-TIME (kept)")


def options_from_args(args: argparse.Namespace) -> BuildOptions:
    """The :class:`BuildOptions` of parsed arguments (validated; raises DataBuildError)."""
    return BuildOptions(
        inputs=tuple(args.inputs), out=args.out, seed=args.seed, text_key=args.text_key, min_chars=args.min_chars,
        max_chars=args.max_chars, dedup_threshold=args.dedup_threshold, num_perm=args.num_perm,
        shingle_words=args.shingle_words, exclude=tuple(args.exclude), exclude_span_words=args.exclude_span_words,
        set_size=args.set_size, min_set_size=args.min_set_size, max_set_size=args.max_set_size,
        max_set_tokens=args.max_set_tokens, tokenizer=args.tokenizer, embed_model=args.embed_model,
        docmath=args.docmath, id_prefix=args.id_prefix, overwrite=args.overwrite,
    )


def run_data_build(args: argparse.Namespace) -> int:
    from spell.corpus.build import build_docsets

    report = build_docsets(options_from_args(args))
    sets = report["sets"]
    logger.info("wrote %s: %d document sets (%s), %d documents; report: %s/report.md", args.out, sets["count"],
                ", ".join(f"{task} {n}" for task, n in sets["per_task"].items()), sets["documents"]["total"],
                args.out)
    logger.info("check it, then train: spell validate --config CONFIG %s", report["train_overrides"])
    return 0
