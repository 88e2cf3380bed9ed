"""Truth accuracies of a self-play run on the built-in world: how often each role is right by the world's facts.

SPELL trains without labels, but the built-in world knows every answer. The questioner was bootstrapped on the
world's own question forms, so most questions it writes are ones the world can answer: :func:`question_bank`
lists every question form of a document set (each stated fact in every phrasing the bootstrap taught, and every
question kind with all its arguments) with its true answer. :func:`diagnose_record` then scores one dumped
questioner sample (``samples/step_*.jsonl``) against the truth:

- ``solved``: the solver recognised the question (else it counts in the unparsed share);
- ``reference_true``: the questioner's reference answer is the true one (MC: its letter is the option that holds
  the true answer);
- ``responder_true``: each response scored by the task's own rule against the TRUE answer;
- ``verifier_true``: each decided majority vote is right about the response (YES iff the response is truly right);
- ``reward_true``: the responder reward said 1 exactly when the response is truly right;
- ``questioner_reward`` and ``mean_responder_reward``: what Eq. 7 paid for the question and the group mean it was
  computed from, reported split by ``reference_true`` (does the questioner reward pay more for true references?).

:func:`diagnose_run` aggregates these per task over windows of steps.
"""

from __future__ import annotations

import json
import random
import re
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from spell.builtin.world.build import _build_split
from spell.builtin.world.questions import answer_text
from spell.builtin.world.render import DOC_KINDS
from spell.tasks import rule_score
from spell.tasks.docmath import format_number

KIND_ARGUMENT_DRAWS = 48  # seeds per question kind: every (year, year) pair a kind can draw shows up


@dataclass(frozen=True, slots=True)
class Truth:
    """The true answer of a recognised question: ``answer`` as a role would write it; ``numeric`` for DocMath."""

    answer: str
    numeric: bool


def normalize_question(text: str) -> str:
    """Lower case, single spaces, no trailing punctuation or spaces.

    >>> normalize_question("  Who founded   Arvo Ltd? ")
    'who founded arvo ltd'
    """
    return re.sub(r"\s+", " ", text).strip().rstrip("?.!").strip().lower()


def question_bank(plan, facts, doc_kinds: Sequence[str]) -> dict[str, Truth]:
    """Every question form of one document set -> its true answer.

    Args:
        plan: the set's :class:`~spell.builtin.world.entities.SetPlan`.
        facts: its stated :class:`~spell.builtin.world.render.Fact` list.
        doc_kinds: the kinds of its documents (which question kinds it can answer).
    """
    from spell.builtin.bootstrap.worldqa import RELATION_QUESTIONS
    from spell.builtin.world.kinds import KINDS_BY_TASK
    from spell.builtin.world.questions import available_kinds

    bank: dict[str, Truth] = {}
    for fact in facts:
        task, _, phrasings = RELATION_QUESTIONS.get(fact.relation, (None, None, ()))
        numeric = task == "docmath_qa"
        answer = format_number(float(fact.object)) if numeric else fact.object
        for phrasing in phrasings:
            bank[normalize_question(phrasing.format(s=fact.subject, y=fact.year))] = Truth(answer, numeric)
    for task in KINDS_BY_TASK:
        for kind in available_kinds(task, doc_kinds):
            for draw in range(KIND_ARGUMENT_DRAWS):
                question, value, _ = kind.build(plan, random.Random(draw))
                numeric = task == "docmath_qa"
                bank[normalize_question(question)] = Truth(answer_text(value), numeric)
    return bank


def world_banks(world_dir: str | Path) -> dict[str, dict[str, Truth]]:
    """``set id -> question bank`` for the TRAIN sets of a built world (rebuilt from its manifest's arguments)."""
    manifest = json.loads((Path(world_dir) / "manifest.json").read_text(encoding="utf-8"))
    args = manifest["arguments"]
    # plans, facts and document kinds do not depend on filler (each set draws it after them): skip rendering it
    built, _ = _build_split("train", args["num_train_sets"], manifest["seed"], DOC_KINDS[: args["docs_per_set"]],
                            None, False)
    return {b.plan.set_id: question_bank(b.plan, b.facts, b.kinds) for b in built}


def _options(question: str) -> dict[str, str]:
    """The ``(X) text`` options of an MC question in LongBench-v2 layout."""
    _, _, tail = question.partition("\nChoices:\n")
    return dict(re.findall(r"^\(([A-D])\) (.*)$", tail, flags=re.MULTILINE))


def true_reference(record: dict, bank: dict[str, Truth]) -> str | None:
    """What the reference SHOULD be for a dumped question: the true answer (MC: the letter of the option that
    holds it, None if no single option does); None when the solver does not recognise the question."""
    text = record.get("question") or ""
    stem = text.partition("\n\nChoices:\n")[0] if record["task"] == "doc_mc" else text
    truth = bank.get(normalize_question(stem))
    if truth is None:
        return None
    if record["task"] != "doc_mc":
        return truth.answer
    letters = [k for k, v in _options(text).items() if normalize_question(v) == normalize_question(truth.answer)]
    return letters[0] if len(letters) == 1 else None


def reference_is_true(task: str, reference: str, truth: str) -> bool:
    """Whether a reference answer states the true one, by the task's own rule (DocMath within its tolerance)."""
    return rule_score(task, f"The answer is {reference}.", truth) >= 1.0


def diagnose_record(record: dict, bank: dict[str, Truth]) -> dict:
    """Truth scores of one dumped questioner sample (see the module docstring); {} when no question was parsed
    or no responder answered it. ``valid``: the question kept reward variance (status ``valid``)."""
    if not record.get("question") or not record.get("responses"):
        return {}
    truth = true_reference(record, bank)
    out: dict = {"valid": float(record.get("status") == "valid"), "solved": float(truth is not None),
                 "history": bool(record.get("num_examples"))}
    if truth is None:
        return out
    task = record["task"]
    out["reference_true"] = float(reference_is_true(task, record["answer"], truth))
    right = [rule_score(task, response, truth) >= 1.0 for response in record.get("responses", [])]
    out["responder_true"] = [float(r) for r in right]
    decided = [(m == "yes", r) for m, r in zip(record.get("majorities", []), right) if m is not None]
    out["verifier_true"] = [float(yes == r) for yes, r in decided]
    out["yes_on_wrong"] = [float(yes) for yes, r in decided if not r]
    out["yes_on_right"] = [float(yes) for yes, r in decided if r]
    out["reward_true"] = [float((reward >= 1.0) == r) for reward, r in zip(record.get("rewards", []), right)]
    out["rule_vs_reference"] = list(map(float, record.get("rule_scores", [])))
    out["questioner_reward"] = record.get("questioner_reward")
    rewards = record.get("rewards") or []
    out["mean_responder_reward"] = statistics.fmean(rewards) if rewards else None
    return out


def _mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return round(statistics.fmean(values), 4) if values else None


def summarize(diagnoses: Sequence[tuple[str, dict]]) -> dict:
    """Rates over ``(task, diagnose_record output)`` pairs, per task and ``all``: questioner samples, the share
    whose question was answered by responders, the share of those with reward variance (``valid``), the solver's
    parse rate and the truth accuracies (means over questions, responses or decided votes)."""
    by_task: dict[str, list[dict]] = defaultdict(list)
    for task, diagnosis in diagnoses:
        by_task[task].append(diagnosis)
        by_task["all"].append(diagnosis)
    report = {}
    for task, rows in sorted(by_task.items()):
        asked = [d for d in rows if d]
        solved = [d for d in asked if d["solved"]]
        report[task] = {
            "questioner_samples": len(rows),
            "answered_rate": _mean(float(bool(d)) for d in rows),
            "valid_rate": _mean(d["valid"] for d in asked),
            "valid_rate_with_history": _mean(d["valid"] for d in asked if d["history"]),
            "valid_rate_without_history": _mean(d["valid"] for d in asked if not d["history"]),
            "solver_parsed_rate": _mean(d["solved"] for d in asked),
            "reference_true": _mean(d["reference_true"] for d in solved),
            "responder_true": _mean(v for d in solved for v in d["responder_true"]),
            "responder_matches_reference": _mean(v for d in solved for v in d["rule_vs_reference"]),
            "verifier_true": _mean(v for d in solved for v in d["verifier_true"]),
            "verifier_yes_on_wrong": _mean(v for d in solved for v in d["yes_on_wrong"]),
            "verifier_yes_on_right": _mean(v for d in solved for v in d["yes_on_right"]),
            "reward_true": _mean(v for d in solved for v in d["reward_true"]),
            **_split_by_reference(solved),
        }
    return report


def _split_by_reference(solved: Sequence[dict]) -> dict:
    """Questioner reward (Eq. 7) and the responder group mean it came from, for true vs wrong references; and
    ``responder_matches_wrong_ref``, the share of responses that agree with a wrong reference by the rule check
    (the questioner and responders are one policy: a shared misreading is paid as if it were right); and
    ``valid_rate_{true,wrong}_ref``, the share of each with reward variance (a group every responder answers alike
    is zero-variance: Eq. 7 pays it 0, so a questioner cannot be paid for true references nobody misses)."""
    by_truth = {name: [d for d in solved if d["reference_true"] == truth]
                for name, truth in (("true_ref", 1.0), ("wrong_ref", 0.0))}
    out = {"responder_matches_wrong_ref": _mean(v for d in by_truth["wrong_ref"] for v in d["rule_vs_reference"])}
    for name, rows in by_truth.items():
        out[f"valid_rate_{name}"] = _mean(d["valid"] for d in rows)
        out[f"questioner_reward_{name}"] = _mean(d["questioner_reward"] for d in rows
                                                 if d.get("questioner_reward") is not None)
        out[f"mean_responder_reward_{name}"] = _mean(d["mean_responder_reward"] for d in rows
                                                     if d.get("mean_responder_reward") is not None)
    return out


def diagnose_run(run_dir: str | Path, world_dir: str | Path, windows: Sequence[tuple[int, int]]) -> dict:
    """Truth accuracies of a run's sample dumps, per step window ``(first, last)`` (inclusive) and task."""
    banks = world_banks(world_dir)
    report = {}
    for first, last in windows:
        pairs = []
        for step in range(first, last + 1):
            path = Path(run_dir) / "samples" / f"step_{step:06d}.jsonl"
            if not path.exists():
                continue
            for line in path.read_text(encoding="utf-8").splitlines():
                record = json.loads(line)
                bank = banks.get(record["docset_id"], {})
                pairs.append((record["task"], diagnose_record(record, bank)))
        report[f"steps {first}-{last}"] = summarize(pairs)
    return report
