"""Nothing lost, nothing silent: run folders that cannot mix two runs, checkpoints that verify themselves and fall
back, a diverged update that is never saved, and a failed save that names the last good checkpoint.

Rollouts come from the scripted fake engine (tests/integration/test_trainer.py); the CLI cases run the real
``spell train`` on the tiny model.
"""

from __future__ import annotations

import errno
import json
import logging

import pytest
import torch

from spell.cli import main
from spell.rl import checkpoint as checkpoint_module
from spell.rl.checkpoint import CheckpointError, latest_checkpoint, verify_checkpoint
from spell.rl.rundir import RunDirError, algorithm_changes, run_dir_of
from spell.trainer import TrainingDivergedError
from tests.integration.test_cli import corpus as cli_corpus  # noqa: F401 - a fixture
from tests.integration.test_trainer import corpus, make_cfg, make_trainer  # noqa: F401 - corpus is a fixture


def _steps(run) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def _snapshot(run) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


# ---- one run per folder ----------------------------------------------------------------------------------
def test_a_second_fresh_run_into_the_same_folder_is_refused_and_changes_nothing(corpus, tiny_policy_dir,  # noqa: F811
                                                                                 tmp_path):
    run = tmp_path / "run"
    make_trainer(make_cfg(corpus, tiny_policy_dir, run, "train.max_steps=2")).train()
    before = _snapshot(run)
    with pytest.raises(RunDirError, match=r"holds a run .* Fix: pass a new output_dir=.*--resume.*--overwrite"):
        make_trainer(make_cfg(corpus, tiny_policy_dir, run, "train.max_steps=1", "train.seed=7"))
    assert _snapshot(run) == before  # run A untouched: metrics, checkpoints, samples


def test_overwrite_moves_the_old_run_aside_and_never_deletes_it(corpus, tiny_policy_dir, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    make_trainer(make_cfg(corpus, tiny_policy_dir, run, "train.max_steps=2")).train()
    before = _snapshot(run)
    trainer = make_trainer(make_cfg(corpus, tiny_policy_dir, run, "train.max_steps=1", "train.seed=7"),
                           overwrite=True)
    trainer.train()
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.replaced-")]
    assert len(aside) == 1 and _snapshot(aside[0]) == before  # A kept byte for byte
    assert _steps(run) == [1] and [p.name for p in (run / "checkpoints").iterdir()] == ["step_000001"]


def test_resume_from_a_checkpoint_folder_writes_into_its_run(cli_corpus, tiny_policy_dir, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    common = [f"model.path={tiny_policy_dir}", f"data.train_files=[{cli_corpus}]", f"output_dir={run}",
              "data.questions_per_round=3", "train.max_rounds=1"]
    assert main(["train", "--config", "tiny_cpu", *common, "train.max_steps=2"]) == 0
    step1 = run / "checkpoints" / "step_000001"
    assert run_dir_of(step1) == run
    assert main(["train", "--resume", str(step1), "train.max_steps=3"]) == 0
    assert _steps(run) == [1, 2, 3]  # continued from step 1: step 2 redone, then 3, in the run folder
    assert not (step1 / "metrics.jsonl").exists() and not (step1 / "checkpoints").exists()


def test_a_second_spell_train_exits_2_with_the_fixes(cli_corpus, tiny_policy_dir, tmp_path, caplog):  # noqa: F811
    run = tmp_path / "run"
    common = [f"model.path={tiny_policy_dir}", f"data.train_files=[{cli_corpus}]", f"output_dir={run}",
              "data.questions_per_round=3", "train.max_rounds=1", "train.max_steps=1"]
    assert main(["train", "--config", "tiny_cpu", *common]) == 0
    assert main(["train", "--config", "tiny_cpu", *common]) == 2
    assert "--overwrite" in caplog.text and "--resume" in caplog.text
    assert main(["train", "--config", "tiny_cpu", *common, "--overwrite"]) == 0


def test_resume_refuses_algorithm_changes_unless_allowed(corpus, tiny_policy_dir, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    make_trainer(make_cfg(corpus, tiny_policy_dir, run, "train.max_steps=1")).train()
    with pytest.raises(RunDirError, match=r"grpo.lr: 0.001 -> 0.5.*--allow-config-change"):
        make_trainer(make_cfg(corpus, tiny_policy_dir, run, "train.max_steps=2", "grpo.lr=0.5"), run)
    resumed = make_trainer(make_cfg(corpus, tiny_policy_dir, run, "train.max_steps=2", "grpo.lr=0.5"), run,
                           allow_config_change=True)
    assert resumed.start_step == 1 and resumed.optimizer.param_groups[0]["lr"] == 0.5
    # length, logging and hardware keys may change freely
    assert algorithm_changes("train:\n  max_steps: 2\n  seed: 1\nlogging:\n  progress: true\n",
                             "train:\n  max_steps: 9\n  seed: 1\nlogging:\n  progress: false\n") == []
    assert algorithm_changes("train:\n  seed: 1\n", "train:\n  seed: 2\n") == ["train.seed: 1 -> 2"]


# ---- checkpoints that verify themselves and fall back ---------------------------------------------------------
def _flip_bytes(path, count=4096):
    data = bytearray(path.read_bytes())
    for i in range(min(count, len(data))):
        data[len(data) // 3 + i - min(count, len(data)) // 3] ^= 0xFF
    path.write_bytes(bytes(data))


CORRUPTIONS = {
    "flipped bytes in a DCP shard": lambda c: _flip_bytes(next((c / "dcp").glob("*.distcp"))),
    "truncated DCP metadata": lambda c: (c / "dcp" / ".metadata").write_bytes(b"x"),
    "missing shard": lambda c: next((c / "dcp").glob("*.distcp")).unlink(),
    "state.json cut short": lambda c: (c / "state.json").write_text('{"step": 2, "ran'),
    "unreadable marker": lambda c: (c / "COMPLETE").write_text("{not json"),
    "flipped bytes in the scheduler": lambda c: _flip_bytes(c / "scheduler.pt", 16),
}


@pytest.mark.parametrize("damage", sorted(CORRUPTIONS))
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(damage, corpus, tiny_policy_dir,  # noqa: F811
                                                                    tmp_path, caplog):
    run = tmp_path / "run"
    first = make_trainer(make_cfg(corpus, tiny_policy_dir, run, "train.max_steps=2"))
    first.train()
    step1, step2 = run / "checkpoints" / "step_000001", run / "checkpoints" / "step_000002"
    assert verify_checkpoint(step2) is None
    CORRUPTIONS[damage](step2)
    assert verify_checkpoint(step2) is not None
    with caplog.at_level(logging.WARNING):
        resumed = make_trainer(make_cfg(corpus, tiny_policy_dir, run, "train.max_steps=2"), run)
    assert resumed.start_step == 1  # the newest GOOD checkpoint
    assert f"{step2} is damaged" in caplog.text and f"resuming from {step1}" in caplog.text
    with pytest.raises(CheckpointError, match=r"is damaged .* Fix: --resume .* falls back"):
        make_trainer(make_cfg(corpus, tiny_policy_dir, run, "train.max_steps=2"), step2)


def test_resume_without_a_good_checkpoint_fails_before_the_model_loads(corpus, tiny_policy_dir, tmp_path,  # noqa: F811
                                                                       monkeypatch):
    run = tmp_path / "run"
    make_trainer(make_cfg(corpus, tiny_policy_dir, run, "train.max_steps=1")).train()
    _flip_bytes(next((run / "checkpoints" / "step_000001" / "dcp").glob("*.distcp")))
    monkeypatch.setattr("spell.trainer.load_policy", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(CheckpointError, match=r"no good checkpoint under .* Fix: start the run again"):
        make_trainer(make_cfg(corpus, tiny_policy_dir, run, "train.max_steps=2"), run)


# ---- a diverged update is never saved; a failed save names the last good checkpoint --------------------------
def test_non_finite_weights_stop_the_run_before_they_are_saved(corpus, tiny_policy_dir, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    trainer = make_trainer(make_cfg(corpus, tiny_policy_dir, run, "train.max_steps=3"))
    step = trainer.optimizer.step

    def poisoned_step(*args, **kwargs):  # step 2's update overflows one weight (as lr=1e30 would)
        result = step(*args, **kwargs)
        if trainer.scheduler.last_epoch == 1:
            with torch.no_grad():
                next(trainer.model.parameters())[0, 0] = float("inf")
        return result

    trainer.optimizer.step = poisoned_step
    with pytest.raises(TrainingDivergedError, match=r"step 2: .* inf/NaN.*last good checkpoint is .*step_000001"):
        trainer.train()
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step_000001"]
    assert _steps(run) == [1]


def test_a_full_disk_during_a_save_names_the_last_good_checkpoint(corpus, tiny_policy_dir, tmp_path,  # noqa: F811
                                                                  monkeypatch):
    run = tmp_path / "run"
    trainer = make_trainer(make_cfg(corpus, tiny_policy_dir, run, "train.max_steps=2"))
    write = checkpoint_module._write_contents

    def full_disk(folder, *args):
        if folder.name.startswith(".tmp_step_000002"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return write(folder, *args)

    monkeypatch.setattr(checkpoint_module, "_write_contents", full_disk)
    with pytest.raises(CheckpointError, match=r"step 2 .*No space left on device.*last good checkpoint is "
                                              r".*step_000001. Fix: free disk space"):
        trainer.train()
    assert latest_checkpoint(run).name == "step_000001" and verify_checkpoint(latest_checkpoint(run)) is None
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".tmp")]
