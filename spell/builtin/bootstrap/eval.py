"""Quick measurements of a bootstrapped policy with the real prompts, engine, parsers and rule scorers (issue 5).

:func:`heldout_accuracy`: the world's held-out questions rendered as ``spell eval`` does, per task and hop count;
:func:`mc_mapping`: MC option text vs letter; :func:`verifier_agreement`: verdicts on held-out responses vs their
rule scores; :func:`questioner_rates`: self-play questioner prompts on train sets at T=0.7; :func:`selfplay_probe`:
one real ``spell.selfplay`` round.
"""

from __future__ import annotations

import random
import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from spell.builtin.bootstrap.transcripts import QUESTIONER_NUM_DOCS, TASKS, memory_example, pick_item
from spell.builtin.bootstrap.worldqa import WorldSet
from spell.evaluate.formats import EvalItem, load_generic
from spell.evaluate.runner import prepare_prompt, score_response
from spell.parsing import parse_question, parse_verdict
from spell.prompts import Templates, join_documents
from spell.prompts.questioner import draw_target_letter_for, render_questioner_prompt
from spell.prompts.responder import render_responder_prompt
from spell.prompts.verifier import render_verifier_prompt
from spell.rewards import has_reward_variance
from spell.rl.engine.base import encode_chat_prompt
from spell.rl.engine.hf import HFEngine
from spell.tasks import extract_prediction
from spell.tasks.doc_general_qa import normalize_answer
from spell.tasks.doc_mc import format_mc_question
from spell.types import DocSet, MemoryExample, Question, Rejection, SamplingParams, TaskType


def _rate(count: int, total: int) -> float:
    return round(count / total, 4) if total else 0.0


def heldout_accuracy(model: Any, tokenizer: Any, heldout_path: str, templates: Templates, *, temperature: float,
                     n: int, max_new_tokens: int = 48, seed: int = 0, limit: int | None = None) -> dict:
    """Held-out accuracy (mean rule score over ``n`` samples per question).

    Returns:
        ``{"overall", "by_task", "by_task_hops", "format_rate", "samples"}``; ``samples`` keeps
        (item, response, prediction, score) tuples for :func:`verifier_agreement`.
    """
    items = load_generic(heldout_path)[:limit]
    engine = HFEngine(model, tokenizer, max_batch_prompts=8)
    sampling = SamplingParams(temperature, 0.95 if temperature > 0 else 1.0, max_new_tokens, seed)
    prompts = [prepare_prompt(item, tokenizer, None, templates)[0] for item in items]
    outputs = engine.generate(prompts, sampling, n=n)
    scores: dict[str, list[float]] = defaultdict(list)
    samples, parsed = [], 0
    for item, group in zip(items, outputs, strict=True):
        hops = item.metadata.get("hops", 0)
        for completion in group:
            prediction, score = score_response(item, completion.text)
            parsed += prediction is not None
            samples.append((item, completion.text, prediction, score))
            for key in ("overall", item.task.value, f"{item.task.value}/{hops}hop"):
                scores[key].append(score)
    means = {key: round(statistics.fmean(values), 4) for key, values in scores.items()}
    return {
        "overall": means.pop("overall", 0.0),
        "by_task": {k: v for k, v in sorted(means.items()) if "/" not in k},
        "by_task_hops": {k: v for k, v in sorted(means.items()) if "/" in k},
        "format_rate": _rate(parsed, len(samples)),
        "num_questions": len(items),
        "samples": samples,
    }


_STATED_OPTION = re.compile(r"^\s*(.*?) is option\b", re.DOTALL)


def mc_mapping(samples: Sequence[tuple[EvalItem, str, str | None, float]]) -> dict:
    """Does the responder find the right option's text but write the wrong letter? (doc_mc samples only)

    The bootstrap's MC answer is "<option text> is option <L>. The correct answer is <L>.": the text and the
    letter can be right or wrong separately (issue 12: a letter lottery is a mapping failure, not a retrieval one).

    Returns:
        ``{"num", "letter_right", "text_right", "stated_an_option", "letter_of_stated_option", "top_letter",
        "top_letter_share"}``: rates over the MC samples; ``letter_of_stated_option`` is over the samples whose
        stated text is one of the options (the letter written is that option's letter).
    """
    mc = [s for s in samples if s[0].task == TaskType.DOC_MC]
    counts: Counter = Counter()
    letters: Counter = Counter()
    for item, response, prediction, score in mc:
        match = _STATED_OPTION.match(response)
        stated = normalize_answer(match.group(1)) if match else None
        keys = [key for key, text in item.options if normalize_answer(text) == stated]
        gold = dict(item.options).get(item.answers[0], "")
        letters[prediction] += 1
        counts["letter_right"] += score >= 1.0
        counts["text_right"] += stated is not None and stated == normalize_answer(gold)
        counts["stated"] += bool(keys)
        counts["consistent"] += bool(keys) and prediction == keys[0]
    top, top_count = letters.most_common(1)[0] if letters else (None, 0)
    return {"num": len(mc), "letter_right": _rate(counts["letter_right"], len(mc)),
            "text_right": _rate(counts["text_right"], len(mc)), "stated_an_option": _rate(counts["stated"], len(mc)),
            "letter_of_stated_option": _rate(counts["consistent"], counts["stated"]), "top_letter": top,
            "top_letter_share": _rate(top_count, len(mc))}


def verifier_agreement(model: Any, tokenizer: Any, samples: Sequence[tuple[EvalItem, str, str | None, float]],
                       templates: Templates, *, limit: int = 150, max_new_tokens: int = 24) -> dict:
    """Greedy verifier verdicts on parsed held-out responses vs their rule scores (YES iff score 1).

    Returns:
        ``{"accuracy", "by_task", "invalid_rate", "yes_rate", "rule_yes_rate", "num"}``.
    """
    chosen = [s for s in samples if s[2] is not None][:limit]
    prompts = []
    for item, _, prediction, _ in chosen:
        question = format_mc_question(item.question, item.options) if item.task == TaskType.DOC_MC else item.question
        prompts.append(encode_chat_prompt(tokenizer, render_verifier_prompt(question, prediction, item.answers[0],
                                                                            templates)))
    engine = HFEngine(model, tokenizer, max_batch_prompts=16)
    outputs = engine.generate(prompts, SamplingParams(0.0, 1.0, max_new_tokens), n=1)
    right: dict[str, list[float]] = defaultdict(list)
    verdicts = Counter()
    for (item, _, _, score), (completion,) in zip(chosen, outputs, strict=True):
        verdict = parse_verdict(completion.text).value
        verdicts[verdict] += 1
        correct = float(verdict == ("yes" if score >= 1.0 else "no"))
        right["all"].append(correct)
        right[item.task.value].append(correct)
    total = len(chosen)
    return {
        "accuracy": round(statistics.fmean(right["all"]), 4) if total else 0.0,
        "by_task": {k: round(statistics.fmean(v), 4) for k, v in sorted(right.items()) if k != "all"},
        "invalid_rate": _rate(verdicts["invalid"], total),
        "yes_rate": _rate(verdicts["yes"], total),
        "rule_yes_rate": _rate(sum(1 for s in chosen if s[3] >= 1.0), total),
        "num": total,
    }


def _answer_grounded(question: Question, documents: Sequence[str]) -> bool:
    """Whether the reference answer (doc_mc: the correct option's text) occurs in the shown documents."""
    answer = dict(question.options).get(question.answer, "") if question.task == TaskType.DOC_MC else question.answer
    text = normalize_answer(" ".join(documents))
    return question.task == TaskType.DOCMATH_QA or bool(normalize_answer(answer)) and normalize_answer(answer) in text


def questioner_rates(model: Any, tokenizer: Any, sets: Sequence[WorldSet], templates: Templates, *,
                     per_task: int, history: bool, seed: int = 0, max_new_tokens: int = 224) -> dict:
    """Parse statuses of self-play questioner prompts sampled at T=0.7, top-p 0.95.

    Plain prompts show 3 random documents (the builtin ``num_docs``); with ``history`` the prompt also shows
    1-2 remembered examples (world questions on the same set) over 3 more documents, like a filled memory.

    Returns:
        Per task: ``valid``, ``bad_format``, ``dropped`` rates, ``answer_in_docs`` (share of valid questions
        whose answer text occurs in the shown documents; DocMath counts as yes), ``solver_parsed`` (share of
        valid questions the world's solver recognises), ``reference_true`` (share of those whose reference is
        the true answer, :mod:`spell.builtin.diagnose`), ``responder_true`` (share of the same questions the policy
        answers truly as a responder over the same documents, greedy: the gap to ``reference_true`` is what writing
        the answer as a questioner loses) and ``num``.
    """
    from spell.builtin.diagnose import question_bank, reference_is_true, true_reference

    rng = random.Random(f"{seed}/questioner-eval/{history}")
    jobs = _questioner_jobs(tokenizer, sets, templates, per_task, history, rng)
    engine = HFEngine(model, tokenizer, max_batch_prompts=8)
    outputs = engine.generate([j[2] for j in jobs], SamplingParams(0.7, 0.95, max_new_tokens, seed), n=1)
    counts: dict[str, Counter] = defaultdict(Counter)

    def count_tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    solved = []  # (task, shown documents, question, true answer) of the questions the world recognises
    for (task, docs, _, ws), (completion,) in zip(jobs, outputs, strict=True):
        parsed = parse_question(completion.text, task, max_answer_tokens=40, count_tokens=count_tokens)
        status = parsed.status.value if isinstance(parsed, Rejection) else "valid"
        counts[task][status] += 1
        counts[task]["grounded"] += isinstance(parsed, Question) and _answer_grounded(parsed, docs)
        if isinstance(parsed, Question):
            truth = true_reference({"task": task, "question": parsed.question},
                                   question_bank(ws.plan, ws.facts, ws.kinds))
            counts[task]["solved"] += truth is not None
            counts[task]["true"] += truth is not None and reference_is_true(task, parsed.answer, truth)
            solved += [(task, docs, parsed.question, truth)] if truth is not None else []
    for (task, _, _, truth), answer in zip(solved, _answers_as_responder(engine, tokenizer, solved, templates),
                                           strict=True):
        counts[task]["responder_true"] += answer is not None and reference_is_true(task, answer, truth)
    return {task: _questioner_report(c) for task, c in sorted(counts.items())}


def _questioner_jobs(tokenizer: Any, sets: Sequence[WorldSet], templates: Templates, per_task: int, history: bool,
                     rng: random.Random) -> list[tuple[str, list[str], list[int], WorldSet]]:
    """(task, shown documents, prompt ids, set) per questioner prompt of :func:`questioner_rates`."""
    jobs = []
    for task in TASKS:
        for ws in rng.sample(list(sets), per_task):
            n = len(ws.documents)
            evidence = sorted(rng.sample(range(n), min(QUESTIONER_NUM_DOCS, n)))
            examples: list[MemoryExample] = []
            if history:
                for _ in range(rng.randint(1, 2)):
                    item = pick_item(ws, task, tuple(evidence), rng, multi_hop=0.3)
                    example = memory_example(item, tuple(evidence)) if item else None
                    examples += [example] if example else []
                evidence = list(range(n))
            docs = [ws.documents[i] for i in evidence]
            letter = draw_target_letter_for(task, rng)
            text = render_questioner_prompt(task, docs, examples, target_letter=letter, templates=templates)
            jobs.append((task, docs, encode_chat_prompt(tokenizer, text), ws))
    return jobs


def _questioner_report(c: Counter) -> dict:
    """One task's rates from its status and truth counts."""
    total = sum(v for k, v in c.items() if k not in ("grounded", "solved", "true", "responder_true"))
    return {"valid": _rate(c["valid"], total), "bad_format": _rate(c["bad_format"], total),
            "dropped": _rate(c["dropped"], total), "answer_in_docs": _rate(c["grounded"], c["valid"]),
            "solver_parsed": _rate(c["solved"], c["valid"]), "reference_true": _rate(c["true"], c["solved"]),
            "responder_true": _rate(c["responder_true"], c["solved"]), "num": total}


def _answers_as_responder(engine: HFEngine, tokenizer: Any, questions: Sequence[tuple[str, list[str], str, str]],
                          templates: Templates) -> list[str | None]:
    """Greedy responder answers (parsed) to the questioner's own questions over the documents it was shown."""
    prompts = [encode_chat_prompt(tokenizer, render_responder_prompt(task, join_documents(docs), question, templates))
               for task, docs, question, _ in questions]
    outputs = engine.generate(prompts, SamplingParams(0.0, 1.0, 48), n=1) if prompts else []
    return [extract_prediction(task, completion.text) for (task, *_), (completion,) in zip(questions, outputs)]


def selfplay_probe(model: Any, tokenizer: Any, sets: Sequence[WorldSet], *, per_task: int, seed: int = 0) -> dict:
    """One real self-play generation round (builtin preset; no update) on ``per_task`` train sets per task.

    Returns:
        Status rates of the questioner samples, the responders' mean rule score and how many kept groups
        have non-zero reward variance (the groups a SPELL step trains on).
    """
    from spell.config import load_config
    from spell.memory import HistoryMemory
    from spell.prompts import load_templates
    from spell.selfplay import SelfPlayContext, run_generation_round

    cfg = load_config("builtin")
    rng = random.Random(f"{seed}/probe")
    docsets = [DocSet(ws.set_id, ws.documents, TaskType(task)) for task in TASKS
               for ws in rng.sample(list(sets), per_task)]
    engine = HFEngine(model, tokenizer, max_batch_prompts=cfg.engine.max_batch_prompts)
    ctx = SelfPlayContext(cfg, engine, tokenizer, HistoryMemory(size=cfg.memory.size), load_templates(None), rng)
    records = run_generation_round(docsets, ctx)
    statuses = Counter(r.status.value for r in records)
    scores = [s for r in records for s in r.rule_scores]
    trainable = sum(1 for r in records if has_reward_variance(r.rewards))
    return {
        "num_questions": len(records),
        "status_rates": {k: _rate(v, len(records)) for k, v in sorted(statuses.items())},
        "responder_rule_score_mean": round(statistics.fmean(scores), 4) if scores else 0.0,
        "groups_with_variance": trainable,
        "groups_with_variance_rate": _rate(trainable, len(records)),
        "examples": [{"task": r.docset.task.value, "status": r.status.value,
                      "question": r.question.question if r.question else None,
                      "answer": r.question.answer if r.question else None,
                      "completion": r.completion.text if r.completion else None,
                      "rule_scores": r.rule_scores} for r in records[:: max(1, len(records) // 9)]],
    }
