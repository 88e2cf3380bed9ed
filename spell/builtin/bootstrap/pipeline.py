"""The one-time bootstrap of the built-in tiny policy (issue 5 deliverable 2), stage by stage.

World train sets -> BPE tokenizer -> random Qwen2 -> (1) synthetic copy / key-value / lookup pretraining ->
(2) packed 1-hop document QA, short contexts then whole sets -> (3) role transcripts (questioner, responder,
verifier) mixed with QA -> save -> reload with ``spell.rl.policy.load_policy`` -> measurements. Deterministic for
a seed, a thread count and a machine type; the last 50 train sets are a validation split (never trained on).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from spell.builtin.bootstrap import eval as measure
from spell.builtin.bootstrap.config import BootstrapConfig
from spell.builtin.bootstrap.synthetic import (
    SyntheticVocab,
    copy_example,
    kv_example,
    lookup_example,
    synthetic_example,
)
from spell.builtin.bootstrap.train import Stage, encode_transcript, run_stage, token_accuracy
from spell.builtin.bootstrap.transcripts import (
    TASKS,
    TRANSCRIPTS_VERSION,
    packed_qa_transcript,
    pick_item,
    questioner_transcript,
    responder_target,
    responder_transcript,
    verifier_transcript,
)
from spell.builtin.bootstrap.worldqa import WorldSet, train_sets
from spell.prompts import load_templates

logger = logging.getLogger(__name__)

NUM_VALIDATION_SETS = 50
NOT_IN_WEIGHTS = ("out", "eval", "eval_samples", "questioner_per_task", "probe_per_task")
MAX_LEN = 1536
COPY_ITEMS = 48  # longest random sequence of the copy task
QA_VERIFIER_SHARE = 0.2  # verifier chats among the stage-2 examples
ROLES_MIX = (0.3, 0.35, 0.2, 0.15)  # stage 3: responder, questioner, verifier, packed QA
RETRIEVAL_MIX = (0.25, 0.35, 0.4, 0.0)  # copy, kv, lookup, doclm (doclm's many tokens would drown the rest)


def _tokenizer_texts(sets: list[WorldSet], templates: Any, rng: random.Random) -> list[str]:
    texts = [doc for ws in sets[:400] for doc in ws.documents]
    texts += list(dataclasses.asdict(templates).values())
    for ws in sets[:300]:  # answer formats, so their pieces get merges
        for task in TASKS:
            item = pick_item(ws, task, tuple(range(len(ws.documents))), rng, multi_hop=0.3)
            if item is not None:
                texts.append(responder_target(item))
    return texts


def _synthetic_stages(cfg: BootstrapConfig, tokenizer: Any, sets: list[WorldSet]) -> list[Stage]:
    """Stage 1a (copy only, until induction forms) and 1b (copy + key-value + document lookup)."""
    ids = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    vocab = SyntheticVocab(3, len(tokenizer), ids("\n")[0], ids(":")[0], ids(".")[0])
    documents = [ids(doc) for ws in sets[:400] for doc in ws.documents]
    probe_rng = random.Random(f"{cfg.seed}/synthetic-check")
    probes = {"copy": [copy_example(probe_rng, vocab, max_items=COPY_ITEMS) for _ in range(48)],
              "kv": [kv_example(probe_rng, vocab) for _ in range(48)],
              "lookup": [lookup_example(probe_rng, vocab, documents) for _ in range(48)]}

    def check(model: Any) -> dict:
        result = {}
        for name, examples in probes.items():
            token, exact = token_accuracy(model, examples, tokenizer.pad_token_id)
            result[f"{name}_token_acc"], result[f"{name}_exact"] = round(token, 4), round(exact, 4)
        return result

    copy_stage = Stage("copy", cfg.copy_steps, cfg.synthetic_lr, cfg.batch_tokens,
                       lambda rng: copy_example(rng, vocab, max_items=COPY_ITEMS), check=check, check_every=100,
                       stop_when=lambda m: m["copy_token_acc"] >= 0.97)
    mixed = Stage("retrieval", cfg.retrieval_steps, cfg.synthetic_lr, cfg.batch_tokens,
                  lambda rng: synthetic_example(rng, vocab, documents, weights=RETRIEVAL_MIX), check=check,
                  check_every=100, stop_when=lambda m: m["kv_exact"] >= 0.9 and m["lookup_exact"] >= 0.9)
    return [copy_stage, mixed]


def _validation_check(tokenizer: Any, sets: list[WorldSet], templates: Any, seed: int):
    """Teacher-forced exact-answer rate of 1-hop responder transcripts on the validation sets."""
    rng = random.Random(f"{seed}/validation")
    examples = {}
    for task in TASKS:
        chats = []
        for ws in sets:
            item = pick_item(ws, task, tuple(range(len(ws.documents))), rng, multi_hop=0.0)
            chats.append(encode_transcript(tokenizer, responder_transcript(ws, item, templates)))
        examples[task] = [c for c in chats if c is not None][:32]

    def check(model: Any) -> dict:
        return {f"{task}_exact": round(token_accuracy(model, ex, tokenizer.pad_token_id)[1], 4)
                for task, ex in examples.items()}

    return check


def _roles_source(tokenizer: Any, sets: list[WorldSet], templates: Any):
    def source(rng: random.Random):
        ws, task = rng.choice(sets), rng.choice(TASKS)
        role = rng.choices(("responder", "questioner", "verifier", "qa"), weights=ROLES_MIX)[0]
        if role == "responder":
            item = pick_item(ws, task, tuple(range(len(ws.documents))), rng, multi_hop=0.1)
            chat = responder_transcript(ws, item, templates) if item else None
        elif role == "questioner":
            chat = questioner_transcript(ws, task, templates, rng)
        elif role == "verifier":
            chat = verifier_transcript(ws, task, templates, rng)
        else:
            chat = packed_qa_transcript(ws, templates, rng, max_docs=5, num_questions=6)
        return encode_transcript(tokenizer, chat, MAX_LEN) if chat else None

    return source


def _qa_source(tokenizer: Any, sets: list[WorldSet], templates: Any, max_docs: int, num_questions: int):
    """Packed 1-hop QA chats, and a share of verifier chats (short; comparing two answers needs many)."""
    def source(rng: random.Random):
        ws = rng.choice(sets)
        if rng.random() < QA_VERIFIER_SHARE:
            chat = verifier_transcript(ws, rng.choice(TASKS), templates, rng)
        else:
            chat = packed_qa_transcript(ws, templates, rng, max_docs=max_docs, num_questions=num_questions)
        return encode_transcript(tokenizer, chat, MAX_LEN) if chat else None

    return source


def train_policy(cfg: BootstrapConfig, out: Path) -> dict:
    """Build the tokenizer and model, run the stages, save to ``out``; returns the stage reports."""
    from spell.builtin.tiny import build_tiny_model, build_tiny_tokenizer, save_policy

    templates = load_templates(None)
    sets = train_sets(cfg.world_seed, cfg.num_sets)
    train, valid = sets[:-NUM_VALIDATION_SETS], sets[-NUM_VALIDATION_SETS:]
    tokenizer = build_tiny_tokenizer(_tokenizer_texts(train, templates, random.Random(cfg.seed)), cfg.vocab_size)
    model = build_tiny_model(tokenizer, hidden_size=cfg.hidden, num_layers=cfg.layers, num_heads=cfg.heads,
                             num_kv_heads=cfg.kv_heads, seed=cfg.seed)
    logger.info("model: %d parameters, vocab %d", sum(p.numel() for p in model.parameters()), len(tokenizer))
    check = _validation_check(tokenizer, valid, templates, cfg.seed)
    stages = [
        *_synthetic_stages(cfg, tokenizer, train),
        Stage("qa_short", cfg.qa_short_steps, cfg.qa_lr, cfg.batch_tokens,
              _qa_source(tokenizer, train, templates, 2, 6), check=check),
        Stage("qa_full", cfg.qa_steps, cfg.qa_lr, cfg.batch_tokens,
              _qa_source(tokenizer, train, templates, 5, 8), check=check),
        Stage("roles", cfg.roles_steps, cfg.roles_lr, cfg.batch_tokens,
              _roles_source(tokenizer, train, templates), check=check),
    ]
    reports = _run_stages(cfg, model, tokenizer, stages)
    save_policy(model, tokenizer, out)
    return {"parameters": sum(p.numel() for p in model.parameters()), "vocab_size": len(tokenizer),
            "stages": reports}


def _work_dir(cfg: BootstrapConfig) -> Path:
    """Where finished stages are kept, keyed by every setting that changes the weights (not out / eval)."""
    from spell.builtin.defaults import cache_root

    key = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_IN_WEIGHTS}
    key["transcripts"] = TRANSCRIPTS_VERSION  # a new target format never resumes an old format's stages
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return cache_root() / "bootstrap-work" / digest


def _run_stages(cfg: BootstrapConfig, model: Any, tokenizer: Any, stages: list[Stage]) -> dict:
    """Run the stages; each finished stage's weights and report are kept, so a killed run resumes after the
    last finished stage with the same result (every stage starts a fresh optimizer and its own seeded data)."""
    work = _work_dir(cfg)
    work.mkdir(parents=True, exist_ok=True)
    reports = {}
    for stage in stages:
        saved = work / f"{stage.name}.pt"
        if saved.is_file():
            state = torch.load(saved, weights_only=True)
            model.load_state_dict(state["model"])
            reports[stage.name] = json.loads(state["report"])
            logger.info("stage %s: resumed from %s", stage.name, saved)
            continue
        reports[stage.name] = run_stage(model, stage, cfg.seed, tokenizer.pad_token_id)
        torch.save({"model": model.state_dict(), "report": json.dumps(reports[stage.name])}, saved)
        logger.info("stage %s done: %s", stage.name, {k: v for k, v in reports[stage.name].items() if k != "checks"})
    return reports


def measure_policy(cfg: BootstrapConfig, out: Path) -> dict:
    """Reload ``out`` as training does and measure it (held-out accuracy, roles' output rates)."""
    from spell.builtin.world import build_world
    from spell.config import ModelConfig
    from spell.rl.policy import load_policy

    t0 = time.time()
    model, tokenizer = load_policy(ModelConfig(path=str(out), dtype="float32"), torch.device("cpu"))
    model.eval()
    templates = load_templates(None)
    sets = train_sets(cfg.world_seed, 300)  # the self-play corpus (train.jsonl) of the built-in world
    with tempfile.TemporaryDirectory() as tmp:
        # the bootstrap is a tuning step: it is measured on validation questions (150, one per set), never on the
        # held-out ones (world v1, before the validation split existed, measured its 150 held-out questions)
        heldout = str(build_world(tmp, seed=cfg.world_seed, num_train_sets=0, num_heldout_sets=0,
                                  num_validation_sets=150, questions_per_set=1).validation)
        greedy = measure.heldout_accuracy(model, tokenizer, heldout, templates, temperature=0.0, n=1)
        sampled = measure.heldout_accuracy(model, tokenizer, heldout, templates, temperature=0.7,
                                           n=cfg.eval_samples, seed=cfg.seed)
    verifier = measure.verifier_agreement(model, tokenizer, sampled.pop("samples"), templates)
    mc = measure.mc_mapping(greedy.pop("samples"))
    report = {"heldout_greedy": greedy, f"heldout_t0.7_n{cfg.eval_samples}": sampled, "verifier": verifier,
              "mc_mapping": mc}
    report["questioner_plain"] = measure.questioner_rates(model, tokenizer, sets, templates,
                                                          per_task=cfg.questioner_per_task, history=False)
    report["questioner_history"] = measure.questioner_rates(model, tokenizer, sets, templates,
                                                            per_task=max(1, cfg.questioner_per_task // 2),
                                                            history=True)
    report["selfplay_probe"] = measure.selfplay_probe(model, tokenizer, sets, per_task=cfg.probe_per_task)
    report["eval_seconds"] = round(time.time() - t0, 1)
    return report


def run_bootstrap(cfg: BootstrapConfig, command: str = "") -> dict:
    """Train (unless only measuring), measure, and write ``bootstrap.json`` + ``BOOTSTRAP.md`` into ``cfg.out``."""
    from spell.builtin.bootstrap.report import write_report

    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    start = time.time()
    result = {"command": command, "config": dataclasses.asdict(cfg), "torch": torch.__version__}
    result["training"] = train_policy(cfg, out)
    result["train_seconds"] = round(time.time() - start, 1)
    if cfg.eval:
        result["measurements"] = measure_policy(cfg, out)
    result["total_seconds"] = round(time.time() - start, 1)
    write_report(result, out)
    (out / "bootstrap.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return result
