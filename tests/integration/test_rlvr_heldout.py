"""RLVR baseline mode, held-out evaluation during training, and the end-of-run summary.

The scripted fake engine answers; the model, tokenizer, update and checkpoints are real.
"""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from spell.report import write_run_summary
from spell.trainer import Trainer
from tests.fakes.scripted_engine import FakeScriptedEngine
from tests.integration.test_trainer import corpus, make_cfg, make_trainer  # noqa: F401 (fixture)

LABELLED = [
    {"id": "q1", "task": "doc_general_qa", "documents": ["Mira leads Alpha."], "question": "Who leads Alpha?",
     "answers": ["Mira"], "metadata": {"hops": 1}},
    {"id": "q2", "task": "doc_general_qa", "documents": ["Zed is Echo."], "question": "What is Echo?",
     "answers": ["Zed"], "metadata": {"hops": 2}},
]


def rlvr_script(role: str, prompt: str, i: int) -> str:
    if "Who leads Alpha?" in prompt:  # half right: a group with reward variance
        return "The correct answer is Mira." if i % 2 == 0 else "The correct answer is Bob."
    return "The correct answer is Zed."  # always right: zero variance, not trained


@pytest.fixture()
def labelled(tmp_path):
    path = tmp_path / "labelled.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in LABELLED))
    return path


def scripted(cfg, script):
    return Trainer(cfg, engine_factory=lambda model, tokenizer: FakeScriptedEngine(tokenizer, script))


def test_rlvr_trains_only_the_responder_on_labelled_questions(corpus, labelled, tiny_policy_dir, tmp_path):  # noqa: F811
    cfg = make_cfg(corpus, tiny_policy_dir, tmp_path / "rlvr", "train.max_steps=1", "train.mode=rlvr",
                   f"data.labelled_files=[{labelled}]", "data.questions_per_round=2")
    trainer = scripted(cfg, rlvr_script)
    metrics = trainer.train()
    assert metrics["train/responder_tokens"] > 0
    assert metrics["train/questioner_tokens"] == 0 and metrics["train/verifier_tokens"] == 0
    assert metrics["responder/num_groups"] == 1  # q2 is all-correct: zero variance, dropped
    assert metrics["questioner/zero_variance_rate"] == pytest.approx(0.5)
    assert all(call[0] == "responder" for call in trainer.engine.calls)  # no questioner, grounding, verifier


def test_rlvr_without_labels_is_a_clear_error(corpus, tiny_policy_dir, tmp_path):  # noqa: F811
    cfg = make_cfg(corpus, tiny_policy_dir, tmp_path / "rlvr", "train.mode=rlvr")
    with pytest.raises(FileNotFoundError, match="data.labelled_files"):
        make_trainer(cfg)


def test_heldout_accuracy_before_and_after_and_summary(corpus, labelled, tiny_policy_dir, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    cfg = make_cfg(corpus, tiny_policy_dir, out, "train.max_steps=2", f"eval.heldout_files=[{labelled}]",
                   "eval.num_samples=2")
    trainer = make_trainer(cfg)
    # the scripted engine answers held-out prompts like responders: q1 half right, q2 right
    trainer.engine.script = lambda role, prompt, i: (
        rlvr_script(role, prompt, i) if "Who leads Alpha?" in prompt or "What is Echo?" in prompt
        else trainer_script(role, prompt, i))
    trainer.train()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2]
    # q1: samples right/wrong -> 0.5; q2: 1.0 -> accuracy (0.5 + 1.0) / 2 = 0.75
    assert rows[0]["heldout/accuracy"] == pytest.approx(0.75)
    assert rows[0]["heldout/hops1"] == pytest.approx(0.5) and rows[0]["heldout/hops2"] == pytest.approx(1.0)
    assert "heldout/accuracy" not in rows[1] and rows[2]["heldout/accuracy"] == pytest.approx(0.75)
    console = Console(record=True, width=140)
    plot = write_run_summary(out, console=console)
    text = console.export_text()
    assert "heldout/accuracy" in text and "0.75 (0)" in text and "0.75 (2)" in text
    assert plot is not None and plot.stat().st_size > 0
    scores = [json.loads(line) for line in (out / "heldout" / "step_000000.jsonl").read_text().splitlines()]
    assert scores == [{"id": "q1", "task": "doc_general_qa", "score": 0.5},
                      {"id": "q2", "task": "doc_general_qa", "score": 1.0}]
    assert (out / "heldout" / "step_000002.jsonl").exists()  # the last step's, paired with step 0's
    assert "held-out all (step 0 -> 2): 75.0% -> 75.0% (+0.0 points, SE 0.0" in text


def trainer_script(role, prompt, i):
    from tests.integration.test_selfplay_step import script

    return script(role, prompt, i)
