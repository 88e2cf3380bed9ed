"""FSDP2 sharding of the policy under ``torchrun`` (``torch.distributed.fsdp.fully_shard``, a 1-D device mesh).

One process: nothing here runs, the model stays a plain module. Several ranks: every decoder layer and then the
root are wrapped with ``fully_shard``, so parameters, gradients and the AdamW state built afterwards are
sharded over the ranks (each holds about 1/N of every tensor as a ``DTensor`` shard); gradients are
reduce-scattered by FSDP's own backward hooks.

Precision follows the authors' FSDP setup and verl/TRL: fp32 master weights and optimizer, bf16 compute and
fp32 gradient reduction on a GPU (``MixedPrecisionPolicy``); fp32 throughout on CPU. ``CPUOffloadPolicy``
keeps parameters, gradients and optimizer state in host memory when asked (``train.fsdp_cpu_offload``).

Three details the rest of the trainer relies on:

- Log-probs run through a registered FSDP forward method (:data:`spell.rl.policy.FSDP_LOGPROB_METHOD`), so
  the root's parameters (embeddings, final norm, the output head that the chunked log-probs read) are
  gathered for it exactly as for ``forward``; reading ``lm_head.weight`` outside it would see a shard.
- FSDP averages gradients over ranks; the loss is already divided by the GLOBAL token count, so the trainer
  multiplies it by the world size (:func:`gradient_scale`) to get the sum (gloo has no pre-multiplied sum).
- Generation cannot run on the sharded model (every forward all-gathers, and ranks generate different
  amounts), so the engine samples from an unsharded replica that :func:`copy_full_weights` refreshes after
  every update, one parameter at a time (no full state dict is ever materialised).
"""

from __future__ import annotations

import copy
import functools
import logging

import torch
from torch import nn

from spell.rl.policy import FSDP_LOGPROB_METHOD, decoder_logprobs

logger = logging.getLogger(__name__)


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of a Hugging Face causal LM (also under a PEFT wrapper), in order.

    Found by the class names the model lists in ``_no_split_modules`` (``Qwen2DecoderLayer``, ...), the
    same units transformers and accelerate never split across devices.

    Raises:
        ValueError: the model declares no such blocks, or none is found.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(base, "_no_split_modules", None) or ())
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise ValueError(f"{type(base).__name__}: no decoder layers found (_no_split_modules={sorted(names)}); "
                         "FSDP2 sharding needs a transformers causal LM with decoder layer classes")
    return layers


def shard_policy(model: nn.Module, device: torch.device, world_size: int, *,
                 compute_dtype: torch.dtype | None = None, cpu_offload: bool = False) -> nn.Module:
    """Wrap ``model`` in place with FSDP2: each decoder layer, then the root; returns it.

    Args:
        model: the policy (or a frozen reference), identical on every rank, with fp32 parameters.
        device: this rank's device (its type picks the mesh: ``cpu`` with gloo, ``cuda`` with nccl).
        world_size: ranks in the (1-D) mesh.
        compute_dtype: parameter dtype in forward/backward (bf16 on a GPU); None keeps the stored dtype.
            Gradients are reduced in fp32 and the sharded master weights stay fp32.
        cpu_offload: keep sharded parameters, gradients and optimizer state on the CPU (``CPUOffloadPolicy``).
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import (
        CPUOffloadPolicy,
        MixedPrecisionPolicy,
        OffloadPolicy,
        fully_shard,
        register_fsdp_forward_method,
    )

    mesh = init_device_mesh(device.type, (world_size,))
    # pinned host memory speeds the copies to a GPU; without one, pinning is refused ("no accelerator")
    offload = CPUOffloadPolicy(pin_memory=torch.cuda.is_available()) if cpu_offload else OffloadPolicy()
    layer_policy = MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32)
    # The root's float inputs (per-row temperatures of the log-prob method) must not be cast to bf16.
    root_policy = MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32,
                                       cast_forward_inputs=False)
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh, mp_policy=layer_policy, offload_policy=offload)
    fully_shard(model, mesh=mesh, mp_policy=root_policy, offload_policy=offload)
    setattr(model, FSDP_LOGPROB_METHOD, functools.partial(decoder_logprobs, model))
    register_fsdp_forward_method(model, FSDP_LOGPROB_METHOD)
    return model


def is_sharded(model: nn.Module) -> bool:
    """True for a model wrapped by :func:`shard_policy` (an ``FSDPModule``)."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def gradient_scale(model: nn.Module, world_size: int) -> float:
    """Factor for the loss before ``backward``: FSDP averages gradients over ranks, the update wants their sum."""
    return float(world_size) if is_sharded(model) else 1.0


def set_gradient_sync(model: nn.Module, enabled: bool) -> None:
    """Reduce-scatter gradients in this backward (True) or accumulate them locally (False); no-op unsharded."""
    if is_sharded(model):
        model.set_requires_gradient_sync(enabled)


def full_tensor(value: torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
    """The whole tensor behind a ``DTensor`` shard (a collective: every rank must call it); others unchanged.

    Args:
        value: a parameter or state-dict entry.
        device: move a CPU-offloaded shard here first (nccl gathers CUDA tensors only).
    """
    from torch.distributed.tensor import DTensor

    if not isinstance(value, DTensor):
        return value
    if device is not None and value.device != device:
        value = value.to(device)
    return value.full_tensor()


def local_tensor(value: torch.Tensor) -> torch.Tensor:
    """This rank's elements of a (possibly ``DTensor``-sharded) tensor; a plain tensor unchanged. No collective."""
    return value.to_local() if hasattr(value, "to_local") else value


@torch.no_grad()
def rollout_replica(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A frozen copy of the (unsharded) ``model`` with its floating parameters in ``dtype``.

    Parameters are cast one at a time into ``deepcopy``'s memo, so no second full-precision copy ever exists
    (for 7B: 15 GB of bf16, not 30 GB of fp32 first). Tied parameters stay tied; buffers (e.g. RoPE
    frequencies) keep their dtype, as ``from_pretrained(dtype=...)`` keeps them.
    """
    memo: dict[int, object] = {}
    for param in model.parameters():
        cast = param.detach().to(dtype, copy=True) if param.is_floating_point() else param.detach().clone()
        memo[id(param)] = nn.Parameter(cast, requires_grad=False)
    return copy.deepcopy(model, memo)


@torch.no_grad()
def copy_full_weights(source: nn.Module, target: nn.Module, device: torch.device | None = None) -> None:
    """Copy ``source``'s (possibly sharded) weights into the unsharded ``target``, one tensor at a time.

    Every rank must call it (each sharded entry is all-gathered). Keys must match: ``target`` is a copy of
    the model taken before sharding. Values are cast to ``target``'s dtype (e.g. a bf16 rollout replica).
    """
    target_state = target.state_dict()
    for name, value in source.state_dict().items():
        target_state[name].copy_(full_tensor(value, device))
