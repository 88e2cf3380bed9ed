"""Fictional entities of the built-in world (issue 5): unique syllable names and one document set's plan.

Every name word has the fixed shape consonant-vowel-consonant-vowel-coda (``Torav``, ``Melin``), is unique in
the whole world and is never an English word used by the templates, so no name is a substring of another
(the ``sub_em_strict`` scorer of spec §4.4 cannot be fooled by a longer name); train, held-out and validation
names come from disjoint parts of the name space, so the splits share no entity. A :class:`SetPlan` holds the entities,
years and yearly numbers of one document set; :mod:`spell.builtin.world.render` turns it into documents and facts.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass

ONSETS = "bdfghjklmnprstvz"
VOWELS = "aeiou"
CODAS = "dklmnrst"
NAME_SPACE = len(ONSETS) ** 2 * len(VOWELS) ** 2 * len(CODAS)  # 51,200 distinct name words
MAX_FILL = 0.8  # refuse to draw more than this share of the name space (rejection sampling slows down)
HELDOUT_PARTS = 4  # one name word in four belongs to the labelled splits (half held-out, half validation)
SPLITS = ("train", "heldout", "validation")
WORDS_PER_SET = 21  # name words one SetPlan draws (cities 4, people 2x3, companies 2x4, event, region, river)

ORG_SUFFIXES = ("Mills", "Works", "Labs", "Group", "Trading", "Foods", "Motors", "Press")
SECTORS = ("glass", "paper", "tea", "salt", "rope", "bricks", "boats", "clocks", "soap", "tools", "shoes", "maps")
EVENT_KINDS = ("Fair", "Festival", "Games", "Summit", "Show")
HOBBIES = ("play chess", "grow roses", "swim", "paint birds", "sing", "fish", "ride horses", "bake bread",
           "climb hills", "read poems")
NUM_YEARS = 5  # columns of the yearly tables


def word_split(word: str) -> str:
    """The split a lowercase name word belongs to: three quarters of the name space are ``train``; the last
    quarter is halved into ``heldout`` (final numbers only) and ``validation`` (for tuning choices).

    Partitioning the words, rather than drawing the splits from one stream, keeps the splits disjoint by
    construction and makes each split's names independent of the other splits' sizes.
    """
    code = zlib.crc32(word.encode())
    if code % HELDOUT_PARTS:
        return "train"
    return "heldout" if (code // HELDOUT_PARTS) % 2 == 0 else "validation"


def split_share(split: str) -> float:
    """The share of the name space a split draws from.

    >>> split_share("train"), split_share("heldout"), split_share("validation")
    (0.75, 0.125, 0.125)
    """
    return 1 - 1 / HELDOUT_PARTS if split == "train" else 1 / HELDOUT_PARTS / 2


class NamePool:
    """Draws name words that are unique within a split and belong to that split's part of the name space.

    Args:
        rng: the random source (one name stream per split, so names depend only on the seed and the split).
        split: ``train``, ``heldout`` or ``validation`` (:func:`word_split`).
        reserved: lowercase words never to produce (the template vocabulary).
    """

    def __init__(self, rng: random.Random, *, split: str, reserved: frozenset[str] = frozenset()) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self._rng = rng
        self._split = split
        self._reserved = reserved
        self._used: set[str] = set()
        self._capacity = int(MAX_FILL * split_share(split) * NAME_SPACE)

    def word(self) -> str:
        """A new capitalised five-letter name word.

        Raises:
            ValueError: the split asked for more names than its part of the name space can hold.
        """
        if len(self._used) >= self._capacity:
            raise ValueError(f"a split needs more than {self._capacity} name words; build fewer document sets "
                             f"(about {self._capacity // WORDS_PER_SET} at most for this split)")
        choice = self._rng.choice
        while True:
            word = choice(ONSETS) + choice(VOWELS) + choice(ONSETS) + choice(VOWELS) + choice(CODAS)
            if word in self._used or word in self._reserved or word_split(word) != self._split:
                continue
            self._used.add(word)
            return word.capitalize()


@dataclass(frozen=True, slots=True)
class Person:
    """A person with a short biography."""

    name: str
    born_city: str
    born_year: int
    ceo_since: int
    college: str
    hobby: str


@dataclass(frozen=True, slots=True)
class Org:
    """A company and its profile facts; ``ceo`` is a :class:`Person` name."""

    name: str
    sector: str
    founded: int
    founder: str
    hq: str
    ceo: str
    partner: str
    shops: int


@dataclass(frozen=True, slots=True)
class Event:
    """A yearly event hosted by a company."""

    name: str
    city: str
    year: int
    host: str
    visitors: int
    days: int


@dataclass(frozen=True, slots=True)
class Place:
    """A city with its region and river."""

    name: str
    region: str
    river: str


@dataclass(frozen=True, slots=True)
class Table:
    """Yearly numbers of one company: revenue and budget in million dollars (one decimal), staff counts."""

    years: tuple[int, ...]
    revenue: tuple[float, ...]
    staff: tuple[int, ...]
    budget: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class SetPlan:
    """Everything one document set says: the buyer company A bought the target B, and so on.

    Attributes:
        set_id: the document set's id.
        split: ``"train"``, ``"heldout"`` or ``"validation"``.
        buyer: company A (the event host, it bought ``target``).
        target: company B (bought by A).
        bought_year: the year A bought B.
        buyer_ceo: A's CEO; ``target_ceo``: B's CEO (born in ``place``).
        event: the event A hosted.
        place: the city where B's CEO was born.
        buyer_table: A's yearly numbers; ``target_table``: B's (same years).
    """

    set_id: str
    split: str
    buyer: Org
    target: Org
    bought_year: int
    buyer_ceo: Person
    target_ceo: Person
    event: Event
    place: Place
    buyer_table: Table
    target_table: Table

    def names_by_type(self) -> dict[str, list[str]]:
        """All entity names of the set, grouped by type (``org``, ``person``, ``city`` ...), in a fixed order."""
        orgs = (self.buyer, self.target)
        people = (self.buyer_ceo, self.target_ceo)
        return {
            "org": [self.buyer.name, self.target.name, self.buyer.partner, self.target.partner],
            "person": [p.name for p in people] + [o.founder for o in orgs],
            "city": [self.buyer.hq, self.target.hq, self.target_ceo.born_city, self.buyer_ceo.born_city],
            "college": [p.college for p in people],
            "event": [self.event.name],
            "region": [self.place.region],
            "river": [self.place.river],
        }


def _distinct_series(rng: random.Random, start: float, low: float, high: float, digits: int) -> list[float]:
    """``NUM_YEARS`` positive values, each the previous times U(low, high), rounded, all different."""
    values = [round(start, digits)]
    step = 10.0 ** -digits
    while len(values) < NUM_YEARS:
        value = round(values[-1] * rng.uniform(low, high), digits)
        while value in values or value <= 0:
            value = round(value + step, digits)
        values.append(value)
    return values


def make_table(rng: random.Random, years: tuple[int, ...]) -> Table:
    """Random yearly revenue, staff and budget with every value distinct within its series."""
    revenue = _distinct_series(rng, rng.uniform(20.0, 300.0), 0.85, 1.3, 1)
    staff = [int(v) for v in _distinct_series(rng, float(rng.randint(80, 3000)), 0.9, 1.2, 0)]
    budget = [round(r * rng.uniform(0.1, 0.4), 1) for r in revenue]
    budget = [b if b > 0 else 0.1 for b in budget]
    return Table(years=years, revenue=tuple(revenue), staff=tuple(staff), budget=tuple(budget))


def _person(rng: random.Random, names: NamePool, city: str) -> Person:
    born_year = rng.randint(1950, 1978)
    return Person(
        name=f"{names.word()} {names.word()}",
        born_city=city,
        born_year=born_year,
        ceo_since=rng.randint(born_year + 28, min(born_year + 45, 2009)),
        college=f"{names.word()} College",
        hobby=rng.choice(HOBBIES),
    )


def _org(rng: random.Random, names: NamePool, founded: int, hq: str, ceo: str, sectors: list[str]) -> Org:
    return Org(
        name=f"{names.word()} {rng.choice(ORG_SUFFIXES)}",
        sector=sectors.pop(),
        founded=founded,
        founder=f"{names.word()} {names.word()}",
        hq=hq,
        ceo=ceo,
        partner=f"{names.word()} {rng.choice(ORG_SUFFIXES)}",
        shops=rng.randint(2, 60),
    )


def make_plan(rng: random.Random, names: NamePool, set_id: str, split: str) -> SetPlan:
    """Draw the entities and numbers of one document set.

    Args:
        rng: the set's own random source (years, numbers, sectors).
        names: the world's name pool (shared by all sets, so names never repeat).
        set_id: the id to stamp on the plan.
        split: ``"train"``, ``"heldout"`` or ``"validation"``.

    Returns:
        The plan. Years are consistent: B founded before A bought it; A bought B before the table years;
        the event falls in a table year that has a next year.
    """
    cities = [names.word() for _ in range(4)]  # A's HQ, B's HQ, B's CEO's birthplace, A's CEO's birthplace
    target_ceo = _person(rng, names, cities[2])
    buyer_ceo = _person(rng, names, cities[3])
    sectors = rng.sample(SECTORS, 2)
    buyer = _org(rng, names, rng.randint(1950, 1990), cities[0], buyer_ceo.name, sectors)
    target = _org(rng, names, rng.randint(1960, 1996), cities[1], target_ceo.name, sectors)
    first_year = rng.randint(2010, 2018)
    years = tuple(range(first_year, first_year + NUM_YEARS))
    bought_year = rng.randint(max(buyer.founded, target.founded) + 2, first_year - 1)
    event = Event(
        name=f"{names.word()} {rng.choice(EVENT_KINDS)}",
        city=rng.choice(cities[:3]),
        year=rng.choice(years[:-1]),
        host=buyer.name,
        visitors=rng.randint(20, 400) * 10,
        days=rng.randint(2, 9),
    )
    place = Place(name=cities[2], region=names.word(), river=names.word())
    return SetPlan(
        set_id=set_id,
        split=split,
        buyer=buyer,
        target=target,
        bought_year=bought_year,
        buyer_ceo=buyer_ceo,
        target_ceo=target_ceo,
        event=event,
        place=place,
        buyer_table=make_table(rng, years),
        target_table=make_table(rng, years),
    )
