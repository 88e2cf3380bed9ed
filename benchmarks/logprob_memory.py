"""Peak memory and time of completion log-probs + backward: spell's chunked recompute vs the realistic baseline.

Variants, each in a fresh subprocess so one cannot inherit the other's allocator state:
  sliced   THE BASELINE: LM head only at the completion positions, in one piece, no recompute (what TRL's
           ``logits_to_keep`` and verl do)
  chunked  spell.rl.policy.sequence_logprobs: completion positions in chunks (one run per --chunk-tokens value,
           the first is the headline: 256 = grpo.logprob_chunk_tokens' default), logits recomputed in backward
  full     model(...).logits for all L positions -> log_softmax -> gather (a naive trainer; for reference only)
Memory is the peak RSS growth during the step on CPU (ru_maxrss), or torch.cuda.max_memory_allocated growth
on GPU. The decoder is tiny (hidden 64) so the LM head dominates, as it does for long sequences of real models.

    .venv/bin/python benchmarks/logprob_memory.py            # vocab 151,936, 4,096 tokens, 1,024 completion
Writes benchmarks/results/logprob_memory.json and prints one JSON line and one human line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("sliced", "chunked", "full")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=151_936, help="vocab size (Qwen2.5: 151,936)")
    parser.add_argument("--seq-len", type=int, default=4096, help="prompt + completion tokens")
    parser.add_argument("--completion-tokens", type=int, default=1024, help="scored tokens at the end")
    parser.add_argument("--hidden", type=int, default=64, help="hidden size of the stand-in decoder")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--chunk-tokens", type=int, nargs="+", default=[256, 1024],
                        help="grpo.logprob_chunk_tokens values to run; the first is used for the headline ratios")
    parser.add_argument("--repeats", type=int, default=2, help="timed steps per variant (the first also sets memory)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "logprob_memory.json"))
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _build(args: argparse.Namespace, torch):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=2 * args.hidden,
                         num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=args.seq_len, tie_word_embeddings=True)
    model = Qwen2ForCausalLM(config).float().to(args.device)
    input_ids = torch.randint(0, args.vocab, (1, args.seq_len), device=args.device)
    attention_mask = torch.ones_like(input_ids)
    completion_mask = torch.zeros_like(input_ids, dtype=torch.bool)
    completion_mask[:, -args.completion_tokens:] = True
    return model, input_ids, attention_mask, completion_mask


def _step(variant: str, args: argparse.Namespace, model, input_ids, attention_mask, completion_mask, torch):
    """One forward + backward of the summed completion log-probs."""
    from spell.rl.policy import sequence_logprobs

    scored = completion_mask[:, 1:]
    if variant == "chunked":
        logprobs, _ = sequence_logprobs(model, input_ids, attention_mask, completion_mask, args.chunk_tokens[0])
        total = logprobs.sum()
    elif variant == "full":
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits  # [1, L, V]
        logprobs_all = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        total = logprobs_all.gather(-1, input_ids[:, 1:, None]).squeeze(-1)[scored].sum()
    else:  # sliced
        hidden = model.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        logits = model.lm_head(hidden[:, :-1][scored]).float()  # [M, V]
        total = torch.log_softmax(logits, dim=-1).gather(-1, input_ids[:, 1:][scored][:, None]).sum()
    total.backward()
    model.zero_grad(set_to_none=True)
    return total.item()


def run_worker(args: argparse.Namespace) -> dict:
    """Measure one variant in this process; returns peak memory growth (bytes) and step times (s)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import torch

    model, *batch = _build(args, torch)
    cuda = args.device == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = max(_rss_bytes(), 0)
    times, value = [], 0.0
    for repeat in range(args.repeats):
        start = time.perf_counter()
        value = _step(args.worker, args, model, *batch, torch)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        if repeat == 0:
            peak = (torch.cuda.max_memory_allocated() if cuda else _peak_rss_bytes()) - base
    return {"variant": args.worker, "peak_bytes": peak, "times_s": times, "logprob_sum": value}


def run_variant(variant: str, argv: list[str], chunk_tokens: int) -> dict:
    """Run one variant in a fresh interpreter and parse its JSON line."""
    command = [sys.executable, __file__, *argv, "--worker", variant, "--chunk-tokens", str(chunk_tokens)]
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"variant {variant} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(args)))
        return
    results = {}
    for variant in args.variants:
        for chunk_tokens in args.chunk_tokens if variant == "chunked" else args.chunk_tokens[:1]:
            name = f"chunked@{chunk_tokens}" if variant == "chunked" else variant
            results[name] = run_variant(variant, argv, chunk_tokens)
    report = {
        "benchmark": "logprob_memory",
        "config": {key: value for key, value in vars(args).items() if key not in ("worker", "output", "variants")},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "variants": {name: {"peak_mb": r["peak_bytes"] / 2**20, "time_s": min(r["times_s"]),
                            "times_s": r["times_s"], "logprob_sum": r["logprob_sum"]} for name, r in results.items()},
    }
    variants = report["variants"]
    chunked = variants.get(f"chunked@{args.chunk_tokens[0]}")
    if chunked and "sliced" in variants:  # the headline: against logits at the scored positions only
        report["memory_ratio_sliced_over_chunked"] = variants["sliced"]["peak_mb"] / chunked["peak_mb"]
        report["time_ratio_chunked_over_sliced"] = chunked["time_s"] / variants["sliced"]["time_s"]
    if chunked and "full" in variants:
        report["memory_ratio_full_over_chunked"] = variants["full"]["peak_mb"] / chunked["peak_mb"]
        report["time_ratio_chunked_over_full"] = chunked["time_s"] / variants["full"]["time_s"]
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))
    parts = [f"{name}: {v['peak_mb']:.0f} MB peak, {v['time_s']:.2f} s/step" for name, v in variants.items()]
    line = f"vocab {args.vocab}, {args.seq_len} tokens ({args.completion_tokens} scored) on {args.device}: "
    line += "; ".join(parts)
    if "memory_ratio_sliced_over_chunked" in report:
        line += (f". sliced/chunked@{args.chunk_tokens[0]} memory {report['memory_ratio_sliced_over_chunked']:.1f}x, "
                 f"chunked/sliced time {report['time_ratio_chunked_over_sliced']:.2f}x")
    if "memory_ratio_full_over_chunked" in report:
        line += f" (full logits: {report['memory_ratio_full_over_chunked']:.1f}x)"
    print(line)


if __name__ == "__main__":
    main()
