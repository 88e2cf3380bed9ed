"""Every status path of one self-play round and the batch it becomes, with exact rewards and advantages.

A scripted fake engine plays all roles (real tokenizer, scripted texts) over five document sets, one per
questioner outcome: alpha valid (2 of 4 responders right), bravo bad_format, charlie dropped (unclosed
think), delta bad_ground (answered without documents), echo zero_variance (all right).
"""

from __future__ import annotations

import math
import random

import pytest

from spell.config import load_config
from spell.data import TaskBalancedSampler
from spell.experience import collect_experience, sample_dump
from spell.memory import HistoryMemory
from spell.prompts import load_templates
from spell.selfplay import SelfPlayContext, run_generation_round
from spell.types import DocSet, QuestionStatus, Role, TaskType, Verdict
from tests.fakes.scripted_engine import FakeScriptedEngine

QA = TaskType.DOC_GENERAL_QA
QUESTIONS = {
    "alpha-set": '```json\n{"question": "Who leads Alpha?", "answer": "Mira"}\n```',
    "bravo-set": "I cannot write JSON today.",
    "charlie-set": "<think> still thinking when the budget ran out",
    "delta-set": '```json\n{"question": "Where is Delta?", "answer": "Kalo"}\n```',
    "echo-set": '```json\n{"question": "What is Echo?", "answer": "Zed"}\n```',
}


def script(role: str, prompt: str, i: int) -> str:
    if role == "questioner":
        return next(text for marker, text in QUESTIONS.items() if marker in prompt)
    if role == "grounding":
        return "The correct answer is Kalo." if "Where is Delta?" in prompt else "The correct answer is unknown."
    if role == "responder":
        if "Who leads Alpha?" in prompt:
            return "The correct answer is Mira." if i < 2 else "The correct answer is Bob."
        if "What is Echo?" in prompt:
            return "The correct answer is Zed."
        return "The correct answer is unknown."
    # verifier: three votes agree with the truth, the last one dissents
    same = prompt.split("Answer 1:")[1].split("Answer 2:")[0].strip() == prompt.split("Answer 2:")[1].split("\n")[
        1 if prompt.split("Answer 2:")[1].startswith("\n") else 0].strip()
    agree = "Decision: [[YES]]" if same else "Decision: [[NO]]"
    disagree = "Decision: [[NO]]" if same else "Decision: [[YES]]"
    return agree if i < 3 else disagree


DOCSETS = [DocSet(name, (f"Document about {name}.", f"More facts on {name}."), QA) for name in QUESTIONS]


def make_ctx(tokenizer, *overrides: str, seed: int = 0):
    cfg = load_config("tiny_cpu", [
        "data.tasks=[doc_general_qa]", "verifier.tasks=[doc_general_qa]", "responder.group_size=4",
        "verifier.num_votes=4", "verifier.update_ratio=1.0", "train.batch_groups=1", "train.max_rounds=1",
        "data.questions_per_round=5", "responder.max_new_tokens=64", "questioner.max_new_tokens=64",
        "verifier.max_new_tokens=64", *overrides,
    ])
    engine = FakeScriptedEngine(tokenizer, script)
    memory = HistoryMemory(cfg.memory.size, cfg.memory.admission, cfg.memory.dedup)
    ctx = SelfPlayContext(cfg, engine, tokenizer, memory, load_templates(None), random.Random(seed))
    return ctx, TaskBalancedSampler(DOCSETS, cfg.data.tasks, seed=seed)


def by_docset(records):
    return {r.docset.id: r for r in records}


def test_round_assigns_every_status_and_exact_rewards(tiny_tokenizer):
    ctx, _ = make_ctx(tiny_tokenizer)
    records = by_docset(run_generation_round(DOCSETS, ctx))
    assert {k: r.status for k, r in records.items()} == {
        "alpha-set": QuestionStatus.VALID, "bravo-set": QuestionStatus.BAD_FORMAT,
        "charlie-set": QuestionStatus.DROPPED, "delta-set": QuestionStatus.BAD_GROUND,
        "echo-set": QuestionStatus.ZERO_VARIANCE,
    }
    alpha = records["alpha-set"]
    assert alpha.rule_scores == [1.0, 1.0, 0.0, 0.0]
    assert alpha.majorities == [Verdict.YES, Verdict.YES, Verdict.NO, Verdict.NO]  # 3 of 4 votes each
    assert alpha.rewards == [1.0, 1.0, 0.0, 0.0]
    assert alpha.questioner_reward == pytest.approx(1.0)  # r̄ = 2/4 = μ -> exp(0) = 1
    assert records["bravo-set"].questioner_reward == -1.0
    assert records["charlie-set"].questioner_reward is None  # dropped: never trained
    assert records["delta-set"].questioner_reward == -0.5
    assert records["echo-set"].questioner_reward == 0.0
    assert records["delta-set"].responses == []  # ungrounded questions never reach the responders


def test_experience_batch_roles_rewards_and_advantages(tiny_tokenizer):
    ctx, sampler = make_ctx(tiny_tokenizer)
    experience = collect_experience(ctx, sampler)
    samples = experience.samples
    roles = [s.role for s in samples]
    assert roles.count(Role.RESPONDER) == 4 and roles.count(Role.QUESTIONER) == 2 and roles.count(Role.VERIFIER) == 4
    responder = [s for s in samples if s.role == Role.RESPONDER]
    # rewards [1,1,0,0]: mean .5, unbiased std sqrt(4*.25/3) = .57735 -> ±.5/.57735 = ±0.86603
    assert [round(s.advantage, 4) for s in responder] == [0.866, 0.866, -0.866, -0.866]
    questioner = [s for s in samples if s.role == Role.QUESTIONER]
    assert questioner[0].reward == pytest.approx(1.0) and questioner[1].reward in (-1.0, -0.5, 0.0)
    # two values a, b: mean (a+b)/2, unbiased std |a-b|/sqrt(2) -> advantages ±1/sqrt(2) = ±0.70711
    assert [round(s.advantage, 4) for s in questioner] == [0.7071, -0.7071]
    verifier = [s for s in samples if s.role == Role.VERIFIER]
    # votes agree 3:1 with the majority: rewards [1,1,1,0], mean .75, unbiased std sqrt(.75/3) = .5
    assert [s.reward for s in verifier] == [1.0, 1.0, 1.0, 0.0]
    assert [round(s.advantage, 4) for s in verifier] == [0.5, 0.5, 0.5, -1.5]
    assert len({s.group_id for s in verifier}) == 1
    m = experience.metrics
    for status in ("valid", "bad_format", "dropped", "bad_ground", "zero_variance"):
        assert m[f"questioner/{status}_rate"] == pytest.approx(0.2)  # one of five each
    assert m["responder/num_groups"] == 1 and m["verifier/agreement_with_rule"] == 1.0
    assert m["memory/size"] == 1  # alpha (r̄ = .5) admitted; echo (r̄ = 1) is not under the paper rule
    dump = sample_dump(experience.records, samples)
    alpha = next(d for d in dump if d["docset_id"] == "alpha-set")
    assert alpha["status"] == "valid" and alpha["rewards"] == [1.0, 1.0, 0.0, 0.0]
    assert len(alpha["advantages"]["responder"]) == 4


def test_trained_samples_carry_the_temperature_their_role_sampled_at(tiny_tokenizer):
    ctx, sampler = make_ctx(tiny_tokenizer, "sampling.temperature=0.9")  # not the 0.7 default
    samples = collect_experience(ctx, sampler).samples
    sampled_at = {role: {t for r, t in ctx.engine.temperatures if r == role} for role in Role}
    assert sampled_at == {Role.QUESTIONER: {0.9}, Role.RESPONDER: {0.9}, Role.VERIFIER: {0.9}}
    assert {s.role for s in samples} == set(Role)
    # each sample's training temperature = its role's engine call, which log-probs then divide logits by
    assert all(s.temperature in sampled_at[s.role] for s in samples)
    # and every role's sample carries the engine's log-probs of its tokens (for train/rollout_logprob_diff)
    assert all(s.rollout_logprobs == tuple(-(k + 1) / 10 for k in range(len(s.completion_ids))) for s in samples)


@pytest.mark.parametrize("overrides, expect", [
    # questioner frozen: no questioner sequences in the batch
    (["questioner.enable_update=false"], {Role.RESPONDER: 4, Role.QUESTIONER: 0, Role.VERIFIER: 4}),
    # verifier not trained: votes still shape rewards, no verifier sequences
    (["verifier.enable_update=false"], {Role.RESPONDER: 4, Role.QUESTIONER: 2, Role.VERIFIER: 0}),
    # no verifier at all: rule reward only
    (["verifier.enable=false"], {Role.RESPONDER: 4, Role.QUESTIONER: 2, Role.VERIFIER: 0}),
    # no negatives
    (["questioner.bad_case_ratio=0"], {Role.RESPONDER: 4, Role.QUESTIONER: 1, Role.VERIFIER: 4}),
])
def test_ablation_switches_change_batch_composition(tiny_tokenizer, overrides, expect):
    ctx, sampler = make_ctx(tiny_tokenizer, *overrides)
    samples = collect_experience(ctx, sampler).samples
    assert {role: sum(s.role == role for s in samples) for role in Role} == expect


def test_no_grounding_filter_lets_ungrounded_question_through(tiny_tokenizer):
    ctx, _ = make_ctx(tiny_tokenizer, "grounding.enable=false")
    records = by_docset(run_generation_round(DOCSETS, ctx))
    # without the filter delta reaches the responders, who all answer "unknown" -> zero variance
    assert records["delta-set"].status == QuestionStatus.ZERO_VARIANCE
    assert all(call[0] != "grounding" for call in ctx.engine.calls)


def test_authors_admission_also_remembers_fully_solved_questions(tiny_tokenizer):
    ctx, sampler = make_ctx(tiny_tokenizer, "memory.admission=authors")
    collect_experience(ctx, sampler)
    assert len(ctx.memory) == 2  # alpha (r̄ .5) and echo (r̄ 1.0, allowed by 0.01 <= r̄ <= 1)


def test_round_limit_proceeds_with_what_was_collected(tiny_tokenizer):
    ctx, sampler = make_ctx(tiny_tokenizer, "train.batch_groups=5", "train.max_rounds=2")
    experience = collect_experience(ctx, sampler)
    assert experience.metrics["rounds/num_rounds"] == 2 and experience.metrics["rounds/hit_limit"] == 1.0
    # alpha is asked twice (two rounds of the five sets); the second time the memory changes its prompt
    assert experience.metrics["responder/num_groups"] >= 1
    assert not math.isnan(experience.metrics["responder/reward_mean"])


def test_overlong_responder_prompt_is_skipped_and_counted(tiny_tokenizer):
    ctx, _ = make_ctx(tiny_tokenizer, "data.max_prompt_tokens=16")
    records = run_generation_round(DOCSETS, ctx)
    assert all(r.status == QuestionStatus.DROPPED for r in records)  # even the questioner prompt is > 16 tokens
    assert {r.reason for r in records} == {"questioner_prompt_too_long"}
