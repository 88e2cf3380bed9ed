"""One GRPO update of G answers to one long prompt: shared-prefix layout vs one sequence per sample.

Both variants use the pieces the trainer's update uses (spell.rl.shared_prefix.prompt_units + pack_shared_prompts +
shared_prefix_logprobs vs collate + sequence_logprobs, micro-batches from pack_micro_batches, then grpo_loss,
backward and AdamW) on the same random Qwen2 and the same samples (G answers of --answer-tokens to one prompt per
group, random advantages). Time: the variants alternate in this process (A/B interleaved); the minimum and
median of --repeats are reported. Memory: each (variant, prompt length) runs once more in a fresh child process
that reports its peak RSS (VmHWM) minus its RSS right before the update, so the two variants never share an
allocator high-water mark.

    .venv/bin/python benchmarks/update_prefix.py            # prompts 1,024 / 4,096 / 8,192, G=8, answers of 128
Writes benchmarks/results/update_prefix.{json,png}; the last line is
``update_prefix: speedup@4096=X.XX memory@4096=Y.YY`` (per-sample / shared).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from spell.plan.measure import current_rss, peak_rss

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("per_sample", "shared")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt-tokens", type=int, nargs="+", default=[1024, 4096, 8192])
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--groups", type=int, default=1, help="prompts per update, each with G answers")
    parser.add_argument("--answer-tokens", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--micro-batch-tokens", type=int, default=16384)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--probe", nargs=2, metavar=("VARIANT", "PROMPT_TOKENS"), help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "update_prefix.json"))
    return parser.parse_args(argv)


def build(args: argparse.Namespace, prompt_tokens: int):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from spell.types import Role, RoleSample, TaskType

    config = Qwen2Config(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=4 * args.hidden,
                         num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=16384, tie_word_embeddings=True, attn_implementation="sdpa")
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).train()
    gen = torch.Generator().manual_seed(prompt_tokens)
    samples = []
    for group in range(args.groups):
        prompt = tuple(torch.randint(1, args.vocab, (prompt_tokens,), generator=gen).tolist())
        for _ in range(args.group_size):
            answer = tuple(torch.randint(1, args.vocab, (args.answer_tokens,), generator=gen).tolist())
            samples.append(RoleSample(Role.RESPONDER, TaskType.DOC_GENERAL_QA, f"g{group}", prompt, answer, 0.0,
                                      advantage=float(torch.randn((), generator=gen)), temperature=0.7))
    return model, torch.optim.AdamW(model.parameters(), lr=1e-6), samples


def update(variant: str, model, optimizer, samples, args: argparse.Namespace) -> float:
    """One full update (all micro-batches, backward, AdamW step); returns its wall time."""
    from spell.rl.batching import collate, pack_micro_batches
    from spell.rl.losses import grpo_loss
    from spell.rl.policy import sequence_logprobs
    from spell.rl.shared_prefix import pack_shared_prompts, prompt_units, shared_prefix_logprobs

    start = time.perf_counter()
    num_tokens = sum(len(s.completion_ids) for s in samples)
    if variant == "shared":
        units = prompt_units(samples, args.micro_batch_tokens)
    else:
        units = [[i] for i in range(len(samples))]
    lengths = [len(samples[u[0]].prompt_ids) + sum(len(samples[i].completion_ids) for i in u) for u in units]
    for packed in pack_micro_batches(lengths, args.micro_batch_tokens):
        micro = [samples[i] for u in packed for i in units[u]]
        if variant == "shared":
            batch = pack_shared_prompts(micro, pad_id=0)
            logprobs, _ = shared_prefix_logprobs(model, batch, 256)
        else:
            batch = collate(micro, pad_id=0)
            logprobs, _ = sequence_logprobs(model, batch["input_ids"], batch["attention_mask"],
                                            batch["completion_mask"], 256, temperature=batch["temperatures"])
        loss, _ = grpo_loss(logprobs, logprobs.detach(), batch["advantages"], batch["completion_mask"],
                            clip_low=0.2, clip_high=0.2, num_tokens_total=num_tokens)
        loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM; not ru_maxrss, which Linux carries over from the parent across fork+exec)."""
    return peak_rss() / 2**20


def current_rss_mib() -> float:
    return current_rss() / 2**20


def probe(args: argparse.Namespace) -> None:
    """Child process: one update of one variant; prints how far its peak RSS rose above the pre-update RSS."""
    variant, prompt_tokens = args.probe[0], int(args.probe[1])
    model, optimizer, samples = build(args, prompt_tokens)
    before = current_rss_mib()
    update(variant, model, optimizer, samples, args)
    print(json.dumps({"peak_rss_mib": peak_rss_mib() - before, "before_mib": before}))


def peak_memory(args: argparse.Namespace, variant: str, prompt_tokens: int) -> float:
    cmd = [sys.executable, __file__, "--probe", variant, str(prompt_tokens), "--threads", str(args.threads),
           "--group-size", str(args.group_size), "--groups", str(args.groups), "--answer-tokens",
           str(args.answer_tokens), "--hidden", str(args.hidden), "--layers", str(args.layers), "--vocab",
           str(args.vocab), "--micro-batch-tokens", str(args.micro_batch_tokens)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env={"OMP_NUM_THREADS": "1",
                         "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mib"]


def measure(args: argparse.Namespace, prompt_tokens: int) -> dict:
    model, optimizer, samples = build(args, prompt_tokens)
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for repeat in range(args.repeats + 1):  # the first round warms up
        for variant in (VARIANTS if repeat % 2 == 0 else VARIANTS[::-1]):
            seconds = update(variant, model, optimizer, samples, args)
            if repeat:
                times[variant].append(seconds)
    memory = {v: peak_memory(args, v, prompt_tokens) for v in VARIANTS}
    row = {"prompt_tokens": prompt_tokens, "seconds": times, "peak_rss_mib": memory,
           "min_s": {v: min(t) for v, t in times.items()}, "median_s": {v: statistics.median(t) for v, t in
                                                                       times.items()}}
    row["speedup"] = row["min_s"]["per_sample"] / row["min_s"]["shared"]
    row["memory_ratio"] = memory["per_sample"] / memory["shared"]
    print(json.dumps({k: row[k] for k in ("prompt_tokens", "min_s", "peak_rss_mib", "speedup", "memory_ratio")}),
          flush=True)
    return row


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    x = [r["prompt_tokens"] for r in rows]
    for variant in VARIANTS:
        left.plot(x, [r["min_s"][variant] for r in rows], marker="o", label=variant)
        right.plot(x, [r["peak_rss_mib"][variant] for r in rows], marker="o", label=variant)
    left.set(xlabel="prompt tokens", ylabel="update seconds (min)", xscale="log", yscale="log")
    right.set(xlabel="prompt tokens", ylabel="update peak RSS increase, MiB", xscale="log")
    left.legend()
    fig.suptitle("one GRPO update, G answers per prompt: shared prefix vs per sample")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.probe:
        probe(args)
        return
    rows = [measure(args, p) for p in args.prompt_tokens]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "rows": rows, "torch": torch.__version__}, indent=1) + "\n")
    plot(rows, out.with_suffix(".png"))
    at = {r["prompt_tokens"]: r for r in rows}
    key = 4096 if 4096 in at else rows[-1]["prompt_tokens"]
    print(f"update_prefix: speedup@{key}={at[key]['speedup']:.2f} memory@{key}={at[key]['memory_ratio']:.2f}")


if __name__ == "__main__":
    main()
