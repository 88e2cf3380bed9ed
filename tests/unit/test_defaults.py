"""The built-in default: world corpus, held-out and labelled files, and a policy folder, built offline."""

from __future__ import annotations

import json
import logging

import pytest

from spell.builtin import defaults
from spell.config import load_config


def test_builtin_defaults_fill_corpus_heldout_labels_and_policy(tmp_path, monkeypatch):
    monkeypatch.setenv("SPELL_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(defaults, "SHIPPED_POLICY", tmp_path / "no_shipped_policy")
    cfg = defaults.apply_builtin_defaults(load_config("builtin"))
    world = tmp_path / "world-seed0-v2"  # the world version is in the folder name
    assert cfg.data.train_files == [str(world / "train.jsonl")]
    assert cfg.eval.heldout_files == [str(world / "heldout.jsonl")]
    assert cfg.data.labelled_files == [str(world / "train_labelled.jsonl")]
    assert (tmp_path / defaults.RANDOM_POLICY_NAME / "config.json").exists()
    assert cfg.model.path == str(tmp_path / defaults.RANDOM_POLICY_NAME)
    # training rows carry no labels; the labelled train questions are separate and disjoint from held-out ids
    row = json.loads((world / "train.jsonl").read_text().splitlines()[0])
    assert set(row) == {"id", "documents", "task", "source"}
    heldout_docs = {json.loads(line)["documents"][0] for line in (world / "heldout.jsonl").read_text().splitlines()}
    labelled_docs = {json.loads(line)["documents"][0]
                     for line in (world / "train_labelled.jsonl").read_text().splitlines()}
    assert heldout_docs.isdisjoint(labelled_docs)


def test_user_paths_are_kept_and_a_shipped_policy_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("SPELL_CACHE_DIR", str(tmp_path))
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "config.json").write_text("{}")
    monkeypatch.setattr(defaults, "SHIPPED_POLICY", shipped)
    cfg = defaults.apply_builtin_defaults(load_config(None, ["data.train_files=[mine.jsonl]"]))
    assert cfg.data.train_files == ["mine.jsonl"] and cfg.eval.heldout_files == []  # no world for user data
    assert cfg.model.path == str(shipped)


@pytest.fixture()
def fake_world(tmp_path, monkeypatch):
    """A stand-in world folder, so these tests never build the real one."""
    monkeypatch.setattr(defaults, "ensure_world", lambda root=None: tmp_path / "world")
    return tmp_path / "world"


def test_builtin_corpus_with_the_users_model_is_announced_in_one_warning(fake_world, caplog):
    with caplog.at_level(logging.WARNING, logger="spell.builtin.defaults"):
        cfg = defaults.apply_builtin_defaults(load_config(None, ["model.path=/models/mine"]))
    assert cfg.data.train_files == [str(fake_world / "train.jsonl")] and cfg.model.path == "/models/mine"
    assert [r.getMessage() for r in caplog.records] == [
        f"data.train_files is empty: using the built-in world corpus {fake_world / 'train.jsonl'}, not your "
        "documents. Fix: set data.train_files=[your_docsets.jsonl]"]


def test_builtin_preset_uses_the_world_without_a_warning(fake_world, caplog, monkeypatch):
    monkeypatch.setattr(defaults, "ensure_policy", lambda root=None: fake_world / "policy")
    with caplog.at_level(logging.WARNING, logger="spell.builtin.defaults"):
        defaults.apply_builtin_defaults(load_config("builtin"))
    assert caplog.records == []  # built-in corpus with the built-in policy: the documented default


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ([], ["heldout.jsonl"]),  # not set: the world's held-out set
        (["eval.heldout_files=[]"], []),  # explicitly empty: no evaluation, not refilled
        (["eval.heldout_files=[mine.jsonl]"], ["mine.jsonl"]),
    ],
)
def test_explicitly_empty_heldout_files_stay_empty_on_the_builtin_corpus(fake_world, overrides, expected):
    cfg = defaults.apply_builtin_defaults(load_config(None, ["model.path=/m", *overrides]))
    assert [p.removeprefix(f"{fake_world}/") for p in cfg.eval.heldout_files] == expected
