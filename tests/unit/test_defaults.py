"""The built-in default: world corpus, held-out and labelled files, and a policy folder, built offline."""

from __future__ import annotations

import json

from spell.builtin import defaults
from spell.config import load_config


def test_builtin_defaults_fill_corpus_heldout_labels_and_policy(tmp_path, monkeypatch):
    monkeypatch.setenv("SPELL_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(defaults, "SHIPPED_POLICY", tmp_path / "no_shipped_policy")
    cfg = defaults.apply_builtin_defaults(load_config("builtin"))
    world = tmp_path / "world-seed0"
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
