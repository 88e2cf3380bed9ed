"""``spell plan``: will a config fit the GPUs? Per-GPU memory of parameters, gradients, AdamW state, activations
and the rollout engine, from the config and the model's config.json alone (no weights loaded), a verdict for
the declared hardware and the smallest change that makes it fit. ``spell validate`` warns with the same numbers.

- :mod:`spell.plan.arch`: model sizes from a config.json (or a small table of known models);
- :mod:`spell.plan.memory`: the arithmetic, one rank, per phase (rollout / update / AdamW step);
- :mod:`spell.plan.fit`: hardware, the verdict and the smallest fitting change;
- :mod:`spell.plan.cli`: the command's arguments and report;
- :mod:`spell.plan.measure`: a real update step on CPU, for checking the estimate against peak RSS.
"""

from spell.plan.arch import KNOWN_ARCHITECTURES, ArchitectureError, ModelArch, arch_from_config, load_arch
from spell.plan.fit import Fix, Hardware, declared_hardware, fits, smallest_fix
from spell.plan.memory import GIB, Item, MemoryPlan, plan_memory

__all__ = [
    "GIB", "KNOWN_ARCHITECTURES", "ArchitectureError", "Fix", "Hardware", "Item", "MemoryPlan", "ModelArch",
    "arch_from_config", "declared_hardware", "fits", "load_arch", "plan_memory", "smallest_fix",
]
