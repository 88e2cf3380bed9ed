"""The weight sync of the vLLM engine (spell/rl/engine/vllm.py), stage by stage.

Trainer side: :func:`vllm_weights` turns the policy (plain, PEFT LoRA, FSDP2-sharded) into the tensors a Hugging
Face checkpoint would hold, one at a time: wrapper prefixes dropped (:func:`vllm_weight_name`), LoRA layers merged
(:func:`merged_lora_weight`), FSDP2 shards gathered, fused mixture-of-experts weights split per expert
(:func:`per_expert_weights`); :func:`weight_buckets` groups them for releases without in-place reload.

Worker side (run inside vLLM's worker, in this process): :func:`reloads_in_place` asks the worker which way in it
offers, :func:`load_bucket` hands a bucket to the model's ``load_weights``, :func:`refresh_shared_weights`
re-packs layers that share a weight (tied output head) after the sync, and the reload's expected warnings are
filtered (:func:`quiet_expected_reload_warnings`). docs/vllm.md says why each step is there.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from spell.rl.sharding import full_tensor

# Wrapper prefixes that never appear in a Hugging Face checkpoint (PEFT, FSDP1, activation checkpointing, compile).
_PEFT_PREFIX = "base_model.model."
_WRAPPER_PARTS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")
_FUSED_EXPERTS = ("experts.gate_up_proj", "experts.down_proj")  # transformers 5's mixture-of-experts weights


def vllm_weight_name(name: str) -> str:
    """The checkpoint name vLLM's ``load_weights`` expects for a training parameter ``name``: PEFT / FSDP1 /
    checkpointing / compile wrappers and PEFT's ``.base_layer`` removed (vLLM maps checkpoint names to its fused
    layers itself).

    >>> vllm_weight_name("base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight")
    'model.layers.0.self_attn.q_proj.weight'
    """
    name = name.removeprefix(_PEFT_PREFIX)
    for part in _WRAPPER_PARTS:
        name = name.replace(part, "")
    return name.replace(".base_layer.", ".")


def _lora_layers(model: nn.Module) -> dict[str, nn.Module]:
    """PEFT LoRA layers of ``model`` by module name ({} for a plain model)."""
    if not any("lora_" in name for name, _ in model.named_parameters()):
        return {}
    from peft.tuners.lora import LoraLayer

    return {name: module for name, module in model.named_modules() if isinstance(module, LoraLayer)}


def merged_lora_weight(layer: nn.Module, device: torch.device | None = None) -> torch.Tensor:
    """The full weight a PEFT LoRA linear layer computes with: ``W + sum_a scale_a * B_a @ A_a`` in fp32 over its
    active adapters (W alone when they are disabled or already merged). A collective under FSDP2.

    Raises:
        NotImplementedError: DoRA or embedding adapters.
    """
    weight = full_tensor(layer.base_layer.weight, device).detach().float()
    if layer.disable_adapters or layer.merged:
        return weight
    for adapter in layer.active_adapters:
        if adapter not in layer.lora_A:
            continue
        if layer.use_dora.get(adapter) or adapter in layer.lora_embedding_A:
            raise NotImplementedError(f"vLLM weight sync merges plain LoRA linear layers only ({adapter!r} is DoRA "
                                      "or an embedding adapter)")
        lora_a = full_tensor(layer.lora_A[adapter].weight, device).detach().float()  # [r, in]
        lora_b = full_tensor(layer.lora_B[adapter].weight, device).detach().float()  # [out, r]
        delta = layer.scaling[adapter] * (lora_b @ lora_a)  # [out, in]
        weight = weight + (delta.T if getattr(layer, "fan_in_fan_out", False) else delta)
    return weight


@torch.no_grad()
def vllm_weights(model: nn.Module, dtype: torch.dtype, device: torch.device | None = None
                 ) -> Iterator[tuple[str, torch.Tensor]]:
    """Every parameter of ``model`` once, as ``(vLLM checkpoint name, full tensor in dtype)``, in parameter order.

    Tied parameters come once (``named_parameters`` drops duplicates); an FSDP2 shard is all-gathered
    (every rank must consume the iterator in step); a LoRA layer comes as its merged weight, its adapter
    matrices not at all.

    Raises:
        NotImplementedError: PEFT ``modules_to_save`` copies.
    """
    lora = _lora_layers(model)
    adapter_params = {f"{prefix}.{name}" for prefix, layer in lora.items()
                      for name, _ in layer.named_parameters() if not name.startswith("base_layer.")}
    for name, param in model.named_parameters():
        if name in adapter_params:
            continue
        if ".modules_to_save." in name or ".original_module." in name:
            raise NotImplementedError(f"{name}: PEFT modules_to_save is not supported by the vLLM weight sync")
        layer = lora.get(name.removesuffix(".base_layer.weight")) if name.endswith(".base_layer.weight") else None
        # one expression: no full-precision copy stays referenced while the caller holds the cast one
        if layer is not None:
            yield vllm_weight_name(name), merged_lora_weight(layer, device).to(dtype)
        elif name.endswith(_FUSED_EXPERTS) and param.dim() == 3:
            yield from per_expert_weights(vllm_weight_name(name), full_tensor(param, device).detach().to(dtype))
        else:
            yield vllm_weight_name(name), full_tensor(param, device).detach().to(dtype)


def per_expert_weights(name: str, fused: torch.Tensor) -> Iterator[tuple[str, torch.Tensor]]:
    """A mixture-of-experts layer's fused weight, as transformers 5 holds it, in checkpoint form (what vLLM loads):
    ``experts.gate_up_proj`` [E, 2I, H] -> ``experts.{e}.gate_proj.weight`` (rows :I) and ``up_proj.weight`` (rows
    I:); ``experts.down_proj`` [E, H, I] -> ``experts.{e}.down_proj.weight``.

    >>> [(n, tuple(t.shape)) for n, t in per_expert_weights("m.experts.gate_up_proj", torch.zeros(2, 6, 4))][:2]
    [('m.experts.0.gate_proj.weight', (3, 4)), ('m.experts.0.up_proj.weight', (3, 4))]
    """
    prefix, kind = name.rsplit(".", 1)
    for expert, weight in enumerate(fused):
        if kind == "gate_up_proj":
            gate, up = weight.chunk(2, dim=0)
            yield f"{prefix}.{expert}.gate_proj.weight", gate
            yield f"{prefix}.{expert}.up_proj.weight", up
        else:
            yield f"{prefix}.{expert}.down_proj.weight", weight


def weight_buckets(weights: Iterable[tuple[str, torch.Tensor]], max_bytes: int
                   ) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Consecutive groups of ``weights`` holding at most ``max_bytes`` of tensor data each (a larger tensor alone)."""
    bucket: list[tuple[str, torch.Tensor]] = []
    size = 0
    for name, tensor in weights:
        nbytes = tensor.numel() * tensor.element_size()
        if bucket and size + nbytes > max_bytes:
            yield bucket
            bucket, size = [], 0
        bucket.append((name, tensor))
        size += nbytes
    if bucket:
        yield bucket


def reloads_in_place(llm: Any) -> bool:
    """Whether the engine's workers offer vLLM's in-place reload from a weights iterator (asked of the worker
    itself, in this process: a feature test, not a version guess)."""
    return all(llm.collective_rpc(_worker_reloads_in_place))


def _worker_reloads_in_place(worker: Any) -> bool:
    """Runs in vLLM's worker: does its model runner have ``reload_weights(weights_iterator=...)``?"""
    method = getattr(getattr(worker, "model_runner", None), "reload_weights", None)
    return method is not None and "weights_iterator" in inspect.signature(method).parameters


def refresh_shared_weights(vllm_model: nn.Module) -> int:
    """Runs in vLLM's worker after a weight sync: re-run the post-loading step of every layer whose ``weight``
    parameter is shared with another layer (tied input/output embeddings), returns how many.

    vLLM ties the output head to the embedding by sharing the parameter, so the head is never loaded itself; a
    platform that keeps a processed copy of the head (the CPU backend packs it for its GEMM kernel) would go on
    computing logits with the old weights. On a GPU the unquantised head keeps no copy and this does nothing.
    """
    sharers: dict[int, list[nn.Module]] = {}
    for module in vllm_model.modules():
        weight = module._parameters.get("weight")
        if weight is not None:
            sharers.setdefault(id(weight), []).append(module)
    refreshed = 0
    for modules in sharers.values():
        for module in modules if len(modules) > 1 else ():
            method = getattr(module, "quant_method", None)
            if method is not None and hasattr(method, "process_weights_after_loading"):
                method.process_weights_after_loading(module)
                refreshed += 1
    return refreshed


class _ExpectedReloadWarnings(logging.Filter):
    """Drops the in-place reload's "X: Failed to load weights" warnings for layers that have nothing to load: a
    rotary embedding (its cos/sin cache is computed, not loaded) and, when embeddings are tied, the output head
    (it shares the embedding's parameter, loaded under the embedding's name; :func:`refresh_shared_weights` re-packs
    it). A warning for any other layer still shows."""

    def __init__(self) -> None:
        super().__init__()
        self.tied_head = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != "%s: Failed to load weights" or not record.args:
            return True
        layer = str(record.args[0])
        return not (layer.endswith("RotaryEmbedding") or (self.tied_head and layer == "ParallelLMHead"))


_RELOAD_FILTER = _ExpectedReloadWarnings()
_RELOAD_LOGGER = "vllm.model_executor.model_loader.reload.layerwise"


def quiet_expected_reload_warnings(tied: bool) -> None:
    """Install the filter on vLLM's reload logger once; ``tied``: the output head's warning is expected too."""
    reload_logger = logging.getLogger(_RELOAD_LOGGER)
    if _RELOAD_FILTER not in reload_logger.filters:
        reload_logger.addFilter(_RELOAD_FILTER)
    _RELOAD_FILTER.tied_head = _RELOAD_FILTER.tied_head or tied


def load_bucket(bucket: list[tuple[str, torch.Tensor]], vllm_model: nn.Module) -> None:
    """Runs inside vLLM's worker (this process): its model copies, shards (tensor parallel) and fuses each tensor."""
    vllm_model.load_weights(iter(bucket))
