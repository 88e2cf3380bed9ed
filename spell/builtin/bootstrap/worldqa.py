"""Questions with known answers over the world's TRAIN document sets, for the bootstrap transcripts (issue 5).

Facts come from the world generator's own plans and facts of the TRAIN split only (held-out sets are never
built here): one question per stated fact (:func:`fact_questions`, our phrasings, 1 hop) and the world's kinds
(:func:`kind_question`, 1-3 hops). DocMath answers are arithmetic over the documents' figures, e.g.
``(46.4-42.6)/(42.6/100)``, which the project's safe evaluator turns into the number.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from spell.builtin.world.build import _build_split  # the world's own split builder: the same sets as train.jsonl
from spell.builtin.world.entities import HOBBIES, SECTORS, SetPlan
from spell.builtin.world.kinds import QuestionKind
from spell.builtin.world.questions import LETTERS, YEAR_OFFSETS, available_kinds
from spell.builtin.world.render import DOC_KINDS, Fact
from spell.tasks.arith import safe_eval
from spell.tasks.docmath import format_number

# relation -> (task, answer type, phrasings); {s} = the fact's subject, {y} = its table year.
RELATION_QUESTIONS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "sector": ("doc_general_qa", "sector", ("What does {s} make?", "What kind of goods does {s} make?")),
    "founded": ("doc_general_qa", "year", ("In which year was {s} founded?", "When was {s} founded?")),
    "founder": ("doc_general_qa", "person", ("Who founded {s}?", "Who was the founder of {s}?")),
    "hq": ("doc_general_qa", "city", ("In which city is {s} based?", "Where is {s} based?")),
    "ceo": ("doc_general_qa", "person", ("Who is the CEO of {s}?", "Who leads {s} as CEO?")),
    "partner": ("doc_general_qa", "org", ("Which company does {s} work with?", "Who is the partner of {s}?")),
    "bought": ("doc_general_qa", "org", ("Which company did {s} buy?", "What company was bought by {s}?")),
    "bought_year": ("doc_general_qa", "year", ("In which year did {s} buy another company?",)),
    "born_city": ("doc_general_qa", "city", ("In which city was {s} born?", "Where was {s} born?")),
    "born_year": ("doc_general_qa", "year", ("In which year was {s} born?", "When was {s} born?")),
    "college": ("doc_general_qa", "college", ("Where did {s} study?", "At which college did {s} study?")),
    "ceo_since": ("doc_general_qa", "year", ("In which year did {s} become CEO?",)),
    "hobby": ("doc_general_qa", "hobby", ("What does {s} like to do?",)),
    "city": ("doc_general_qa", "city", ("In which city was the {s} held?", "Where was the {s} held?")),
    "year": ("doc_general_qa", "year", ("In which year was the {s} held?",)),
    "host": ("doc_general_qa", "org", ("Which company hosted the {s}?", "Who hosted the {s}?")),
    "region": ("doc_general_qa", "region", ("In which region is {s}?",)),
    "river": ("doc_general_qa", "river", ("On which river does {s} lie?",)),
    "shops": ("docmath_qa", "number", ("How many shops does {s} have?",)),
    "visitors": ("docmath_qa", "number", ("How many visitors did the {s} have?",)),
    "days": ("docmath_qa", "number", ("How many days did the {s} last?",)),
    "revenue": ("docmath_qa", "number", ("What was the revenue of {s} in {y}, in million dollars?",)),
    "staff": ("docmath_qa", "number", ("How many staff did {s} have in {y}?",)),
    "budget": ("docmath_qa", "number", ("What was the budget of {s} in {y}, in million dollars?",)),
}


@dataclass(frozen=True, slots=True)
class WorldSet:
    """One train document set with its plan, document kinds (per index), documents and facts."""

    set_id: str
    plan: SetPlan
    kinds: tuple[str, ...]
    documents: tuple[str, ...]
    facts: tuple[Fact, ...]


@dataclass(frozen=True, slots=True)
class QAItem:
    """A question over one set with its gold answer.

    Attributes:
        task: ``docmath_qa``, ``doc_general_qa`` or ``doc_mc``.
        question: the question text (doc_mc: without the options).
        answer: what a role writes as the answer: a phrase, a DocMath expression, or (doc_mc) the option text.
        reference: the gold the rule scorers compare with (phrase, ``format_number`` value, or letter).
        hops: documents needed.
        docs: indices of the needed documents.
        kind: ``fact:<relation>`` or the world's kind name.
        options: doc_mc ``(letter, text)`` pairs, else ``()``.
    """

    task: str
    question: str
    answer: str
    reference: str
    hops: int
    docs: tuple[int, ...]
    kind: str
    options: tuple[tuple[str, str], ...] = ()


def train_sets(seed: int, count: int, docs_per_set: int = 5) -> list[WorldSet]:
    """The first ``count`` train sets of the world with ``seed`` (the same sets ``train.jsonl`` starts with)."""
    built, _ = _build_split("train", count, seed, DOC_KINDS[:docs_per_set], None, True)
    return [WorldSet(b.plan.set_id, b.plan, tuple(b.kinds), tuple(b.documents), tuple(b.facts)) for b in built]



def distractors(ws: WorldSet, answer_type: str, answer: str, rng: random.Random) -> list[str]:
    """Three wrong options of the answer's type, taken from the same set when it has enough."""
    if answer_type == "year":
        return [str(int(answer) + offset) for offset in rng.sample(YEAR_OFFSETS, 3)]
    if answer_type in ("hobby", "sector"):
        return rng.sample([v for v in (HOBBIES if answer_type == "hobby" else SECTORS) if v != answer], 3)
    names = ws.plan.names_by_type()
    local = [n for n in names.get(answer_type, []) if n != answer]
    if len(local) < 3:  # few names of this type: borrow people / cities / companies of the same set
        pool = names["person"] + names["city"] + names["org"] if answer_type != "college" else []
        pool += [f"{n.split()[0]} College" for n in names["person"]] if answer_type == "college" else []
        local += [n for n in pool if n != answer and n not in local]
    return rng.sample(local, 3)


def with_options(item: QAItem, ws: WorldSet, answer_type: str, letter: str, rng: random.Random) -> QAItem:
    """``item`` turned into a doc_mc question whose correct option sits under ``letter``."""
    wrong = iter(distractors(ws, answer_type, item.answer, rng))
    options = tuple((key, item.answer if key == letter else next(wrong)) for key in LETTERS)
    return QAItem("doc_mc", item.question, item.answer, letter, item.hops, item.docs, item.kind, options)


def _fact_item(fact: Fact, rng: random.Random) -> tuple[QAItem, str] | None:
    spec = RELATION_QUESTIONS.get(fact.relation)
    if spec is None:
        return None
    task, answer_type, phrasings = spec
    question = rng.choice(phrasings).format(s=fact.subject, y=fact.year)
    reference = format_number(float(fact.object)) if task == "docmath_qa" else fact.object
    item = QAItem(task, question, fact.object, reference, 1, (fact.doc,), f"fact:{fact.relation}")
    return item, answer_type


def fact_questions(ws: WorldSet, rng: random.Random, *, mc_letter: str | None = None) -> list[QAItem]:
    """One 1-hop question per stated fact of ``ws`` (in fact order).

    Args:
        ws: the set.
        rng: picks phrasings and MC distractors.
        mc_letter: if given, non-numeric questions become doc_mc questions with the answer under this letter.

    Returns:
        The questions; their ``docs`` hold the index of the document stating the fact.
    """
    items = []
    for fact in ws.facts:
        made = _fact_item(fact, rng)
        if made is None:
            continue
        item, answer_type = made
        if mc_letter is not None and item.task != "docmath_qa":
            item = with_options(item, ws, answer_type, mc_letter, rng)
        items.append(item)
    return items


def _pct(new: float, old: float) -> str:
    return f"({new:.1f}-{old:.1f})/({old:.1f}/100)"


def kind_expression(name: str, plan: SetPlan, args: dict) -> str:
    """The arithmetic over document figures that answers the DocMath kind ``name`` (figures as written).

    Raises:
        KeyError: ``name`` is not a DocMath kind.
    """
    ta, tb, event = plan.buyer_table, plan.target_table, plan.event
    match name:
        case "revenue_growth":
            i, j = ta.years.index(args["year1"]), ta.years.index(args["year2"])
            return _pct(ta.revenue[j], ta.revenue[i])
        case "revenue_budget_ratio":
            i = ta.years.index(args["year"])
            return f"{ta.revenue[i]:.1f}/{ta.budget[i]:.1f}"
        case "staff_sum":
            i = ta.years.index(args["years"][0])
            return "+".join(str(s) for s in ta.staff[i:i + 3])
        case "visitors_per_day":
            return f"{event.visitors}/{event.days}"
        case "total_shops":
            return f"{plan.buyer.shops}+{plan.target.shops}"
        case "years_to_buy":
            return f"{plan.bought_year}-{plan.target.founded}"
        case "ceo_start_age" | "bought_ceo_start_age":
            return f"{plan.target_ceo.ceo_since}-{plan.target_ceo.born_year}"
        case "event_staff_change":
            i = ta.years.index(event.year)
            return f"{ta.staff[i + 1]}-{ta.staff[i]}"
        case "event_revenue_growth":
            i = ta.years.index(event.year)
            return _pct(ta.revenue[i + 1], ta.revenue[i])
        case "revenue_gap":
            i = ta.years.index(args["year"])
            return f"{ta.revenue[i]:.1f}-{tb.revenue[i]:.1f}"
    raise KeyError(f"no expression for kind {name!r}")


def kinds_for(ws: WorldSet, task: str, docs: tuple[int, ...] | None = None) -> list[QuestionKind]:
    """The world's question kinds of ``task`` answerable from the documents ``docs`` (default: all)."""
    shown = [ws.kinds[i] for i in (docs if docs is not None else range(len(ws.kinds)))]
    return available_kinds(task, shown)


def kind_question(ws: WorldSet, task: str, kind: QuestionKind, rng: random.Random,
                  letter: str | None = None) -> QAItem:
    """A question of the world's ``kind`` on ``ws`` (doc_mc needs ``letter``)."""
    question, value, args = kind.build(ws.plan, rng)
    docs = tuple(sorted(ws.kinds.index(d) for d in kind.docs))
    if task == "docmath_qa":
        expression = kind_expression(kind.name, ws.plan, args)
        reference = format_number(safe_eval(expression))
        return QAItem(task, question, expression, reference, kind.hops, docs, kind.name)
    item = QAItem("doc_general_qa", question, str(value), str(value), kind.hops, docs, kind.name)
    if task == "doc_mc":
        return with_options(item, ws, kind.answer_type, letter or "A", rng)
    return item
