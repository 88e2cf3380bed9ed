"""The same plain GRPO job in spell-rl (``train.mode=rlvr``) and in TRL's ``GRPOTrainer``, step for step.

Job (both sides): the shipped tiny policy (``spell/builtin/assets/default_policy``, 1.3M-param Qwen2, fp32, CPU),
8 labelled ``doc_general_qa`` questions of the built-in world per step (the first 8 of its
``train_labelled.jsonl``), G=8 answers each (64 sequences), exactly 48 new tokens, temperature 1, top-p 1,
AdamW lr 1e-4 (weight decay 0.01, constant schedule, grad-norm clip 1), no KL, no reference model, gradient
checkpointing off, token-mean loss over the whole batch, one optimizer step per generation batch.
Prompts: the world's natural length, and the same documents stretched with the world's neutral filler
sentences (appended round-robin to the documents) to at most 2,048 and 4,096 prompt tokens.

Model context: the policy's config says ``max_position_embeddings: 4096``; a 4,096-token prompt plus 48 answer
tokens needs 4,144 positions. Both sides load a copy of the shipped folder whose config says 8,192 (same weights,
same tokenizer). The policy uses plain RoPE (no learned positions), computed from the position ids, so the copy
computes exactly what the shipped policy computes and extrapolates past 4,096 (the answers' quality is irrelevant
here: the reward below does not read it).

Reward (the same function on both sides, :func:`group_rewards`): within each group of G answers the half whose
SHA-256 of ``seed/step/index/text`` is smallest gets 1, the rest 0, so every group has reward variance and both
sides train on all 64 sequences (spell-rl drops zero-variance groups, TRL trains them with advantage 0).
Patches on the spell-rl side (benchmark only, nothing under ``spell/`` is edited):
  * ``spell.rlvr.generate_responses`` is wrapped to attach the benchmark reward to each answer and
    ``spell.rlvr.rule_score`` returns it (instead of scoring against the gold answer);
  * ``spell.rl.engine.hf.resolve_eos_ids`` returns no stop ids, so every answer has exactly 48 tokens.
On the TRL side ``generation_kwargs={"min_new_tokens": 48}`` does the same (EOS is masked until 48 tokens).

Protocol: each side runs in its own process (spell-rl: the project virtualenv, ``Trainer`` driven in-process;
TRL: its own virtualenv, installed by this script with ``pip install torch==2.13.0 trl==1.16.0``, never a
project dependency), one thread each, started afresh for every prompt length. After one warm-up step each,
the steps are interleaved A/B (spell, TRL, TRL, spell, ...): only one side computes at a time. Per step:
wall time split into generation (spell-rl: ``timing/responder_generate_s``; TRL: ``_generate_single_turn``,
i.e. ``model.generate``), update (spell-rl: ``timing/update_s``; TRL: the step minus
``_generate_and_score_completions``, i.e. forward/backward of 8 micro-batches + clip + AdamW) and other
(rewards, advantages, bookkeeping); trained sequences and tokens; peak RSS of the process (``ru_maxrss``).
Ratios are spell-rl / TRL per repetition pair, reported as min and median.

Differences that could not be removed are listed in ``DIFFERENCES`` below (and written to the results).

    .venv/bin/python benchmarks/vs_trl.py                                  # natural, 2,048, 4,096; 3 reps
    .venv/bin/python benchmarks/vs_trl.py --lengths natural --reps 1      # smoke test
Writes benchmarks/results/vs_trl.{json,md}; the last line is ``vs_trl: time@4096=X.XX memory@4096=Y.YY``
(spell-rl / TRL: median step-time ratio, peak-RSS ratio).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
GROUP_SIZE = 8
NUM_PROMPTS = 8
NEW_TOKENS = 48
LR = 1e-4
WEIGHT_DECAY = 0.01
SEED = 0
TASK = "doc_general_qa"
CONTEXT_POSITIONS = 8192
TRL_PINS = ("torch==2.13.0", "trl==1.16.0")
MARK = "@@vs_trl "  # protocol lines on a worker's stdout start with this
SIDES = ("spell", "trl")


# ---- pure helpers (tested in tests/unit/test_vs_trl.py) -------------------------------------------------------
def group_rewards(texts: Sequence[str], step: int, seed: int = SEED) -> list[float]:
    """The benchmark reward of one group: 1.0 for the half of the answers with the smallest keyed hash, else 0.0.

    The key is ``seed/step/index/text``, so identical texts still get different keys and a group of n >= 2
    always has floor(n/2) ones and at least one zero.

    >>> group_rewards(["a", "b", "c", "d"], step=1).count(1.0)
    2
    """
    keys = [hashlib.sha256(f"{seed}/{step}/{i}/{t}".encode()).hexdigest() for i, t in enumerate(texts)]
    ones = set(sorted(range(len(texts)), key=keys.__getitem__)[: len(texts) // 2])
    return [1.0 if i in ones else 0.0 for i in range(len(texts))]


def batch_rewards(prompts: Sequence[object], texts: Sequence[str], step: int, group_size: int,
                  seed: int = SEED) -> list[float]:
    """:func:`group_rewards` over a TRL batch, where each prompt's ``group_size`` answers are consecutive."""
    if len(texts) % group_size or len(prompts) != len(texts):
        raise ValueError(f"{len(texts)} answers for {len(prompts)} prompts are not groups of {group_size}")
    rewards: list[float] = []
    for start in range(0, len(texts), group_size):
        if any(p != prompts[start] for p in prompts[start : start + group_size]):
            raise ValueError(f"answers {start}..{start + group_size - 1} do not share one prompt")
        rewards += group_rewards(texts[start : start + group_size], step, seed)
    return rewards


def stretch_documents(documents: Sequence[str], sentences: Sequence[str]) -> list[str]:
    """``documents`` with ``sentences`` appended round-robin (sentence i to document i mod len), as one paragraph."""
    extra: list[list[str]] = [[] for _ in documents]
    for i, sentence in enumerate(sentences):
        extra[i % len(documents)].append(sentence)
    return [doc + ("\n" + " ".join(more) if more else "") for doc, more in zip(documents, extra)]


def largest_fitting(count_tokens, limit: int, high: int) -> int:
    """The largest k in [0, high] with ``count_tokens(k) <= limit`` (``count_tokens`` non-decreasing in k)."""
    if count_tokens(0) > limit:
        raise ValueError(f"the unstretched prompt has {count_tokens(0)} tokens, over the target {limit}")
    low = 0
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if count_tokens(mid) <= limit else (low, mid - 1)
    return low


def ratio_summary(ours: Sequence[float], theirs: Sequence[float]) -> dict[str, float]:
    """Min and median of the per-repetition ratios ``ours[i] / theirs[i]``."""
    ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
    return {"min": min(ratios), "median": statistics.median(ratios)}


def summarize_steps(steps: Sequence[dict]) -> dict[str, float]:
    """Medians of a side's measured steps, plus per-sequence and per-second figures."""
    med = {k: statistics.median(s[k] for s in steps) for k in ("total_s", "generate_s", "update_s", "other_s",
                                                                "num_sequences", "sequence_tokens",
                                                                "completion_tokens")}
    med["update_per_sequence_ms"] = statistics.median(1e3 * s["update_s"] / s["num_sequences"] for s in steps)
    med["step_per_sequence_ms"] = statistics.median(1e3 * s["total_s"] / s["num_sequences"] for s in steps)
    med["tokens_per_s"] = statistics.median(s["sequence_tokens"] / s["total_s"] for s in steps)
    med["generated_tokens_per_s"] = statistics.median(s["completion_tokens"] / s["generate_s"] for s in steps)
    med["peak_rss_mb"] = max(s["peak_rss_mb"] for s in steps)
    return med


def compare(spell_steps: Sequence[dict], trl_steps: Sequence[dict]) -> dict[str, dict[str, float] | float]:
    """spell-rl / TRL ratios over the interleaved repetitions (peak RSS: one value per process)."""
    out: dict[str, dict[str, float] | float] = {}
    for key in ("total_s", "generate_s", "update_s"):
        out[key.removesuffix("_s")] = ratio_summary([s[key] for s in spell_steps], [s[key] for s in trl_steps])
    out["update_per_sequence"] = ratio_summary([s["update_s"] / s["num_sequences"] for s in spell_steps],
                                               [s["update_s"] / s["num_sequences"] for s in trl_steps])
    out["peak_rss"] = max(s["peak_rss_mb"] for s in spell_steps) / max(s["peak_rss_mb"] for s in trl_steps)
    return out


def markdown_table(lengths: Sequence[dict]) -> str:
    """Absolute medians (spell-rl / TRL) and spell-rl/TRL ratios (median, min in brackets) per prompt length."""
    def pair(a: float, b: float, fmt: str) -> str:
        return f"{a:{fmt}} / {b:{fmt}}"

    def ratio(r: dict[str, float]) -> str:
        return f"{r['median']:.2f} ({r['min']:.2f})"

    head = ("| prompt tokens | step s | generation s | update s | update ms / trained seq | trained seqs | "
            "tokens/s | peak RSS GB | step ratio | generation ratio | update ratio | update/seq ratio | RSS ratio |")
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for entry in lengths:
        a, b, r = entry["spell"]["summary"], entry["trl"]["summary"], entry["ratios"]
        rows.append("| " + " | ".join([
            f"{entry['prompt_tokens_mean']:,.0f} ({entry['label']})", pair(a["total_s"], b["total_s"], ".2f"),
            pair(a["generate_s"], b["generate_s"], ".2f"), pair(a["update_s"], b["update_s"], ".2f"),
            pair(a["update_per_sequence_ms"], b["update_per_sequence_ms"], ".1f"),
            pair(a["num_sequences"], b["num_sequences"], ".0f"), pair(a["tokens_per_s"], b["tokens_per_s"], ",.0f"),
            pair(a["peak_rss_mb"] / 1024, b["peak_rss_mb"] / 1024, ".2f"), ratio(r["total"]), ratio(r["generate"]),
            ratio(r["update"]), ratio(r["update_per_sequence"]), f"{r['peak_rss']:.2f}"]) + " |")
    return "\n".join(rows) + "\n"


def headline(lengths: Sequence[dict]) -> str:
    """``vs_trl: time@N=X.XX memory@N=Y.YY`` for the longest prompt target (4,096 in the full run)."""
    entry = max(lengths, key=lambda e: e["target_tokens"] or 0)
    n = entry["target_tokens"] or round(entry["prompt_tokens_mean"])
    return f"vs_trl: time@{n}={entry['ratios']['total']['median']:.2f} memory@{n}={entry['ratios']['peak_rss']:.2f}"


# ---- inside a worker ------------------------------------------------------------------------------------------
def emit(payload: dict) -> None:
    print(MARK + json.dumps(payload), flush=True)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def wait_for_step() -> None:
    command = sys.stdin.readline().strip()
    if command != "step":
        raise SystemExit(0 if command in ("quit", "") else f"unknown command {command!r}")


class ScoredText(str):
    """An answer's text carrying the benchmark reward (read by the patched ``spell.rlvr.rule_score``)."""

    reward: float


def spell_worker(spec: dict, out_dir: Path) -> None:
    """spell-rl side: ``Trainer`` in this process, ``train.mode=rlvr``, one ``train_step`` per ``step`` command."""
    import dataclasses

    import torch

    torch.set_num_threads(1)
    import spell.rl.engine.hf as hf
    import spell.rlvr as rlvr
    from spell.config import load_config
    from spell.trainer import Trainer

    width = max(len(p["ids"]) for p in spec["prompts"]) + NEW_TOKENS
    prompt_tokens = sum(len(p["ids"]) for p in spec["prompts"])  # every step trains all 8 prompts' groups
    overrides = [
        "train.mode=rlvr", f"data.labelled_files=[{spec['labelled']}]", f"data.tasks=[{TASK}]",
        f"verifier.tasks=[{TASK}]",
        f"model.path={spec['policy']}", "model.gradient_checkpointing=false", "model.dtype=float32",
        f"data.max_prompt_tokens={CONTEXT_POSITIONS}", f"data.questions_per_round={NUM_PROMPTS}",
        f"train.batch_groups={NUM_PROMPTS}", "train.max_rounds=1", f"train.seed={SEED}", "train.device=cpu",
        f"responder.group_size={GROUP_SIZE}", f"responder.max_new_tokens={NEW_TOKENS}",
        "sampling.temperature=1.0", "sampling.top_p=1.0", f"grpo.lr={LR}", f"grpo.weight_decay={WEIGHT_DECAY}",
        "grpo.kl_coef=0", "grpo.warmup_steps=0", "grpo.max_grad_norm=1.0",
        f"grpo.micro_batch_tokens={GROUP_SIZE * width}", f"engine.max_batch_prompts={NUM_PROMPTS}",
        "eval.heldout_files=[]", "logging.dump_samples_every=0", "logging.progress=false",
        f"output_dir={out_dir / 'spell_run'}", *spec.get("spell_overrides", [])]
    cfg = load_config("builtin", overrides)
    step_now = [0]
    original = rlvr.generate_responses

    def generate_and_reward(records, ctx) -> None:
        original(records, ctx)
        for record in records:
            if record.responses:
                rewards = group_rewards([c.text for c in record.responses], step_now[0])
                record.responses = [dataclasses.replace(c, text=_scored(c.text, r))
                                    for c, r in zip(record.responses, rewards, strict=True)]

    rlvr.generate_responses = generate_and_reward
    rlvr.rule_score = lambda task, text, gold: text.reward
    hf.resolve_eos_ids = lambda tokenizer, model=None: frozenset()  # fixed-length answers
    trainer = Trainer(cfg)
    emit({"ready": True, "peak_rss_mb": peak_rss_mb(), "torch": torch.__version__,
          "shared_prefix": getattr(cfg.grpo, "shared_prefix", None), "micro_batch_tokens": cfg.grpo.micro_batch_tokens,
          "attn_implementation": cfg.model.attn_implementation})
    while True:
        wait_for_step()
        step_now[0] += 1
        start = time.perf_counter()
        metrics = trainer.train_step(step_now[0])
        total = time.perf_counter() - start
        generate, update = metrics.get("timing/responder_generate_s", 0.0), metrics.get("timing/update_s", 0.0)
        sequences = int(metrics.get("train/num_sequences", 0))
        emit({"total_s": total, "generate_s": generate, "update_s": update, "other_s": total - generate - update,
              "num_sequences": sequences, "completion_tokens": int(metrics.get("train/num_tokens", 0)),
              "sequence_tokens": int(metrics.get("train/num_tokens", 0)) + GROUP_SIZE * prompt_tokens,
              "loss": metrics.get("train/loss"), "skipped": metrics.get("train/skipped"),
              "peak_rss_mb": peak_rss_mb()})


def _scored(text: str, reward: float) -> ScoredText:
    scored = ScoredText(text)
    scored.reward = reward
    return scored


def trl_worker(spec: dict, out_dir: Path, steps: int) -> None:
    """TRL side: ``GRPOTrainer.train()`` for ``steps`` steps, each started by a ``step`` command."""
    import torch

    torch.set_num_threads(1)
    import transformers
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(spec["policy"])
    rows = [{"prompt": [{"role": "user", "content": p["text"]}]} for p in spec["prompts"]]
    for row, prompt in zip(rows, spec["prompts"]):
        ids = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True)
        ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
        if ids != prompt["ids"]:
            raise SystemExit("TRL's tokenization of a prompt differs from spell-rl's: the comparison would be unfair")
    model = AutoModelForCausalLM.from_pretrained(spec["policy"], dtype=torch.float32)
    timer: dict[str, float] = {}

    class TimedGRPOTrainer(GRPOTrainer):
        def _generate_single_turn(self, *args, **kwargs):
            start = time.perf_counter()
            out = super()._generate_single_turn(*args, **kwargs)
            timer["generate_s"] = timer.get("generate_s", 0.0) + time.perf_counter() - start
            return out

        def _generate_and_score_completions(self, inputs):
            start = time.perf_counter()
            out = super()._generate_and_score_completions(inputs)
            timer["rollout_s"] = timer.get("rollout_s", 0.0) + time.perf_counter() - start
            timer["num_sequences"] = out["completion_ids"].shape[0]
            timer["completion_tokens"] = int(out["completion_mask"].sum())
            timer["sequence_tokens"] = timer["completion_tokens"] + int(out["prompt_mask"].sum())
            timer["padded_width"] = out["prompt_ids"].shape[1] + out["completion_ids"].shape[1]
            return out

    class Lockstep(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            wait_for_step()
            timer.clear()
            timer["start"] = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            total = time.perf_counter() - timer.pop("start")
            rollout = timer.pop("rollout_s")
            emit({"total_s": total, "generate_s": timer["generate_s"], "update_s": total - rollout,
                  "other_s": rollout - timer["generate_s"], **{k: v for k, v in timer.items() if k != "generate_s"},
                  "frac_reward_zero_std": trainer._metrics["train"]["frac_reward_zero_std"][-1],
                  "peak_rss_mb": peak_rss_mb()})

    def reward(prompts, completions, trainer_state, **_):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return batch_rewards([json.dumps(p) for p in prompts], texts, trainer_state.global_step + 1, GROUP_SIZE)

    config = GRPOConfig(
        output_dir=str(out_dir / "trl_run"), per_device_train_batch_size=GROUP_SIZE,
        gradient_accumulation_steps=NUM_PROMPTS, num_generations=GROUP_SIZE, max_completion_length=NEW_TOKENS,
        temperature=1.0, top_p=1.0, top_k=0, generation_kwargs={"min_new_tokens": NEW_TOKENS},
        learning_rate=LR, weight_decay=WEIGHT_DECAY, lr_scheduler_type="constant", warmup_steps=0,
        max_grad_norm=1.0, beta=0.0, num_iterations=1, loss_type="dapo", scale_rewards="group",
        activation_checkpointing=False, bf16=False, use_cpu=True, max_steps=steps, logging_steps=10**6,
        save_strategy="no", report_to="none", disable_tqdm=True, seed=SEED, dataloader_num_workers=0)
    trainer = TimedGRPOTrainer(model=model, reward_funcs=reward, args=config, train_dataset=Dataset.from_list(rows),
                               processing_class=tokenizer, callbacks=[Lockstep()])
    emit({"ready": True, "peak_rss_mb": peak_rss_mb(), "torch": torch.__version__, "trl": trl.__version__,
          "transformers": transformers.__version__, "optim": str(config.optim),
          "activation_checkpointing": bool(model.is_gradient_checkpointing),
          "attn_implementation": model.config._attn_implementation})
    trainer.train()


# ---- orchestration (project virtualenv) -----------------------------------------------------------------------
def ensure_trl_venv(venv: Path) -> Path:
    """The TRL virtualenv's python, created and installed with ``TRL_PINS`` if it is missing or wrong."""
    python = venv / "bin" / "python"
    probe = "import torch, trl; print(torch.__version__.split('+')[0], trl.__version__)"
    want = " ".join(p.split("==")[1] for p in TRL_PINS)
    if python.exists():
        found = subprocess.run([str(python), "-c", probe], capture_output=True, text=True)
        if found.returncode == 0 and found.stdout.strip() == want:
            return python
    print(f"installing {' '.join(TRL_PINS)} into {venv} (its own virtualenv, about a minute)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *TRL_PINS], check=True)
    return python


def prepare_inputs(work: Path, lengths: Sequence[str]) -> list[dict]:
    """The policy copy and, per prompt length, the labelled file (spell-rl) and the prompt texts and ids (TRL)."""
    import random

    from transformers import AutoTokenizer

    from spell.builtin.defaults import SHIPPED_POLICY, ensure_world
    from spell.builtin.world.filler import filler_sentence
    from spell.evaluate.formats import load_generic
    from spell.prompts import join_documents
    from spell.prompts.responder import render_responder_prompt
    from spell.rl.engine.base import encode_chat_prompt

    policy = work / "policy"
    shutil.rmtree(policy, ignore_errors=True)
    shutil.copytree(SHIPPED_POLICY, policy)
    config = json.loads((policy / "config.json").read_text())
    config["max_position_embeddings"] = CONTEXT_POSITIONS
    (policy / "config.json").write_text(json.dumps(config, indent=2))
    tokenizer = AutoTokenizer.from_pretrained(policy)
    items = [i for i in load_generic(ensure_world() / "train_labelled.jsonl") if i.task == TASK][:NUM_PROMPTS]
    rng = random.Random(SEED)
    filler = [filler_sentence(rng) for _ in range(CONTEXT_POSITIONS // 4)]

    def prompt_ids(documents: list[str], question: str) -> list[int]:
        return encode_chat_prompt(tokenizer, render_responder_prompt(TASK, join_documents(documents), question))

    specs = []
    for label in lengths:
        target = None if label == "natural" else int(label)
        records, prompts = [], []
        for item in items:
            documents = list(item.documents)
            if target is not None:
                count = largest_fitting(lambda k, d=documents, q=item.question: len(prompt_ids(
                    stretch_documents(d, filler[:k]), q)), target, len(filler))
                documents = stretch_documents(documents, filler[:count])
            text = render_responder_prompt(TASK, join_documents(documents), item.question)
            records.append({"id": item.id, "task": TASK, "documents": documents, "question": item.question,
                            "answers": list(item.answers)})
            prompts.append({"text": text, "ids": encode_chat_prompt(tokenizer, text)})
        labelled = work / f"labelled_{label}.jsonl"
        labelled.write_text("".join(json.dumps(r) + "\n" for r in records))
        spec = {"label": label, "target_tokens": target, "policy": str(policy), "labelled": str(labelled),
                "prompts": prompts}
        (work / f"spec_{label}.json").write_text(json.dumps(spec))
        specs.append(spec)
    return specs


class Worker:
    """One side's process: ``step`` commands in, protocol lines out (other output goes to its log file)."""

    def __init__(self, side: str, python: str, spec_path: Path, steps: int, log: Path, extra: Sequence[str]):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
               "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "PYTHONUNBUFFERED": "1", "DISABLE_MLFLOW_INTEGRATION": "TRUE", "WANDB_DISABLED": "true"}
        self.side, self.log = side, log.open("w")
        self.proc = subprocess.Popen(
            [python, str(Path(__file__).resolve()), "--worker", side, "--spec", str(spec_path), "--steps",
             str(steps), *extra], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
            env=env, cwd=ROOT)

    def read(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith(MARK):
                return json.loads(line[len(MARK):])
            self.log.write(line)
        self.log.flush()
        raise RuntimeError(f"the {self.side} worker exited ({self.proc.wait()}); see {self.log.name}")

    def step(self) -> dict:
        self.proc.stdin.write("step\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def measure(spec: dict, work: Path, trl_python: Path, reps: int, spell_overrides: Sequence[str]) -> dict:
    """One prompt length: both workers started, one warm-up step each, then ``reps`` interleaved pairs."""
    spec_path = work / f"spec_{spec['label']}.json"
    out = work / f"run_{spec['label']}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    extra = [f"--out-dir={out}", *(f"--spell-override={o}" for o in spell_overrides)]
    steps = reps + 1
    workers, setup = {}, {}
    try:
        for side, python in (("spell", sys.executable), ("trl", str(trl_python))):  # one at a time: 2 cores
            workers[side] = Worker(side, python, spec_path, steps, out / f"{side}.log", extra)
            setup[side] = workers[side].read()
        warmup = {side: workers[side].step() for side in SIDES}
        measured: dict[str, list[dict]] = {side: [] for side in SIDES}
        for rep in range(reps):
            for side in (SIDES if rep % 2 == 0 else SIDES[::-1]):
                measured[side].append(workers[side].step())
                print(f"  {spec['label']} rep {rep + 1}/{reps} {side}: {measured[side][-1]['total_s']:.2f} s",
                      flush=True)
    finally:
        for worker in workers.values():
            worker.close()
    lengths = [len(p["ids"]) for p in spec["prompts"]]
    return {"label": spec["label"], "target_tokens": spec["target_tokens"],
            "prompt_tokens_mean": statistics.mean(lengths), "prompt_tokens_min": min(lengths),
            "prompt_tokens_max": max(lengths),
            **{side: {"setup": setup[side], "warmup": warmup[side], "steps": measured[side],
                      "summary": summarize_steps(measured[side])} for side in SIDES},
            "ratios": compare(measured["spell"], measured["trl"])}


DIFFERENCES = [
    "generation: spell-rl prefills each prompt once and shares its KV cache over the G answers; TRL's "
    "model.generate repeats every prompt G times in one 64-row batch",
    "update: spell-rl packs micro-batches by token budget (8 x (longest prompt + 48), TRL's micro-batch size) and "
    "with grpo.shared_prefix encodes a group's prompt once; TRL runs 8 micro-batches of 8 shuffled sequences, "
    "padded to the longest prompt of the whole batch",
    "stopping: spell-rl samples past EOS (no stop ids), TRL masks EOS until 48 tokens (min_new_tokens); the work "
    "is the same (64 x 48 answer tokens), the sampled distributions differ slightly",
    "rewards: the same function, applied to each side's own (independently sampled) answers; 4 of 8 per group",
    "optimizer implementation (spell-rl torch.optim.AdamW default; TRL the Trainer's optim) and imports "
    "(TRL also loads trl, datasets, accelerate) differ; the latter shows in the baseline RSS",
    "model context: a copy of the shipped policy with max_position_embeddings 8192 (plain RoPE, same weights) on "
    "both sides, so 4,096-token prompts + 48 answer tokens fit",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", nargs="+", default=["natural", "2048", "4096"],
                        help="'natural' (the world's prompts) and/or prompt-token targets")
    parser.add_argument("--reps", type=int, default=3, help="interleaved measured steps per side (+1 warm-up)")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/spell-rl-vs-trl"))
    parser.add_argument("--trl-venv", type=Path, default=Path("/tmp/spell-rl-trl-venv"),
                        help="TRL's own virtualenv (created with torch==2.13.0 trl==1.16.0 if missing)")
    parser.add_argument("--spell-override", action="append", default=[],
                        help="extra spell-rl config override, e.g. grpo.shared_prefix=false (repeatable)")
    parser.add_argument("--name", default="vs_trl", help="results file stem under benchmarks/results/")
    parser.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out-dir", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        spec = {**json.loads(args.spec.read_text()), "spell_overrides": args.spell_override}
        if args.worker == "spell":
            spell_worker(spec, args.out_dir)
        else:
            trl_worker(spec, args.out_dir, args.steps)
        return
    args.work_dir.mkdir(parents=True, exist_ok=True)
    trl_python = ensure_trl_venv(args.trl_venv)
    started = time.time()
    specs = prepare_inputs(args.work_dir, args.lengths)
    results = []
    for spec in specs:
        print(f"prompt length {spec['label']}: {statistics.mean(len(p['ids']) for p in spec['prompts']):.0f} tokens "
              f"(mean of {len(spec['prompts'])})", flush=True)
        results.append(measure(spec, args.work_dir, trl_python, args.reps, args.spell_override))
    report = {
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs ({platform.processor() or platform.platform()})",
        "threads_per_process": 1, "wall_s": time.time() - started,
        "settings": {"group_size": GROUP_SIZE, "prompts_per_step": NUM_PROMPTS, "new_tokens": NEW_TOKENS,
                     "temperature": 1.0, "top_p": 1.0, "lr": LR, "weight_decay": WEIGHT_DECAY, "kl": 0,
                     "gradient_checkpointing": False, "reps": args.reps, "warmup_steps_per_side": 1,
                     "task": TASK, "context_positions": CONTEXT_POSITIONS, "trl_pins": list(TRL_PINS),
                     "spell_overrides": args.spell_override},
        "spell_rl_tree": spell_tree(), "differences": DIFFERENCES, "lengths": results,
        "headline": headline(results)}
    table = write_report(report, args.name)
    print(table)
    print(report["headline"])


def spell_tree() -> dict[str, object]:
    """The commit the spell-rl side ran from and the files under ``spell/`` that differed from it (read-only git)."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT)
        return done.stdout.strip() if done.returncode == 0 else ""

    return {"commit": git("rev-parse", "HEAD"), "modified": git("status", "--porcelain", "--", "spell").splitlines()}


def write_report(report: dict, name: str) -> str:
    """``benchmarks/results/NAME.json`` and ``NAME.md``; returns the markdown table."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown_table(report["lengths"])
    notes = "\n".join(f"- {d}" for d in report["differences"])
    settings = report["settings"]
    (RESULTS / f"{name}.md").write_text(
        f"# spell-rl vs TRL {TRL_PINS[1].split('==')[1]} GRPOTrainer (RLVR job, G={GROUP_SIZE}, {NUM_PROMPTS} "
        f"prompts/step, {NEW_TOKENS} new tokens)\n\nMachine: {report['machine']}, 1 thread per process, A/B "
        f"interleaved, {settings['reps']} measured steps per side after 1 warm-up, {report['wall_s'] / 60:.0f} min "
        f"in all. Cells: spell-rl / TRL (medians); ratios spell-rl / TRL, median (min) over the repetition pairs. "
        f"Both sides trained all 64 sequences of every step (64 x 48 answer tokens); tokens/s counts "
        f"64 x (prompt + 48) tokens per second of step time; peak RSS is each process's ru_maxrss.\n\n{table}\n"
        f"Differences that remain:\n{notes}\n\n`{report['headline']}`\n")
    return table

if __name__ == "__main__":
    main()
