"""Run folders with an identity: one run per ``output_dir``, never two mixed, nothing deleted.

A run writes ``run.json`` (the hash of its resolved config, when it started) into its folder. A fresh run into a
folder that already holds a run's files is refused (:class:`RunDirError`, one line with the fixes); with
``overwrite`` the old folder is moved aside to ``{output_dir}.replaced-{time}``, never deleted. Resuming keeps the
folder; a resume whose config changes the algorithm (anything but the keys in :data:`RESUMABLE_CHANGES`) is
refused unless explicitly allowed, and the refusal lists the differences.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import yaml

logger = logging.getLogger(__name__)

RUN_FILE = "run.json"
# Files whose presence means a folder holds (part of) a run.
RUN_FILES = (RUN_FILE, "config.yaml", "metrics.jsonl", "checkpoints", "samples")
# Dotted config keys (or section prefixes ending in ".") a resume may change: length, logging, hardware.
RESUMABLE_CHANGES = ("train.max_steps", "train.save_every_steps", "train.keep_last_checkpoints", "train.device",
                     "train.fsdp_cpu_offload", "logging.", "engine.", "eval.", "output_dir",
                     "model.gradient_checkpointing", "model.attn_implementation")


class RunDirError(ValueError):
    """The output folder holds another run, or a resume would change the run's algorithm."""


def config_hash(config_yaml: str) -> str:
    """A short, stable hash of a resolved config (YAML text)."""
    return hashlib.sha256(config_yaml.encode("utf-8")).hexdigest()[:16]


def run_dir_of(path: str | Path) -> Path:
    """The run folder behind ``--resume PATH``: PATH, or the run that holds checkpoint PATH."""
    path = Path(path)
    is_checkpoint = (path / "state.json").exists() or (path / "COMPLETE").exists()
    return path.parent.parent if is_checkpoint and path.parent.name == "checkpoints" else path


def holds_a_run(folder: Path) -> bool:
    return folder.is_dir() and any((folder / name).exists() for name in RUN_FILES)


def _describe(folder: Path) -> str:
    """``run 1a2b... (3 checkpoints)`` for the error message."""
    try:
        ident = json.loads((folder / RUN_FILE).read_text())["config_hash"]
    except (OSError, ValueError, KeyError, TypeError):
        ident = "of an unknown config"
    root = folder / "checkpoints"
    steps = sorted(p.name for p in root.glob("step_*")) if root.is_dir() else []
    last = f", last {steps[-1]}" if steps else ""
    return f"a run {ident} ({len(steps)} checkpoint folder(s){last})"


def move_aside(folder: Path) -> Path:
    """Rename ``folder`` to a new sibling ``{name}.replaced-{YYYYmmdd-HHMMSS}[-k]`` and return that path."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = folder.with_name(f"{folder.name}.replaced-{stamp}")
    k = 1
    while target.exists():
        target = folder.with_name(f"{folder.name}.replaced-{stamp}-{k}")
        k += 1
    os.replace(folder, target)
    return target


def claim_fresh(folder: Path, config_yaml: str, overwrite: bool) -> None:
    """Make ``folder`` the home of a NEW run, or raise :class:`RunDirError` if it holds another one.

    Under torchrun only rank 0 calls it (the others would see the ``run.json`` it has just written).

    Args:
        folder: the run's ``output_dir``.
        config_yaml: the resolved config (its hash goes into ``run.json``).
        overwrite: move an existing run aside instead of refusing.
    """
    if holds_a_run(folder):
        if not overwrite:
            raise RunDirError(
                f"output_dir {folder} holds {_describe(folder)}; a new run would mix with it. Fix: pass a new "
                f"output_dir=..., or --resume {folder} to continue it, or --overwrite to move it aside (kept)")
        moved = move_aside(folder)
        logger.warning("--overwrite: moved the run in %s aside to %s (nothing deleted)", folder, moved)
    write_identity(folder, config_yaml)


def write_identity(folder: Path, config_yaml: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    identity = {"config_hash": config_hash(config_yaml), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (folder / RUN_FILE).write_text(json.dumps(identity, indent=1) + "\n")


def _flatten(tree: object, prefix: str = "") -> dict[str, object]:
    if isinstance(tree, dict):
        flat: dict[str, object] = {}
        for key, value in tree.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): tree}


def config_changes(saved_yaml: str, new_yaml: str) -> list[str]:
    """``key: old -> new`` for every dotted key whose value differs between two resolved configs."""
    old, new = _flatten(yaml.safe_load(saved_yaml) or {}), _flatten(yaml.safe_load(new_yaml) or {})
    return [f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in sorted(set(old) | set(new))
            if old.get(key) != new.get(key)]


def algorithm_changes(saved_yaml: str, new_yaml: str) -> list[str]:
    """The :func:`config_changes` a resume may not make without permission (not in :data:`RESUMABLE_CHANGES`)."""
    def allowed(line: str) -> bool:
        key = line.split(":", 1)[0]
        return any(key == ok or (ok.endswith(".") and key.startswith(ok)) for ok in RESUMABLE_CHANGES)

    return [line for line in config_changes(saved_yaml, new_yaml) if not allowed(line)]


def claim_for_resume(source: Path, folder: Path, config_yaml: str, *, overwrite: bool, allow_change: bool) -> None:
    """Checks before resuming run ``source`` into ``folder``: the config may not change the algorithm, and a
    continuation into ANOTHER folder (a fork) claims that folder like a fresh run."""
    check_resume_config(source, config_yaml, allow_change)
    if folder.resolve() != source.resolve():
        claim_fresh(folder, config_yaml, overwrite)
    elif overwrite:
        raise RunDirError(f"--overwrite with --resume {source} into the same folder: a resume continues that run. "
                          "Fix: drop --overwrite, or give the continuation a new output_dir=...")


def check_resume_config(folder: Path, new_yaml: str, allow_change: bool) -> list[str]:
    """Refuse (:class:`RunDirError`) a resume whose config changes the algorithm; returns the changes made.

    Args:
        folder: the run folder being resumed (its ``config.yaml`` is the saved config).
        new_yaml: the resolved config of this invocation.
        allow_change: ``--allow-config-change``: accept them (logged).
    """
    saved = folder / "config.yaml"
    if not saved.is_file():
        return []
    changes = algorithm_changes(saved.read_text(), new_yaml)
    if changes and not allow_change:
        raise RunDirError(f"--resume {folder} would change the run's algorithm: {'; '.join(changes)}. Fix: drop "
                          "those overrides, or pass --allow-config-change to continue with them")
    for line in changes:
        logger.warning("resuming with a changed config (--allow-config-change): %s", line)
    return changes
