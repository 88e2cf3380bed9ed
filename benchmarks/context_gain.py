"""Gain against context length: a trained run's held-out change, re-measured with its documents padded longer.

Self-play on the built-in default trains on the world as shipped (document sets of about 600 tokens). This
benchmark rebuilds the same world (same seed, so the same held-out questions over the same facts) with neutral
filler between the facts, each set padded to about T tokens counted with the shipped policy's tokenizer
(``spell world build --target-tokens T --tokenizer builtin``), and evaluates the base policy (step 0) and the run's
last checkpoint on every length: greedy, the trainer's own held-out scoring, paired over questions (change, its
standard error and a 95% bootstrap interval). T = 0 is the world as shipped. The shipped policy has 4,096
positions, so prompts must stay below that (3,000-token sets give prompts of about 3,300 tokens).

    .venv/bin/python benchmarks/context_gain.py runs/learning/spell_seed0 --tokens 0 1000 2000 3000

Writes benchmarks/results/context_gain.{json,md}; the last line is ``context_gain: T=delta ...`` (points).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished run on the built-in world (with a checkpoint)")
    parser.add_argument("--tokens", type=int, nargs="+", default=[0, 1000, 2000, 3000],
                        help="tokens per document set (0 = the world as shipped, no filler)")
    parser.add_argument("--limit", type=int, default=0, help="first N held-out questions only (0 = all)")
    parser.add_argument("--split", choices=("heldout", "validation"), default="heldout")
    parser.add_argument("--name", default="context_gain", help="results file stem")
    return parser.parse_args(argv)


def world_at(tokens: int) -> Path:
    """The built-in world with sets padded to ``tokens`` (0 = as shipped); built once into the cache."""
    from spell.builtin.defaults import SHIPPED_POLICY, WORLD_SEED, cache_root, ensure_world
    from spell.builtin.world import build_world
    from spell.builtin.world.build import WORLD_VERSION

    if tokens == 0:
        return ensure_world()
    folder = cache_root() / f"world-seed{WORLD_SEED}-v{WORLD_VERSION}-t{tokens}"
    if not (folder / "manifest.json").exists():
        build_world(folder, seed=WORLD_SEED, target_tokens=tokens, tokenizer=SHIPPED_POLICY)
    return folder


def load_engine(folder: Path, cfg):
    """The trainer's HF engine over the policy in ``folder`` (loaded once, used for every length)."""
    import torch

    from spell.config import ModelConfig
    from spell.rl.engine import build_engine
    from spell.rl.policy import load_policy

    model, tokenizer = load_policy(ModelConfig(path=str(folder)), torch.device("cpu"))
    return build_engine(cfg.engine, model, tokenizer, seed=cfg.train.seed)


def policy_scores(engine, items: list, cfg) -> tuple[list[dict], float]:
    """Per-question scores of ``engine``'s policy on ``items`` (the trainer's held-out path), and seconds."""
    from spell.heldout import heldout_metrics
    from spell.prompts import load_templates

    scores: list[dict] = []
    start = time.perf_counter()
    heldout_metrics(engine, items, cfg.eval, load_templates(None), cfg.data.max_prompt_tokens, seed=cfg.train.seed,
                    scores_out=scores)
    return scores, time.perf_counter() - start


def compare(before: list[dict], after: list[dict]) -> dict:
    """Accuracies (percent) and the paired change overall and per task."""
    from spell.heldout import paired_bootstrap

    out = {}
    for task in ["all", *sorted({s["task"] for s in before})]:
        pairs = [(b["score"], a["score"]) for b, a in zip(before, after, strict=True) if task in ("all", b["task"])]
        delta, se, low, high = paired_bootstrap([p[0] for p in pairs], [p[1] for p in pairs])
        out[task] = {"a0": round(100 * sum(p[0] for p in pairs) / len(pairs), 2),
                     "a1": round(100 * sum(p[1] for p in pairs) / len(pairs), 2), "delta": round(100 * delta, 2),
                     "se": round(100 * se, 2), "ci": [round(100 * low, 2), round(100 * high, 2)],
                     "questions": len(pairs)}
    return out


def prompt_tokens(items: list, tokenizer, max_tokens: int) -> float:
    """Mean untruncated prompt length of ``items`` in ``tokenizer``'s tokens."""
    from spell.evaluate.runner import prepare_prompt

    lengths = [prepare_prompt(item, tokenizer, max_tokens)[1] for item in items]
    return round(sum(lengths) / len(lengths), 1)


def main(argv: list[str] | None = None) -> None:
    from spell.builtin.defaults import SHIPPED_POLICY, apply_builtin_defaults
    from spell.config import load_config
    from spell.evaluate.formats import load_generic
    from spell.rl.checkpoint import latest_good_checkpoint
    from spell.rl.export import export_checkpoint

    args = parse_args(argv)
    ckpt, _ = latest_good_checkpoint(args.run)
    if ckpt is None:
        raise SystemExit(f"context_gain: {args.run} has no complete checkpoint; train it first")
    cfg = apply_builtin_defaults(load_config("builtin", ["eval.temperature=0"]))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = load_engine(SHIPPED_POLICY, cfg)
        trained = load_engine(export_checkpoint(ckpt, Path(tmp) / "trained"), cfg)
        for tokens in args.tokens:
            items = load_generic(world_at(tokens) / f"{args.split}.jsonl")
            items = items[: args.limit] if args.limit else items
            before, seconds0 = policy_scores(base, items, cfg)
            after, seconds1 = policy_scores(trained, items, cfg)
            row = {"tokens": tokens, "prompt_tokens_mean": prompt_tokens(items, base.tokenizer,
                                                                        cfg.data.max_prompt_tokens),
                   "eval_s": [round(seconds0, 1), round(seconds1, 1)], **compare(before, after)}
            rows.append(row)
            print(json.dumps({k: row[k] for k in ("tokens", "prompt_tokens_mean", "all", "eval_s")}), flush=True)
    summary = {"run": str(args.run), "checkpoint": ckpt.name, "split": args.split, "rows": rows}
    write_reports(summary, args.name)
    print("context_gain: " + " ".join(f"{r['tokens']}={r['all']['delta']:+.2f}" for r in rows))


def write_reports(summary: dict, name: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(summary, indent=1) + "\n")
    lines = [f"# Held-out change against context length ({summary['run']}, {summary['checkpoint']}, "
             f"{summary['split']})", "",
             "| set tokens | prompt tokens | A0 % | A1 % | change (pts) | SE | 95% CI | general QA | MC | numeric |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in summary["rows"]:
        tasks = [f"{r[t]['delta']:+.2f}" if t in r else "-" for t in ("doc_general_qa", "doc_mc", "docmath_qa")]
        lines.append(f"| {r['tokens'] or 'as shipped'} | {r['prompt_tokens_mean']} | {r['all']['a0']} | "
                     f"{r['all']['a1']} | {r['all']['delta']:+.2f} | {r['all']['se']} | "
                     f"[{r['all']['ci'][0]:+.2f}, {r['all']['ci'][1]:+.2f}] | " + " | ".join(tasks) + " |")
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
