"""Checkpoints that survive crashes (spec §3 step 15: save every ``train.save_every_steps``).

Layout: ``{output_dir}/checkpoints/step_{step:06d}/`` holds the HF model folder (safetensors) and tokenizer,
``optimizer.pt``, ``scheduler.pt``, ``rng.pt`` (python/numpy/torch/CUDA generators), ``state.json`` (the
caller's JSON state: step, memory, sampler, config, ...) and a ``COMPLETE`` marker written last. A save is
written into a hidden temp folder and renamed into place, so a crash never leaves a folder that
:func:`latest_checkpoint` would pick.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)

CHECKPOINT_SUBDIR = "checkpoints"
COMPLETE_MARKER = "COMPLETE"
_STEP_DIR = re.compile(r"^step_(\d+)$")
_TMP_PREFIX = ".tmp_step_"


class CheckpointError(ValueError):
    """A checkpoint folder is missing, incomplete or does not match the model being restored."""


def capture_rng_state() -> dict:
    """Snapshot the python, numpy, torch CPU and (if present) CUDA generators.

    Returns:
        A dict that ``torch.save`` / ``torch.load(weights_only=True)`` round-trip (lists, ints, tensors).
    """
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    """Restore a :func:`capture_rng_state` snapshot; the next random draws repeat those after the capture."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    cuda_states = state.get("cuda")
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
    elif cuda_states:
        logger.warning("checkpoint has RNG states for %d CUDA devices but %d are visible; CUDA RNG not restored",
                       len(cuda_states), torch.cuda.device_count() if torch.cuda.is_available() else 0)


def _step_dirs(root: Path, complete_only: bool = True) -> list[tuple[int, Path]]:
    """``(step, path)`` for the step folders under ``root``, sorted by step."""
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _STEP_DIR.match(path.name)
        if match and path.is_dir() and (not complete_only or (path / COMPLETE_MARKER).is_file()):
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The complete checkpoint with the highest step under ``output_dir/checkpoints``, or None."""
    found = _step_dirs(Path(output_dir) / CHECKPOINT_SUBDIR)
    return found[-1][1] if found else None


def _fsync_path(path: Path) -> None:
    """Flush one file or folder entry to disk (folders: best effort, not all systems allow it)."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() and hasattr(os, "O_DIRECTORY") else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on folders
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        _fsync_path(path)
    _fsync_path(folder)


def _write_contents(folder: Path, model, tokenizer, optimizer, scheduler, state: dict) -> None:
    """Write everything except the marker into ``folder``."""
    # Serialise the caller's state first: a non-JSON value fails before any large file is written.
    state_text = json.dumps(state, indent=1, ensure_ascii=False, allow_nan=False)
    # transformers >= 5 always writes safetensors; 4.x defaults to safe_serialization=True.
    model.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    if optimizer is not None:
        torch.save(optimizer.state_dict(), folder / "optimizer.pt")
    if scheduler is not None:
        torch.save(scheduler.state_dict(), folder / "scheduler.pt")
    torch.save(capture_rng_state(), folder / "rng.pt")
    (folder / "state.json").write_text(state_text, encoding="utf-8")


def _remove_stale(root: Path, keep: Path, keep_last: int) -> None:
    """Delete leftover temp folders and all but the newest ``keep_last`` complete checkpoints (never ``keep``)."""
    for path in root.glob(f"{_TMP_PREFIX}*"):
        logger.info("removing interrupted checkpoint save %s", path)
        shutil.rmtree(path, ignore_errors=True)
    complete = _step_dirs(root)
    for _, path in complete[: max(len(complete) - keep_last, 0)]:
        if path != keep:
            logger.info("removing old checkpoint %s (train.keep_last_checkpoints=%d)", path, keep_last)
            shutil.rmtree(path, ignore_errors=True)


def save_checkpoint(output_dir: str | Path, step: int, model, tokenizer, optimizer, scheduler, state: dict,
                    keep_last: int) -> Path:
    """Atomically write ``output_dir/checkpoints/step_{step:06d}`` and prune old checkpoints.

    Args:
        output_dir: the run folder.
        step: the optimizer step just completed.
        model: an unwrapped HF ``PreTrainedModel`` (``save_pretrained``).
        tokenizer: its tokenizer (``save_pretrained``), or None.
        optimizer: a torch optimizer, or None.
        scheduler: an LR scheduler, or None.
        state: JSON-able run state (step, memory, sampler, config text, metric buffers, ...).
        keep_last: complete checkpoints to keep (>= 1); the one just written is never deleted.

    Returns:
        The checkpoint folder.

    Raises:
        TypeError / ValueError: ``state`` is not JSON-able (nothing is left behind).
    """
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    root = Path(output_dir) / CHECKPOINT_SUBDIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{step:06d}_", suffix=f"_{os.getpid()}", dir=root))
    try:
        _write_contents(tmp, model, tokenizer, optimizer, scheduler, state)
        _fsync_tree(tmp)
        marker = tmp / COMPLETE_MARKER
        marker.write_text(json.dumps({"step": step, "time": time.time()}) + "\n")
        _fsync_path(marker)
        if final.exists():  # re-saving a step (e.g. after resuming from it): move the old one aside first
            old = root / f"{_TMP_PREFIX}replaced_{step:06d}_{os.getpid()}"
            os.replace(final, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, final)
        _fsync_path(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _remove_stale(root, final, keep_last)
    logger.info("saved checkpoint %s", final)
    return final


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of the safetensors file(s) in ``folder`` (single file or sharded index)."""
    from safetensors.torch import load_file

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        shards = ["model.safetensors"]
    weights: dict[str, torch.Tensor] = {}
    for shard in shards:
        if not (folder / shard).is_file():
            raise CheckpointError(f"{folder}: weight file {shard} is missing; the checkpoint is damaged")
        weights.update(load_file(folder / shard, device="cpu"))
    return weights


def _load_weights(folder: Path, model: torch.nn.Module) -> None:
    """Load saved weights into ``model``; every parameter must be covered (tied copies count as covered)."""
    weights = _read_weights(folder)
    expected = set(model.state_dict())
    if not set(weights) <= expected:
        # transformers >= 5 may save some architectures under renamed ("original format") keys;
        # let the model class undo that, then copy the result in.
        logger.info("checkpoint keys differ from the model's; loading through %s.from_pretrained",
                    type(model).__name__)
        weights = type(model).from_pretrained(folder).state_dict()
    current = model.state_dict(keep_vars=True)
    names_by_storage: dict[int, set[str]] = {}
    for name, tensor in current.items():
        names_by_storage.setdefault(tensor.data_ptr(), set()).add(name)
    # save_pretrained drops tied copies (e.g. lm_head tied to the embeddings): covered if an alias was saved
    missing = sorted(name for name in expected - set(weights)
                     if not names_by_storage[current[name].data_ptr()] & set(weights))
    unexpected = sorted(set(weights) - expected)
    if missing or unexpected:
        raise CheckpointError(f"{folder}: weights do not match the model (missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}). Fix: resume with the same model.path")
    model.load_state_dict(weights, strict=False)


def load_checkpoint(ckpt_dir: str | Path, model=None, optimizer=None, scheduler=None) -> dict:
    """Restore a checkpoint written by :func:`save_checkpoint`.

    Args:
        ckpt_dir: a ``step_XXXXXX`` folder (e.g. from :func:`latest_checkpoint`).
        model: model to load the weights into (same architecture), or None to skip.
        optimizer: optimizer to restore (build it over ``model``'s parameters first), or None.
        scheduler: LR scheduler to restore, or None.

    Returns:
        The saved ``state.json`` content. RNG states are restored last, as of the save.

    Raises:
        CheckpointError: the folder is not a complete checkpoint, or lacks a requested part.
    """
    folder = Path(ckpt_dir)
    if not (folder / COMPLETE_MARKER).is_file():
        raise CheckpointError(f"{folder} is not a complete checkpoint (no {COMPLETE_MARKER} marker). "
                              "Fix: pass a checkpoints/step_XXXXXX folder, or the run folder to resume the latest")
    if model is not None:
        _load_weights(folder, model)
    for target, filename in ((optimizer, "optimizer.pt"), (scheduler, "scheduler.pt")):
        if target is None:
            continue
        if not (folder / filename).is_file():
            raise CheckpointError(f"{folder} has no {filename}; it was saved without one")
        target.load_state_dict(torch.load(folder / filename, map_location="cpu", weights_only=True))
    state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    restore_rng_state(torch.load(folder / "rng.pt", map_location="cpu", weights_only=True))
    logger.info("loaded checkpoint %s (step %s)", folder, state.get("step"))
    return state
