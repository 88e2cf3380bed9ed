"""``spell plan``: print the per-GPU memory breakdown of a config, a verdict for the given hardware and, when it
does not fit, the smallest change that does. No weights are loaded: the model's sizes come from its config.json.
Exit codes: 0 fits (or no hardware given), 1 does not fit, 2 bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from spell.config import SpellConfig
from spell.plan.arch import KNOWN_ARCHITECTURES, ModelArch, load_arch
from spell.plan.fit import HEADROOM, Hardware, fits, smallest_fix
from spell.plan.memory import GIB, PHASES, MemoryPlan, plan_memory, precision

BUILTIN_POLICY_CONFIG = Path(__file__).resolve().parents[1] / "builtin" / "assets" / "default_policy" / "config.json"


def add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``spell plan`` options besides ``--config`` and the overrides."""
    parser.add_argument("--gpus", type=int, default=None, help="GPUs per node (ranks per node)")
    parser.add_argument("--gpu-memory-gb", type=float, default=None,
                        help="memory of one GPU in GiB, as nvidia-smi's MiB / 1024 (an 80GB card: 80)")
    parser.add_argument("--nodes", type=int, default=1, help="nodes (default 1)")
    parser.add_argument("--model-config", default=None, help="the model's config.json (or its folder, or a known "
                        f"architecture: {', '.join(KNOWN_ARCHITECTURES)}) when model.path is not set")


def hardware_from_args(args: argparse.Namespace) -> Hardware | None:
    """``--gpus`` / ``--gpu-memory-gb`` / ``--nodes`` as :class:`Hardware`; None when no memory is given.

    Raises:
        ValueError: a count below 1, a memory <= 0, or ``--gpus`` without ``--gpu-memory-gb``.
    """
    if args.gpu_memory_gb is None:
        if args.gpus is not None:
            raise ValueError("--gpus needs --gpu-memory-gb (the memory of one GPU, in GiB)")
        return None
    hardware = Hardware(args.gpus or 1, args.gpu_memory_gb, args.nodes)
    if hardware.gpus < 1 or hardware.nodes < 1 or not hardware.memory_gib > 0:
        raise ValueError("--gpus and --nodes must be >= 1 and --gpu-memory-gb > 0")
    return hardware


def resolve_arch(cfg: SpellConfig, model_config: str | None, preset: str | None) -> tuple[ModelArch, str]:
    """The model's sizes and where they came from: ``--model-config``, else ``model.path``'s config.json, else
    the known architecture the preset is named after, else the built-in policy (``model.path: null``)."""
    if model_config:
        return load_arch(model_config), f"--model-config {model_config}"
    if cfg.model.path:
        return load_arch(cfg.model.path), f"model.path={cfg.model.path}"
    stem = Path(preset).name.lower().removesuffix(".yaml") if preset else ""  # not .stem: "qwen2.5-..." has a dot
    for name in sorted(KNOWN_ARCHITECTURES, key=len, reverse=True):
        if stem.startswith(name):
            return KNOWN_ARCHITECTURES[name], f"the built-in table ({name}; model.path is not set)"
    return load_arch(BUILTIN_POLICY_CONFIG), "the built-in policy (model.path is not set)"


def run_plan(cfg: SpellConfig, args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Print the plan of ``cfg`` for the hardware in ``args``; returns the exit code."""
    out = out or sys.stdout
    hardware = hardware_from_args(args)
    arch, source = resolve_arch(cfg, args.model_config, args.config)
    world = hardware.world if hardware else 1
    plan = plan_memory(cfg, arch, world, hardware.memory_gib * GIB if hardware else None)
    out.write(render_plan(cfg, arch, source, plan, hardware))
    if hardware is None:
        out.write("verdict: no hardware given (--gpus N --gpu-memory-gb M [--nodes K]); planned for 1 process\n")
        return 0
    if fits(plan, hardware):
        spare = (hardware.usable - plan.peak) / GIB
        out.write(f"verdict: fits {hardware.describe()} ({spare:.1f} GiB to spare after {HEADROOM:.0%} headroom)\n")
        return 0
    out.write(f"verdict: does NOT fit {hardware.describe()}: needs {plan.peak / GIB:.1f} GiB per GPU, "
              f"{hardware.usable / GIB:.1f} usable\n")
    fix = smallest_fix(cfg, arch, hardware)
    if fix is None:
        out.write("smallest change: none found among micro-batch, engine batch, checkpointing, offload, more GPUs "
                  "and LoRA: shorter data.max_prompt_tokens / max_new_tokens or larger GPUs are left\n")
    else:
        out.write(f"smallest change: {fix.description} -> peak {fix.plan.peak / GIB:.1f} GiB per GPU\n")
    return 1


def render_plan(cfg: SpellConfig, arch: ModelArch, source: str, plan: MemoryPlan, hardware: Hardware | None) -> str:
    """The breakdown as text: one line per item (GiB, phase), then the phase totals."""
    p = precision(cfg, plan.world)
    where = hardware.describe() if hardware else "1 process"
    kind = (f"LoRA rank {cfg.model.lora_rank}" if cfg.model.lora_rank else "full fine-tune") + (
        f", FSDP2 over {plan.world} ranks" if plan.world > 1 else ", one process")
    lines = [f"spell plan: {where} ({'per GPU' if plan.on_gpu else 'CPU process, host memory'}); {kind}",
             f"model: {arch.describe()}",
             f"  from {source}",
             f"precision: {p.mode} (weights/AdamW {p.param} B, compute {p.compute} B); micro-batch "
             f"{plan.micro_batch_tokens:,} tokens; engine {cfg.engine.kind.value}", ""]
    width = max(len(item.name) for item in plan.items) + 2
    lines.append(f"  {'item':<{width}}{'GiB':>8}  phase")
    for item in plan.items:
        lines.append(f"  {item.name:<{width}}{item.bytes / GIB:>8.2f}  {item.phase}")
    totals = "  ".join(f"{phase} {plan.total(phase) / GIB:.1f}" for phase in PHASES[1:])
    lines += ["", f"totals (GiB, with what is always there): {totals}",
              f"peak: {plan.peak / GIB:.1f} GiB in the {plan.peak_phase} phase"]
    lines += [f"note: {note}" for note in plan.notes]
    if not plan.on_gpu:
        lines.append("note: CPU figures exclude the Python process itself (about 0.5 GiB)")
    return "\n".join(lines) + "\n"


def memory_warning(cfg: SpellConfig) -> str | None:
    """``spell validate``'s check: one line when ``cfg`` does not fit the declared hardware
    (:func:`spell.plan.fit.declared_hardware`), None when it fits or the hardware is unknown.

    Raises:
        ConfigError: a malformed ``SPELL_GPUS`` / ``SPELL_GPU_MEMORY_GB`` / ``SPELL_NODES``.
    """
    from spell.config import ConfigError
    from spell.plan.fit import declared_hardware

    try:
        hardware = declared_hardware(cfg.train.device)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if hardware is None:
        return None
    try:
        arch, _ = resolve_arch(cfg, None, None)
    except (ValueError, OSError) as err:  # an architecture the planner does not model: a warning never fails validate
        return f"memory: not estimated ({str(err).splitlines()[0]})"
    plan = plan_memory(cfg, arch, hardware.world, hardware.memory_gib * GIB)
    if fits(plan, hardware):
        return None
    fix = smallest_fix(cfg, arch, hardware)
    hint = f"; smallest change: {fix.description}" if fix is not None else ""
    return (f"memory: about {plan.peak / GIB:.1f} GiB per GPU ({plan.peak_phase} phase), more than "
            f"{hardware.describe()} ({hardware.source}) allows{hint}; breakdown: spell plan")
