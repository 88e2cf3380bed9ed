"""Does a plan fit the hardware, and if not, which change makes it fit.

Changes come in tiers, cheapest first: (1) a smaller micro-batch (more gradient-accumulation steps, the same
update), fewer prompts per engine batch (slower rollouts), less vLLM space, gradient checkpointing (about +30%
update time); (2) CPU offload of the sharded state (much slower); (3) more GPUs (hardware); (4) LoRA (changes
what is trained). Within a tier one change alone is tried first, then all changes allowed so far together.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from spell.config import SpellConfig
from spell.plan.arch import ModelArch
from spell.plan.memory import GIB, MemoryPlan, micro_batch_shape, plan_memory
from spell.types import EngineKind

HEADROOM = 0.10  # of each GPU kept free: allocator fragmentation, buffers not modelled (not measured)
MAX_GPUS_PER_NODE = 8
MAX_NODES = 64
LORA_RANK = 32  # what the LoRA suggestion proposes (the qwen2.5-7b-instruct-lora preset's rank)
_SEARCHED = ("grpo.micro_batch_tokens", "engine.max_batch_prompts")  # numeric keys: the largest value that fits


@dataclass(frozen=True, slots=True)
class Hardware:
    """The machines a run is planned for: ``gpus`` per node, ``memory_gib`` each, ``nodes`` nodes."""

    gpus: int
    memory_gib: float
    nodes: int = 1
    source: str = "flags"

    @property
    def world(self) -> int:
        return self.gpus * self.nodes

    @property
    def usable(self) -> float:
        """Bytes a rank may plan for: the GPU less :data:`HEADROOM`."""
        return self.memory_gib * GIB * (1 - HEADROOM)

    def describe(self) -> str:
        nodes = f" x {self.nodes} nodes" if self.nodes > 1 else ""
        return f"{self.gpus} GPU{'s' if self.gpus > 1 else ''} x {self.memory_gib:g} GiB{nodes}"


@dataclass(frozen=True, slots=True)
class Fix:
    """A change that makes the plan fit: config overrides and/or other hardware, with the resulting plan."""

    overrides: tuple[str, ...]
    hardware: Hardware
    plan: MemoryPlan
    description: str


def declared_hardware(device: str = "auto") -> Hardware | None:
    """The hardware ``spell validate`` checks against: ``SPELL_GPUS`` / ``SPELL_GPU_MEMORY_GB`` / ``SPELL_NODES``
    from the environment, else the CUDA GPUs visible here (when the run is not a CPU run), else None (unknown:
    no check). Raises ValueError on a malformed variable."""
    gpus, memory = os.environ.get("SPELL_GPUS"), os.environ.get("SPELL_GPU_MEMORY_GB")
    if gpus or memory:
        try:
            found = Hardware(int(gpus or 1), float(memory or "nan"), int(os.environ.get("SPELL_NODES") or 1), "env")
        except ValueError:
            raise ValueError(f"SPELL_GPUS={gpus!r} / SPELL_GPU_MEMORY_GB={memory!r}: write integers / a number of "
                             "GiB, e.g. SPELL_GPUS=8 SPELL_GPU_MEMORY_GB=80") from None
        if not (found.gpus >= 1 and found.memory_gib > 0 and found.nodes >= 1):
            raise ValueError("SPELL_GPUS, SPELL_NODES must be >= 1 and SPELL_GPU_MEMORY_GB > 0 (set both)")
        return found
    if device == "cpu":
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    memory_gib = torch.cuda.get_device_properties(0).total_memory / GIB
    return Hardware(torch.cuda.device_count(), round(memory_gib, 1), 1, "visible CUDA devices")


def fits(plan: MemoryPlan, hardware: Hardware) -> bool:
    return plan.peak <= hardware.usable


def smallest_fix(cfg: SpellConfig, arch: ModelArch, hardware: Hardware) -> Fix | None:
    """The cheapest change that fits. Changes come in tiers (module docstring): within a tier a single change
    first, then every change allowed so far stacked (from tier "more GPUs" on, also on more GPUs), with the
    stack's unneeded changes dropped and its numbers raised as far as they still fit. None when nothing fits."""
    changes: list[tuple[str, object]] = []
    for singles, stackable, with_more_gpus in _TIERS:
        for candidate in singles:
            fix = candidate(cfg, arch, hardware)
            if fix is not None:
                return fix
        for entry in stackable:
            change = entry(_apply(cfg, changes), hardware)
            if change is not None:
                changes.append(change)
        if changes and fits(_plan(_apply(cfg, changes), arch, hardware), hardware):
            return _pruned(cfg, arch, hardware, changes, hardware)
        more = _more_gpus(_apply(cfg, changes), arch, hardware) if with_more_gpus and changes else None
        if more is not None:
            return _pruned(cfg, arch, more.hardware, changes, hardware)
    return None


def _apply(cfg: SpellConfig, changes: list[tuple[str, object]]) -> SpellConfig:
    for key, value in changes:
        cfg = _override(cfg, key, value)
    return cfg


def _pruned(cfg: SpellConfig, arch: ModelArch, hardware: Hardware, changes: list[tuple[str, object]],
            before: Hardware) -> Fix:
    """``changes`` (which fit on ``hardware``) without those it still fits without, as a :class:`Fix`."""
    kept = list(changes)
    for change in changes:
        fewer = [c for c in kept if c != change]
        if fits(_plan(_apply(cfg, fewer), arch, hardware), hardware):
            kept = fewer
    for index, (key, value) in enumerate(kept):  # the stack took the extreme value; take the largest that fits
        if key in _SEARCHED:
            others = _apply(cfg, kept[:index] + kept[index + 1:])
            values = list(range(value, _get(cfg, key), 1024 if key == "grpo.micro_batch_tokens" else 1))
            best = _largest_fitting(others, arch, hardware, key, values, "")
            kept[index] = (key, int(best.overrides[0].split("=")[1])) if best is not None else kept[index]
    texts = tuple(_text(key, value) for key, value in kept)
    more = (f"{hardware.describe()} (more ranks shard the training state)",) if hardware != before else ()
    return Fix(texts, hardware, _plan(_apply(cfg, kept), arch, hardware), "together: " + ", ".join(texts + more))


def _get(cfg: SpellConfig, key: str) -> object:
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def _text(key: str, value: object) -> str:
    return f"{key}={str(value).lower() if isinstance(value, bool) else value}"


def _plan(cfg: SpellConfig, arch: ModelArch, hardware: Hardware) -> MemoryPlan:
    return plan_memory(cfg, arch, hardware.world, hardware.memory_gib * GIB)


def _override(cfg: SpellConfig, key: str, value: object) -> SpellConfig:
    section, name = key.split(".")
    return dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **{name: value})})


def _fix_if_fits(cfg: SpellConfig, arch: ModelArch, hardware: Hardware, key: str, value: object,
                 why: str) -> Fix | None:
    changed = _override(cfg, key, value)
    plan = _plan(changed, arch, hardware)
    text = _text(key, value)
    return Fix((text,), hardware, plan, f"{text} ({why})") if fits(plan, hardware) else None


def _largest_fitting(cfg, arch, hardware, key: str, values: list, why: str) -> Fix | None:
    """The fix with the largest of ``values`` (ascending) that fits; values must fit monotonically."""
    low, high, best = 0, len(values) - 1, None
    while low <= high:
        middle = (low + high) // 2
        fix = _fix_if_fits(cfg, arch, hardware, key, values[middle], why)
        if fix is None:
            high = middle - 1
        else:
            best, low = fix, middle + 1
    return best


def _micro_batch(cfg, arch, hardware) -> Fix | None:
    _, prompt, completion = micro_batch_shape(cfg)
    floor, current = prompt + completion, cfg.grpo.micro_batch_tokens  # below P + C a sample is its own batch
    values = [v for v in [floor, *range((floor // 1024 + 1) * 1024, current, 1024)] if v < current]
    return _largest_fitting(cfg, arch, hardware, "grpo.micro_batch_tokens", values,
                            "more micro-batches per update, the same update") if values else None


def _engine_batch(cfg, arch, hardware) -> Fix | None:
    if cfg.engine.kind != EngineKind.HF or cfg.engine.max_batch_prompts <= 1:
        return None
    values = list(range(1, cfg.engine.max_batch_prompts))
    return _largest_fitting(cfg, arch, hardware, "engine.max_batch_prompts", values, "smaller rollout batches")


def _vllm_share(cfg, arch, hardware) -> Fix | None:
    if cfg.engine.kind != EngineKind.VLLM:
        return None
    values = [round(0.05 * k, 2) for k in range(2, 20) if 0.05 * k < cfg.engine.gpu_memory_utilization - 1e-9]
    fix = _largest_fitting(cfg, arch, hardware, "engine.gpu_memory_utilization", values, "less vLLM KV space")
    return fix if fix is not None and not fix.plan.notes else None


def _checkpointing(cfg, arch, hardware) -> Fix | None:
    if cfg.model.gradient_checkpointing:
        return None
    return _fix_if_fits(cfg, arch, hardware, "model.gradient_checkpointing", True, "recompute activations, ~+30% "
                        "update time")


def _offload(cfg, arch, hardware) -> Fix | None:
    if cfg.train.fsdp_cpu_offload or hardware.world < 2:
        return None
    return _fix_if_fits(cfg, arch, hardware, "train.fsdp_cpu_offload", True, "sharded state in host memory, slower")


def _more_gpus(cfg, arch, hardware) -> Fix | None:
    """More ranks shard the training state further (batch sizes are per rank, so activations do not shrink)."""
    options = [Hardware(g, hardware.memory_gib, 1, hardware.source) for g in (2, 4, 8) if g > hardware.gpus]
    options += [Hardware(MAX_GPUS_PER_NODE, hardware.memory_gib, k, hardware.source) for k in range(2, MAX_NODES + 1)]
    for option in options:
        if option.world > hardware.world and fits(_plan(cfg, arch, option), option):
            plan = _plan(cfg, arch, option)
            return Fix((), option, plan, f"{option.describe()} (more ranks shard the training state)")
    return None


def _lora(cfg, arch, hardware) -> Fix | None:
    if cfg.model.lora_rank > 0:
        return None
    return _fix_if_fits(cfg, arch, hardware, "model.lora_rank", LORA_RANK, "trains an adapter, not every weight")


def _stack_micro_batch(cfg, hardware):
    _, prompt, completion = micro_batch_shape(cfg)
    if cfg.grpo.micro_batch_tokens <= prompt + completion:
        return None
    return "grpo.micro_batch_tokens", prompt + completion  # the smallest that still changes anything


def _stack_flag(key: str, value: object, applies):
    return lambda cfg, hardware: (key, value) if applies(cfg, hardware) else None


_STACK_CHEAP = (
    _stack_micro_batch,
    _stack_flag("engine.max_batch_prompts", 1, lambda c, h: c.engine.kind == EngineKind.HF
                and c.engine.max_batch_prompts > 1),
    _stack_flag("model.gradient_checkpointing", True, lambda c, h: not c.model.gradient_checkpointing),
)
# (single changes tried alone, changes added to the stack, whether the stack is also tried on more GPUs)
_TIERS = (
    ((_micro_batch, _engine_batch, _vllm_share, _checkpointing), _STACK_CHEAP, False),
    ((_offload,), (_stack_flag("train.fsdp_cpu_offload", True, lambda c, h: h.world > 1
                               and not c.train.fsdp_cpu_offload),), False),
    ((_more_gpus,), (), True),
    ((_lora,), (_stack_flag("model.lora_rank", LORA_RANK, lambda c, h: c.model.lora_rank == 0),), True),
)
