"""The trainer end to end on a tiny real Qwen2: a real GRPO update, exact resume, memory survives a kill.

Rollouts come from the scripted fake engine (so batches are non-empty and deterministic) while the model,
tokenizer, log-probs, loss, optimizer and checkpoints are all real.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from spell.config import load_config
from spell.rl.checkpoint import latest_checkpoint
from spell.trainer import Trainer
from tests.fakes.scripted_engine import FakeScriptedEngine
from tests.integration.test_selfplay_step import DOCSETS, script


@pytest.fixture()
def corpus(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"id": d.id, "documents": list(d.documents), "task": "doc_general_qa"}) + "\n"
                            for d in DOCSETS))
    return path


def make_cfg(corpus, policy_dir, out, *extra):
    return load_config("tiny_cpu", [
        f"model.path={policy_dir}", f"data.train_files=[{corpus}]", f"output_dir={out}",
        "data.tasks=[doc_general_qa]", "verifier.tasks=[doc_general_qa]", "responder.group_size=4",
        "verifier.num_votes=4", "verifier.update_ratio=1.0", "train.batch_groups=1", "train.max_rounds=1",
        "data.questions_per_round=5", "responder.max_new_tokens=64", "questioner.max_new_tokens=64",
        "verifier.max_new_tokens=64", "grpo.lr=1e-3", "grpo.micro_batch_tokens=256", *extra,
    ])


def make_trainer(cfg, resume=None, **kwargs):
    return Trainer(cfg, resume_from=resume,
                   engine_factory=lambda model, tokenizer: FakeScriptedEngine(tokenizer, script), **kwargs)


def test_one_step_updates_every_parameter_and_logs_all_roles(corpus, tiny_policy_dir, tmp_path):
    trainer = make_trainer(make_cfg(corpus, tiny_policy_dir, tmp_path / "run", "train.max_steps=1"))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    metrics = trainer.train()
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p)]
    assert len(changed) == len(before)
    for role in ("questioner", "responder", "verifier"):
        assert metrics[f"train/{role}_tokens"] > 0
    assert metrics["train/skipped"] == 0.0 and metrics["train/grad_norm"] > 0
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["step"] == 1 and "timing/responder_generate_s" in row and "timing/update_s" in row
    dumped = (tmp_path / "run" / "samples" / "step_000001.jsonl").read_text().splitlines()
    assert len(dumped) == 5 and (tmp_path / "run" / "config.yaml").exists()
    assert latest_checkpoint(tmp_path / "run").name == "step_000001"


def test_resume_is_exact(corpus, tiny_policy_dir, tmp_path):
    # run A: two steps straight; run B: one step, a new process-like Trainer resumes, one more step
    straight = make_trainer(make_cfg(corpus, tiny_policy_dir, tmp_path / "a", "train.max_steps=2"))
    loss_a = straight.train()["train/loss"]
    first = make_trainer(make_cfg(corpus, tiny_policy_dir, tmp_path / "b", "train.max_steps=1"))
    first.train()
    resumed = make_trainer(make_cfg(corpus, tiny_policy_dir, tmp_path / "b", "train.max_steps=2"), tmp_path / "b")
    assert resumed.start_step == 1
    loss_b = resumed.train()["train/loss"]
    assert loss_b == pytest.approx(loss_a, rel=1e-5, abs=1e-7)
    for (name, pa), (_, pb) in zip(straight.model.named_parameters(), resumed.model.named_parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6, msg=name)
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]


def test_killed_run_keeps_its_memory(corpus, tiny_policy_dir, tmp_path):
    out = tmp_path / "run"
    first = make_trainer(make_cfg(corpus, tiny_policy_dir, out, "train.max_steps=1"))
    first.train()
    remembered = first.memory.state_dict()
    assert len(first.memory) == 1
    # simulate a kill mid-save of step 2: a half-written temp checkpoint must be ignored on resume
    (out / "checkpoints" / ".tmp_step_000002_x_1").mkdir()
    resumed = make_trainer(make_cfg(corpus, tiny_policy_dir, out, "train.max_steps=2"), out)
    assert resumed.memory.state_dict() == remembered
    assert resumed.sampler.state_dict() == first.sampler.state_dict()


@pytest.mark.parametrize("shared_prefix", ["true", "false"])
def test_the_update_reports_how_far_the_rollout_log_probs_are(corpus, tiny_policy_dir, tmp_path, shared_prefix):
    from spell.rl.engine.hf import HFEngine
    from spell.types import Role, RoleSample, SamplingParams, TaskType

    trainer = make_trainer(make_cfg(corpus, tiny_policy_dir, tmp_path / "run", f"grpo.shared_prefix={shared_prefix}"))
    engine = HFEngine(trainer.model, trainer.tokenizer)
    prompts = [trainer.tokenizer("the river Alder")["input_ids"], trainer.tokenizer("what is 17")["input_ids"]]
    groups = engine.generate(prompts, SamplingParams(0.8, 1.0, 6, seed=0), n=2)

    def samples(shift: float) -> list[RoleSample]:
        return [RoleSample(Role.RESPONDER, TaskType.DOC_GENERAL_QA, f"g{p}", c.prompt_token_ids, c.token_ids, 0.0,
                           advantage=1.0 - 2 * i, temperature=0.8,
                           rollout_logprobs=tuple(lp + shift for lp in c.logprobs))
                for p, group in enumerate(groups) for i, c in enumerate(group)]

    # on-policy the engine's decode and the trainer's forward agree to fp32 rounding
    assert trainer.update_policy(samples(0.0))["train/rollout_logprob_diff"] < 1e-4
    # the weights changed with that update: rollouts drawn before it, shifted by 0.25, are 0.25 + a little away
    assert trainer.update_policy(samples(0.25))["train/rollout_logprob_diff"] == pytest.approx(0.25, abs=0.05)
    without = trainer.update_policy([dataclasses.replace(s, rollout_logprobs=()) for s in samples(0.0)])
    assert "train/rollout_logprob_diff" not in without  # engines that report nothing log nothing


@pytest.mark.parametrize(("every", "expected"), [(True, [True, True, True]), (False, [False, False, True])])
def test_gradients_are_reduced_after_every_micro_batch_unless_asked_once(corpus, tiny_policy_dir, tmp_path,
                                                                         monkeypatch, every, expected):
    from spell import trainer as trainer_module

    calls = []
    monkeypatch.setattr(trainer_module, "set_gradient_sync", lambda model, enabled: calls.append(enabled))
    cfg = make_cfg(corpus, tiny_policy_dir, tmp_path / "run", "train.max_steps=1", "grpo.micro_batch_tokens=64",
                   f"train.fsdp_reduce_every_micro_batch={str(every).lower()}")
    trainer = make_trainer(cfg)
    trainer.train()
    # 64-token micro-batches: the step's samples need several; sync on each (default) or on the last one only
    assert len(calls) >= 3 and calls[-3:] == expected and calls[-1] is True
    assert all(calls[:-1]) if every else not any(calls[:-1])
