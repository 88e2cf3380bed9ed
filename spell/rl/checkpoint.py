"""Checkpoints that survive crashes and scale with the run (spec §3 step 15: save every ``train.save_every_steps``).

Layout: ``{output_dir}/checkpoints/step_{step:06d}/`` holds

- ``dcp/``: model and optimizer state as ``torch.distributed.checkpoint`` (DCP) shards, written by every rank
  (one ``__{rank}_0.distcp`` file each + ``.metadata``). Keys are the model's own parameter names (and
  ``optim.*`` per parameter), so a checkpoint saved by N ranks loads on any number of ranks, or one process
  (DCP reshards on load). A model with frozen parameters (LoRA) stores only its trainable ones (the adapter);
  the frozen ones come from ``model.path`` again;
- ``config.json`` / ``generation_config.json`` / tokenizer files (and ``adapter_config.json`` with LoRA), so
  the folder describes its model: ``spell export`` turns it into a plain Hugging Face folder;
- ``scheduler.pt``, ``rng.pt`` (rank 0's python/numpy/torch/CUDA generators), ``state.json`` (the caller's JSON
  state: step, per-rank memory / sampler / RNGs, config, ...) and a ``COMPLETE`` marker written last, holding
  the manifest (size and SHA-256) of every other file: :func:`verify_checkpoint` checks it and
  :func:`latest_good_checkpoint` skips damaged checkpoints.

A save goes into a hidden temp folder (its name chosen by rank 0 and shared with every rank) and is renamed into
place by rank 0, so a crash never leaves a folder that :func:`latest_checkpoint` would pick. Checkpoints of
earlier versions (``model.safetensors`` + ``optimizer.pt``, one process) still load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
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


def _dist_active() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized() \
        and torch.distributed.get_world_size() > 1


def _is_main() -> bool:
    return not _dist_active() or torch.distributed.get_rank() == 0


def _share_from_main(value: object) -> object:
    """Rank 0's ``value`` on every rank (itself in a single process)."""
    if not _dist_active():
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def _barrier() -> None:
    if _dist_active():
        torch.distributed.barrier()


@contextmanager
def _single_process_quiet() -> Iterator[None]:
    """DCP warns on every call without a process group that it assumes one process: that is the intent here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        yield


def has_frozen_parameters(model: torch.nn.Module) -> bool:
    """True when some parameters are frozen (LoRA): checkpoints then hold the trainable ones only."""
    return any(not p.requires_grad for p in model.parameters())


def _state_dict_options(model: torch.nn.Module, *, strict: bool = True):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    frozen = has_frozen_parameters(model)
    return StateDictOptions(ignore_frozen_params=frozen, strict=strict and not frozen)


def _train_state(model, optimizer) -> dict:
    """``{"model": ..., "optim": ...}`` keyed by parameter names (sharded entries stay ``DTensor`` shards)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict

    options = _state_dict_options(model)
    if optimizer is None:
        model_state, optim_state = get_model_state_dict(model, options=options), None
    else:
        model_state, optim_state = get_state_dict(model, optimizer, options=options)
    if options.ignore_frozen_params:  # a tied output head can slip through under its second name: drop it too
        trainable = {name for name, p in model.named_parameters(remove_duplicate=False) if p.requires_grad}
        model_state = {name: value for name, value in model_state.items() if name in trainable}
    return {"model": model_state} if optim_state is None else {"model": model_state, "optim": optim_state}


def _write_model_description(folder: Path, model, tokenizer) -> None:
    """config.json, generation_config.json, tokenizer files and, with PEFT, adapter_config.json (rank 0)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.config.save_pretrained(folder)
    if getattr(base, "generation_config", None) is not None:
        base.generation_config.save_pretrained(folder)
    for adapter in (getattr(model, "peft_config", None) or {}).values():
        adapter.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)


def _write_contents(folder: Path, model, tokenizer, optimizer, scheduler, state_text: str) -> None:
    """Every rank writes its DCP shard; rank 0 then writes everything else except the marker."""
    import torch.distributed.checkpoint as dcp

    with _single_process_quiet():
        dcp.save(_train_state(model, optimizer), checkpoint_id=folder / "dcp")
    if not _is_main():
        return
    _write_model_description(folder, model, tokenizer)
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
    for step, path in complete[: max(len(complete) - keep_last, 0)]:
        if path != keep:
            logger.info("removing old checkpoint %s (train.keep_last_checkpoints=%d)", path, keep_last)
            # renamed first (atomic), so a kill mid-delete leaves a temp folder, never a half-deleted step_N
            doomed = root / f"{_TMP_PREFIX}pruned_{step:06d}_{os.getpid()}"
            os.replace(path, doomed)
            shutil.rmtree(doomed, ignore_errors=True)


def save_checkpoint(output_dir: str | Path, step: int, model, tokenizer, optimizer, scheduler, state: dict,
                    keep_last: int) -> Path:
    """Atomically write ``output_dir/checkpoints/step_{step:06d}`` and prune old checkpoints.

    Under ``torchrun`` EVERY rank calls it (each writes its DCP shard); rank 0 writes the rest, renames the
    folder into place and prunes. Returns on every rank once the checkpoint is complete.

    Args:
        output_dir: the run folder.
        step: the optimizer step just completed.
        model: the policy: a plain HF model, a PEFT model or an FSDP2-sharded one.
        tokenizer: its tokenizer (``save_pretrained``), or None.
        optimizer: a torch optimizer over ``model``'s parameters, or None.
        scheduler: an LR scheduler, or None.
        state: JSON-able run state (step, memory, sampler, config text, metric buffers, ...); read on rank 0.
        keep_last: complete checkpoints to keep (>= 1); the one just written is never deleted.

    Returns:
        The checkpoint folder.

    Raises:
        TypeError / ValueError: ``state`` is not JSON-able (nothing is left behind).
    """
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    root = Path(output_dir) / CHECKPOINT_SUBDIR
    final = root / f"step_{step:06d}"
    tmp = None
    if _is_main():
        root.mkdir(parents=True, exist_ok=True)
    # Serialise the caller's state first: a non-JSON value fails before any large file is written.
    state_text = json.dumps(state, indent=1, ensure_ascii=False, allow_nan=False) if _is_main() else ""
    if _is_main():
        tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{step:06d}_", suffix=f"_{os.getpid()}", dir=root))
    tmp = Path(_share_from_main(str(tmp)))
    try:
        _write_contents(tmp, model, tokenizer, optimizer, scheduler, state_text)
        _barrier()  # every shard is on disk before rank 0 seals the folder
        if _is_main():
            _seal(tmp, final, root, step)
    except BaseException:
        if _is_main():
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    if _is_main():
        _remove_stale(root, final, keep_last)
        logger.info("saved checkpoint %s", final)
    _barrier()
    return final


def _file_digest(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _manifest(folder: Path) -> dict[str, list]:
    """``{relative path: [size, sha256]}`` of every file in ``folder`` but the marker."""
    return {str(path.relative_to(folder)): [path.stat().st_size, _file_digest(path)]
            for path in sorted(folder.rglob("*")) if path.is_file() and path.name != COMPLETE_MARKER}


def verify_checkpoint(folder: str | Path, checksums: bool = True) -> str | None:
    """Why ``folder`` is not a good checkpoint (one line), or None when it is.

    Checks the ``COMPLETE`` marker, then every file its manifest lists: present, same size and (with
    ``checksums``) same SHA-256, and ``state.json`` readable. Checkpoints written before manifests existed are
    checked for the marker and ``state.json`` only.
    """
    folder = Path(folder)
    marker = folder / COMPLETE_MARKER
    if not marker.is_file():
        return f"no {COMPLETE_MARKER} marker (an interrupted save)"
    try:
        manifest = json.loads(marker.read_text(encoding="utf-8")).get("files", {})
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return f"its {COMPLETE_MARKER} marker is unreadable"
    for name, (size, digest) in sorted(manifest.items()):
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, {size} were written"
        if checksums and _file_digest(path) != digest:
            return f"{name} does not match its checksum (corrupted on disk)"
    try:
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        return f"state.json is unreadable ({type(err).__name__})"
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        return "state.json has no integer step"
    return None


def latest_good_checkpoint(output_dir: str | Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest checkpoint that passes :func:`verify_checkpoint`, and the newer ones skipped with the reason."""
    skipped: list[tuple[Path, str]] = []
    for _, path in reversed(_step_dirs(Path(output_dir) / CHECKPOINT_SUBDIR)):
        reason = verify_checkpoint(path)
        if reason is None:
            return path, skipped
        skipped.append((path, reason))
    return None, skipped


def resume_checkpoint(path: Path) -> Path:
    """The checkpoint ``--resume PATH`` means: PATH itself if it is one, else the newest GOOD one of run PATH.

    Damaged newer checkpoints (manifest mismatch, unreadable state) are skipped with a warning each.

    Raises:
        CheckpointError: PATH is a damaged checkpoint, or the run has no good checkpoint (one line, the fix).
    """
    if (path / "state.json").exists() or (path / COMPLETE_MARKER).exists():
        reason = verify_checkpoint(path)
        if reason is not None:
            raise CheckpointError(f"--resume {path}: the checkpoint is damaged ({reason}). Fix: --resume "
                                  f"{path.parent.parent} falls back to the newest good checkpoint of the run")
        return path
    ckpt, skipped = latest_good_checkpoint(path)
    for bad, reason in skipped:
        logger.warning("checkpoint %s is damaged (%s): skipped", bad, reason)
    if ckpt is None:
        raise CheckpointError(f"--resume {path}: no good checkpoint under {path / 'checkpoints'}. Fix: start the "
                              "run again without --resume (a new output_dir, or --overwrite to move this one aside)")
    if skipped:
        logger.warning("resuming from %s, the newest good checkpoint", ckpt)
    return ckpt


def _seal(tmp: Path, final: Path, root: Path, step: int) -> None:
    """fsync the temp folder, write the marker with the manifest of every file, and rename it to ``final``
    (replacing an older save of the same step)."""
    _fsync_tree(tmp)
    marker = tmp / COMPLETE_MARKER
    marker.write_text(json.dumps({"step": step, "time": time.time(), "files": _manifest(tmp)}) + "\n")
    _fsync_path(marker)
    if final.exists():  # re-saving a step (e.g. after resuming from it): move the old one aside first
        old = root / f"{_TMP_PREFIX}replaced_{step:06d}_{os.getpid()}"
        os.replace(final, old)
        shutil.rmtree(old, ignore_errors=True)
    os.replace(tmp, final)
    _fsync_path(root)


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


def _saved_parts(dcp_dir: Path) -> set[str]:
    """Top-level parts (``model``, ``optim``) present in a DCP checkpoint's metadata."""
    from torch.distributed.checkpoint import FileSystemReader

    try:
        metadata = FileSystemReader(str(dcp_dir)).read_metadata()
    except Exception as err:  # any unreadable metadata means a damaged checkpoint
        raise CheckpointError(f"{dcp_dir}: unreadable DCP metadata ({err}); the checkpoint is damaged") from None
    return {key.split(".", 1)[0] for key in metadata.state_dict_metadata}


def _load_dcp(folder: Path, model, optimizer) -> None:
    """Load model (and optimizer) state from ``folder/dcp`` into the current layout (any number of ranks)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.state_dict import set_state_dict

    parts = _saved_parts(folder / "dcp")
    if optimizer is not None and "optim" not in parts:
        raise CheckpointError(f"{folder} holds no optimizer state; it was saved without one")
    state = _train_state(model, optimizer)
    try:
        with _single_process_quiet():
            dcp.load(state, checkpoint_id=folder / "dcp")
    except (CheckpointException, RuntimeError, KeyError) as err:  # a key/shape mismatch: name the fix
        detail = " ".join(line for line in str(err).splitlines() if "Missing key" in line or "size" in line)
        raise CheckpointError(f"{folder}: weights do not match the model ({(detail or str(err))[:300]}). "
                              "Fix: resume with the same model.path and model.lora_* settings") from None
    set_state_dict(model, optimizer if optimizer is not None else [],
                   model_state_dict=state["model"], optim_state_dict=state.get("optim", {}),
                   options=_state_dict_options(model))


def _load_legacy(folder: Path, model, optimizer) -> None:
    """Checkpoints written before DCP: ``model.safetensors`` (HF folder) + ``optimizer.pt``, one process."""
    if model is not None:
        _load_weights(folder, model)
    if optimizer is not None:
        if not (folder / "optimizer.pt").is_file():
            raise CheckpointError(f"{folder} has no optimizer.pt; it was saved without one")
        optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True))


def load_checkpoint(ckpt_dir: str | Path, model=None, optimizer=None, scheduler=None, verify: bool = True) -> dict:
    """Restore a checkpoint written by :func:`save_checkpoint` (under torchrun: on every rank).

    Args:
        ckpt_dir: a ``step_XXXXXX`` folder (e.g. from :func:`latest_checkpoint`).
        model: model to load the weights into (same architecture; plain, PEFT or FSDP2-sharded, on any number
            of ranks), or None to skip.
        optimizer: optimizer to restore (build it over ``model``'s parameters first), or None.
        scheduler: LR scheduler to restore, or None.
        verify: check every file's SHA-256 against the manifest first (sizes are always checked).

    Returns:
        The saved ``state.json`` content. RNG states are restored last, as of the save (rank 0's generators).

    Raises:
        CheckpointError: the folder is not a complete checkpoint, or lacks a requested part.
    """
    folder = Path(ckpt_dir)
    if not (folder / COMPLETE_MARKER).is_file():
        raise CheckpointError(f"{folder} is not a complete checkpoint (no {COMPLETE_MARKER} marker). "
                              "Fix: pass a checkpoints/step_XXXXXX folder, or the run folder to resume the latest")
    reason = verify_checkpoint(folder, checksums=verify)
    if reason is not None:
        raise CheckpointError(f"{folder} is damaged: {reason}. Fix: resume from the run folder, which falls back "
                              "to the newest good checkpoint")
    if (folder / "dcp").is_dir():
        if model is not None:
            _load_dcp(folder, model, optimizer)
        elif optimizer is not None:
            raise CheckpointError("load_checkpoint: an optimizer can only be restored together with its model")
    else:
        _load_legacy(folder, model, optimizer)
    if scheduler is not None:
        if not (folder / "scheduler.pt").is_file():
            raise CheckpointError(f"{folder} has no scheduler.pt; it was saved without one")
        scheduler.load_state_dict(torch.load(folder / "scheduler.pt", map_location="cpu", weights_only=True))
    state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    restore_rng_state(torch.load(folder / "rng.pt", map_location="cpu", weights_only=True))
    logger.info("loaded checkpoint %s (step %s)", folder, state.get("step"))
    return state
