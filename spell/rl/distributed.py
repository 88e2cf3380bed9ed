"""Scale-out for ``spell train`` under ``torchrun`` (torch.distributed; gloo on CPU, nccl on GPU).

SPMD: every rank plays its own rollouts on its own shard of document sets; the policy is sharded with FSDP2
(:mod:`spell.rl.sharding`) and ONE optimizer step is made per training step on gradients SUMMED over ranks.
Every helper here is a no-op (returns its input) in a single process, so 1-process runs are unchanged. Details:

- Data: each task's document sets are dealt round-robin (``sets[rank::world_size]``, :func:`shard_docsets`), so
  a set's history memory lives on one rank; seeds (python/numpy/torch, sampler, self-play RNG) are
  ``train.seed + rank``. ``train.batch_groups`` and ``data.questions_per_round`` are PER RANK.
- Loss: each rank divides its token-sum loss by the GLOBAL completion-token count (an all-reduce), so the summed
  gradient is the token-mean of Eq. 10 over the union batch. A rank with fewer micro-batches runs zero-weighted
  filler ones (FSDP2 needs every rank in every forward/backward); if the global count is 0 every rank skips.
  Batch statistics (questioner advantages, the verifier quota) span the union batch (:mod:`spell.experience`).
- Output: rank 0 alone writes metrics (rollout counts summed, rates/means averaged over ranks; ``train/*``
  global) and sample dumps (all ranks' records, with ``rank``); every rank writes its checkpoint shard.
  ``state.json["ranks"][r]`` holds rank r's memory, sampler and RNGs, restored per rank; resuming on another
  world size merges the memories and restarts samplers and RNG streams (see ``Trainer._restore``).
"""

from __future__ import annotations

import base64
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

from spell.rl.checkpoint import capture_rng_state, restore_rng_state

COLLECTIVE_TIMEOUT = timedelta(hours=2)
logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job. ``backend`` is None for a single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def init_distributed(device_kind: str) -> DistInfo:
    """Join the process group that ``torchrun`` describes (``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_*``).

    Nothing is initialised when ``WORLD_SIZE`` is unset or 1. On CUDA (``device_kind`` ``cuda``, or ``auto``
    with a GPU) the group runs nccl for CUDA tensors and gloo for CPU ones (``cuda:nccl,cpu:gloo``) and this rank's
    GPU is ``LOCAL_RANK`` (``torch.cuda.set_device``), so ``torch.device("cuda")`` means that GPU afterwards; on
    CPU the backend is gloo.

    Args:
        device_kind: ``train.device``: ``auto``, ``cpu`` or ``cuda``.

    Returns:
        This process's :class:`DistInfo`.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    if world_size <= 1:
        return DistInfo()
    if not dist.is_initialized():
        use_cuda = device_kind == "cuda" or (device_kind == "auto" and torch.cuda.is_available())
        if use_cuda:
            torch.cuda.set_device(_env_int("LOCAL_RANK", 0))
        # Ranks roll out independently and rank 0 alone evaluates and writes checkpoints, so minutes can pass
        # between collectives: a generous timeout instead of the backend default.
        # CUDA tensors go over nccl; anything on CPU tensors (train.fsdp_cpu_offload's gradients and their global
        # norm, object collectives) over gloo in the same group
        dist.init_process_group(backend=process_group_backend(use_cuda), timeout=COLLECTIVE_TIMEOUT)
        logger.info("joined process group: rank %d of %d (%s)", dist.get_rank(), world_size, dist.get_backend())
    return dist_info()


def process_group_backend(use_cuda: bool) -> str:
    """The ``init_process_group`` backend: nccl for CUDA tensors with gloo beside it for CPU ones; gloo alone on a
    CPU machine.

    >>> process_group_backend(True), process_group_backend(False)
    ('cuda:nccl,cpu:gloo', 'gloo')
    """
    return "cuda:nccl,cpu:gloo" if use_cuda else "gloo"


def dist_info() -> DistInfo:
    """The current :class:`DistInfo` (read from torch.distributed; a single process when it is not set up)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    return DistInfo(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0), str(dist.get_backend()))


def is_main() -> bool:
    """True on rank 0 (and in a single process)."""
    return dist_info().is_main


def _comm_device() -> torch.device:
    """Where this group's collectives of small values run: CUDA when nccl is in the group, else CPU (gloo)."""
    if "nccl" in str(dist.get_backend()):
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_dict(values: Mapping[str, float | int], op: str = "sum") -> dict[str, float | int]:
    """Reduce every value over ranks in one collective; every rank must pass the same keys.

    Args:
        values: numbers to reduce (NaN would poison a sum: pass counts and sums, not means).
        op: ``sum`` or ``max``.

    Returns:
        ``{key: global sum (or max)}`` as floats; in a single process the input values unchanged.
    """
    if op not in ("sum", "max"):
        raise ValueError(f"all_reduce_dict: op={op!r}, use sum or max")
    if not _active():
        return dict(values)
    keys = sorted(values)
    tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return dict(zip(keys, tensor.tolist(), strict=True))


@torch.no_grad()
def broadcast_parameters(model: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank (start identical even if built per rank)."""
    if not _active():
        return
    for tensor in [*model.parameters(), *model.buffers()]:
        dist.broadcast(tensor.data, src=0)


def gather_objects(obj: T) -> list[T]:
    """Every rank's ``obj`` (picklable), indexed by rank, on every rank; ``[obj]`` in a single process."""
    if not _active():
        return [obj]
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def gather_to_main(obj: T) -> list[T]:
    """Every rank's ``obj`` indexed by rank on rank 0 (``[]`` on the others); ``[obj]`` in a single process."""
    if not _active():
        return [obj]
    gathered: list | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered or []


def barrier() -> None:
    """Wait until every rank gets here (no-op in a single process)."""
    if _active():
        dist.barrier()


def cleanup() -> None:
    """Leave the process group, if one was set up."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard_docsets(docsets: Sequence[T], tasks: Sequence[str], rank: int, world_size: int) -> list[T]:
    """This rank's document sets: each task's sets (corpus order) dealt round-robin, ``sets[rank::world_size]``.

    Disjoint shards keep every set's history memory on one rank. A task with fewer sets than ranks is not
    split (every rank gets all its sets; their memories then live per rank), with a warning.

    >>> shard_docsets(["a", "b", "c"], [], 1, 2)
    ['b']
    """
    if world_size <= 1:
        return list(docsets)
    if not tasks:
        return list(docsets[rank::world_size])
    shard: list[T] = []
    for task in tasks:
        pool = [d for d in docsets if getattr(d, "task", None) == task]
        if len(pool) < world_size:
            logger.warning("task %s has %d document set(s) for %d ranks: every rank plays all of them",
                           task, len(pool), world_size)
            shard.extend(pool)
        else:
            shard.extend(pool[rank::world_size])
    return shard


def merge_rank_metrics(per_rank: Sequence[Mapping[str, float]], summed: Iterable[str]) -> dict[str, float]:
    """Combine per-rank metric dicts: keys in ``summed`` are added, others averaged over ranks with a finite value.

    >>> merge_rank_metrics([{"n": 2, "rate": 0.5}, {"n": 3, "rate": float("nan")}], {"n"})
    {'n': 5.0, 'rate': 0.5}
    """
    summed = set(summed)
    keys = list(dict.fromkeys(k for metrics in per_rank for k in metrics))
    merged: dict[str, float] = {}
    for key in keys:
        values = [float(m[key]) for m in per_rank if key in m]
        finite = [v for v in values if math.isfinite(v)]
        if key in summed:
            merged[key] = float(sum(finite))
        else:
            merged[key] = sum(finite) / len(finite) if finite else math.nan
    return merged


def reduce_metrics(metrics: Mapping[str, float], summed: Iterable[str]) -> dict[str, float]:
    """:func:`merge_rank_metrics` over all ranks' ``metrics`` (collective); the input unchanged in one process."""
    if not _active():
        return dict(metrics)
    return merge_rank_metrics(gather_objects(dict(metrics)), summed)


def _encode(value: object) -> object:
    if isinstance(value, torch.Tensor):
        return {"uint8_b64": base64.b64encode(value.cpu().numpy().tobytes()).decode("ascii")}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    return value


def _decode(value: object) -> object:
    if isinstance(value, dict) and "uint8_b64" in value:
        return torch.frombuffer(bytearray(base64.b64decode(value["uint8_b64"])), dtype=torch.uint8).clone()
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def capture_rank_rng() -> dict:
    """This process's python/numpy/torch/CUDA generator states as JSON (for ``state.json["ranks"][r]``)."""
    return {key: _encode(value) for key, value in capture_rng_state().items()}


def restore_rank_rng(state: dict) -> None:
    """Restore a :func:`capture_rank_rng` snapshot."""
    restore_rng_state({key: _decode(value) for key, value in state.items()})
