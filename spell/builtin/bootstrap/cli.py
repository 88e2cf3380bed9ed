"""``spell init-default``: rebuild the built-in tiny policy from scratch (issue 5), a one-time CPU job.

The lead's ``spell/cli.py`` wires :func:`add_init_default_arguments` and :func:`run_init_default`. Every flag
mirrors a :class:`~spell.builtin.bootstrap.config.BootstrapConfig` field; the defaults reproduce the shipped weights
in ``spell/builtin/assets/default_policy`` (see its ``BOOTSTRAP.md`` for the command, times and measured numbers).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shlex
import sys
from pathlib import Path

from spell.builtin.bootstrap.config import QUICK, BootstrapConfig

logger = logging.getLogger(__name__)


def add_init_default_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``spell init-default`` options (one per :class:`BootstrapConfig` field) to ``parser``."""
    for spec in dataclasses.fields(BootstrapConfig):
        flag = "--" + spec.name.replace("_", "-")
        if spec.name == "eval":
            parser.add_argument("--no-eval", dest="eval", action="store_false", help="skip the measurements")
            continue
        parser.add_argument(flag, dest=spec.name, type=type(spec.default), default=spec.default,
                            help=f"default: {spec.default}")
    parser.add_argument("--quick", action="store_true",
                        help="tiny budget (a few minutes) to check the pipeline end to end; not a usable policy")
    parser.add_argument("--measure-only", action="store_true",
                        help="only measure the policy already in --out (writes nothing)")


def config_from_args(args: argparse.Namespace) -> BootstrapConfig:
    """The :class:`BootstrapConfig` of parsed arguments (``--quick`` replaces the budgets by :data:`QUICK`)."""
    values = {spec.name: getattr(args, spec.name) for spec in dataclasses.fields(BootstrapConfig)}
    if getattr(args, "quick", False):
        values.update(QUICK)
    return BootstrapConfig(**values)


def command_line(cfg: BootstrapConfig) -> str:
    """The ``spell init-default`` command that rebuilds ``cfg``: the flags that differ from the defaults, except
    ``--out`` (where the result goes does not change it).

    >>> command_line(BootstrapConfig(seed=3, eval=False, out="/tmp/x"))
    'spell init-default --seed 3 --no-eval'
    """
    parts = ["spell", "init-default"]
    for spec in dataclasses.fields(BootstrapConfig):
        value = getattr(cfg, spec.name)
        if value == spec.default or spec.name == "out":
            continue
        parts += ["--no-eval"] if spec.name == "eval" else ["--" + spec.name.replace("_", "-"), str(value)]
    return shlex.join(parts)


def run_init_default(args: argparse.Namespace) -> int:
    """Run ``spell init-default``; returns the exit code (2 on bad arguments)."""
    cfg = config_from_args(args)
    if cfg.layers < 1 or cfg.hidden % cfg.heads or cfg.heads % cfg.kv_heads:
        logger.error("spell init-default: need layers >= 1, hidden divisible by heads, heads by kv-heads")
        return 2
    # Idle OpenMP threads sleep instead of spinning: on a shared 2-core machine spinning made training 5x slower
    # (measured: 1.0K vs 5.3K tokens/s beside two busy processes). Read when torch loads, so set before importing it.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from spell.builtin.bootstrap.pipeline import measure_policy, run_bootstrap

    if getattr(args, "measure_only", False):
        logger.info("%s", json.dumps(measure_policy(cfg, Path(cfg.out)), indent=1))
        return 0
    result = run_bootstrap(cfg, command=command_line(cfg))
    logger.info("bootstrap finished in %.0f s; report: %s/BOOTSTRAP.md", result["total_seconds"], cfg.out)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m spell.builtin.bootstrap.cli [options]`` (the same as ``spell init-default``)."""
    from spell.rl.metrics import setup_logging

    parser = argparse.ArgumentParser(prog="spell init-default", description=__doc__)
    add_init_default_arguments(parser)
    setup_logging()
    return run_init_default(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
