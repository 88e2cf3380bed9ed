"""The configuration's error type: every bad key or value names the file or key and the fix."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration problem, with the offending file/key and how to fix it."""


def _fail(key: str, value: object, fix: str) -> None:
    raise ConfigError(f"{key}={value!r}: {fix}")
