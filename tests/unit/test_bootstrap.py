"""Tests of the tiny-policy bootstrap pieces (spell.builtin.bootstrap): generators, transcripts, train loop smoke.

The real bootstrap (tens of CPU minutes) never runs here; the train loop is smoke-tested on a 1-layer model.
"""

from __future__ import annotations

import argparse
import random

import pytest
import torch

from spell.builtin.bootstrap.cli import add_init_default_arguments, command_line, config_from_args
from spell.builtin.bootstrap.synthetic import (
    SyntheticVocab,
    copy_example,
    kv_example,
    lookup_example,
    synthetic_example,
)
from spell.builtin.bootstrap.train import Stage, encode_transcript, run_stage
from spell.builtin.bootstrap.transcripts import (
    NO,
    TASKS,
    YES,
    one_hop_items,
    packed_qa_transcript,
    question_text,
    questioner_target,
    questioner_transcript,
    responder_target,
    responder_transcript,
    verifier_pair,
    verifier_transcript,
)
from spell.builtin.bootstrap.worldqa import (
    fact_questions,
    kind_expression,
    kind_question,
    kinds_for,
    train_sets,
)
from spell.parsing import parse_question, parse_verdict
from spell.prompts import load_templates
from spell.rl.engine.base import encode_chat_prompt
from spell.tasks import rule_score
from spell.tasks.arith import safe_eval
from spell.tasks.docmath import numbers_match
from spell.types import Question

VOCAB = SyntheticVocab(low=10, high=60, sep=3, arrow=4, end=5)
TEMPLATES = load_templates(None)


@pytest.fixture(scope="module")
def sets():
    return train_sets(0, 12)


def test_synthetic_generators_are_deterministic():
    docs = [[11, 12, 13, 14, 15, 16, 17, 18, 19, 20], [21, 22, 23, 24, 25, 26, 27, 28]]
    first = [synthetic_example(random.Random(7), VOCAB, docs) for _ in range(5)]
    second = [synthetic_example(random.Random(7), VOCAB, docs) for _ in range(5)]
    assert first == second
    assert synthetic_example(random.Random(8), VOCAB, docs) != first[0] or len(first[0].ids) < 3


def test_copy_example_repeats_its_items_after_the_separator():
    ex = copy_example(random.Random(0), VOCAB, max_items=10)
    n = ex.ids.index(VOCAB.sep)  # items, SEP, items, END -> length 2n + 2
    assert len(ex.ids) == 2 * n + 2 and ex.ids[:n] == ex.ids[n + 1:-1] and ex.ids[-1] == VOCAB.end
    assert ex.mask == [0] * (n + 1) + [1] * (n + 1)


def test_kv_example_queries_return_the_stored_values():
    ex = kv_example(random.Random(3), VOCAB, max_pairs=6, num_queries=3)
    cut = ex.ids.index(VOCAB.sep)
    stored = " ".join(map(str, ex.ids[:cut + 1]))
    masked = [t for t, m in zip(ex.ids, ex.mask) if m]
    assert masked and masked[-1] == VOCAB.end and sum(ex.mask[:cut + 1]) == 0
    # every queried "key -> value END" also occurs, token for token, in the stored pairs
    query, pieces = ex.ids[cut + 1:], []
    for token in query:
        pieces.append(token)
        if token == VOCAB.end:
            assert " ".join(map(str, pieces)) in stored
            pieces = []


def test_lookup_example_continuations_come_from_the_documents():
    docs = [list(range(10, 40)), list(range(40, 58))]  # all tokens distinct -> every span is unique
    ex = lookup_example(random.Random(1), VOCAB, docs, num_queries=2)
    cut = ex.ids.index(VOCAB.sep)
    context, query = ex.ids[:cut], ex.ids[cut + 1:]
    first = query[:query.index(VOCAB.end)]
    start = context.index(first[0])
    assert context[start:start + len(first)] == first  # prefix + continuation is a span of the context


def test_train_sets_are_the_train_split(sets):
    assert [ws.set_id for ws in sets[:2]] == ["world-train-00000", "world-train-00001"]
    assert all(ws.plan.split == "train" for ws in sets)


def test_kind_expressions_recompute_the_world_answers(sets):
    for ws in sets:
        for kind in kinds_for(ws, "docmath_qa"):
            _, value, args = kind.build(ws.plan, random.Random(5))
            expression = kind_expression(kind.name, ws.plan, args)
            # the world rounds to 2 decimals; the expression is exact
            assert round(safe_eval(expression), 2) == pytest.approx(value, abs=1e-9), (kind.name, expression)


def test_revenue_growth_expression_is_hand_checked():
    # (46.4 - 42.6) / (42.6 / 100) = 3.8 / 0.426 = 8.9202...
    assert safe_eval("(46.4-42.6)/(42.6/100)") == pytest.approx(8.920187793)


def _items(ws, rng):
    items = fact_questions(ws, rng) + fact_questions(ws, rng, mc_letter="C")
    for task in TASKS:
        items += [kind_question(ws, task, k, rng, "B") for k in kinds_for(ws, task)]
    return items


def test_questioner_targets_parse_to_the_world_answer(sets):
    rng = random.Random(0)
    for ws in sets:
        for item in _items(ws, rng):
            parsed = parse_question(questioner_target(item), item.task)
            assert isinstance(parsed, Question), (item, parsed)
            if item.task == "docmath_qa":
                assert numbers_match(float(parsed.answer), safe_eval(item.answer))
            elif item.task == "doc_mc":
                assert parsed.answer == item.reference and dict(parsed.options)[parsed.answer] == item.answer
            else:
                assert parsed.answer == item.answer
            # the gold answer text is a fact of the set: it occurs in the documents it needs
            if item.task != "docmath_qa":
                assert item.answer in " ".join(ws.documents[i] for i in item.docs)


def test_questioner_reasoning_answers_the_question_as_a_responder_would(sets):
    # the reasoning before the JSON states the question and then the answer in the responder's final sentence:
    # the rule scorer reads it as a responder answer equal to the JSON reference (doc_mc: the option's text)
    rng = random.Random(5)
    for ws in sets:
        for item in _items(ws, rng):
            target = questioner_target(item)
            reasoning, json_block = target.split("\n```json\n")
            assert reasoning.startswith(f"Question: {item.question}\n")
            parsed = parse_question(target, item.task)
            if item.task == "doc_mc":
                assert reasoning.endswith(f"The correct answer is {dict(parsed.options)[parsed.answer]}.")
            else:
                assert rule_score(item.task, reasoning, parsed.answer) == 1.0, target


def test_responder_targets_score_one_with_the_rule(sets):
    rng = random.Random(1)
    for ws in sets:
        for item in _items(ws, rng):
            assert rule_score(item.task, responder_target(item), item.reference) == 1.0, item


@pytest.mark.parametrize("agree", [True, False])
def test_verifier_pairs_match_their_label(sets, agree):
    rng = random.Random(2)
    for ws in sets:
        for item in _items(ws, rng)[::3]:
            predicted, reference = verifier_pair(item, ws, rng, agree)
            if item.task == "docmath_qa":
                same = numbers_match(safe_eval(predicted), float(reference))
            else:
                same = predicted.lower() == reference.lower()
            assert same == agree, (item, predicted, reference)


def test_role_transcripts_have_parseable_targets(sets):
    rng = random.Random(4)
    verdicts = set()
    for ws in sets:
        for task in TASKS:
            chat = questioner_transcript(ws, task, TEMPLATES, rng, history=0.5)
            assert isinstance(parse_question(chat.messages[1][1], task), Question)
            verdict = verifier_transcript(ws, task, TEMPLATES, rng).messages[1][1]
            assert verdict in (YES, NO)
            verdicts.add(parse_verdict(verdict).value)
    assert verdicts == {"yes", "no"}  # both cases occur


def test_packed_qa_asks_only_about_the_documents_shown(sets):
    rng = random.Random(0)
    for ws in sets:
        chat = packed_qa_transcript(ws, TEMPLATES, rng, max_docs=2, num_questions=4)
        roles = [role for role, _ in chat.messages]
        assert roles == ["user", "assistant"] * (len(roles) // 2) and len(roles) >= 2
        shown = chat.messages[0][1]  # the first turn is the real responder prompt with the documents
        assert "<text>" in shown and all(c.startswith("Question: ") for r, c in chat.messages[2::2])
        for answer in (c for r, c in chat.messages if r == "assistant"):
            if "\\boxed{" in answer:  # DocMath: every figure of the expression is in the documents
                figures = answer.split("{")[1].split("}")[0].replace("(", " ").replace(")", " ")
                for figure in figures.replace("-", " ").replace("+", " ").replace("/", " ").split():
                    assert figure == "100" or figure in shown, (figure, answer)
            else:  # "X is option L. ..." or "The correct answer is X."
                text = answer.split(" is option ")[0] if " is option " in answer else answer[22:-1]
                assert text in shown, answer


@pytest.fixture(scope="module")
def tiny():
    from spell.builtin.tiny import build_tiny_model, build_tiny_tokenizer

    texts = [*train_sets(0, 2)[0].documents, TEMPLATES.verifier]
    tokenizer = build_tiny_tokenizer(texts, vocab_size=300)
    model = build_tiny_model(tokenizer, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, seed=0)
    return model, tokenizer


def test_encode_transcript_matches_the_inference_prompt(tiny, sets):
    _, tokenizer = tiny
    item = fact_questions(sets[0], random.Random(0))[0]
    chat = responder_transcript(sets[0], item, TEMPLATES)
    example = encode_transcript(tokenizer, chat)
    prompt = encode_chat_prompt(tokenizer, chat.messages[0][1])
    assert example.ids[:len(prompt)] == prompt and sum(example.mask[:len(prompt)]) == 0
    target = [t for t, m in zip(example.ids, example.mask) if m]
    assert tokenizer.decode(target) == responder_target(item) + "<|im_end|>"
    assert encode_transcript(tokenizer, chat, max_len=len(prompt)) is None  # too long -> dropped


def test_two_training_steps_run_and_change_the_weights(tiny):
    model, tokenizer = tiny
    before = [p.detach().clone() for p in model.parameters()]
    stage = Stage("smoke", steps=2, lr=1e-2, batch_tokens=256,
                  source=lambda rng: copy_example(rng, SyntheticVocab(3, len(tokenizer), 3, 4, 5), max_items=12),
                  warmup=1)
    report = run_stage(model, stage, seed=0, pad_id=tokenizer.pad_token_id)
    assert report["steps"] == 2 and report["tokens"] > 0 and report["final_loss"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_cli_arguments_round_trip():
    parser = argparse.ArgumentParser()
    add_init_default_arguments(parser)
    cfg = config_from_args(parser.parse_args(["--seed", "3", "--hidden", "96", "--no-eval"]))
    assert (cfg.seed, cfg.hidden, cfg.eval) == (3, 96, False)
    assert command_line(cfg) == "spell init-default --seed 3 --hidden 96 --no-eval"
    quick = config_from_args(parser.parse_args(["--quick"]))
    assert quick.copy_steps < 100 and quick.num_sets < 1000


def test_finished_stages_are_resumed_exactly(tiny, tmp_path, monkeypatch):
    from spell.builtin.bootstrap.config import BootstrapConfig
    from spell.builtin.bootstrap.pipeline import _run_stages

    monkeypatch.setenv("SPELL_CACHE_DIR", str(tmp_path))
    model, tokenizer = tiny
    vocab = SyntheticVocab(3, len(tokenizer), 3, 4, 5)
    stage = Stage("resume-smoke", steps=1, lr=1e-2, batch_tokens=256, warmup=1,
                  source=lambda rng: copy_example(rng, vocab, max_items=12))
    cfg = BootstrapConfig(seed=11)
    first = _run_stages(cfg, model, tokenizer, [stage])
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():  # spoil the weights: a resume must restore the saved ones, not train again
        for p in model.parameters():
            p.zero_()
    assert _run_stages(cfg, model, tokenizer, [stage]) == first
    assert all(torch.equal(trained[k], v) for k, v in model.state_dict().items())


def test_a_new_transcript_format_never_resumes_old_stages(tmp_path, monkeypatch):
    from spell.builtin.bootstrap import pipeline
    from spell.builtin.bootstrap.config import BootstrapConfig

    monkeypatch.setenv("SPELL_CACHE_DIR", str(tmp_path))
    cfg = BootstrapConfig(seed=11)
    current = pipeline._work_dir(cfg)
    assert pipeline._work_dir(cfg) == current  # same settings, same folder
    monkeypatch.setattr(pipeline, "TRANSCRIPTS_VERSION", pipeline.TRANSCRIPTS_VERSION + 1)
    assert pipeline._work_dir(cfg) != current


def test_mc_mapping_separates_the_option_text_from_the_letter():
    from spell.builtin.bootstrap.eval import mc_mapping
    from spell.evaluate.formats import EvalItem
    from spell.types import TaskType

    options = (("A", "Tukul Zazik"), ("B", "Dimid Hufim"), ("C", "Negim"), ("D", "Vovul"))
    item = EvalItem("world", "q", TaskType.DOC_MC, ("doc",), "Who is the CEO?", ("A",), options=options)
    general = EvalItem("world", "g", TaskType.DOC_GENERAL_QA, ("doc",), "Who?", ("x",))
    samples = [
        (item, "Tukul Zazik is option A. The correct answer is A.", "A", 1.0),  # text right, its own letter
        (item, "Tukul Zazik is option B. The correct answer is B.", "B", 0.0),  # text right, wrong letter
        (item, "Negim is option B. The correct answer is B.", "B", 0.0),  # wrong option, wrong letter for it
        (item, "Somebody is option B. The correct answer is B.", "B", 0.0),  # not an option at all
        (general, "The correct answer is x.", "x", 1.0),  # not MC: ignored
    ]
    result = mc_mapping(samples)
    # 4 MC samples: letter right 1/4; text right 2/4; text is an option 3/4, of which its own letter 1/3;
    # letters written A, B, B, B -> B 3/4
    assert result == {"num": 4, "letter_right": 0.25, "text_right": 0.5, "stated_an_option": 0.75,
                      "letter_of_stated_option": 0.3333, "top_letter": "B", "top_letter_share": 0.75}


def test_bootstrap_report_shows_reference_truth_and_mc_mapping():
    from spell.builtin.bootstrap.report import render_report

    stage = {"steps": 2, "seconds": 1.0, "tokens": 10, "final_loss": 0.5, "checks": []}
    heldout = {"overall": 0.5, "by_task": {"doc_mc": 0.25}, "by_task_hops": {}, "format_rate": 1.0}
    questioner = {"doc_general_qa": {"valid": 0.8, "bad_format": 0.2, "dropped": 0.0, "answer_in_docs": 0.5,
                                     "solver_parsed": 0.4, "reference_true": 0.25, "responder_true": 0.5,
                                     "num": 10}}
    mc = {"num": 4, "letter_right": 0.25, "text_right": 0.5, "stated_an_option": 0.75,
          "letter_of_stated_option": 0.3333, "top_letter": "B", "top_letter_share": 0.75}
    result = {
        "command": "spell init-default", "torch": "x", "total_seconds": 2, "train_seconds": 1,
        "config": {"seed": 0, "world_seed": 0, "threads": 2, "hidden": 8, "layers": 2, "heads": 2, "kv_heads": 1,
                   "num_sets": 10},
        "training": {"vocab_size": 64, "parameters": 1000, "stages": {"roles": stage}},
        "measurements": {
            "heldout_greedy": heldout, "questioner_plain": questioner, "questioner_history": {}, "mc_mapping": mc,
            "verifier": {"accuracy": 0.5, "by_task": {}, "invalid_rate": 0.0, "yes_rate": 0.1, "rule_yes_rate": 0.2,
                         "num": 3},
            "selfplay_probe": {"num_questions": 3, "status_rates": {}, "responder_rule_score_mean": 0.0,
                               "groups_with_variance": 1, "groups_with_variance_rate": 0.33},
            "eval_seconds": 1.0},
    }
    text = render_report(result)
    assert "| plain | doc_general_qa | 80.0% | 20.0% | 0.0% | 50.0% | 40.0% | 25.0% | 50.0% | 10 |" in text
    assert "right letter 25.0%, right option text 50.0%" in text and "most written letter B (75.0%)" in text
    del result["measurements"]["mc_mapping"]  # a record from before the measurement existed still renders
    assert "right option text" not in render_report(result)


def test_questioner_rates_score_references_and_the_responder_on_the_same_questions(tiny, sets, monkeypatch):
    # the random tiny model writes no parseable question: a fake parser hands back, for every questioner sample,
    # a 1-hop question of the world with its TRUE answer, so every one is recognised and its reference is true;
    # the responder then answers those questions for real (random weights: its truth rate is whatever it is)
    from spell.builtin.bootstrap import eval as measure

    model, tokenizer = tiny
    rng = random.Random(9)
    items = {task: one_hop_items(sets[0], task, tuple(range(5)), rng)[0] for task in TASKS}
    monkeypatch.setattr(measure, "parse_question",
                        lambda text, task, **_: parse_question(questioner_target(items[task]), task))
    calls = []
    real = measure._answers_as_responder
    monkeypatch.setattr(measure, "_answers_as_responder", lambda *a: calls.append(a[2]) or real(*a))
    report = measure.questioner_rates(model, tokenizer, sets[:1], TEMPLATES, per_task=1, history=False,
                                      max_new_tokens=4)
    for task in TASKS:
        rates = report[task]
        assert (rates["valid"], rates["solver_parsed"], rates["reference_true"]) == (1.0, 1.0, 1.0), task
        assert 0.0 <= rates["responder_true"] <= 1.0
    # each recognised question (doc_mc: with its choices) is answered as a responder over the shown documents
    assert [(task, question) for task, _, question, _ in calls[0]] == [(t, question_text(items[t])) for t in TASKS]
