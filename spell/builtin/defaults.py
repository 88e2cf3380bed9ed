"""The built-in default: a corpus and a policy the project makes itself, so ``spell train`` runs offline.

When ``data.train_files`` is empty the built-in world corpus is used (built on first use by
:mod:`spell.builtin.world`); when ``model.path`` is null the built-in policy is used: the shipped bootstrapped
weights if the package has them, else a small randomly initialised Qwen2 with a BPE tokenizer trained on
the world (built once and cached). Cache root: ``$SPELL_CACHE_DIR`` or ``~/.cache/spell-rl``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

from spell.config import SpellConfig

logger = logging.getLogger(__name__)

SHIPPED_POLICY = Path(__file__).parent / "assets" / "default_policy"
WORLD_SEED = 0
TRAIN_LABELLED = "train_labelled.jsonl"  # spell.builtin.world.build.TRAIN_LABELLED (imported lazily there)
RANDOM_POLICY_NAME = "tiny-random-v1"


def cache_root() -> Path:
    """Where built-in assets are built and cached."""
    return Path(os.environ.get("SPELL_CACHE_DIR", Path.home() / ".cache" / "spell-rl"))


def ensure_world(root: Path | None = None) -> Path:
    """The built-in world folder (``train.jsonl``, ``heldout.jsonl``, ...), built if missing."""
    from spell.builtin.world import build_world
    from spell.builtin.world.build import WORLD_VERSION

    # the version is in the name: a new world never overwrites the one earlier runs' configs point to
    folder = (root or cache_root()) / f"world-seed{WORLD_SEED}-v{WORLD_VERSION}"
    if not (folder / "manifest.json").exists() or not (folder / TRAIN_LABELLED).exists():
        logger.info("building the built-in world in %s", folder)
        build_world(folder, seed=WORLD_SEED)
    return folder


def ensure_policy(root: Path | None = None) -> Path:
    """The built-in policy folder: shipped weights if present, else a cached random tiny Qwen2."""
    if (SHIPPED_POLICY / "config.json").exists():
        return SHIPPED_POLICY
    folder = (root or cache_root()) / RANDOM_POLICY_NAME
    if (folder / "config.json").exists():
        return folder
    from spell.builtin.tiny import build_tiny_model, build_tiny_tokenizer, save_policy
    from spell.prompts import load_templates

    logger.warning("no shipped default policy: building a RANDOMLY INITIALISED tiny policy in %s "
                   "(it cannot write valid questions yet; expect bad_format rates near 1)", folder)
    world = ensure_world(root)
    texts = [doc for line in (world / "train.jsonl").read_text().splitlines() if line
             for doc in json.loads(line)["documents"]]
    texts += list(dataclasses.asdict(load_templates(None)).values())
    tokenizer = build_tiny_tokenizer(texts, vocab_size=1024)
    model = build_tiny_model(tokenizer, hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=2, seed=0)
    save_policy(model, tokenizer, folder)
    return folder


def builtin_corpus(cfg: SpellConfig) -> Path:
    """The built-in world's ``train.jsonl``, for a config without ``data.train_files``.

    With the user's own ``model.path`` this fallback is rarely what was meant, so it is announced in one
    warning line (the ``builtin`` preset, with the built-in policy too, uses it silently).
    """
    world = ensure_world()
    if cfg.model.path is not None:
        logger.warning("data.train_files is empty: using the built-in world corpus %s, not your documents. "
                       "Fix: set data.train_files=[your_docsets.jsonl]", world / "train.jsonl")
    return world / "train.jsonl"


def apply_builtin_defaults(cfg: SpellConfig) -> SpellConfig:
    """Fill an unset corpus / model with the built-in ones (builds them on first use).

    With the built-in corpus, unset held-out questions (``eval.heldout_files`` null) and RLVR labels
    (``data.labelled_files``) come from the same world: held-out sets are disjoint from training sets. An
    explicit ``eval.heldout_files=[]`` stays empty; with the user's corpus an unset one becomes ``[]``.
    """
    data, model, evaluation = cfg.data, cfg.model, cfg.eval
    heldout = [] if evaluation.heldout_files is None else evaluation.heldout_files
    if not data.train_files:
        corpus = builtin_corpus(cfg)
        world = corpus.parent
        data = dataclasses.replace(data, train_files=[str(corpus)],
                                   labelled_files=data.labelled_files or [str(world / TRAIN_LABELLED)])
        if evaluation.heldout_files is None:
            heldout = [str(world / "heldout.jsonl")]
    evaluation = dataclasses.replace(evaluation, heldout_files=heldout)
    if model.path is None:
        model = dataclasses.replace(model, path=str(ensure_policy()))
    return dataclasses.replace(cfg, data=data, model=model, eval=evaluation)
