"""The configuration tree: one root dataclass, YAML presets, ``key=value`` overrides.

Defaults are the paper's / authors' values (spec §8); every field says its meaning, unit and source.
Loading goes ``structured(SpellConfig) <- preset YAML <- dotlist overrides -> to_object`` so the rest of
the code only sees real dataclasses. Unknown keys, bad types and cross-field conflicts raise
:class:`ConfigError` naming the file/key and the fix, before any model is loaded.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from spell.types import (
    AdvantageScope,
    EngineKind,
    KLEstimator,
    MajorityRule,
    MemoryAdmission,
    QuestionerRewardMapping,
    RewardCombine,
    TaskType,
    TrainMode,
    VerifierLabel,
)

PRESET_DIR = Path(__file__).parent / "configs"
ALL_TASKS = [TaskType.DOCMATH_QA, TaskType.DOC_GENERAL_QA, TaskType.DOC_MC]


class ConfigError(ValueError):
    """A configuration problem, with the offending file/key and how to fix it."""


def _fail(key: str, value: object, fix: str) -> None:
    raise ConfigError(f"{key}={value!r}: {fix}")


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
    """

    path: str | None = None
    dtype: str = "auto"
    gradient_checkpointing: bool = False
    attn_implementation: str = "sdpa"

    def __post_init__(self) -> None:
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            _fail("model.dtype", self.dtype, "use one of auto, float32, bfloat16, float16")


@dataclass
class EngineConfig:
    """Generation backend.

    Attributes:
        kind: ``hf`` (transformers; CPU and GPU) or ``vllm`` (GPU, ``pip install 'spell-rl[vllm]'``).
        max_batch_prompts: HF engine: prompts generated together in one batch.
        gpu_memory_utilization: vLLM: fraction of GPU memory for weights + KV cache (authors: 0.7 for 7B).
        tensor_parallel_size: vLLM tensor parallel degree.
    """

    kind: EngineKind = EngineKind.HF
    max_batch_prompts: int = 8
    gpu_memory_utilization: float = 0.6
    tensor_parallel_size: int = 1

    def __post_init__(self) -> None:
        if self.max_batch_prompts < 1:
            _fail("engine.max_batch_prompts", self.max_batch_prompts, "must be >= 1")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            _fail("engine.gpu_memory_utilization", self.gpu_memory_utilization, "must be in (0, 1]")


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
    """

    train_files: list[str] = field(default_factory=list)
    tasks: list[TaskType] = field(default_factory=lambda: list(ALL_TASKS))
    questions_per_round: int = 480
    max_prompt_tokens: int = 16384
    labelled_files: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.tasks:
            _fail("data.tasks", self.tasks, "list at least one of docmath_qa, doc_general_qa, doc_mc")
        if len(set(self.tasks)) != len(self.tasks):
            _fail("data.tasks", self.tasks, "list each task once")
        if self.questions_per_round < len(self.tasks):
            _fail("data.questions_per_round", self.questions_per_round, "must be >= the number of tasks")
        if self.max_prompt_tokens < 16:
            _fail("data.max_prompt_tokens", self.max_prompt_tokens, "must be >= 16")


@dataclass
class SamplingConfig:
    """Rollout sampling, shared by all roles (spec §8: T 0.7, top-p 0.95, top-k off).

    Attributes:
        temperature: softmax temperature (> 0).
        top_p: nucleus mass in (0, 1].
    """

    temperature: float = 0.7
    top_p: float = 0.95

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            _fail("sampling.temperature", self.temperature, "must be > 0 (self-play needs diverse samples)")
        if not 0 < self.top_p <= 1:
            _fail("sampling.top_p", self.top_p, "must be in (0, 1]")


@dataclass
class QuestionerConfig:
    """The questioner role (spec §2.3, §5.5, §7.1).

    Attributes:
        num_docs: m, new documents per question (paper 5).
        max_new_tokens: questioner output budget (authors: 4096 shared by all roles).
        enable_update: train the questioner (ablation "questioner w/o update" = false).
        reward_mapping: Eq. 7 mapping: gaussian (SPELL), reverse (AZR), rzero (R-Zero).
        gaussian_mu: centre μ of the Gaussian mapping (paper 0.5).
        gaussian_sigma: width σ of the Gaussian mapping (paper 0.5/3, so 3σ covers [0, 1]).
        bad_case_ratio: negatives drawn per positive questioner sample (paper "equal number" = 1; 0 = none).
        advantage_scope: Eq. 9 normalisation: per_task (authors) or batch (paper text).
        max_answer_tokens: general-QA reference answers longer than this (policy tokens) are dropped
            (authors: 40; the prompt asks for <= 20).
        balance_mc_letters: inject a uniformly drawn target letter into the doc_mc prompt (authors'
            intent; their code never fires it, spec §2.5).
        template_dir: folder of ``.txt`` files overriding built-in templates of the same name
            (``questioner_<task>.txt``, ``questioner_<task>_history.txt``, ``responder_<task>.txt``,
            ``verifier.txt``; see ``spell/prompts/templates``).
    """

    num_docs: int = 5
    max_new_tokens: int = 4096
    enable_update: bool = True
    reward_mapping: QuestionerRewardMapping = QuestionerRewardMapping.GAUSSIAN
    gaussian_mu: float = 0.5
    gaussian_sigma: float = 0.5 / 3
    bad_case_ratio: float = 1.0
    advantage_scope: AdvantageScope = AdvantageScope.PER_TASK
    max_answer_tokens: int = 40
    balance_mc_letters: bool = True
    template_dir: str | None = None

    def __post_init__(self) -> None:
        if self.num_docs < 1:
            _fail("questioner.num_docs", self.num_docs, "must be >= 1")
        if self.gaussian_sigma <= 0:
            _fail("questioner.gaussian_sigma", self.gaussian_sigma, "must be > 0")
        if self.bad_case_ratio < 0:
            _fail("questioner.bad_case_ratio", self.bad_case_ratio, "must be >= 0 (0 disables negatives)")
        if self.max_new_tokens < 1:
            _fail("questioner.max_new_tokens", self.max_new_tokens, "must be >= 1")


@dataclass
class GroundingConfig:
    """Grounding filter: drop questions answerable without the documents (spec §3 step 3).

    Attributes:
        enable: run the filter (ablation "w/o grounding filter" = false).
        threshold: rule score at or above which a no-context answer marks the question bad_ground (0.1).
    """

    enable: bool = True
    threshold: float = 0.1


@dataclass
class ResponderConfig:
    """The responder role.

    Attributes:
        group_size: G, answers per question (paper 8; >= 2 for a group baseline).
        max_new_tokens: responder output budget (paper 4K non-reasoning, 20K reasoning).
    """

    group_size: int = 8
    max_new_tokens: int = 4096

    def __post_init__(self) -> None:
        if self.group_size < 2:
            _fail("responder.group_size", self.group_size, "must be >= 2 for a group baseline (paper: 8)")


@dataclass
class VerifierConfig:
    """The verifier role (spec §5.1-5.4).

    Attributes:
        enable: use the verifier at all (ablation "w/o verifier" = false: rule reward only).
        enable_update: train the verifier (ablation "verifier w/o update" = false).
        num_votes: G_v verdicts per responder answer (paper 8; 1 = "w/o majority voting").
        tasks: task types whose answers are verified (authors' scripts: all three).
        agreement_low: lowest fraction of valid votes agreeing with the majority for a trainable group.
        agreement_high: highest such fraction (0.99 drops unanimous groups).
        label: maj_cons (majority must equal the rule score) or maj (window only).
        update_ratio: verifier sequences per responder sequence in the batch (0.125 = 1/G_v).
        max_new_tokens: verifier output budget.
    """

    enable: bool = True
    enable_update: bool = True
    num_votes: int = 8
    tasks: list[TaskType] = field(default_factory=lambda: list(ALL_TASKS))
    agreement_low: float = 0.51
    agreement_high: float = 0.99
    label: VerifierLabel = VerifierLabel.MAJ_CONS
    update_ratio: float = 0.125
    max_new_tokens: int = 1024

    def __post_init__(self) -> None:
        if self.num_votes < 1:
            _fail("verifier.num_votes", self.num_votes, "must be >= 1")
        if self.enable_update and self.enable and self.num_votes < 2:
            _fail("verifier.num_votes", self.num_votes, "a trained verifier needs >= 2 votes; "
                  "set verifier.enable_update=false for the single-verdict ablation")
        if not 0 <= self.agreement_low <= self.agreement_high <= 1:
            _fail("verifier.agreement_low/high", (self.agreement_low, self.agreement_high),
                  "need 0 <= agreement_low <= agreement_high <= 1")
        if self.update_ratio < 0:
            _fail("verifier.update_ratio", self.update_ratio, "must be >= 0")


@dataclass
class RewardsConfig:
    """Reward arithmetic (Eq. 4-7).

    Attributes:
        majority: strict (paper Eq. 4, over valid votes; a tie gives no verifier signal) or plurality
            (authors' code).
        combine: Eq. 6 combination of rule score and verifier majority (paper: max).
        bad_format: questioner reward for an unparseable question (paper -1; ablation "w/o format
            penalty" = 0).
        bad_ground: questioner reward for a question answerable without documents (paper -0.5).
        zero_variance: questioner reward when all responders agree (paper 0).
        invalid_verdict: verifier reward for an unparseable verdict (authors -1; paper's indicator gives 0).
    """

    majority: MajorityRule = MajorityRule.STRICT
    combine: RewardCombine = RewardCombine.MAX
    bad_format: float = -1.0
    bad_ground: float = -0.5
    zero_variance: float = 0.0
    invalid_verdict: float = -1.0

    def __post_init__(self) -> None:
        if self.combine == RewardCombine.SUM:
            _fail("rewards.combine", "sum", "sum gives responder rewards up to 2, but the questioner reward (Eq. 7) "
                  "needs a mean in [0, 1]; use max (paper), mean or min")


@dataclass
class GRPOConfig:
    """The policy update (spec §7.2).

    Attributes:
        lr: AdamW learning rate, constant (paper 2e-6).
        weight_decay: AdamW weight decay (verl 0.01).
        warmup_steps: linear warm-up steps (paper 0).
        clip_low: PPO ratio clip below 1 (0.2). Inactive when strictly on-policy.
        clip_high: PPO ratio clip above 1 (0.2).
        kl_coef: β of the KL penalty to the reference model (paper 0; > 0 loads a reference model).
        kl_estimator: low_var_kl, k3 or k1.
        entropy_coef: entropy bonus coefficient (paper 0); entropy is always logged.
        max_grad_norm: gradient clipping norm (1.0).
        micro_batch_tokens: token budget of one forward/backward micro-batch (gradient accumulation).
        logprob_chunk_tokens: positions per chunk when computing log-probs from hidden states, so full
            [T, vocab] logits never exist at once.
        adam_beta1: AdamW β1.
        adam_beta2: AdamW β2.
    """

    lr: float = 2e-6
    weight_decay: float = 0.01
    warmup_steps: int = 0
    clip_low: float = 0.2
    clip_high: float = 0.2
    kl_coef: float = 0.0
    kl_estimator: KLEstimator = KLEstimator.LOW_VAR_KL
    entropy_coef: float = 0.0
    max_grad_norm: float = 1.0
    micro_batch_tokens: int = 16384
    logprob_chunk_tokens: int = 256
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999

    def __post_init__(self) -> None:
        if self.lr <= 0:
            _fail("grpo.lr", self.lr, "must be > 0")
        if self.clip_low < 0 or self.clip_high < 0:
            _fail("grpo.clip_low/high", (self.clip_low, self.clip_high), "must be >= 0")
        if self.kl_coef < 0:
            _fail("grpo.kl_coef", self.kl_coef, "must be >= 0 (0 = no reference model)")
        if self.micro_batch_tokens < 1 or self.logprob_chunk_tokens < 1:
            _fail("grpo.micro_batch_tokens/logprob_chunk_tokens",
                  (self.micro_batch_tokens, self.logprob_chunk_tokens), "must be >= 1")


@dataclass
class MemoryConfig:
    """History memory, the curriculum (spec §2.3).

    Attributes:
        enable: use the memory (ablation "questioner w/o history memory" = false).
        size: L, remembered questions per (document set, task) (paper 3).
        admission: paper (0 < r̄ < 1) or authors (0.01 <= r̄ <= 1).
        dedup: refuse an entry whose normalised question text repeats a stored one for the same key (the
            authors' dedup was a no-op, spec §11.2).
    """

    enable: bool = True
    size: int = 3
    admission: MemoryAdmission = MemoryAdmission.PAPER
    dedup: bool = True

    def __post_init__(self) -> None:
        if self.size < 1:
            _fail("memory.size", self.size, "must be >= 1 (use memory.enable=false to turn it off)")


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
    mode: TrainMode = TrainMode.SPELL

    def __post_init__(self) -> None:
        for key in ("batch_groups", "max_rounds", "max_steps", "save_every_steps", "keep_last_checkpoints"):
            if getattr(self, key) < 1:
                _fail(f"train.{key}", getattr(self, key), "must be >= 1")
        if self.device not in ("auto", "cpu", "cuda"):
            _fail("train.device", self.device, "use auto, cpu or cuda")


@dataclass
class EvalConfig:
    """Held-out accuracy measured during training (labelled questions never used for training).

    Attributes:
        heldout_files: generic-format JSONL question files (empty = no evaluation; the built-in default
            sets the world's held-out set).
        every_steps: evaluate every k steps (0 = only before the first and after the last step).
        num_samples: samples per question; the score is their mean (avg@n).
        temperature: sampling temperature (0 = greedy).
        max_new_tokens: answer budget.
        limit: evaluate only the first k questions of each file (0 = all).
    """

    heldout_files: list[str] = field(default_factory=list)
    every_steps: int = 0
    num_samples: int = 1
    temperature: float = 0.0
    max_new_tokens: int = 64
    limit: int = 0

    def __post_init__(self) -> None:
        if self.every_steps < 0 or self.limit < 0:
            _fail("eval.every_steps/limit", (self.every_steps, self.limit), "must be >= 0")
        if self.num_samples < 1 or self.max_new_tokens < 1:
            _fail("eval.num_samples/max_new_tokens", (self.num_samples, self.max_new_tokens), "must be >= 1")
        if self.temperature < 0:
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
        if self.engine.kind == EngineKind.VLLM and self.train.device == "cpu":
            _fail("engine.kind", "vllm", "vLLM needs a GPU; use engine.kind=hf with train.device=cpu")
        unknown = [t for t in self.verifier.tasks if t not in self.data.tasks]
        if unknown:
            _fail("verifier.tasks", self.verifier.tasks, f"{unknown} not in data.tasks={self.data.tasks}")


def resolve_preset(name_or_path: str) -> Path:
    """Find a preset: an existing path, or a packaged name in ``spell/configs`` (``.yaml`` optional)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    packaged = PRESET_DIR / (name_or_path if name_or_path.endswith(".yaml") else f"{name_or_path}.yaml")
    if packaged.is_file():
        return packaged
    names = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
    raise ConfigError(f"config {name_or_path!r} is neither a file nor a packaged preset; presets: {names}")


def load_config(name_or_path: str | None = None, overrides: list[str] | None = None) -> SpellConfig:
    """Build the config: defaults <- preset YAML <- ``key=value`` overrides, then validate.

    Raises:
        ConfigError: unknown key, bad type or value, naming the file or override and the fix.
    """
    merged = OmegaConf.structured(SpellConfig)
    source = "defaults"
    try:
        if name_or_path:
            path = resolve_preset(name_or_path)
            source = str(path)
            merged = OmegaConf.merge(merged, OmegaConf.load(path))
        if overrides:
            bad = [o for o in overrides if "=" not in o]
            if bad:
                raise ConfigError(f"override {bad[0]!r} is not key=value (e.g. train.max_steps=2)")
            source = "command-line overrides"
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


def save_config(cfg: SpellConfig, path: str | Path) -> None:
    """Write the resolved config to ``path`` (``{output_dir}/config.yaml``)."""
    Path(path).write_text(config_to_yaml(cfg))


def replace(cfg: SpellConfig, **sections: object) -> SpellConfig:
    """A copy of ``cfg`` with whole sections replaced (re-runs validation)."""
    return dataclasses.replace(cfg, **sections)
