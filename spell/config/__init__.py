"""The configuration tree: one root dataclass, YAML presets, ``key=value`` overrides.

Defaults are the paper's / authors' values (spec §8); every field says its meaning, unit and source.
Loading goes ``structured(SpellConfig) <- preset YAML <- dotlist overrides -> to_object`` so the rest of
the code only sees real dataclasses. Unknown keys, bad types and cross-field conflicts raise
:class:`ConfigError` naming the file/key and the fix, before any model is loaded.
"""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from spell.config.algorithm import (
    GroundingConfig,
    GRPOConfig,
    MemoryConfig,
    QuestionerConfig,
    ResponderConfig,
    RewardsConfig,
    SamplingConfig,
    VerifierConfig,
)
from spell.config.errors import ConfigError
from spell.config.run import (
    ALL_TASKS,
    DataConfig,
    EngineConfig,
    EvalConfig,
    LoggingConfig,
    ModelConfig,
    TrainConfig,
)

__all__ = [
    "ALL_TASKS", "PRESET_DIR", "ConfigError", "SpellConfig", "config_to_dict", "config_to_yaml", "load_config",
    "replace", "resolve_preset", "save_config",
    "DataConfig",
    "EngineConfig",
    "EvalConfig",
    "GRPOConfig",
    "GroundingConfig",
    "LoggingConfig",
    "MemoryConfig",
    "ModelConfig",
    "QuestionerConfig",
    "ResponderConfig",
    "RewardsConfig",
    "SamplingConfig",
    "TrainConfig",
    "VerifierConfig",
]

PRESET_DIR = Path(__file__).parent.parent / "configs"


@dataclass
class SpellConfig:
    """The root of the configuration tree. See each section's docstring, README and docs/config.md."""

    model: ModelConfig = field(default_factory=ModelConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    questioner: QuestionerConfig = field(default_factory=QuestionerConfig)
    grounding: GroundingConfig = field(default_factory=GroundingConfig)
    responder: ResponderConfig = field(default_factory=ResponderConfig)
    verifier: VerifierConfig = field(default_factory=VerifierConfig)
    rewards: RewardsConfig = field(default_factory=RewardsConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    output_dir: str = "runs/spell"

    def __post_init__(self) -> None:
        unknown = [t for t in self.verifier.tasks if t not in self.data.tasks]
        if unknown:
            names = lambda tasks: "[" + ",".join(t.value for t in tasks) + "]"  # noqa: E731
            known = [t for t in self.verifier.tasks if t in self.data.tasks]
            raise ConfigError(f"verifier.tasks={names(self.verifier.tasks)}: {names(unknown)} not in "
                              f"data.tasks={names(self.data.tasks)}; fix: verifier.tasks={names(known)} "
                              "(the verifier can only check tasks that are trained)")


def resolve_preset(name_or_path: str) -> Path:
    """Find a preset: an existing path, or a packaged name in ``spell/configs`` (``.yaml`` optional)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.is_dir():
        raise ConfigError(f"config {name_or_path!r} is a directory. Fix: give a YAML file (e.g. {path}/config.yaml) "
                          "or a packaged preset name")
    packaged = PRESET_DIR / (name_or_path if name_or_path.endswith(".yaml") else f"{name_or_path}.yaml")
    if packaged.is_file():
        return packaged
    names = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
    raise ConfigError(f"config {name_or_path!r} is neither a file nor a packaged preset; presets: {names}")


def _load_yaml(path: Path) -> DictConfig:
    """One YAML config file; syntax and encoding errors as one line ``file:line:column: problem. Fix: ...``."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror or err}). Fix: check the file's permissions") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise ConfigError(f"{path}:{line}:{column}: byte 0x{data[err.start]:02x} is not UTF-8. "
                          "Fix: save the file as UTF-8") from None
    try:
        loaded = OmegaConf.load(io.StringIO(text))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{where}: invalid YAML ({problem}). Fix: correct the syntax there (indent with spaces, "
                          "write `key: value`, quote values that contain ': ' or ' #')") from None
    except OSError:  # OmegaConf's answer to a scalar document ("Invalid loaded object type")
        loaded = None
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"{path}: the top level is not a mapping of sections. "
                          "Fix: write sections as `grpo:` with indented `lr: 2.0e-6` lines")
    return loaded


def load_config(name_or_path: str | None = None, overrides: list[str] | None = None) -> SpellConfig:
    """Build the config: defaults <- preset YAML <- ``key=value`` overrides, then validate.

    Raises:
        ConfigError: unknown key, bad type or value, naming the file or override and the fix; YAML syntax
            errors as ``file:line:column``.
    """
    merged = OmegaConf.structured(SpellConfig)
    source = "defaults"
    loaded = None
    if name_or_path:  # file errors name the file themselves
        path = resolve_preset(name_or_path)
        source = str(path)
        loaded = _load_yaml(path)
    try:
        if loaded is not None:
            merged = OmegaConf.merge(merged, loaded)
        if overrides:
            source = "command-line overrides"
            bad = [o for o in overrides if "=" not in o]
            if bad:
                raise ConfigError(f"override {bad[0]!r} is not key=value. Fix: write it as e.g. train.max_steps=2")
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(overrides)))
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        msg = getattr(err, "msg", str(err)).splitlines()[0]
        raise ConfigError(f"{source}: key {key!r}: {msg}. Run `spell print-config` to see valid keys.") from None
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def config_to_yaml(cfg: SpellConfig) -> str:
    """The resolved config as YAML (what ``spell print-config`` prints and runs save)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def config_to_dict(cfg: SpellConfig) -> dict:
    """The resolved config as plain JSON-able dicts (enums as their values), e.g. for W&B and TensorBoard."""

    def plain(value: object) -> object:
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        if isinstance(value, list):
            return [plain(item) for item in value]
        return value.value if isinstance(value, Enum) else value

    return plain(OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True))


def save_config(cfg: SpellConfig, path: str | Path) -> None:
    """Write the resolved config to ``path`` (``{output_dir}/config.yaml``)."""
    Path(path).write_text(config_to_yaml(cfg))


def replace(cfg: SpellConfig, **sections: object) -> SpellConfig:
    """A copy of ``cfg`` with whole sections replaced (re-runs validation)."""
    return dataclasses.replace(cfg, **sections)
