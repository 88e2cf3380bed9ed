"""The RLVR baseline (paper App. E.5): responder-only GRPO on labelled questions with the rule reward.

Same trainer, config, update and checkpoints as SPELL; only experience collection differs: questions come
from ``data.labelled_files`` (generic format, gold answers), G answers each, reward = best rule score over
the golds, groups with non-zero variance are kept (dynamic sampling), no questioner, verifier or memory.
"""

from __future__ import annotations

import logging
import uuid

from spell.advantages import assign_advantages
from spell.data import TaskBalancedSampler
from spell.evaluate.formats import EvalItem, load_generic
from spell.experience import Experience, draw_round, responder_samples, rollout_metrics
from spell.rewards import has_reward_variance
from spell.rl.metrics import stage_timer
from spell.selfplay import QuestionRecord, SelfPlayContext, generate_responses
from spell.tasks import rule_score
from spell.tasks.doc_mc import format_mc_question
from spell.types import DocSet, Question, QuestionStatus, TaskType

logger = logging.getLogger(__name__)


def load_labelled(paths: list[str], tasks: list[TaskType]) -> tuple[list[DocSet], dict[str, EvalItem]]:
    """Labelled questions as document sets (for the task-balanced sampler) plus their items by id."""
    if not paths:
        raise FileNotFoundError("train.mode=rlvr needs data.labelled_files=[questions.jsonl] (generic eval format)")
    items = {}
    for path in paths:
        for item in load_generic(path):
            if item.task in tasks:
                items[f"{item.benchmark}/{item.id}"] = item
    docsets = [DocSet(key, item.documents, item.task, "labelled") for key, item in items.items()]
    return docsets, items


def _record(docset: DocSet, item: EvalItem, ctx: SelfPlayContext) -> QuestionRecord:
    shown = format_mc_question(item.question, item.options) if item.task == TaskType.DOC_MC else item.question
    question = Question(item.task, shown, item.answers[0], item.question, item.options)
    uid = uuid.UUID(int=ctx.rng.getrandbits(128)).hex
    return QuestionRecord(uid, docset, tuple(range(len(docset.documents))), [], [], question=question)


def collect_rlvr_experience(ctx: SelfPlayContext, sampler: TaskBalancedSampler,
                            items: dict[str, EvalItem]) -> Experience:
    """Rounds of G answers per labelled question until N groups with reward variance (or the round limit)."""
    cfg = ctx.cfg
    records: list[QuestionRecord] = []
    kept: list[QuestionRecord] = []
    num_rounds = 0
    while num_rounds < cfg.train.max_rounds and len(kept) < cfg.train.batch_groups:
        batch = [_record(d, items[d.id], ctx) for d in draw_round(sampler, ctx)]
        with stage_timer("responder_generate"):
            generate_responses(batch, ctx)
        for record in (r for r in batch if r.responses):
            golds = items[record.docset.id].answers
            record.rule_scores = [max(rule_score(record.docset.task, c.text, g) for g in golds)
                                  for c in record.responses]
            record.rewards = list(record.rule_scores)
            if not has_reward_variance(record.rewards):
                record.status, record.reason = QuestionStatus.ZERO_VARIANCE, f"all rewards {record.rewards[0]:g}"
        num_rounds += 1
        records.extend(batch)
        kept.extend(r for r in batch if r.status == QuestionStatus.VALID and r.rewards)
    kept = kept[: cfg.train.batch_groups]
    samples = responder_samples(kept, ctx.temperature)
    assign_advantages(samples, cfg.questioner.advantage_scope)
    metrics = rollout_metrics(records, kept, samples, [], cfg)
    metrics.update({"rounds/num_rounds": num_rounds, "rounds/hit_limit": float(len(kept) < cfg.train.batch_groups)})
    return Experience(samples, records, metrics)
