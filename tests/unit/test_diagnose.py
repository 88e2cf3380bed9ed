"""Tests for spell/builtin/diagnose.py: the world's solver must recognise every question form the bootstrap taught,
with the true answer re-derived from the world's facts, and score a dumped sample against it."""

from __future__ import annotations

import random

import pytest

from spell.builtin.bootstrap.worldqa import fact_questions, kind_question, kinds_for, train_sets
from spell.builtin.diagnose import diagnose_record, normalize_question, question_bank, summarize, true_reference
from spell.tasks import rule_score
from spell.tasks.doc_mc import format_mc_question


@pytest.fixture(scope="module")
def world_set():
    return train_sets(seed=0, count=1)[0]


@pytest.fixture(scope="module")
def bank(world_set):
    return question_bank(world_set.plan, world_set.facts, world_set.kinds)


def test_every_bootstrap_question_form_is_recognised_with_its_true_answer(world_set, bank):
    rng = random.Random(1)
    items = fact_questions(world_set, rng)
    items += [kind_question(world_set, task, kind, rng, letter="A")
              for task in ("doc_general_qa", "doc_mc", "docmath_qa") for kind in kinds_for(world_set, task)]
    assert len(items) > 30
    for item in items:
        truth = bank[normalize_question(item.question)]
        # DocMath truths are rounded to 2 decimals (the questions ask for that); the rule's tolerance accepts both
        gold = item.answer if item.task == "doc_mc" else item.reference
        assert rule_score(item.task if item.task != "doc_mc" else "doc_general_qa", f"The answer is {truth.answer}.",
                          gold) == 1.0, item.question


def _record(world_set, **fields):
    ceo = world_set.plan.target_ceo.name
    base = {"docset_id": world_set.set_id, "task": "doc_general_qa", "status": "valid",
            "question": f"Who is the CEO of {world_set.plan.target.name}?", "answer": "Nobody Known",
            "responses": [f"The answer is {ceo}.", "The answer is Nobody Known."], "rule_scores": [0.0, 1.0],
            "majorities": ["yes", "yes"], "rewards": [1.0, 1.0]}
    return {**base, **fields}


def test_a_wrong_reference_and_what_it_does_to_rewards(world_set, bank):
    diagnosis = diagnose_record(_record(world_set), bank)
    assert diagnosis["solved"] == 1.0 and diagnosis["reference_true"] == 0.0  # "Nobody Known" is not the CEO
    assert diagnosis["responder_true"] == [1.0, 0.0]  # the first response names the true CEO
    assert diagnosis["verifier_true"] == [1.0, 0.0]  # YES on the right one is right, YES on the wrong one is not
    assert diagnosis["yes_on_wrong"] == [1.0] and diagnosis["yes_on_right"] == [1.0]
    assert diagnosis["reward_true"] == [1.0, 0.0]
    assert diagnosis["rule_vs_reference"] == [0.0, 1.0]


def test_mc_truth_is_the_letter_of_the_option_holding_the_true_answer(world_set, bank):
    ceo = world_set.plan.target_ceo.name
    question = format_mc_question(f"Who is the CEO of {world_set.plan.target.name}?",
                                  [("A", "Ann Other"), ("B", "Bo Else"), ("C", ceo), ("D", "Di Nope")])
    record = _record(world_set, task="doc_mc", question=question, answer="C",
                     responses=["The correct answer is (C)", "The correct answer is (A)"], majorities=["yes", None])
    assert true_reference(record, bank) == "C"
    diagnosis = diagnose_record(record, bank)
    assert diagnosis["reference_true"] == 1.0 and diagnosis["responder_true"] == [1.0, 0.0]
    assert diagnosis["verifier_true"] == [1.0]  # the undecided vote is not counted
    no_truth = question.replace(f"(C) {ceo}", "(C) Cy Wrong")
    assert true_reference({**record, "question": no_truth}, bank) is None  # no option holds the true answer


def test_unrecognised_and_unanswered_questions_and_the_summary(world_set, bank):
    unknown = diagnose_record(_record(world_set, question="What is the colour of the sky?"), bank)
    assert unknown == {"valid": 1.0, "solved": 0.0, "history": False}
    assert diagnose_record(_record(world_set, question=None), bank) == {}
    right = diagnose_record(_record(world_set), bank)
    report = summarize([("doc_general_qa", right), ("doc_general_qa", unknown), ("doc_mc", {})])
    # general QA: 2 samples answered, 1 of them recognised; the truth rates come from the recognised one only
    assert report["doc_general_qa"]["solver_parsed_rate"] == 0.5
    assert report["doc_general_qa"]["responder_true"] == 0.5 and report["doc_general_qa"]["reference_true"] == 0.0
    assert report["all"]["questioner_samples"] == 3 and report["all"]["answered_rate"] == pytest.approx(0.6667)


def test_questioner_reward_is_split_by_reference_truth(world_set, bank):
    ceo = world_set.plan.target_ceo.name
    wrong = diagnose_record(_record(world_set, questioner_reward=0.755, rewards=[1.0, 0.0, 1.0, 1.0]), bank)
    right = diagnose_record(_record(world_set, answer=ceo, questioner_reward=0.08, rewards=[1.0, 0.0]), bank)
    assert wrong["mean_responder_reward"] == 0.75 and right["mean_responder_reward"] == 0.5  # 3/4 and 1/2
    report = summarize([("doc_general_qa", wrong), ("doc_general_qa", right)])["doc_general_qa"]
    assert report["questioner_reward_true_ref"] == 0.08 and report["questioner_reward_wrong_ref"] == 0.755
    assert report["mean_responder_reward_true_ref"] == 0.5 and report["mean_responder_reward_wrong_ref"] == 0.75
    # only the wrong reference's responses count: rule scores [0, 1] against "Nobody Known" -> 1 of 2 agree
    assert report["responder_matches_wrong_ref"] == 0.5
    # _record's status is "valid" for both; a zero-variance true-reference group halves the true-ref valid rate
    zero = diagnose_record(_record(world_set, answer=ceo, status="zero_variance"), bank)
    split = summarize([("doc_general_qa", d) for d in (wrong, right, zero)])["doc_general_qa"]
    assert split["valid_rate_true_ref"] == 0.5 and split["valid_rate_wrong_ref"] == 1.0
    assert summarize([("doc_general_qa", right)])["doc_general_qa"]["responder_matches_wrong_ref"] is None
