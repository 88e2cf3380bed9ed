"""The configuration's error type: every bad key or value names the file or key and the fix."""

from __future__ import annotations

import dataclasses
import math


class ConfigError(ValueError):
    """A configuration problem, with the offending file/key and how to fix it."""


def _fail(key: str, value: object, fix: str) -> None:
    raise ConfigError(f"{key}={value!r}: {fix}")


def _check_finite(section: str, config: object) -> None:
    """Refuse NaN and +-inf in every float field of a config section, before its range checks.

    Range checks written ``x <= 0`` are False for NaN, so they would let it through; and no float key has a
    meaning for infinity (``grpo.lr=inf`` trains the weights to NaN).
    """
    for field in dataclasses.fields(config):  # type: ignore[arg-type]
        value = getattr(config, field.name)
        if isinstance(value, float) and not math.isfinite(value):
            _fail(f"{section}.{field.name}", value, "must be a finite number (NaN and inf are refused)")
