"""Tests for spell/rl/checkpoint.py: round trip of weights/optimizer/scheduler/RNG, pruning and atomic saves."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

import spell.rl.checkpoint as checkpoint
from spell.rl.checkpoint import (
    CheckpointError,
    capture_rng_state,
    latest_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)

BATCH = torch.tensor([[1, 5, 9, 13, 2], [3, 7, 11, 60, 4]])


def build_model(seed: int, tie: bool = False, num_layers: int = 1) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=num_layers,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32,
                         tie_word_embeddings=tie)
    return Qwen2ForCausalLM(config)


def build_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"[UNK]": 0, "[PAD]": 1} | {f"w{i}": i + 2 for i in range(10)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]")


def build_training(seed: int):
    model = build_model(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 / (1 + s))
    return model, optimizer, scheduler


def train_step(model, optimizer, scheduler) -> None:
    model(input_ids=BATCH, labels=BATCH).loss.backward()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()


def save(tmp_path, step, model, keep_last=3, state=None, **parts):
    return save_checkpoint(tmp_path, step, model, parts.get("tokenizer"), parts.get("optimizer"),
                           parts.get("scheduler"), state or {"step": step}, keep_last=keep_last)


def draws() -> tuple:
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_round_trip_restores_weights_optimizer_scheduler_rng_and_state(tmp_path):
    model, optimizer, scheduler = build_training(seed=0)
    for _ in range(2):
        train_step(model, optimizer, scheduler)
    state = {"step": 2, "sampler": {"queues": [1, 2]}, "config": "a: 1\n"}
    path = save_checkpoint(tmp_path, 2, model, build_tokenizer(), optimizer, scheduler, state, keep_last=2)
    assert path == tmp_path / "checkpoints" / "step_000002"
    assert (path / "dcp" / ".metadata").is_file() and (path / "tokenizer.json").is_file()
    assert (path / "config.json").is_file() and not (path / "model.safetensors").exists()  # DCP only
    expected_draws = draws()  # the RNG continues from the state captured at save time

    random.seed(123), np.random.seed(123), torch.manual_seed(123)  # scramble before restoring
    restored, restored_optimizer, restored_scheduler = build_training(seed=1)
    assert not torch.equal(restored.lm_head.weight, model.lm_head.weight)  # different init before loading
    loaded_state = load_checkpoint(path, restored, restored_optimizer, restored_scheduler)

    assert loaded_state == state
    assert draws() == expected_draws
    for (name, saved), (_, loaded) in zip(model.state_dict().items(), restored.state_dict().items()):
        assert torch.equal(saved, loaded), name
    assert restored_scheduler.get_last_lr() == scheduler.get_last_lr()
    assert scheduler.get_last_lr() == [pytest.approx(1e-2 / 3)]  # lr * lambda(2) = 1e-2 * 1 / (1 + 2)
    # one more step on both: identical only if the Adam moments and step counts were restored too
    train_step(model, optimizer, scheduler)
    train_step(restored, restored_optimizer, restored_scheduler)
    for (name, original), (_, resumed) in zip(model.named_parameters(), restored.named_parameters()):
        assert torch.equal(original, resumed), name


def test_tokenizer_reloads_from_checkpoint(tmp_path):
    tokenizer = build_tokenizer()
    path = save(tmp_path, 1, build_model(0), tokenizer=tokenizer)
    reloaded = PreTrainedTokenizerFast.from_pretrained(path)
    assert reloaded("w3 w7 zz")["input_ids"] == tokenizer("w3 w7 zz")["input_ids"] == [5, 9, 0]


def test_tied_embeddings_load_strictly(tmp_path):
    model = build_model(0, tie=True)
    path = save(tmp_path, 1, model)
    restored = build_model(5, tie=True)
    load_checkpoint(path, restored)
    assert torch.equal(restored.lm_head.weight, model.model.embed_tokens.weight)


def test_loading_into_another_architecture_fails_clearly(tmp_path):
    path = save(tmp_path, 1, build_model(0))
    with pytest.raises(CheckpointError, match=r"do not match the model.*Fix: resume with the same model.path"):
        load_checkpoint(path, build_model(0, num_layers=2))


def test_rng_capture_restore_repeats_draws():
    snapshot = capture_rng_state()
    first = draws()
    restore_rng_state(snapshot)
    assert draws() == first


def test_keep_last_prunes_oldest(tmp_path):
    model = build_model(0)
    for step in (1, 2, 3, 4):
        save(tmp_path, step, model, keep_last=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step_000003", "step_000004"]  # 4 saved, newest 2 kept
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step_000004"


def test_resave_same_step_replaces_it(tmp_path):
    save(tmp_path, 1, build_model(0), state={"step": 1, "v": "old"})
    path = save(tmp_path, 1, build_model(0), state={"step": 1, "v": "new"})
    assert load_checkpoint(path)["v"] == "new"


def test_crash_mid_save_leaves_previous_checkpoint_latest(tmp_path, monkeypatch):
    model = build_model(0)
    first = save(tmp_path, 1, model)

    def crash(folder):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "_fsync_tree", crash)  # fails after every file is written, before the rename
    with pytest.raises(OSError, match="disk full"):
        save(tmp_path, 2, model)
    assert latest_checkpoint(tmp_path) == first
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_000001"]


def test_non_json_state_leaves_nothing_behind(tmp_path):
    with pytest.raises(TypeError):
        save(tmp_path, 1, build_model(0), state={"step": 1, "bad": object()})
    assert list((tmp_path / "checkpoints").iterdir()) == []
    assert latest_checkpoint(tmp_path) is None


def test_killed_save_is_ignored_then_cleaned(tmp_path):
    model = build_model(0)
    first = save(tmp_path, 1, model)
    root = tmp_path / "checkpoints"
    (root / ".tmp_step_000002_abc_999").mkdir()  # a save killed before its rename
    (root / "step_000005").mkdir()  # a step folder without the COMPLETE marker
    (root / "step_000005" / "state.json").write_text(json.dumps({"step": 5}))
    assert latest_checkpoint(tmp_path) == first
    with pytest.raises(CheckpointError, match="not a complete checkpoint"):
        load_checkpoint(root / "step_000005")
    save(tmp_path, 3, model)
    assert not (root / ".tmp_step_000002_abc_999").exists()
    assert latest_checkpoint(tmp_path) == root / "step_000003"


def test_latest_checkpoint_of_empty_run_is_none(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    assert latest_checkpoint(tmp_path / "missing") is None


def test_missing_optimizer_file_is_reported(tmp_path):
    model, optimizer, _ = build_training(seed=0)
    path = save(tmp_path, 1, model)  # saved without optimizer
    with pytest.raises(CheckpointError, match="holds no optimizer state"):
        load_checkpoint(path, model, optimizer)


def legacy_checkpoint(root, model, optimizer=None, scheduler=None, state=None):
    """A checkpoint folder as versions before DCP wrote it: HF safetensors + optimizer.pt + marker."""
    folder = root / "checkpoints" / "step_000001"
    folder.mkdir(parents=True)
    model.save_pretrained(folder)
    if optimizer is not None:
        torch.save(optimizer.state_dict(), folder / "optimizer.pt")
    if scheduler is not None:
        torch.save(scheduler.state_dict(), folder / "scheduler.pt")
    torch.save(capture_rng_state(), folder / "rng.pt")
    (folder / "state.json").write_text(json.dumps(state or {"step": 1}))
    (folder / "COMPLETE").write_text("{}")
    return folder


def test_legacy_checkpoint_still_resumes_exactly(tmp_path):
    model, optimizer, scheduler = build_training(seed=0)
    train_step(model, optimizer, scheduler)
    folder = legacy_checkpoint(tmp_path, model, optimizer, scheduler)
    restored, restored_optimizer, restored_scheduler = build_training(seed=1)
    assert load_checkpoint(folder, restored, restored_optimizer, restored_scheduler) == {"step": 1}
    train_step(model, optimizer, scheduler)
    train_step(restored, restored_optimizer, restored_scheduler)
    for (name, original), (_, resumed) in zip(model.named_parameters(), restored.named_parameters()):
        assert torch.equal(original, resumed), name
    with pytest.raises(CheckpointError, match="no optimizer.pt"):
        load_checkpoint(legacy_checkpoint(tmp_path / "b", model), model, optimizer)


def test_legacy_renamed_saved_keys_fall_back_to_from_pretrained(tmp_path, monkeypatch):
    model = build_model(0)
    path = legacy_checkpoint(tmp_path, model)
    read = checkpoint._read_weights
    # transformers >= 5 may save some architectures under "original format" names
    monkeypatch.setattr(checkpoint, "_read_weights", lambda folder: {f"orig.{k}": v for k, v in read(folder).items()})
    restored = build_model(7)
    load_checkpoint(path, restored)
    assert torch.equal(restored.lm_head.weight, model.lm_head.weight)


def test_frozen_parameters_are_not_stored_and_load_back_from_the_model(tmp_path):
    # a LoRA-like model: everything frozen except the last layer's MLP; only that is written
    model, _, _ = build_training(seed=0)
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith("model.layers.0.mlp."))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(input_ids=BATCH, labels=BATCH).loss.backward()
    optimizer.step()
    path = save(tmp_path, 1, model, optimizer=optimizer)
    metadata = torch.distributed.checkpoint.FileSystemReader(str(path / "dcp")).read_metadata()
    stored = {k.removeprefix("model.") for k in metadata.state_dict_metadata if k.startswith("model.")}
    assert stored == {f"model.layers.0.mlp.{p}_proj.weight" for p in ("gate", "up", "down")}
    restored = build_model(0)  # the same frozen base (same seed); its trainable part differs before loading
    for name, param in restored.named_parameters():
        param.requires_grad_(name.startswith("model.layers.0.mlp."))
    restored_optimizer = torch.optim.AdamW([p for p in restored.parameters() if p.requires_grad], lr=1e-2)
    load_checkpoint(path, restored, restored_optimizer)
    for (name, saved), (_, loaded) in zip(model.state_dict().items(), restored.state_dict().items()):
        assert torch.equal(saved, loaded), name
