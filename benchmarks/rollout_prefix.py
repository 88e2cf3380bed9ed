"""Rollouts of n samples of one long prompt: the prompt's KV kept once vs copied per sample vs prompt repeated.

Variants, on the same ~5M-param random Qwen2 (vocab 1,024), eos ignored so every sample has exactly
--new-tokens tokens, temperature 1, top-p 0.95, seed 0:
  shared     spell.rl.engine.HFEngine (default): prefill once, the prompt's KV stored once and attended by all n
             rows, only each row's new tokens cached per row (issue 13)
  copied     HFEngine(prompt_kv="copied"), the engine before issue 13: prefill once, the KV copied n times into
             per-row buffers of prompt + new tokens
  repeated   HFEngine(prompt_kv="repeated"): the prompt n times in the prefill batch, then as copied
  generate   transformers model.generate(num_return_sequences=n, do_sample=True) (not run by default)
Time: the variants alternate in this process (A/B interleaved, the order reversed every round) after a warm-up
round; the minimum and median of --repeats are reported. Memory: each (variant, prompt length) runs once more in
a fresh child process that reports its peak RSS (VmHWM) minus its RSS right before the rollout, so no variant
inherits another's allocator high-water mark. shared, copied and repeated give the same tokens (tests).

    .venv/bin/python benchmarks/rollout_prefix.py --threads 1   # prompts 1,024 and 4,096 tokens, n 8, 64 new
Writes benchmarks/results/rollout_prefix.json; the last line is
``rollout_prefix: speedup@1024=… memory@1024=… speedup@4096=… memory@4096=…`` (copied / shared).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from spell.plan.measure import current_rss, peak_rss

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("shared", "copied", "repeated", "generate")
BASELINE = "copied"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt-tokens", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--n", type=int, default=8, help="samples per prompt")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per variant after one warm-up round")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (here and in the children)")
    parser.add_argument("--variants", nargs="+", default=["shared", "copied", "repeated"], choices=VARIANTS)
    parser.add_argument("--probe", nargs=2, metavar=("VARIANT", "PROMPT_TOKENS"), help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "rollout_prefix.json"))
    return parser.parse_args(argv)


def build_policy(args: argparse.Namespace):
    """A random tiny Qwen2 and its BPE tokenizer (vocab 1,024), built offline."""
    from spell.builtin.tiny import build_tiny_model, build_tiny_tokenizer

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


def make_prompt(length: int, vocab: int) -> list[int]:
    return torch.randint(3, vocab, (length,), generator=torch.Generator().manual_seed(length)).tolist()


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
        engine = HFEngine(model, tokenizer, prompt_kv=variant)
        engine.eos_token_ids = frozenset()  # fixed-length samples
        sampling = SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=args.new_tokens, seed=0)
        (group,) = engine.generate([prompt], sampling, n=args.n)
        produced = sum(len(c.token_ids) for c in group)
    seconds = time.perf_counter() - start
    assert produced == args.n * args.new_tokens, f"{variant} produced {produced} tokens"
    return seconds


def peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM; not ru_maxrss, which Linux carries over from the parent across fork+exec)."""
    return peak_rss() / 2**20


def current_rss_mib() -> float:
    return current_rss() / 2**20


def probe(args: argparse.Namespace) -> None:
    """Child process: one rollout of one variant; prints how far its peak RSS rose above the pre-rollout RSS."""
    variant, length = args.probe[0], int(args.probe[1])
    model, tokenizer = build_policy(args)
    prompt = make_prompt(length, len(tokenizer))
    before = current_rss_mib()
    seconds = run_variant(variant, model, tokenizer, prompt, args)
    print(
        json.dumps(
            {
                "peak_rss_mib": round(peak_rss_mib() - before, 1),
                "before_mib": round(before, 1),
                "seconds": round(seconds, 3),
            }
        )
    )


def peak_memory(args: argparse.Namespace, variant: str, length: int) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--probe",
        variant,
        str(length),
        "--threads",
        str(args.threads),
        "--n",
        str(args.n),
        "--new-tokens",
        str(args.new_tokens),
        "--hidden",
        str(args.hidden),
        "--layers",
        str(args.layers),
        "--prompt-tokens",
        *map(str, args.prompt_tokens),
    ]
    env = {"OMP_NUM_THREADS": str(args.threads), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def kv_cache_mib(variant: str, length: int, args: argparse.Namespace) -> float:
    """The KV cache a variant holds at the end of decoding (fp32; 2 KV heads of hidden / 4)."""
    per_token = args.layers * 2 * 2 * (args.hidden // 4) * 4  # layers x (K, V) x heads x head_dim x 4 bytes
    if variant == "shared":  # the prompt once + each row's fed new tokens (its buffer holds new_tokens - 1)
        tokens = length + args.n * (args.new_tokens - 1)
    else:  # every row: its prompt + room for all new tokens
        tokens = args.n * (length + args.new_tokens)
    return round(tokens * per_token / 2**20, 1)


def measure(model, tokenizer, length: int, args: argparse.Namespace) -> dict:
    prompt = make_prompt(length, len(tokenizer))
    times: dict[str, list[float]] = {v: [] for v in args.variants}
    for round_index in range(args.repeats + 1):  # round 0 warms up
        order = args.variants if round_index % 2 == 0 else args.variants[::-1]
        for variant in order:
            seconds = run_variant(variant, model, tokenizer, prompt, args)
            if round_index:
                times[variant].append(round(seconds, 3))
    memory = {v: peak_memory(args, v, length) for v in args.variants if v != "generate"}
    row = {
        "prompt_tokens": length,
        "seconds": times,
        "min_s": {v: min(t) for v, t in times.items()},
        "median_s": {v: round(statistics.median(t), 3) for v, t in times.items()},
        "peak_rss_mib": {v: m["peak_rss_mib"] for v, m in memory.items()},
        "kv_cache_mib": {v: kv_cache_mib(v, length, args) for v in memory},
    }
    row["new_tokens_per_s"] = {v: round(args.n * args.new_tokens / s, 1) for v, s in row["min_s"].items()}
    if "shared" in times:
        row["speedup_vs"] = {v: round(s / row["min_s"]["shared"], 2) for v, s in row["min_s"].items() if v != "shared"}
        row["memory_ratio_vs"] = {
            v: round(m / row["peak_rss_mib"]["shared"], 2) for v, m in row["peak_rss_mib"].items() if v != "shared"
        }
    print(json.dumps({k: row[k] for k in ("prompt_tokens", "min_s", "peak_rss_mib", "kv_cache_mib")}), flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import spell  # noqa: F401
    except ImportError:  # not installed: run from the checkout
        sys.path.insert(0, str(ROOT))
    torch.set_num_threads(args.threads)  # 1 avoids OpenMP stalls when other processes share the cores
    if args.probe:
        probe(args)
        return 0
    load_start = round(os.getloadavg()[0], 2)  # other processes on the cores distort small-batch decode times
    torch.manual_seed(0)
    model, tokenizer = build_policy(args)
    results = [measure(model, tokenizer, length, args) for length in args.prompt_tokens]
    record = {
        "benchmark": "rollout_prefix",
        "model_params": sum(p.numel() for p in model.parameters()),
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
    for row in results:
        rate = ", ".join(f"{v} {t} tok/s" for v, t in row["new_tokens_per_s"].items())
        print(
            f"prompt {row['prompt_tokens']} tokens, n={args.n}, {args.new_tokens} new: {rate}; "
            f"peak RSS MiB {row['peak_rss_mib']}"
        )
    if "shared" in args.variants and BASELINE in args.variants:
        parts = [
            f"speedup@{r['prompt_tokens']}={r['speedup_vs'][BASELINE]:.2f} "
            f"memory@{r['prompt_tokens']}={r['memory_ratio_vs'][BASELINE]:.2f}"
            for r in results
        ]
        print("rollout_prefix: " + " ".join(parts) + f" ({BASELINE} / shared)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
