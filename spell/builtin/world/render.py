"""Render a world document set (issue 5): one topic per document, one fixed template per fact, plus tables.

Documents are short and regular so that a tiny model can read them: a title line, then plain sentences (one
template per relation), and for company numbers a simple ``| Year | Revenue | Staff |`` table followed by budget
sentences. Each fact is stated in exactly one document, so a question that chains facts needs several
documents. Every sentence or table row that states a fact is recorded as that fact's ``evidence`` (verbatim in
the document); filler paragraphs (:mod:`spell.builtin.world.filler`) only go between those units, never inside them.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import asdict, dataclass

from spell.builtin.world.entities import Event, Org, Person, Place, SetPlan, Table
from spell.builtin.world.filler import approx_tokens, filler_paragraphs

# Document kinds in the order they join a set: docs_per_set=N keeps the first N (then the order is shuffled).
DOC_KINDS = (
    "org_buyer",  # profile of company A (it bought B, it hosted the event)
    "org_target",  # profile of company B
    "bio_target_ceo",  # biography of B's CEO
    "table_buyer",  # A's yearly revenue, staff and budget
    "event",  # the event A hosted
    "bio_buyer_ceo",  # biography of A's CEO
    "place",  # the city where B's CEO was born
    "table_target",  # B's yearly numbers
)
MIN_DOCS, MAX_DOCS = 3, len(DOC_KINDS)


@dataclass(frozen=True, slots=True)
class Fact:
    """One stated fact: ``subject --relation--> object`` (in ``year`` for yearly numbers).

    Attributes:
        subject: the entity the fact is about.
        relation: e.g. ``ceo``, ``born_city``, ``revenue`` (see :func:`render_set`'s templates).
        object: the value exactly as written in the document (a name, a year, ``"42.5"``).
        evidence: the sentence or table row that states it, verbatim in the document.
        doc: index of that document in the set.
        year: the table year for yearly numbers, else None.
    """

    subject: str
    relation: str
    object: str
    evidence: str
    doc: int = -1
    year: int | None = None

    def to_dict(self) -> dict:
        """A JSON-able dict (``year`` omitted when None)."""
        record = asdict(self)
        if self.year is None:
            del record["year"]
        return record


@dataclass(frozen=True, slots=True)
class Unit:
    """A piece of a document that filler may not split: a sentence or a whole table, with its facts."""

    text: str
    facts: tuple[Fact, ...] = ()
    is_table: bool = False


def _sentence(text: str, *facts: tuple[str, str, str]) -> Unit:
    return Unit(text, tuple(Fact(s, r, o, text) for s, r, o in facts))


def org_units(org: Org, bought: tuple[str, int] | None = None) -> list[Unit]:
    """The profile sentences of a company; ``bought`` = (company, year) it bought, if any."""
    n = org.name
    units = [
        _sentence(f"{n} is a company that makes {org.sector}.", (n, "sector", org.sector)),
        _sentence(f"{n} was founded in {org.founded}.", (n, "founded", str(org.founded))),
        _sentence(f"{n} was founded by {org.founder}.", (n, "founder", org.founder)),
        _sentence(f"{n} is based in {org.hq}.", (n, "hq", org.hq)),
        _sentence(f"The CEO of {n} is {org.ceo}.", (n, "ceo", org.ceo)),
        _sentence(f"{n} works with {org.partner}.", (n, "partner", org.partner)),
        _sentence(f"{n} has {org.shops} shops.", (n, "shops", str(org.shops))),
    ]
    if bought is not None:
        target, year = bought
        bought_text = f"{n} bought {target} in {year}."
        units.append(_sentence(bought_text, (n, "bought", target), (n, "bought_year", str(year))))
    return units


def bio_units(person: Person) -> list[Unit]:
    """The biography sentences of a person (the employer is not named: that fact lives in the company profile)."""
    n = person.name
    return [
        _sentence(f"{n} was born in {person.born_city}.", (n, "born_city", person.born_city)),
        _sentence(f"{n} was born in the year {person.born_year}.", (n, "born_year", str(person.born_year))),
        _sentence(f"{n} studied at {person.college}.", (n, "college", person.college)),
        _sentence(f"{n} became CEO in {person.ceo_since}.", (n, "ceo_since", str(person.ceo_since))),
        _sentence(f"{n} likes to {person.hobby}.", (n, "hobby", person.hobby)),
    ]


def event_units(event: Event) -> list[Unit]:
    """The sentences of an event document."""
    n = event.name
    held = f"The {n} was held in {event.city} in {event.year}."
    return [
        _sentence(held, (n, "city", event.city), (n, "year", str(event.year))),
        _sentence(f"The {n} was hosted by {event.host}.", (n, "host", event.host)),
        _sentence(f"The {n} had {event.visitors} visitors.", (n, "visitors", str(event.visitors))),
        _sentence(f"The {n} lasted {event.days} days.", (n, "days", str(event.days))),
    ]


def place_units(place: Place) -> list[Unit]:
    """The sentences of a city document."""
    n = place.name
    return [
        _sentence(f"{n} is a city in the {place.region} region.", (n, "region", place.region)),
        _sentence(f"{n} lies on the {place.river} river.", (n, "river", place.river)),
    ]


def table_units(org_name: str, table: Table) -> list[Unit]:
    """An intro sentence, the revenue/staff table (one fact pair per row), then one budget sentence per year."""
    lines = ["| Year | Revenue | Staff |"]
    facts: list[Fact] = []
    for year, revenue, staff in zip(table.years, table.revenue, table.staff):
        row = f"| {year} | {revenue:.1f} | {staff} |"
        lines.append(row)
        facts.append(Fact(org_name, "revenue", f"{revenue:.1f}", row, year=year))
        facts.append(Fact(org_name, "staff", str(staff), row, year=year))
    units = [
        Unit(f"This table shows the revenue and staff of {org_name} by year."),
        Unit("Revenue is in million dollars."),
        Unit("\n".join(lines), tuple(facts), is_table=True),
    ]
    for year, budget in zip(table.years, table.budget):
        text = f"In {year}, the budget of {org_name} was {budget:.1f} million dollars."
        units.append(Unit(text, (Fact(org_name, "budget", f"{budget:.1f}", text, year=year),)))
    return units


def document_parts(plan: SetPlan, kind: str) -> tuple[str, list[Unit]]:
    """``(title, units)`` of one document kind of ``plan``."""
    match kind:
        case "org_buyer":
            return plan.buyer.name, org_units(plan.buyer, (plan.target.name, plan.bought_year))
        case "org_target":
            return plan.target.name, org_units(plan.target)
        case "bio_target_ceo":
            return plan.target_ceo.name, bio_units(plan.target_ceo)
        case "bio_buyer_ceo":
            return plan.buyer_ceo.name, bio_units(plan.buyer_ceo)
        case "table_buyer":
            return f"{plan.buyer.name} in numbers", table_units(plan.buyer.name, plan.buyer_table)
        case "table_target":
            return f"{plan.target.name} in numbers", table_units(plan.target.name, plan.target_table)
        case "event":
            return f"The {plan.event.name}", event_units(plan.event)
        case "place":
            return plan.place.name, place_units(plan.place)
    raise ValueError(f"unknown document kind {kind!r}; use one of {DOC_KINDS}")


def join_units(title: str, units: list[Unit], fillers: list[str], rng: random.Random) -> str:
    """The document text: the title line, then paragraphs; each filler paragraph goes into a random gap.

    Consecutive sentences share one paragraph line; tables and filler paragraphs stand on their own lines.
    """
    gaps: dict[int, list[str]] = {}
    for paragraph in fillers:
        gaps.setdefault(rng.randint(0, len(units)), []).append(paragraph)
    lines, sentences = [title], []
    for index in range(len(units) + 1):
        if index in gaps and sentences:
            lines.append(" ".join(sentences))
            sentences = []
        lines.extend(gaps.get(index, []))
        if index == len(units):
            break
        unit = units[index]
        if unit.is_table:
            if sentences:
                lines.append(" ".join(sentences))
                sentences = []
            lines.append(unit.text)
        else:
            sentences.append(unit.text)
    if sentences:
        lines.append(" ".join(sentences))
    return "\n".join(lines)


def render_set(
    plan: SetPlan, kinds: list[str], rng: random.Random, *, target_tokens: int | None = None, filler: bool = True,
    count_tokens: Callable[[str], int] | None = None,
) -> tuple[list[str], list[Fact]]:
    """Render the documents of a set in the given kind order.

    Args:
        plan: the set's entities and numbers.
        kinds: document kinds (from :data:`DOC_KINDS`), in document order.
        rng: the random source for filler text and its placement.
        target_tokens: tokens the whole set should reach with filler; None = no filler.
        filler: False disables filler even when ``target_tokens`` is set.
        count_tokens: a tokenizer's count of a text; None = :func:`~spell.builtin.world.filler.approx_tokens`.

    Returns:
        ``(documents, facts)``; each fact's ``doc`` is the index of the document that states it.
    """
    parts = [document_parts(plan, kind) for kind in kinds]
    base = [title + "\n" + " ".join(u.text for u in units) for title, units in parts]
    count = count_tokens or approx_tokens
    missing = max(0, (target_tokens or 0) - sum(count(text) for text in base)) if filler else 0
    documents: list[str] = []
    facts: list[Fact] = []
    for index, (title, units) in enumerate(parts):
        share = missing // len(parts) + (1 if index < missing % len(parts) else 0)
        fillers = filler_paragraphs(rng, share, count_tokens) if share > 0 else []
        documents.append(join_units(title, units, fillers, rng))
        facts.extend(Fact(f.subject, f.relation, f.object, f.evidence, index, f.year) for u in units for f in u.facts)
    return documents, facts


def template_vocabulary() -> frozenset[str]:
    """Lowercase words of the fixed template text (names must avoid them so that no name is a common word)."""
    words = (
        "is a company that makes was founded in by based the ceo of works with bought born year studied at "
        "became held hosted had visitors city region lies on river this table shows revenue and staff million "
        "dollars budget numbers fair festival games summit show college mills labs group trading foods motors "
        "press which who what how many much did when has shops likes to lasted days"
    )
    return frozenset(words.split())
