"""Rollout time for n samples of one long prompt: prompt prefilled once + shared KV vs prompt repeated n times.

Variants, all in this process on the same ~5M-param random Qwen2 (vocab 1,024), eos ignored so every
sample has exactly --new-tokens tokens:
  shared     spell.rl.engine.HFEngine (default): prefill the prompt once, repeat its KV cache n times, decode
  repeated   HFEngine(share_prompt_kv=False): the prompt n times in the batch, same decode loop
  generate   transformers model.generate(num_return_sequences=n, do_sample=True)
Reported: seconds (best of --repeats) and new tokens per second per variant, and the speed-up of shared.

    .venv/bin/python benchmarks/rollout_prefix.py        # prompts 1,024 and 4,096 tokens, n 8, 64 new tokens
Writes benchmarks/results/rollout_prefix.json and prints one JSON line and one human line per prompt length.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("shared", "repeated", "generate")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt-tokens", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--n", type=int, default=8, help="samples per prompt")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per variant; the best is reported")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads; default torch's (one per core)"
    )
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "rollout_prefix.json"))
    return parser.parse_args(argv)


def build_policy(args: argparse.Namespace):
    """A random tiny Qwen2 and its BPE tokenizer (vocab 1,024), built offline."""
    from spell.builtin.tiny import build_tiny_model, build_tiny_tokenizer  # after main() made spell importable

    rng = random.Random(0)  # pseudo-words from syllables: enough distinct merges for a 1,024-token vocabulary
    syllables = [a + b for a in "bdfgklmnprstvz" for b in "aeiou"]
    words = ["".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(3000)]
    texts = [" ".join(rng.choices(words, k=50)) for _ in range(400)]
    tokenizer = build_tiny_tokenizer(texts, vocab_size=1024)
    model = build_tiny_model(
        tokenizer,
        hidden_size=args.hidden,
        num_layers=args.layers,
        num_heads=4,
        num_kv_heads=2,
        max_position_embeddings=max(args.prompt_tokens) + args.new_tokens,
    ).eval()
    return model, tokenizer


def run_variant(variant: str, model, tokenizer, prompt: list[int], args: argparse.Namespace) -> float:
    """Seconds for one rollout of n samples of ``prompt``."""
    from spell.rl.engine.hf import HFEngine
    from spell.types import SamplingParams

    start = time.perf_counter()
    if variant == "generate":
        with torch.inference_mode():
            out = model.generate(
                torch.tensor([prompt]),
                do_sample=True,
                top_p=0.95,
                temperature=1.0,
                num_return_sequences=args.n,
                max_new_tokens=args.new_tokens,
                min_new_tokens=args.new_tokens,
                pad_token_id=tokenizer.pad_token_id,
            )
        produced = out.shape[0] * (out.shape[1] - len(prompt))
    else:
        engine = HFEngine(model, tokenizer, share_prompt_kv=variant == "shared")
        engine.eos_token_ids = frozenset()  # fixed-length samples
        sampling = SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=args.new_tokens, seed=0)
        (group,) = engine.generate([prompt], sampling, n=args.n)
        produced = sum(len(c.token_ids) for c in group)
    seconds = time.perf_counter() - start
    assert produced == args.n * args.new_tokens, f"{variant} produced {produced} tokens"
    return seconds


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_start = round(os.getloadavg()[0], 2)  # other processes on the cores distort small-batch decode times
    try:
        import spell  # noqa: F401
    except ImportError:  # not installed: run from the checkout
        sys.path.insert(0, str(ROOT))
    if args.threads:
        torch.set_num_threads(args.threads)  # 1 avoids OpenMP stalls when other processes share the cores
    torch.manual_seed(0)
    model, tokenizer = build_policy(args)
    params = sum(p.numel() for p in model.parameters())
    run_variant("shared", model, tokenizer, list(range(3, 67)), args)  # warm-up
    results = []
    for length in args.prompt_tokens:
        prompt = torch.randint(3, len(tokenizer), (length,), generator=torch.Generator().manual_seed(length)).tolist()
        timings: dict[str, list[float]] = {v: [] for v in args.variants}
        for _ in range(args.repeats):  # interleaved, so a burst of load elsewhere hits every variant alike
            for variant in args.variants:
                timings[variant].append(run_variant(variant, model, tokenizer, prompt, args))
        seconds = {v: min(t) for v, t in timings.items()}
        row = {"prompt_tokens": length, "seconds": {v: round(s, 3) for v, s in seconds.items()}}
        row["all_seconds"] = {v: [round(x, 3) for x in t] for v, t in timings.items()}
        row["new_tokens_per_s"] = {v: round(args.n * args.new_tokens / s, 1) for v, s in seconds.items()}
        if "shared" in seconds:
            row["speedup_vs"] = {v: round(s / seconds["shared"], 2) for v, s in seconds.items() if v != "shared"}
        results.append(row)
    record = {
        "benchmark": "rollout_prefix",
        "model_params": params,
        "n": args.n,
        "new_tokens": args.new_tokens,
        "repeats": args.repeats,
        "vocab": len(tokenizer),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": {"start": load_start, "end": round(os.getloadavg()[0], 2)},
        "torch": torch.__version__,
        "machine": platform.machine(),
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record))
    for row in results:
        rate = ", ".join(f"{v} {t} tok/s" for v, t in row["new_tokens_per_s"].items())
        ratio = ", ".join(f"{s}x vs {v}" for v, s in row.get("speedup_vs", {}).items())
        print(f"prompt {row['prompt_tokens']} tokens, n={args.n}, {args.new_tokens} new: {rate}; shared KV {ratio}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
