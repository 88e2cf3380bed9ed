"""The nouns of SPELL: roles, task types, outcomes and the frozen values passed between stages.

Stdlib only, so every pure module (prompts, parsing, tasks, rewards, sampling, memory) can import it
without pulling in torch or transformers. Enum members compare equal to their spec strings
(``TaskType.DOC_MC == "doc_mc"``), so plain strings work wherever an enum is expected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Role(StrEnum):
    """The three roles one policy plays (spec §1)."""

    QUESTIONER = "questioner"
    RESPONDER = "responder"
    VERIFIER = "verifier"


class TaskType(StrEnum):
    """Task formats (spec §2.4)."""

    DOCMATH_QA = "docmath_qa"  # numeric answer, 0.15% relative tolerance
    DOC_GENERAL_QA = "doc_general_qa"  # short phrase, cover exact match
    DOC_MC = "doc_mc"  # four options A-D, letter match


class QuestionStatus(StrEnum):
    """Outcome of one questioner sample (spec §3, §5.5)."""

    VALID = "valid"  # 0 < mean responder reward < 1: a positive questioner sample
    BAD_FORMAT = "bad_format"  # unparseable / invalid JSON question: reward -1
    BAD_GROUND = "bad_ground"  # answerable without the documents: reward -0.5
    ZERO_VARIANCE = "zero_variance"  # all responders right or all wrong: reward 0
    DROPPED = "dropped"  # silently skipped (unclosed think, zero answer, too long): not trained


class Verdict(StrEnum):
    """One verifier decision (spec §4.6)."""

    YES = "yes"
    NO = "no"
    INVALID = "invalid"

    def as_vote(self) -> int:
        """1 for YES, 0 for NO, -1 for INVALID (the authors' vote encoding)."""
        return {Verdict.YES: 1, Verdict.NO: 0, Verdict.INVALID: -1}[self]


@dataclass(frozen=True, slots=True)
class DocSet:
    """One cluster of related documents (a corpus row).

    Attributes:
        id: unique id of the document set (the memory key together with the task).
        documents: the documents' texts, in corpus order.
        task: the task type this set is assigned to.
        source: free-form origin tag (e.g. ``"world"``, ``"docmath"``), used only for reporting.
    """

    id: str
    documents: tuple[str, ...]
    task: TaskType
    source: str = ""


@dataclass(frozen=True, slots=True)
class MemoryExample:
    """A solved question remembered for a (document set, task): shown to the questioner as an example."""

    evidence: tuple[int, ...]  # indices into DocSet.documents the question was written from
    question: str
    answer: str


@dataclass(frozen=True, slots=True)
class Question:
    """A validated questioner output.

    Attributes:
        task: the task type.
        question: the question text shown to the responder and verifier (for ``doc_mc`` it includes the
            options in LongBench-v2 layout: the question, ``Choices:``, ``(A) ...`` to ``(D) ...``).
        answer: the normalised reference string (a number as ``str(float|int)``, a phrase, or a letter).
        raw_question: the question exactly as the questioner wrote it (without options).
        options: for ``doc_mc`` the four options as ``(("A", text), ..., ("D", text))``, else ``()``.
    """

    task: TaskType
    question: str
    answer: str
    raw_question: str = ""
    options: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a questioner output was not turned into a :class:`Question`.

    ``status`` is ``QuestionStatus.BAD_FORMAT`` (penalised) or ``QuestionStatus.DROPPED`` (not trained).
    """

    status: QuestionStatus
    reason: str
    raw: str = ""


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How an engine samples one role's completions (spec §8: T 0.7, top-p 0.95)."""

    temperature: float = 0.7
    top_p: float = 0.95
    max_new_tokens: int = 512
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class Completion:
    """One generated completion.

    Attributes:
        text: decoded completion (special tokens removed).
        token_ids: completion token ids, including the EOS token when generation stopped on it.
        prompt_token_ids: the prompt's token ids (shared by the n completions of one prompt).
        finish_reason: ``"stop"`` (EOS or a stop string) or ``"length"`` (hit max_new_tokens).
        logprobs: the engine's log-prob of each of ``token_ids`` under the distribution it sampled from (``()``
            when the engine does not report them); compared with the trainer's as ``train/rollout_logprob_diff``.
    """

    text: str
    token_ids: tuple[int, ...]
    prompt_token_ids: tuple[int, ...] = ()
    finish_reason: str = "stop"
    logprobs: tuple[float, ...] = ()


@dataclass(slots=True)
class RoleSample:
    """One sequence of the training batch: a prompt, a completion, its role, reward and advantage.

    Mutable only in ``advantage``, which is filled by :mod:`spell.advantages` after sampling.

    Attributes:
        role: which role produced it.
        task: the task type of the question it belongs to.
        group_id: samples that share a baseline (a responder group, the votes on one answer).
        prompt_ids: prompt token ids.
        completion_ids: completion token ids (the tokens whose log-probs are trained).
        reward: the role-specific scalar reward.
        advantage: the role-specific advantage (set later).
        meta: free-form details for sample dumps (status, texts, votes ...); never used by the loss.
        temperature: the sampling temperature its completion was drawn at; training log-probs divide logits
            by it, so they score the distribution that sampled (``<= 0``, greedy, is scored at 1, see
            :func:`spell.rl.policy.sequence_logprobs`).
        rollout_logprobs: the rollout engine's log-probs of ``completion_ids`` (``Completion.logprobs``; may be
            empty): only for the train/rollout mismatch metric, never in the loss.
    """

    role: Role
    task: TaskType
    group_id: str
    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]
    reward: float
    advantage: float = 0.0
    meta: dict = field(default_factory=dict)
    temperature: float = 1.0
    rollout_logprobs: tuple[float, ...] = ()


# ---- configuration choices (used by pure functions, so they live here and not in spell/config/) ----


class QuestionerRewardMapping(StrEnum):
    """Eq. 7 mapping of the mean responder reward r̄ to the questioner reward (spec §5.5, Fig. 5)."""

    GAUSSIAN = "gaussian"  # SPELL: exp(-(r̄-μ)²/2σ²)
    REVERSE = "reverse"  # AZR-style: 1 - r̄
    RZERO = "rzero"  # R-Zero-style: 1 - 2|r̄ - 0.5|


class MajorityRule(StrEnum):
    """How G_v verifier votes become one verdict (spec §5.1)."""

    STRICT = "strict"  # paper Eq. 4: YES iff YES votes > half of the *valid* votes; tie -> no signal
    PLURALITY = "plurality"  # authors' code: most common vote incl. invalid, ties -> first seen


class RewardCombine(StrEnum):
    """Eq. 6: how the rule score and the verifier majority combine into the responder reward."""

    MAX = "max"
    MEAN = "mean"
    MIN = "min"
    SUM = "sum"


class VerifierLabel(StrEnum):
    """Which verifier groups may be trained (spec §5.4)."""

    MAJ_CONS = "maj_cons"  # agreement window and majority == rule score
    MAJ = "maj"  # agreement window only (ablation "w/o update consistency")


class AdvantageScope(StrEnum):
    """Questioner advantage normalisation scope (Eq. 9, spec §7.1)."""

    PER_TASK = "per_task"  # authors' code
    BATCH = "batch"  # paper text


class MemoryAdmission(StrEnum):
    """When a solved question enters the history memory (spec §2.3)."""

    PAPER = "paper"  # 0 < r̄ < 1 (Alg. 1 line 20: r_que > 0)
    AUTHORS = "authors"  # 0.01 <= r̄ <= 1.0 (also questions every responder solved)


class EngineKind(StrEnum):
    """Generation backend."""

    HF = "hf"  # transformers, CPU or GPU
    VLLM = "vllm"  # vLLM, GPU only, needs the [vllm] extra


class KLEstimator(StrEnum):
    """KL penalty estimator against the reference policy (only used when grpo.kl_coef > 0)."""

    LOW_VAR_KL = "low_var_kl"  # k3, clamped to [-10, 10] (verl's low_var_kl)
    K3 = "k3"  # exp(ref - logp) - (ref - logp) - 1
    K1 = "k1"  # logp - ref


class TrainMode(StrEnum):
    """What a training step does."""

    SPELL = "spell"  # self-play: questioner, responder and verifier, no labels
    RLVR = "rlvr"  # the paper's baseline: responder-only GRPO on labelled questions with the rule reward
