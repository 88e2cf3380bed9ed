"""From generation rounds to one training batch (spec §3 steps 9-14, §6).

Rounds run until ``train.batch_groups`` responder groups with non-zero reward variance are collected or
``train.max_rounds`` is reached (then the step goes on with what it has, and says so in the metrics).
The history memory is updated after each round's rewards. The batch mixes the three roles: kept responder
groups, their questioner samples plus stratified negatives, and a quota of trainable verifier groups;
role-specific advantages are then attached (Eq. 8-9). Under torchrun each rank builds its own part of the batch,
but the two batch-level statistics span all ranks (one ``all_gather_object`` per step): the questioner z-score
(Eq. 9) and the verifier quota, so N ranks x B groups update like 1 rank x N*B groups.
"""

from __future__ import annotations

import logging
import random
import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from spell.advantages import assign_advantages, questioner_advantages_by_rank
from spell.config import SpellConfig
from spell.data import TaskBalancedSampler
from spell.rewards import verifier_group_trainable
from spell.rl import distributed
from spell.sampling import draw_questioner_negatives, draw_verifier_groups_by_rank
from spell.selfplay import QuestionRecord, SelfPlayContext, run_generation_round, verifier_rewards_for
from spell.types import MemoryExample, QuestionStatus, Role, RoleSample, Verdict

logger = logging.getLogger(__name__)

NEGATIVE_STATUSES = (QuestionStatus.BAD_FORMAT, QuestionStatus.BAD_GROUND, QuestionStatus.ZERO_VARIANCE)
# Rollout metrics that are counts: summed over ranks under torchrun (the others, rates and means, are averaged).
SUMMED_METRICS = frozenset({
    "questioner/num_generated", "data/questioner_prompt_too_long", "data/responder_prompt_too_long",
    "responder/num_groups", "verifier/num_verified", "verifier/num_trainable_groups", "memory/size",
    "memory/num_keys", *(f"{role.value}/num_samples" for role in Role),
})


@dataclass
class Experience:
    """One step's training batch, every record it came from, and the step's rollout metrics."""

    samples: list[RoleSample]
    records: list[QuestionRecord]
    metrics: dict[str, float]


def collect_experience(ctx: SelfPlayContext, sampler: TaskBalancedSampler) -> Experience:
    """Generation rounds until N non-degenerate responder groups (or the round limit), then the batch."""
    cfg = ctx.cfg
    records: list[QuestionRecord] = []
    kept: list[QuestionRecord] = []
    verifier_pool: list[tuple[QuestionRecord, int]] = []
    num_rounds = 0
    while num_rounds < cfg.train.max_rounds and len(kept) < cfg.train.batch_groups:
        round_records = run_generation_round(draw_round(sampler, ctx), ctx)
        num_rounds += 1
        update_memory(round_records, ctx, cfg)
        records.extend(round_records)
        kept.extend(r for r in round_records if r.status == QuestionStatus.VALID and r.rewards)
        verifier_pool.extend(trainable_verifier_groups(round_records, cfg))
    if len(kept) < cfg.train.batch_groups:
        logger.warning("collected %d/%d responder groups in %d rounds; updating with what was collected",
                       len(kept), cfg.train.batch_groups, num_rounds)
    kept = kept[: cfg.train.batch_groups]  # spec step 11: keep the first N groups
    samples = build_batch(kept, records, verifier_pool, ctx)
    metrics = rollout_metrics(records, kept, samples, verifier_pool, cfg)
    metrics.update({"rounds/num_rounds": num_rounds, "rounds/hit_limit": float(len(kept) < cfg.train.batch_groups),
                    "memory/size": len(ctx.memory), "memory/num_keys": ctx.memory.num_keys()})
    return Experience(samples, records, metrics)


def build_batch(kept: Sequence[QuestionRecord], records: Sequence[QuestionRecord],
                verifier_pool: Sequence[tuple[QuestionRecord, int]], ctx: SelfPlayContext) -> list[RoleSample]:
    """Spec steps 11-14: the kept responder groups, questioner samples, the verifier draw, then advantages.

    The verifier quota and the questioner z-score (Eq. 9) are batch-level: under torchrun both span every
    rank's part of the batch (one gather), so N ranks x B groups update like one process with N*B groups.
    """
    cfg = ctx.cfg
    samples = responder_samples(kept, ctx.temperature)
    if cfg.questioner.enable_update:
        samples += questioner_samples(kept, records, ctx, cfg)
    ranks = gather_rank_batches(samples, verifier_pool, ctx)
    if cfg.verifier.enable and cfg.verifier.enable_update:
        samples += verifier_samples(draw_verifier_share(verifier_pool, ranks, ctx), cfg, ctx.temperature)
    que_advantages = questioner_advantages_by_rank([r.questioner_rewards for r in ranks],
                                                   [r.questioner_tasks for r in ranks], cfg.questioner.advantage_scope)
    assign_advantages(samples, cfg.questioner.advantage_scope, que_advantages[distributed.dist_info().rank])
    return samples


@dataclass(frozen=True)
class RankBatch:
    """What the batch-level statistics need from one rank's part of the batch (gathered from every rank)."""

    num_responder: int  # responder sequences
    verifier_pool_size: int  # trainable verifier groups
    questioner_rewards: list[float]  # in batch order
    questioner_tasks: list[str]
    verifier_seed: int | None  # rank 0's seeds the verifier draw all ranks share; None elsewhere and in one process


def gather_rank_batches(samples: Sequence[RoleSample], verifier_pool: Sequence,
                        ctx: SelfPlayContext) -> list[RankBatch]:
    """Every rank's :class:`RankBatch`, indexed by rank (one collective; ``[mine]`` in a single process)."""
    info = distributed.dist_info()
    questioners = [s for s in samples if s.role == Role.QUESTIONER]
    # Rank 0's self-play RNG is checkpointed with rank 0, so a resumed run draws the same seed again.
    seed = ctx.rng.getrandbits(64) if info.enabled and info.is_main else None
    mine = RankBatch(sum(s.role == Role.RESPONDER for s in samples), len(verifier_pool),
                     [s.reward for s in questioners], [str(s.task) for s in questioners], seed)
    return distributed.gather_objects(mine)


def draw_verifier_share(verifier_pool: Sequence[tuple[QuestionRecord, int]], ranks: Sequence[RankBatch],
                        ctx: SelfPlayContext) -> list[tuple[QuestionRecord, int]]:
    """This rank's groups of the verifier draw over all ranks' pools (spec §3 step 13; quota from the global count).

    One process draws from ``ctx.rng`` exactly as :func:`spell.sampling.draw_verifier_groups` does. Under
    torchrun every rank draws with ``random.Random(rank 0's seed)``, so all ranks agree on the union draw.
    """
    cfg = ctx.cfg
    rng = ctx.rng if len(ranks) == 1 else random.Random(ranks[0].verifier_seed)
    drawn = draw_verifier_groups_by_rank([r.verifier_pool_size for r in ranks], [r.num_responder for r in ranks],
                                         cfg.verifier.update_ratio, cfg.verifier.num_votes, rng)
    return [verifier_pool[i] for i in drawn[distributed.dist_info().rank]]


def draw_round(sampler: TaskBalancedSampler, ctx: SelfPlayContext) -> list:
    """One round's document sets: per-task quotas, in random order.

    The sampler returns them grouped by task; keeping that order would make ``kept[:N]`` favour the first
    tasks of ``data.tasks`` and starve the last one whenever a round yields more than N groups.
    """
    docsets = sampler.draw(ctx.cfg.data.questions_per_round)
    ctx.rng.shuffle(docsets)
    return docsets


def update_memory(records: Sequence[QuestionRecord], ctx: SelfPlayContext, cfg: SpellConfig) -> None:
    """Alg. 1 line 20: remember solved questions whose mean reward passes the admission rule."""
    if not cfg.memory.enable:
        return
    for record in records:
        if record.question is None or not record.rewards:
            continue
        example = MemoryExample(record.evidence, record.question.question, record.question.answer)
        ctx.memory.add(record.docset.id, record.docset.task, example, record.mean_reward)


def trainable_verifier_groups(records: Sequence[QuestionRecord], cfg: SpellConfig) -> list[tuple[QuestionRecord, int]]:
    """Verified answers whose votes pass the agreement window (and rule consistency for maj_cons)."""
    groups = []
    for record in records:
        for i, votes in enumerate(record.votes):
            majority = record.majorities[i] if i < len(record.majorities) else None
            if votes and majority is not None and verifier_group_trainable(
                votes, majority, record.rule_scores[i], cfg.verifier.agreement_low,
                cfg.verifier.agreement_high, cfg.verifier.label,
            ):
                groups.append((record, i))
    return groups


def responder_samples(kept: Sequence[QuestionRecord], temperature: float) -> list[RoleSample]:
    """G responder sequences per kept group, sampled at ``temperature``; group_id = the question uid."""
    return [
        RoleSample(Role.RESPONDER, r.docset.task, r.uid, tuple(r.responder_prompt_ids), c.token_ids, reward,
                   meta={"index": i}, temperature=temperature, rollout_logprobs=c.logprobs)
        for r in kept for i, (c, reward) in enumerate(zip(r.responses, r.rewards, strict=True))
    ]


def questioner_samples(kept: Sequence[QuestionRecord], records: Sequence[QuestionRecord], ctx: SelfPlayContext,
                       cfg: SpellConfig) -> list[RoleSample]:
    """Positives = the kept questions; negatives drawn per task from bad cases (spec step 12)."""
    pool: dict[str, list[QuestionRecord]] = defaultdict(list)
    for record in records:
        if record.status in NEGATIVE_STATUSES and record.completion is not None:
            pool[record.docset.task].append(record)
    good_counts = Counter(r.docset.task for r in kept)
    negatives = draw_questioner_negatives(good_counts, pool, cfg.questioner.bad_case_ratio, ctx.rng)
    return [
        RoleSample(Role.QUESTIONER, r.docset.task, r.uid, tuple(r.prompt_ids), r.completion.token_ids,
                   r.questioner_reward, meta={"status": str(r.status)}, temperature=ctx.temperature,
                   rollout_logprobs=r.completion.logprobs)
        for r in [*kept, *negatives]
    ]


def verifier_samples(groups: Sequence[tuple[QuestionRecord, int]], cfg: SpellConfig,
                     temperature: float) -> list[RoleSample]:
    """G_v verdict sequences per drawn group, sampled at ``temperature``; group_id = question uid / answer index."""
    samples = []
    for record, i in groups:
        rewards = verifier_rewards_for(record, i, cfg.rewards.invalid_verdict)
        for completion, reward in zip(record.verdict_completions[i], rewards, strict=True):
            samples.append(RoleSample(Role.VERIFIER, record.docset.task, f"{record.uid}/{i}",
                                      tuple(record.verifier_prompt_ids[i]), completion.token_ids, reward,
                                      temperature=temperature, rollout_logprobs=completion.logprobs))
    return samples


def _mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def rollout_metrics(records: Sequence[QuestionRecord], kept: Sequence[QuestionRecord], samples: Sequence[RoleSample],
                    verifier_pool: Sequence, cfg: SpellConfig) -> dict[str, float]:
    """Per-role rates and means for one step, named ``role/metric`` (README lists them)."""
    n = max(len(records), 1)
    statuses = Counter(r.status for r in records)
    metrics: dict[str, float] = {f"questioner/{s.value}_rate": statuses[s] / n for s in QuestionStatus}
    metrics["questioner/num_generated"] = len(records)
    for reason in ("questioner_prompt_too_long", "responder_prompt_too_long"):
        metrics[f"data/{reason}"] = sum(r.reason == reason for r in records)
    answered = [r for r in records if r.rewards]
    rewards = [x for r in answered for x in r.rewards]
    metrics["responder/reward_mean"] = _mean(rewards)
    metrics["responder/reward_std"] = statistics.pstdev(rewards) if rewards else float("nan")
    metrics["responder/rule_score_mean"] = _mean([x for r in answered for x in r.rule_scores])
    metrics["responder/num_groups"] = len(kept)
    metrics["responder/prompt_tokens_mean"] = _mean([len(r.responder_prompt_ids) for r in answered])
    metrics["questioner/prompt_tokens_mean"] = _mean([len(r.prompt_ids) for r in records])
    metrics["questioner/num_docs_mean"] = _mean([len(r.evidence) for r in records])
    metrics.update(_verifier_metrics(answered, verifier_pool))
    by_role = Counter(s.role for s in samples)
    for role in Role:
        role_rewards = [s.reward for s in samples if s.role == role]
        metrics[f"{role.value}/num_samples"] = by_role[role]
        metrics[f"{role.value}/trained_reward_mean"] = _mean(role_rewards)
    return metrics


def _verifier_metrics(answered: Sequence[QuestionRecord], verifier_pool: Sequence) -> dict[str, float]:
    votes = [v for r in answered for group in r.votes for v in group]
    decided = [(maj, rule) for r in answered for maj, rule in zip(r.majorities, r.rule_scores)
               if maj in (Verdict.YES, Verdict.NO)]
    verifier_tokens = [len(ids) for r in answered for ids in r.verifier_prompt_ids if ids]
    return {
        "verifier/invalid_rate": _mean([float(v == Verdict.INVALID) for v in votes]),
        "verifier/yes_rate": _mean([float(v == Verdict.YES) for v in votes]),
        "verifier/agreement_with_rule": _mean([float((maj == Verdict.YES) == (rule >= 1.0)) for maj, rule in decided]),
        "verifier/num_verified": len(decided),
        "verifier/num_trainable_groups": len(verifier_pool),
        "verifier/prompt_tokens_mean": _mean(verifier_tokens),
    }


def sample_dump(records: Sequence[QuestionRecord], samples: Sequence[RoleSample]) -> list[dict]:
    """One JSON-able dict per questioner sample: docs, texts, parse, status, scores, votes, rewards, advantages."""
    advantages: dict[tuple[str, str], list[float]] = defaultdict(list)
    for s in samples:
        advantages[(s.role.value, s.group_id.split("/")[0])].append(round(s.advantage, 6))
    dump = []
    for r in records:
        q = r.question
        dump.append({
            "uid": r.uid, "docset_id": r.docset.id, "task": str(r.docset.task), "evidence": list(r.evidence),
            "num_examples": len(r.examples), "questioner_text": r.completion.text if r.completion else None,
            "question": q.question if q else None, "answer": q.answer if q else None,
            "status": str(r.status), "reason": r.reason, "questioner_reward": r.questioner_reward,
            "responses": [c.text for c in r.responses], "rule_scores": r.rule_scores, "predictions": r.predictions,
            "votes": [[str(v) for v in g] for g in r.votes],
            "majorities": [str(m) if m else None for m in r.majorities],
            "rewards": r.rewards,
            "advantages": {role: advantages[(role, r.uid)] for role in ("questioner", "responder", "verifier")
                           if (role, r.uid) in advantages},
        })
    return dump
