"""One SPELL generation round, top to bottom like the paper's Algorithm 1 (spec §3 steps 1-9).

questioner prompt -> questioner rollout -> parse -> grounding filter -> G responder rollouts -> rule
reward -> G_v verifier votes -> majority -> responder / verifier / questioner rewards. Every stage is a
short function over a list of :class:`QuestionRecord`, one per questioner sample; bad model output only
ever changes a record's ``status``. Batch assembly across rounds lives in :mod:`spell.experience`.
"""

from __future__ import annotations

import random
import statistics
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from spell.config import SpellConfig
from spell.memory import HistoryMemory
from spell.parsing import completion_char_limit, parse_question, parse_verdict
from spell.prompts import Templates, join_documents
from spell.prompts.questioner import draw_target_letter_for, render_questioner_prompt
from spell.prompts.responder import EMPTY_CONTEXT, render_responder_prompt
from spell.prompts.verifier import render_verifier_prompt
from spell.rewards import has_reward_variance, majority_vote, questioner_reward, responder_reward, verifier_rewards
from spell.rl.engine.base import Engine, encode_chat_prompt
from spell.rl.metrics import stage_timer
from spell.tasks import extract_prediction, rule_score
from spell.types import (
    Completion,
    DocSet,
    MemoryExample,
    Question,
    QuestionStatus,
    Rejection,
    SamplingParams,
    Verdict,
)


@dataclass
class QuestionRecord:
    """Everything that happened to one questioner sample in a round (also the sample-dump record)."""

    uid: str
    docset: DocSet
    evidence: tuple[int, ...]
    examples: list[MemoryExample]
    prompt_ids: list[int]
    completion: Completion | None = None
    status: QuestionStatus = QuestionStatus.VALID
    reason: str = ""
    question: Question | None = None
    responder_prompt_ids: list[int] = field(default_factory=list)
    responses: list[Completion] = field(default_factory=list)
    rule_scores: list[float] = field(default_factory=list)
    predictions: list[str | None] = field(default_factory=list)
    verifier_prompt_ids: list[list[int] | None] = field(default_factory=list)
    verdict_completions: list[list[Completion]] = field(default_factory=list)
    votes: list[list[Verdict]] = field(default_factory=list)
    majorities: list[Verdict | None] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    questioner_reward: float | None = None

    @property
    def mean_reward(self) -> float | None:
        """r̄: mean combined responder reward, None before responders ran."""
        return statistics.fmean(self.rewards) if self.rewards else None

    @property
    def alive(self) -> bool:
        """Still a candidate question (not rejected by an earlier stage)."""
        return self.status == QuestionStatus.VALID and self.question is not None


@dataclass
class SelfPlayContext:
    """What a round needs: config, engine, tokenizer, memory, prompt templates and the seeded RNG."""

    cfg: SpellConfig
    engine: Engine
    tokenizer: Any
    memory: HistoryMemory
    templates: Templates
    rng: random.Random

    def encode(self, text: str) -> list[int]:
        return encode_chat_prompt(self.tokenizer, text)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    @property
    def temperature(self) -> float:
        """The temperature every rollout of a round is drawn at (all roles share ``sampling.temperature``).

        Every trained sample records it as ``RoleSample.temperature``, so its log-probs are taken at it too.
        """
        return self.cfg.sampling.temperature

    def sampling(self, max_new_tokens: int) -> SamplingParams:
        return SamplingParams(self.temperature, self.cfg.sampling.top_p, max_new_tokens)


def run_generation_round(docsets: Sequence[DocSet], ctx: SelfPlayContext) -> list[QuestionRecord]:
    """Stages 1-9 of one round for a batch of document sets; returns one scored record per docset."""
    with stage_timer("questioner_generate"):
        records = build_questioner_prompts(docsets, ctx)
        generate_questions(records, ctx)
    if ctx.cfg.grounding.enable:
        with stage_timer("grounding"):
            filter_ungrounded(records, ctx)
    with stage_timer("responder_generate"):
        generate_responses(records, ctx)
    if ctx.cfg.verifier.enable:
        with stage_timer("verifier_generate"):
            collect_verifier_votes(records, ctx)
    score_records(records, ctx.cfg)
    return records


def build_questioner_prompts(docsets: Sequence[DocSet], ctx: SelfPlayContext) -> list[QuestionRecord]:
    """Stage 1-2: evidence from the history memory (spec §2.3) and the questioner prompt per docset."""
    cfg, records = ctx.cfg, []
    for docset in docsets:
        memory = ctx.memory if cfg.memory.enable else HistoryMemory(size=cfg.memory.size)
        evidence, examples = memory.select_evidence(docset, cfg.questioner.num_docs, ctx.rng)
        letter = draw_target_letter_for(docset.task, ctx.rng, enabled=cfg.questioner.balance_mc_letters)
        text = render_questioner_prompt(
            docset.task, [docset.documents[i] for i in evidence], examples,
            target_letter=letter, templates=ctx.templates,
        )
        record = QuestionRecord(uuid.UUID(int=ctx.rng.getrandbits(128)).hex, docset, evidence, examples,
                                ctx.encode(text))
        if len(record.prompt_ids) > cfg.data.max_prompt_tokens:
            _reject(record, QuestionStatus.DROPPED, "questioner_prompt_too_long")
        records.append(record)
    return records


def generate_questions(records: list[QuestionRecord], ctx: SelfPlayContext) -> None:
    """Stage 3-4: one questioner sample per prompt, parsed into a Question or a Rejection."""
    todo = [r for r in records if r.status == QuestionStatus.VALID]
    outputs = ctx.engine.generate([r.prompt_ids for r in todo], ctx.sampling(ctx.cfg.questioner.max_new_tokens), 1)
    for record, (completion,) in zip(todo, outputs, strict=True):
        record.completion = completion
        parsed = parse_question(completion.text, record.docset.task,
                                max_answer_tokens=ctx.cfg.questioner.max_answer_tokens,
                                count_tokens=ctx.count_tokens,
                                max_chars=completion_char_limit(ctx.cfg.questioner.max_new_tokens))
        if isinstance(parsed, Rejection):
            _reject(record, parsed.status, parsed.reason)
        else:
            record.question = parsed


def filter_ungrounded(records: list[QuestionRecord], ctx: SelfPlayContext) -> None:
    """Stage 5: answer each question once WITHOUT documents; a correct answer marks it bad_ground."""
    todo = [r for r in records if r.alive]
    prompts = [ctx.encode(render_responder_prompt(r.docset.task, EMPTY_CONTEXT, r.question.question,
                                                  ctx.templates)) for r in todo]
    outputs = ctx.engine.generate(prompts, ctx.sampling(ctx.cfg.responder.max_new_tokens), 1)
    for record, (completion,) in zip(todo, outputs, strict=True):
        score = rule_score(record.docset.task, completion.text, record.question.answer)
        if score >= ctx.cfg.grounding.threshold:
            _reject(record, QuestionStatus.BAD_GROUND, f"answered without documents: {completion.text[-200:]!r}")


def generate_responses(records: list[QuestionRecord], ctx: SelfPlayContext) -> None:
    """Stage 6-7: G responder answers over ALL documents of the set, each scored by the rule."""
    todo = []
    for record in (r for r in records if r.alive):
        text = render_responder_prompt(record.docset.task, join_documents(record.docset.documents),
                                       record.question.question, ctx.templates)
        record.responder_prompt_ids = ctx.encode(text)
        if len(record.responder_prompt_ids) > ctx.cfg.data.max_prompt_tokens:
            _reject(record, QuestionStatus.DROPPED, "responder_prompt_too_long")  # skipped, never truncated
        else:
            todo.append(record)
    group_size = ctx.cfg.responder.group_size
    outputs = ctx.engine.generate([r.responder_prompt_ids for r in todo],
                                  ctx.sampling(ctx.cfg.responder.max_new_tokens), group_size)
    for record, group in zip(todo, outputs, strict=True):
        task, reference = record.docset.task, record.question.answer
        record.responses = list(group)
        record.rule_scores = [rule_score(task, c.text, reference) for c in group]
        record.predictions = [extract_prediction(task, c.text) for c in group]


def collect_verifier_votes(records: list[QuestionRecord], ctx: SelfPlayContext) -> None:
    """Stage 8: G_v verdicts on every parsed answer of a verified task (spec §3 step 6)."""
    cfg = ctx.cfg.verifier
    jobs: list[tuple[QuestionRecord, int]] = []
    prompts: list[list[int]] = []
    for record in (r for r in records if r.alive and r.responses):
        record.verifier_prompt_ids = [None] * len(record.responses)
        record.verdict_completions = [[] for _ in record.responses]
        record.votes = [[] for _ in record.responses]
        if record.docset.task not in cfg.tasks:
            continue
        for i, prediction in enumerate(record.predictions):
            if prediction is None:  # nothing to compare: the rule score (0) stands, spec §11.7
                continue
            ids = ctx.encode(render_verifier_prompt(record.question.question, prediction, record.question.answer,
                                                    ctx.templates))
            record.verifier_prompt_ids[i] = ids
            jobs.append((record, i))
            prompts.append(ids)
    outputs = ctx.engine.generate(prompts, ctx.sampling(cfg.max_new_tokens), cfg.num_votes)
    for (record, i), group in zip(jobs, outputs, strict=True):
        record.verdict_completions[i] = list(group)
        record.votes[i] = [parse_verdict(c.text, max_chars=completion_char_limit(cfg.max_new_tokens)) for c in group]


def score_records(records: list[QuestionRecord], cfg: SpellConfig) -> None:
    """Stage 9: majority vote, combined responder reward (Eq. 4, 6), questioner reward (Eq. 7)."""
    for record in records:
        if record.alive and record.responses:
            record.majorities = [majority_vote(v, cfg.rewards.majority) if v else None
                                 for v in (record.votes or [[] for _ in record.responses])]
            record.rewards = [responder_reward(rule, maj, cfg.rewards.combine)
                              for rule, maj in zip(record.rule_scores, record.majorities, strict=True)]
            if not has_reward_variance(record.rewards):
                record.status, record.reason = QuestionStatus.ZERO_VARIANCE, f"all rewards {record.rewards[0]:g}"
        if record.status != QuestionStatus.DROPPED:
            record.questioner_reward = questioner_reward(
                record.status, record.mean_reward, cfg.questioner.reward_mapping,
                mu=cfg.questioner.gaussian_mu, sigma=cfg.questioner.gaussian_sigma,
                bad_format=cfg.rewards.bad_format, bad_ground=cfg.rewards.bad_ground,
                zero_variance=cfg.rewards.zero_variance,
            )


def verifier_rewards_for(record: QuestionRecord, index: int, invalid_reward: float) -> list[float]:
    """Eq. 5 rewards of the verdicts on response ``index`` (spec §5.3)."""
    return verifier_rewards(record.votes[index], record.majorities[index], invalid_reward)


def _reject(record: QuestionRecord, status: QuestionStatus, reason: str) -> None:
    record.status, record.reason = status, reason

