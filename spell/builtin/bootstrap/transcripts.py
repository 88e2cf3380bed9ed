"""Supervised role transcripts in the exact chat format self-play uses (issue 5, bootstrap stages 2-3).

Prompts are rendered with the project's own renderers (``spell.prompts``); targets are short: questioner -> the
question and its answer in the responder's words, then a ```json block with both (grounded in the documents
shown), responder ->
"The correct answer is X." / "Therefore, the answer is \\boxed{expr}." (doc_mc: "<option> is option X. The
correct answer is X."), verifier -> "Decision: [[YES]]" / "Decision: [[NO]]". Built only from train sets.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

from spell.builtin.bootstrap.worldqa import (
    QAItem,
    WorldSet,
    distractors,
    fact_questions,
    kind_question,
    kinds_for,
)
from spell.builtin.world.build import TASKS
from spell.parsing import parse_question
from spell.prompts import Templates, join_documents
from spell.prompts.questioner import MC_LETTERS, render_questioner_prompt
from spell.prompts.responder import render_responder_prompt
from spell.prompts.verifier import render_verifier_prompt
from spell.tasks.arith import safe_eval
from spell.tasks.doc_mc import format_mc_question
from spell.tasks.docmath import format_number
from spell.types import MemoryExample, Question

QUESTIONER_NUM_DOCS = 3  # the builtin preset's questioner.num_docs
TRANSCRIPTS_VERSION = 2  # 2: the questioner answers its question before the JSON block (issue 12)
YES, NO = "Decision: [[YES]]", "Decision: [[NO]]"


@dataclass(frozen=True, slots=True)
class Transcript:
    """A chat: (role, content) turns, user first; the loss covers the assistant turns only."""

    role: str  # questioner | responder | verifier | qa (packed multi-question responder chat)
    task: str
    messages: tuple[tuple[str, str], ...]


def question_text(item: QAItem) -> str:
    """The question as the responder and verifier see it (doc_mc: with its ``Choices:`` lines)."""
    return format_mc_question(item.question, item.options) if item.task == "doc_mc" else item.question


def responder_target(item: QAItem) -> str:
    """The responder's answer: the final sentence the rule scorer reads (doc_mc: the option text first)."""
    if item.task == "docmath_qa":
        return f"Therefore, the answer is \\boxed{{{item.answer}}}."
    if item.task == "doc_mc":
        return f"{item.answer} is option {item.reference}. The correct answer is {item.reference}."
    return f"The correct answer is {item.answer}."


def questioner_reasoning(item: QAItem) -> str:
    """The questioner's reasoning before its JSON: the question, then its answer in the responder's words.

    Writing the answer right after the question, as the responder does, lets the questioner use the circuit that
    answers questions; the JSON block then copies both (issue 12: answers written straight into the JSON were true
    for 0-22% of the questions the world recognised, while the same policy answered those questions as a responder
    far more often). doc_mc states the correct option's text; the options follow in the JSON.
    """
    answer = f"The correct answer is {item.answer}." if item.task == "doc_mc" else responder_target(item)
    return f"Question: {item.question}\n{answer}"


def questioner_target(item: QAItem) -> str:
    """The questioner's reasoning and JSON block (DocMath answers as expression strings; doc_mc with its options)."""
    payload: dict = {"question": item.question}
    if item.task == "doc_mc":
        payload["options"] = dict(item.options)
        payload["answer"] = item.reference
    else:
        payload["answer"] = item.answer
    return questioner_reasoning(item) + "\n```json\n" + json.dumps(payload, ensure_ascii=False) + "\n```"


def one_hop_items(ws: WorldSet, task: str, docs: tuple[int, ...], rng: random.Random) -> list[QAItem]:
    """1-hop questions of ``task`` answerable from the documents ``docs`` (facts and 1-hop world kinds)."""
    letter = rng.choice(MC_LETTERS) if task == "doc_mc" else None
    shown = set(docs)
    facts = [i for i in fact_questions(ws, rng, mc_letter=letter) if i.task == task and shown.issuperset(i.docs)]
    kinds = [k for k in kinds_for(ws, task, docs) if k.hops == 1]
    return facts + [kind_question(ws, task, k, rng, letter) for k in kinds]


def pick_item(ws: WorldSet, task: str, docs: tuple[int, ...], rng: random.Random, *,
              multi_hop: float, exclude: frozenset[str] = frozenset()) -> QAItem | None:
    """A question of ``task`` over ``docs``: multi-hop world kind with probability ``multi_hop``, else 1-hop."""
    multi = [k for k in kinds_for(ws, task, docs) if k.hops > 1 and k.name not in exclude]
    if multi and rng.random() < multi_hop:
        return kind_question(ws, task, rng.choice(multi), rng, rng.choice(MC_LETTERS))
    single = [i for i in one_hop_items(ws, task, docs, rng) if i.kind not in exclude]
    return rng.choice(single) if single else None


def responder_transcript(ws: WorldSet, item: QAItem, templates: Templates,
                         docs: tuple[int, ...] | None = None) -> Transcript:
    """The responder chat for ``item`` over the documents ``docs`` (default: the whole set, as in self-play)."""
    shown = [ws.documents[i] for i in (docs if docs is not None else range(len(ws.documents)))]
    prompt = render_responder_prompt(item.task, join_documents(shown), question_text(item), templates)
    return Transcript("responder", item.task, (("user", prompt), ("assistant", responder_target(item))))


def memory_example(item: QAItem, evidence: tuple[int, ...]) -> MemoryExample | None:
    """``item`` as the history memory stores it: the parsed question and answer (None if it did not parse)."""
    parsed = parse_question(questioner_target(item), item.task)
    return MemoryExample(evidence, parsed.question, parsed.answer) if isinstance(parsed, Question) else None


def questioner_transcript(ws: WorldSet, task: str, templates: Templates, rng: random.Random, *,
                          history: float = 0.3, multi_hop: float = 0.4,
                          history_multi_hop: float = 0.8) -> Transcript | None:
    """A questioner chat as self-play renders it: 3 random documents (plain; a multi-hop target with probability
    ``multi_hop``), or remembered evidence plus new documents with 1-3 remembered examples (history, probability
    ``history``; the target is a new question, multi-hop with probability ``history_multi_hop``)."""
    n = len(ws.documents)
    evidence = tuple(sorted(rng.sample(range(n), min(QUESTIONER_NUM_DOCS, n))))
    examples: list[MemoryExample] = []
    if rng.random() < history:
        used: set[str] = set()
        for _ in range(rng.randint(1, 3)):
            item = pick_item(ws, task, evidence, rng, multi_hop=0.3, exclude=frozenset(used))
            example = memory_example(item, evidence) if item is not None else None
            if example is not None:
                used.add(item.kind)
                examples.append(example)
        rest = [i for i in range(n) if i not in evidence]
        evidence = tuple(sorted(evidence + tuple(rng.sample(rest, min(QUESTIONER_NUM_DOCS, len(rest))))))
        target = pick_item(ws, task, evidence, rng, multi_hop=history_multi_hop, exclude=frozenset(used))
    else:
        target = pick_item(ws, task, evidence, rng, multi_hop=multi_hop)
    if target is None:
        return None
    letter = target.reference if task == "doc_mc" else None
    prompt = render_questioner_prompt(task, [ws.documents[i] for i in evidence], examples,
                                      target_letter=letter, templates=templates)
    return Transcript("questioner", task, (("user", prompt), ("assistant", questioner_target(target))))


def _wrong_number(item: QAItem, ws: WorldSet, rng: random.Random) -> str:
    """A DocMath prediction that does not match ``item``: another question's expression or a shifted value."""
    value = safe_eval(item.answer) or 0.0
    others = [i.answer for i in one_hop_items(ws, "docmath_qa", tuple(range(len(ws.documents))), rng)]
    others = [e for e in others if abs((safe_eval(e) or 0.0) - value) > 0.01 * abs(value) + 0.01]
    if others and rng.random() < 0.7:
        return rng.choice(others)
    return format_number(round(value * rng.choice((0.5, 0.9, 1.1, 2.0)) + rng.choice((-3, 1, 7)), 2))


def verifier_pair(item: QAItem, ws: WorldSet, rng: random.Random, agree: bool) -> tuple[str, str]:
    """(predicted, reference) as self-play shows them: the parsed responder answer and the parsed reference."""
    if item.task == "doc_mc":
        wrong = rng.choice([letter for letter in MC_LETTERS if letter != item.reference])
        return (item.reference if agree else wrong), item.reference
    if item.task == "docmath_qa":
        if agree:
            return (item.answer if rng.random() < 0.7 else item.reference), item.reference
        return _wrong_number(item, ws, rng), item.reference
    if agree:
        return (item.answer.lower() if rng.random() < 0.15 else item.answer), item.reference
    answer_type = "year" if item.answer.isdigit() else _name_type(ws, item.answer)
    return rng.choice(distractors(ws, answer_type, item.answer, rng)), item.reference


def _name_type(ws: WorldSet, name: str) -> str:
    for kind, names in ws.plan.names_by_type().items():
        if name in names:
            return kind
    return "hobby" if " " in name and name.islower() else "sector"


def verifier_transcript(ws: WorldSet, task: str, templates: Templates, rng: random.Random) -> Transcript | None:
    """A verifier chat over a question of ``task`` with a matching (YES) or non-matching (NO) answer, 50/50."""
    item = pick_item(ws, task, tuple(range(len(ws.documents))), rng, multi_hop=0.4)
    if item is None:
        return None
    agree = rng.random() < 0.5
    predicted, reference = verifier_pair(item, ws, rng, agree)
    prompt = render_verifier_prompt(question_text(item), predicted, reference, templates)
    return Transcript("verifier", task, (("user", prompt), ("assistant", YES if agree else NO)))


def follow_up_prompt(task: str, question: str, templates: Templates) -> str:
    """A later question in a packed chat: the question and the template's closing answer-format line."""
    closing = templates.responder(task).split("{question}", 1)[-1].strip()
    return f"Question: {question}\n\n{closing}"


def packed_qa_transcript(ws: WorldSet, templates: Templates, rng: random.Random, *, max_docs: int,
                         num_questions: int) -> Transcript | None:
    """Several 1-hop questions over the same documents in one chat (stage 2: more answers per forward pass).

    The first turn is the real responder prompt; later turns ask further questions about the same documents.
    Shown documents: 1 to ``max_docs`` of the set, in set order.
    """
    n = len(ws.documents)
    docs = tuple(sorted(rng.sample(range(n), rng.randint(1, min(max_docs, n)))))
    messages: list[tuple[str, str]] = []
    for _ in range(num_questions):
        task = rng.choices(TASKS, weights=(0.3, 0.5, 0.2))[0]
        items = one_hop_items(ws, task, docs, rng)
        if not items:
            continue
        item = rng.choice(items)
        if not messages:
            shown = join_documents([ws.documents[i] for i in docs])
            user = render_responder_prompt(task, shown, question_text(item), templates)
        else:
            user = follow_up_prompt(task, question_text(item), templates)
        messages += [("user", user), ("assistant", responder_target(item))]
    return Transcript("qa", "mixed", tuple(messages)) if messages else None
