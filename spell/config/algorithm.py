"""Algorithm config sections: sampling, the three roles, grounding, rewards, GRPO, memory (spec §8)."""

from __future__ import annotations

from dataclasses import dataclass, field

from spell.config.errors import _check_finite, _fail
from spell.config.run import ALL_TASKS
from spell.types import (
    AdvantageScope,
    KLEstimator,
    MajorityRule,
    MemoryAdmission,
    QuestionerRewardMapping,
    RewardCombine,
    TaskType,
    VerifierLabel,
)


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
        _check_finite("sampling", self)
        if not self.temperature > 0:
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
        _check_finite("questioner", self)
        if self.num_docs < 1:
            _fail("questioner.num_docs", self.num_docs, "must be >= 1")
        if not 0 <= self.gaussian_mu <= 1:
            _fail("questioner.gaussian_mu", self.gaussian_mu, "must be in [0, 1], where the mean reward r̄ lies")
        if not self.gaussian_sigma > 0:
            _fail("questioner.gaussian_sigma", self.gaussian_sigma, "must be > 0")
        if not self.bad_case_ratio >= 0:
            _fail("questioner.bad_case_ratio", self.bad_case_ratio, "must be >= 0 (0 disables negatives)")
        if self.max_new_tokens < 1:
            _fail("questioner.max_new_tokens", self.max_new_tokens, "must be >= 1")
        if self.max_answer_tokens < 1:
            _fail("questioner.max_answer_tokens", self.max_answer_tokens, "must be >= 1")


@dataclass
class GroundingConfig:
    """Grounding filter: drop questions answerable without the documents (spec §3 step 3).

    Attributes:
        enable: run the filter (ablation "w/o grounding filter" = false).
        threshold: rule score at or above which a no-context answer marks the question bad_ground (0.1).
    """

    enable: bool = True
    threshold: float = 0.1

    def __post_init__(self) -> None:
        _check_finite("grounding", self)
        if not 0 < self.threshold <= 1:
            _fail("grounding.threshold", self.threshold, "must be in (0, 1] (rule scores lie in [0, 1]); "
                  "use grounding.enable=false to turn the filter off")


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
        if self.max_new_tokens < 1:
            _fail("responder.max_new_tokens", self.max_new_tokens, "must be >= 1")


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
        _check_finite("verifier", self)
        if self.num_votes < 1:
            _fail("verifier.num_votes", self.num_votes, "must be >= 1")
        if self.enable_update and self.enable and self.num_votes < 2:
            _fail("verifier.num_votes", self.num_votes, "a trained verifier needs >= 2 votes; "
                  "set verifier.enable_update=false for the single-verdict ablation")
        if not 0 <= self.agreement_low <= self.agreement_high <= 1:
            _fail("verifier.agreement_low/high", (self.agreement_low, self.agreement_high),
                  "need 0 <= agreement_low <= agreement_high <= 1")
        if not self.update_ratio >= 0:
            _fail("verifier.update_ratio", self.update_ratio, "must be >= 0")
        if self.max_new_tokens < 1:
            _fail("verifier.max_new_tokens", self.max_new_tokens, "must be >= 1")


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
        _check_finite("rewards", self)
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
        shared_prefix: encode each distinct prompt of a micro-batch once and let all its completions attend
            to it (a responder group's G answers, a verifier's votes); the same log-probs and gradients as one
            sequence per sample, far fewer tokens. Off = one sequence per sample (for comparison).
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
    shared_prefix: bool = True

    def __post_init__(self) -> None:
        _check_finite("grpo", self)
        if not self.lr > 0:
            _fail("grpo.lr", self.lr, "must be > 0")
        if not self.weight_decay >= 0:
            _fail("grpo.weight_decay", self.weight_decay, "must be >= 0")
        if self.warmup_steps < 0:
            _fail("grpo.warmup_steps", self.warmup_steps, "must be >= 0 (0 = no warm-up)")
        if not (self.clip_low >= 0 and self.clip_high >= 0):
            _fail("grpo.clip_low/high", (self.clip_low, self.clip_high), "must be >= 0")
        if not self.kl_coef >= 0:
            _fail("grpo.kl_coef", self.kl_coef, "must be >= 0 (0 = no reference model)")
        if not self.entropy_coef >= 0:
            _fail("grpo.entropy_coef", self.entropy_coef, "must be >= 0 (0 = no entropy bonus)")
        if not self.max_grad_norm > 0:
            _fail("grpo.max_grad_norm", self.max_grad_norm, "must be > 0 (a large value clips nothing)")
        if self.micro_batch_tokens < 1 or self.logprob_chunk_tokens < 1:
            _fail("grpo.micro_batch_tokens/logprob_chunk_tokens",
                  (self.micro_batch_tokens, self.logprob_chunk_tokens), "must be >= 1")
        if not (0 <= self.adam_beta1 < 1 and 0 <= self.adam_beta2 < 1):
            _fail("grpo.adam_beta1/beta2", (self.adam_beta1, self.adam_beta2), "must be in [0, 1) (AdamW)")


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
