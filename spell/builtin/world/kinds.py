"""Held-out question kinds of the built-in world (issue 5): what is asked, which documents it needs, the answer.

Each :class:`QuestionKind` reads the answer straight off a :class:`~spell.builtin.world.entities.SetPlan` and names
the document kinds that state the facts it chains. ``hops`` = the number of documents needed (1-3): a 2-hop
question cannot be answered from one document because every fact is stated in exactly one document.
``args`` identify the question in ``metadata`` so that a checker can recompute the answer from ``world.json``.
Numeric answers are rounded to 2 decimals (percent changes, ratios) or exact (counts, year differences).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from spell.builtin.world.entities import SetPlan

Built = tuple[str, str | float, dict]  # (question, answer, args)


@dataclass(frozen=True, slots=True)
class QuestionKind:
    """One question template.

    Attributes:
        name: the ``metadata.kind`` value.
        docs: the document kinds whose facts the answer needs (``hops`` = their count).
        answer_type: ``person``, ``city``, ``org``, ``college``, ``region``, ``hobby``, ``year`` or ``number``.
        build: ``(plan, rng) -> (question, answer, args)``; answer is a name, a year string or a float.
    """

    name: str
    docs: tuple[str, ...]
    answer_type: str
    build: Callable[[SetPlan, random.Random], Built]

    @property
    def hops(self) -> int:
        """Documents needed."""
        return len(self.docs)


def _pct_change(old: float, new: float) -> float:
    return round((new - old) / old * 100.0, 2)


def _revenue_growth(p: SetPlan, rng: random.Random) -> Built:
    t, org = p.buyer_table, p.buyer.name
    pairs = [(i, j) for i in range(len(t.years)) for j in range(i + 1, len(t.years))]
    # changes under 1% would make the 2-decimal rounding coarser than the 0.15% scoring tolerance
    i, j = rng.choice([(i, j) for i, j in pairs if abs(_pct_change(t.revenue[i], t.revenue[j])) >= 1.0] or pairs)
    q = f"By what percent did the revenue of {org} change from {t.years[i]} to {t.years[j]}? Round to two decimals."
    return q, _pct_change(t.revenue[i], t.revenue[j]), {"org": org, "year1": t.years[i], "year2": t.years[j]}


def _revenue_budget_ratio(p: SetPlan, rng: random.Random) -> Built:
    t, org = p.buyer_table, p.buyer.name
    i = rng.randrange(len(t.years))
    q = f"What was the ratio of the revenue of {org} to its budget in {t.years[i]}? Round to two decimals."
    return q, round(t.revenue[i] / t.budget[i], 2), {"org": org, "year": t.years[i]}


def _staff_sum(p: SetPlan, rng: random.Random) -> Built:
    t, org = p.buyer_table, p.buyer.name
    i = rng.randrange(len(t.years) - 2)
    y = t.years[i:i + 3]
    q = f"What is the sum of the staff numbers of {org} in {y[0]}, {y[1]} and {y[2]}?"
    return q, float(sum(t.staff[i:i + 3])), {"org": org, "years": list(y)}


def _years_to_buy(p: SetPlan, rng: random.Random) -> Built:
    a, b = p.buyer.name, p.target.name
    q = f"How many years after {b} was founded did {a} buy it?"
    return q, float(p.bought_year - p.target.founded), {"org": a}


def _ceo_start_age(p: SetPlan, rng: random.Random) -> Built:
    b, ceo = p.target.name, p.target_ceo
    q = f"How many years after the birth of the CEO of {b} did that person become CEO?"
    return q, float(ceo.ceo_since - ceo.born_year), {"org": b}


def _bought_ceo_start_age(p: SetPlan, rng: random.Random) -> Built:
    a, ceo = p.buyer.name, p.target_ceo
    q = f"How many years after the birth of the CEO of the company that {a} bought did that person become CEO?"
    return q, float(ceo.ceo_since - ceo.born_year), {"org": a}


def _event_staff_change(p: SetPlan, rng: random.Random) -> Built:
    e, t = p.event, p.buyer_table
    i = t.years.index(e.year)
    q = f"By how much did the staff of the company that hosted the {e.name} change from the year of the event " \
        "to the next year?"
    return q, float(t.staff[i + 1] - t.staff[i]), {"event": e.name}


def _event_revenue_growth(p: SetPlan, rng: random.Random) -> Built:
    e, t = p.event, p.buyer_table
    i = t.years.index(e.year)
    q = f"By what percent did the revenue of the company that hosted the {e.name} change from the year of the " \
        "event to the next year? Round to two decimals."
    return q, _pct_change(t.revenue[i], t.revenue[i + 1]), {"event": e.name}


def _total_shops(p: SetPlan, rng: random.Random) -> Built:
    a = p.buyer.name
    q = f"How many shops do {a} and the company it bought have together?"
    return q, float(p.buyer.shops + p.target.shops), {"org": a}


def _visitors_per_day(p: SetPlan, rng: random.Random) -> Built:
    e = p.event
    q = f"How many visitors per day did the {e.name} have on average? Round to two decimals."
    return q, round(e.visitors / e.days, 2), {"event": e.name}


def _revenue_gap(p: SetPlan, rng: random.Random) -> Built:
    a, ta, tb = p.buyer.name, p.buyer_table, p.target_table
    candidates = [i for i in range(len(ta.years)) if ta.revenue[i] != tb.revenue[i]]
    i = rng.choice(candidates)
    q = f"In {ta.years[i]}, what was the revenue of {a} minus the revenue of the company it bought, " \
        "in million dollars?"
    return q, round(ta.revenue[i] - tb.revenue[i], 2), {"org": a, "year": ta.years[i]}


def _lookup(template: str, arg_key: str, subject: Callable[[SetPlan], str], answer: Callable[[SetPlan], str]):
    """A builder for a question that names one entity and asks for a name or year along a fixed path."""

    def build(p: SetPlan, rng: random.Random) -> Built:
        name = subject(p)
        return template.format(name), answer(p), {arg_key: name}

    return build


def _k(name: str, docs: str, answer_type: str, template: str, arg_key: str, subject, answer) -> QuestionKind:
    return QuestionKind(name, tuple(docs.split()), answer_type, _lookup(template, arg_key, subject, answer))


def _buyer(p):
    return p.buyer.name


def _target(p):
    return p.target.name


def _event(p):
    return p.event.name


def _target_ceo(p):
    return p.target_ceo.name


ENTITY_KINDS = (
    _k("ceo", "org_target", "person", "Who is the CEO of {}?", "org", _target, lambda p: p.target_ceo.name),
    _k("founder", "org_target", "person", "Who founded {}?", "org", _target, lambda p: p.target.founder),
    _k("company_city", "org_buyer", "city", "In which city is {} based?", "org", _buyer, lambda p: p.buyer.hq),
    _k("bought_company", "org_buyer", "org", "Which company did {} buy?", "org", _buyer, lambda p: p.target.name),
    _k("birth_city", "bio_target_ceo", "city", "In which city was {} born?", "person", _target_ceo,
       lambda p: p.target_ceo.born_city),
    _k("college", "bio_target_ceo", "college", "Where did {} study?", "person", _target_ceo,
       lambda p: p.target_ceo.college),
    _k("hobby", "bio_target_ceo", "hobby", "What does {} like to do?", "person", _target_ceo,
       lambda p: p.target_ceo.hobby),
    _k("event_city", "event", "city", "In which city was the {} held?", "event", _event, lambda p: p.event.city),
    _k("ceo_of_bought", "org_buyer org_target", "person", "Who is the CEO of the company that {} bought?", "org",
       _buyer, lambda p: p.target_ceo.name),
    _k("ceo_birth_city", "org_target bio_target_ceo", "city", "In which city was the CEO of {} born?", "org",
       _target, lambda p: p.target_ceo.born_city),
    _k("ceo_college", "org_target bio_target_ceo", "college", "Where did the CEO of {} study?", "org", _target,
       lambda p: p.target_ceo.college),
    _k("ceo_hobby", "org_target bio_target_ceo", "hobby", "What does the CEO of {} like to do?", "org", _target,
       lambda p: p.target_ceo.hobby),
    _k("host_city", "event org_buyer", "city", "In which city is the company that hosted the {} based?", "event",
       _event, lambda p: p.buyer.hq),
    _k("buyer_ceo_birth_city", "org_buyer bio_buyer_ceo", "city", "In which city was the CEO of {} born?", "org",
       _buyer, lambda p: p.buyer_ceo.born_city),
    _k("birth_region", "bio_target_ceo place", "region", "In which region was {} born?", "person", _target_ceo,
       lambda p: p.place.region),
    _k("bought_ceo_birth_city", "org_buyer org_target bio_target_ceo", "city",
       "In which city was the CEO of the company that {} bought born?", "org", _buyer,
       lambda p: p.target_ceo.born_city),
    _k("host_bought_ceo", "event org_buyer org_target", "person",
       "Who is the CEO of the company that was bought by the company that hosted the {}?", "event", _event,
       lambda p: p.target_ceo.name),
    _k("ceo_birth_region", "org_target bio_target_ceo place", "region", "In which region was the CEO of {} born?",
       "org", _target, lambda p: p.place.region),
    _k("host_ceo_birth_city", "event org_buyer bio_buyer_ceo", "city",
       "In which city was the CEO of the company that hosted the {} born?", "event", _event,
       lambda p: p.buyer_ceo.born_city),
)

YEAR_KINDS = (
    _k("bought_year", "org_buyer", "year", "In which year did {} buy another company?", "org", _buyer,
       lambda p: str(p.bought_year)),
    _k("bought_founded", "org_buyer org_target", "year", "In which year was the company that {} bought founded?",
       "org", _buyer, lambda p: str(p.target.founded)),
    _k("host_founded", "event org_buyer", "year", "In which year was the company that hosted the {} founded?",
       "event", _event, lambda p: str(p.buyer.founded)),
    _k("bought_ceo_born_year", "org_buyer org_target bio_target_ceo", "year",
       "In which year was the CEO of the company that {} bought born?", "org", _buyer,
       lambda p: str(p.target_ceo.born_year)),
)

NUMBER_KINDS = (
    QuestionKind("revenue_growth", ("table_buyer",), "number", _revenue_growth),
    QuestionKind("revenue_budget_ratio", ("table_buyer",), "number", _revenue_budget_ratio),
    QuestionKind("staff_sum", ("table_buyer",), "number", _staff_sum),
    QuestionKind("visitors_per_day", ("event",), "number", _visitors_per_day),
    QuestionKind("total_shops", ("org_buyer", "org_target"), "number", _total_shops),
    QuestionKind("years_to_buy", ("org_buyer", "org_target"), "number", _years_to_buy),
    QuestionKind("ceo_start_age", ("org_target", "bio_target_ceo"), "number", _ceo_start_age),
    QuestionKind("event_staff_change", ("event", "table_buyer"), "number", _event_staff_change),
    QuestionKind("event_revenue_growth", ("event", "table_buyer"), "number", _event_revenue_growth),
    QuestionKind("bought_ceo_start_age", ("org_buyer", "org_target", "bio_target_ceo"), "number",
                 _bought_ceo_start_age),
    QuestionKind("revenue_gap", ("org_buyer", "table_buyer", "table_target"), "number", _revenue_gap),
)

KINDS_BY_TASK = {
    "doc_general_qa": ENTITY_KINDS,
    "doc_mc": ENTITY_KINDS + YEAR_KINDS,
    "docmath_qa": NUMBER_KINDS,
}
