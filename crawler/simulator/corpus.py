"""A seeded corpus of works shaped like the REST API's JSON, and the links it must yield.

The expected set is written down by the generator as it decides each reference and relation
("this reference cites that DataCite DOI, written in upper case, mined from text"), from the
rules of Event Data's crossref source — never by running the crawler's extraction code. It
covers what the rules must get right: DOI fields in any case and with resolver prefixes,
broken DOI fields, DOIs mined from text with markup, entities, brackets and punctuation,
objects of other agencies and of no agency, self-links, repeats and non-DOI relations.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from crawler.simulator.vocab import (  # noqa: F401  (re-exported: tests import them from here)
    AGENCIES, CROSSREF_PREFIXES, FUNDERS, GIVEN, JOURNALS, LICENSES, OTHER_AGENCIES, OWNERS,
    RELATION_NAMES, SURNAMES, TYPE_LABELS, TYPES, UNKNOWN_PREFIXES, WORDS,
)

Key = tuple[str, str, str]  # (subject DOI, relation, object DOI), lower-cased
_NAMES = [(given, family) for given in GIVEN for family in SURNAMES]

EPOCH = datetime(2005, 1, 1, tzinfo=UTC)
LAST_CREATED = datetime(2024, 12, 31, 23, 59, 59, tzinfo=UTC)
INDEX_CAP = datetime(2026, 10, 1, tzinfo=UTC)  # original works were indexed before this


def date_field(moment: datetime) -> dict:
    return {
        "date-parts": [[moment.year, moment.month, moment.day]],
        "date-time": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "timestamp": int(moment.timestamp() * 1000),
    }


@dataclass
class _Entry:
    """One generated reference or relation entry: its link key and whether it yields an event."""

    key: Key | None
    emits: bool


def _link(subject: str, relation: str, doi: str, emits: bool) -> _Entry:
    """A link entry; a work pointing at itself yields nothing."""
    if doi == subject:
        return _Entry(None, False)
    return _Entry((subject, relation, doi), emits)


@dataclass
class Corpus:
    seed: int
    works: list[dict]
    agencies: dict[str, str | None]
    entries: dict[str, list[_Entry]]  # subject DOI -> what its references and relations mean
    version: int = 0
    changed: list[str] = field(default_factory=list)  # DOIs touched by the last mutation

    @property
    def expected(self) -> set[Key]:
        """Every link a fresh backfill of the corpus as it stands must emit, exactly once."""
        return {e.key for entries in self.entries.values() for e in entries if e.emits and e.key}

    def by_doi(self) -> dict[str, dict]:
        return {w["DOI"]: w for w in self.works}

    def mutate(self, seed: int, new_works: int, changed_works: int, at: datetime | None = None) -> set[Key]:
        """Add works and links (and drop a few references), re-indexed at `at`; returns the new keys.

        Changed works are replaced by new dicts, so a scroll that started before keeps serving
        the old versions, as a search snapshot does.
        """
        at = at or datetime.now(UTC).replace(microsecond=0)
        before = self.expected
        rng = random.Random(f"mutate:{self.seed}:{seed}")
        maker = _Maker(rng, [w["DOI"] for w in self.works], extra=random.Random(f"mutate-extra:{self.seed}:{seed}"))
        self.changed = []
        index = {w["DOI"]: i for i, w in enumerate(self.works)}
        for doi in rng.sample(sorted(index), min(changed_works, len(index))):
            work = dict(self.works[index[doi]])
            refs = list(work.get("reference") or [])
            entries = [e for e in self.entries[doi]]
            ref_entries = entries[: len(refs)]
            rel_entries = entries[len(refs):]
            if refs and rng.random() < 0.3:  # a corrected reference list loses a few entries
                for _ in range(min(len(refs), rng.randint(1, 3))):
                    drop = rng.randrange(len(refs))
                    del refs[drop], ref_entries[drop]
            for _ in range(rng.randint(1, 5)):
                ref, entry = maker.reference(doi, len(refs) + 1)
                refs.append(ref)
                ref_entries.append(entry)
            relation = {name: list(items) for name, items in (work.get("relation") or {}).items()}
            if rng.random() < 0.5:
                name = rng.choice(RELATION_NAMES)
                item, entry = maker.relation_item(doi, name)
                relation.setdefault(name, []).append(item)
                rel_entries.append(entry)
            work["reference"] = refs
            work["reference-count"] = work["references-count"] = len(refs)
            work["relation"] = relation
            work["deposited"] = work["indexed"] = date_field(at)
            self.works[index[doi]] = work
            self.entries[doi] = ref_entries + rel_entries
            self.changed.append(doi)
        serial = len(self.works)
        for _ in range(new_works):
            work, entries = maker.work(serial, at, at, at)
            serial += 1
            self.works.append(work)
            self.entries[work["DOI"]] = entries
            self.changed.append(work["DOI"])
        self.version += 1
        return self.expected - before


REFERENCE_MIXES = ("fuzz", "real")
# Shares of the references in the recorded REST API samples (tests/data/crossref/rest-api: 536
# works, 13,054 references): a DOI field alone 73.5%, with unstructured text too 4.1%, text
# alone 4.1% (a DOI inside it 0.2% of all), neither 18.3%; of the texts, 4.5% hold an entity
# and 2.4% a tag.
REAL_MIX = {"doi": 0.735, "doi+text": 0.041, "text with a DOI": 0.002, "text": 0.039,
            "entities": 0.045, "tags": 0.024}


def generate(n: int, seed: int = 1, refs_mean: float = 27.0, huge_rate: float = 0.0,
             day_share: float = 0.0, big_day: date = date(2019, 5, 14), refs: str = "fuzz") -> Corpus:
    """n works created 2005–2024, about `refs_mean` references per work that has any, and
    a `huge_rate` share of works with 5,000–20,000 references.

    `refs` is the mix of references: "fuzz" (every hard case often: broken fields, DOIs mined
    from text with markup) for correctness, "real" (the proportions of the recorded samples,
    `REAL_MIX`) for speed figures.

    A `day_share` of the works are created, deposited and indexed on `big_day` (a bulk-deposit
    day). Beside what the crawler reads, works carry the fields the `has-*` filters look at:
    an author list (~30% of works with an ORCID), an abstract (~40%), a license (~60%) and a
    funder (~20%), drawn apart from the links so that a seed yields the same links with or
    without them.
    """
    _check_mix(refs)
    works, entries = [], {}
    for work, work_entries in _draw(n, seed, refs_mean, huge_rate, day_share, big_day, refs):
        works.append(work)
        entries[work["DOI"]] = work_entries
    works.sort(key=lambda w: (w["created"]["date-time"], w["DOI"]))
    return Corpus(seed=seed, works=works, agencies=dict(AGENCIES), entries=entries)


def stream_works(n: int, seed: int = 1, refs_mean: float = 27.0, huge_rate: float = 0.0,
                 day_share: float = 0.0, big_day: date = date(2019, 5, 14), refs: str = "fuzz") -> Iterator[dict]:
    """The works of `generate` with the same arguments, one at a time in the order they are
    drawn (not by created date), none kept but their DOIs."""
    _check_mix(refs)  # now, before anything is written
    return (work for work, _ in _draw(n, seed, refs_mean, huge_rate, day_share, big_day, refs))


def _check_mix(refs: str) -> None:
    if refs not in REFERENCE_MIXES:
        raise ValueError(f"refs must be one of {REFERENCE_MIXES}, not {refs!r}")


def _draw(n: int, seed: int, refs_mean: float, huge_rate: float, day_share: float, big_day: date,
          refs: str) -> Iterator[tuple[dict, list[_Entry]]]:
    """Each work and what its links must yield, in the order drawn."""
    rng = random.Random(f"corpus:{seed}")
    days = random.Random(f"corpus-day:{seed}")
    subjects = [_subject_doi(rng, i) for i in range(n)]
    maker = _Maker(rng, subjects, refs_mean, huge_rate, extra=random.Random(f"corpus-extra:{seed}"),
                   real_mix=refs == "real")
    span = int((LAST_CREATED - EPOCH).total_seconds())
    day_start = datetime(big_day.year, big_day.month, big_day.day, tzinfo=UTC)
    for i in range(n):
        created = EPOCH + timedelta(seconds=rng.randrange(span))
        deposited = min(created + timedelta(days=rng.randint(0, 400), seconds=rng.randrange(86400)), INDEX_CAP)
        indexed = min(deposited + timedelta(days=rng.randint(0, 90)), INDEX_CAP)
        on_big_day = day_share > 0 and days.random() < day_share
        if on_big_day:  # all three on the day: before 23:00, then within the next hour
            created = day_start + timedelta(seconds=days.randrange(23 * 3600))
            deposited = created + timedelta(seconds=days.randrange(1800))
            indexed = deposited + timedelta(seconds=days.randrange(1800))
        work, work_entries = maker.work(i, created, deposited, indexed, doi=subjects[i])
        if rng.random() < 0.05 and not on_big_day:
            del work["deposited"]  # occurred_at then falls back to created
        yield work, work_entries


def _subject_doi(rng: random.Random, serial: int) -> str:
    prefix = rng.choice(CROSSREF_PREFIXES)
    return f"{prefix}/sim.{rng.randint(2005, 2024)}.{serial:07d}"


def _suffix(rng: random.Random) -> str:
    """A lower-case DOI suffix that ends in a letter or digit (nothing a text rule would trim)."""
    shape = rng.random()
    digits = lambda k: "".join(rng.choice("0123456789") for _ in range(k))  # noqa: E731
    letters = lambda k: "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(k))  # noqa: E731
    if shape < 0.35:
        return f"j.{letters(4)}.{rng.randint(1990, 2024)}.{digits(2)}.{digits(3)}"
    if shape < 0.6:
        return f"s{digits(5)}-{digits(3)}-{digits(4)}-{rng.randint(0, 9)}"
    if shape < 0.75:
        return f"{letters(3)}{digits(2)}({digits(2)}){digits(3)}"  # balanced brackets are part of a DOI
    if shape < 0.9:
        return f"{letters(5)}.{digits(6)}/{letters(2)}{digits(1)}"
    return f"{letters(2)}_{digits(4)}-{letters(3)}{digits(2)}"


def _sici(rng: random.Random) -> str:
    return (
        f"(sici){rng.randint(1000, 9999)}-{rng.randint(1000, 9999)}({rng.randint(1990, 2000)}02)"
        f"{rng.randint(1, 99)}:{rng.randint(1, 9)}<{rng.randint(1, 999)}::aid-jbm{rng.randint(1, 99)}>3.0.co;2-h"
    )


class _Maker:
    """Draws works, references and relation entries, noting for each what it must yield."""

    def __init__(self, rng: random.Random, subjects: list[str], refs_mean: float = 27.0, huge_rate: float = 0.0,
                 extra: random.Random | None = None, real_mix: bool = False) -> None:
        self.rng = rng
        self.real_mix = real_mix
        self.extra = extra or random.Random(0)  # fields no link depends on: their own draws
        self.abstracts = [
            f"<jats:p>{' '.join(self.extra.choice(WORDS) for _ in range(self.extra.randint(12, 40))).capitalize()}.</jats:p>"
            for _ in range(64)
        ]
        self.subjects = subjects
        self.refs_scale = refs_mean / 1.377  # lognormvariate(0, 0.8) has mean e**0.32 ≈ 1.377
        self.huge_rate = huge_rate

    # -- objects -----------------------------------------------------------------------
    def target(self) -> str:
        """A canonical (lower-case) object DOI: in the corpus, other Crossref, other agency, or none."""
        r = self.rng.random()
        if r < 0.35 and self.subjects:
            return self.rng.choice(self.subjects)
        if r < 0.75:
            return f"{self.rng.choice(CROSSREF_PREFIXES)}/{_suffix(self.rng)}"
        if r < 0.92:
            return f"{self.rng.choice(sorted(OTHER_AGENCIES))}/{_suffix(self.rng)}"
        return f"{self.rng.choice(UNKNOWN_PREFIXES)}/{_suffix(self.rng)}"

    def written(self, doi: str) -> str:
        """The DOI as a depositor might have typed it (case only)."""
        r = self.rng.random()
        if r < 0.7:
            return doi
        if r < 0.85:
            return doi.upper()
        prefix, suffix = doi.split("/", 1)
        return f"{prefix}/{''.join(c.upper() if self.rng.random() < 0.5 else c for c in suffix)}"

    def field_form(self, doi: str) -> str:
        """A DOI field or relation id: resolver prefixes and stray spaces are removed by the rules."""
        text = self.written(doi)
        r = self.rng.random()
        if r < 0.75:
            return text
        if r < 0.83:
            return f"https://doi.org/{text}"
        if r < 0.88:
            return f"http://dx.doi.org/{text}"
        if r < 0.94:
            return f"doi:{text}"
        return f" {text} "

    # -- text --------------------------------------------------------------------------
    def citation(self, entities: float = 0.4, tags: float = 0.3) -> str:
        rng = self.rng
        title = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))).capitalize()
        authors = f"{rng.choice(SURNAMES)} {rng.choice('ABCDEFGH')}."
        if rng.random() < entities:
            authors += f" &amp; {rng.choice(SURNAMES)} {rng.choice('JKLMN')}."
        journal = rng.choice(JOURNALS)
        if rng.random() < tags:
            journal = f"<i>{journal}</i>"
        return f"{authors} ({rng.randint(1950, 2024)}) {title}. {journal} {rng.randint(1, 300)}:{rng.randint(1, 999)}-{rng.randint(1000, 1999)}"

    def text_with(self, doi: str) -> str:
        """Unstructured text whose first valid DOI, once markup is gone, is `doi`."""
        w = self.written(doi)
        cite = self.citation()
        r = self.rng.randrange(9)
        if r == 0:
            return f"{cite}. doi:{w}."
        if r == 1:
            return f"{cite}. https://doi.org/{w}"
        if r == 2:
            return f"{cite}. DOI: {w}; PMID: {self.rng.randint(10**6, 4 * 10**7)}."
        if r == 3:
            return f"{cite} (doi:{w})."
        if r == 4:
            return f"[{self.rng.randint(1, 80)}] {cite} [{w}],"
        if r == 5:
            return f'{cite}. <ext-link ext-link-type="doi" xlink:href="{w}">{w}</ext-link>'
        if r == 6:
            return f"{cite}. <https://doi.org/{w}>"
        if r == 7:  # no DOI at 10.12/… (too few digits) nor at 10.1234 without a slash
            return f"{cite}, ISBN 10.12/{self.rng.randint(100, 999)}, pp. 10.1234 - doi:{w}:"
        return f"{cite}, available at http://dx.doi.org/{w} (accessed 2020)."

    def text_without(self) -> str:
        r = self.rng.random()
        if r < 0.6:
            return self.citation() + "."
        if r < 0.8:
            return f"{self.citation()}, vol. 10.5, ISBN 978-3-16-148410-0."
        return f"{self.citation()}. Preprint 10.123/abc{self.rng.randint(1, 99)}."  # 3 digits: no DOI

    # -- records -----------------------------------------------------------------------
    def reference(self, subject: str, n: int, earlier: list[str] | None = None) -> tuple[dict, _Entry]:
        rng = self.rng
        ref: dict = {"key": f"ref{n}"}
        if rng.random() < 0.6:
            ref.update({"author": rng.choice(SURNAMES), "year": str(rng.randint(1950, 2024)),
                        "journal-title": rng.choice(JOURNALS), "volume": str(rng.randint(1, 300))})
        if self.real_mix:
            return self.real_reference(subject, ref)
        r = rng.random()
        if r < 0.55:  # a DOI field
            doi = self.target()
            ref["DOI"] = self.field_form(doi)
            ref["doi-asserted-by"] = rng.choice(("publisher", "crossref"))
            if rng.random() < 0.1:  # a different DOI in the text does not matter
                ref["unstructured"] = self.text_with(self.target())
            return ref, _link(subject, "references", doi, AGENCIES[doi.split("/")[0]] is not None)
        if r < 0.70:  # mined from text: only a Crossref object makes an event
            doi = self.target()
            ref["unstructured"] = self.text_with(doi)
            return ref, _link(subject, "references", doi, AGENCIES[doi.split("/")[0]] == "Crossref")
        if r < 0.73:  # a broken DOI field, the DOI still readable in the text
            doi = self.target()
            ref["DOI"] = rng.choice((doi.replace("/", "/ ", 1), doi.replace(".", ". ", 1).rstrip(), "DOI pending"))
            ref["unstructured"] = self.text_with(doi)
            return ref, _link(subject, "references", doi, AGENCIES[doi.split("/")[0]] == "Crossref")
        if r < 0.76:  # an invalid DOI field and no DOI in the text
            ref["DOI"] = rng.choice(("10.123/abc", "10.1234", "https://example.org/10.1000/x", ""))
            ref["unstructured"] = self.text_without()
            return ref, _Entry(None, False)
        if r < 0.77:  # a work citing itself
            ref["DOI"] = self.written(subject)
            return ref, _Entry(None, False)
        if r < 0.80 and earlier:  # the same object again, written differently
            doi = rng.choice(earlier)
            ref["DOI"] = self.field_form(doi)
            return ref, _link(subject, "references", doi, AGENCIES[doi.split("/")[0]] is not None)
        if r < 0.81:  # an old SICI DOI: brackets, colons, semicolons and angle brackets
            doi = f"{rng.choice(CROSSREF_PREFIXES)}/{_sici(rng)}"
            ref["DOI"] = doi.upper()
            return ref, _link(subject, "references", doi, True)
        ref["unstructured"] = self.text_without()
        return ref, _Entry(None, False)

    def real_reference(self, subject: str, ref: dict) -> tuple[dict, _Entry]:
        """A reference drawn by `REAL_MIX`: mostly bare DOI fields, some plain citations."""
        rng = self.rng
        mix = REAL_MIX
        r = rng.random()
        if r < mix["doi"] + mix["doi+text"]:
            doi = self.target()
            ref["DOI"] = self.written(doi)
            ref["doi-asserted-by"] = rng.choice(("publisher", "crossref"))
            if r >= mix["doi"]:
                ref["unstructured"] = self.citation(mix["entities"], mix["tags"]) + "."
            return ref, _link(subject, "references", doi, AGENCIES[doi.split("/")[0]] is not None)
        r -= mix["doi"] + mix["doi+text"]
        if r < mix["text with a DOI"]:
            doi = self.target()
            ref["unstructured"] = self.text_with(doi)
            return ref, _link(subject, "references", doi, AGENCIES[doi.split("/")[0]] == "Crossref")
        if r < mix["text with a DOI"] + mix["text"]:
            ref["unstructured"] = self.citation(mix["entities"], mix["tags"]) + "."
        else:  # structured fields only
            ref.setdefault("author", rng.choice(SURNAMES))
            ref.setdefault("year", str(rng.randint(1950, 2024)))
        return ref, _Entry(None, False)

    def relation_item(self, subject: str, name: str) -> tuple[dict, _Entry]:
        rng = self.rng
        r = rng.random()
        if r < 0.8:
            doi = self.target()
            item = {"id-type": rng.choice(("doi", "doi", "DOI")), "id": self.field_form(doi),
                    "asserted-by": rng.choice(("subject", "object"))}
            return item, _link(subject, name, doi, AGENCIES[doi.split("/")[0]] is not None)
        if r < 0.83:
            return {"id-type": "doi", "id": self.written(subject), "asserted-by": "subject"}, _Entry(None, False)
        kind = rng.choice(("uri", "issn", "arxiv", "pmid"))
        value = {
            "uri": f"https://doi.org/{self.target()}",  # a DOI under another id-type is ignored
            "issn": "1234-5678",
            "arxiv": f"arXiv:2101.{rng.randint(10000, 99999)}",
            "pmid": str(rng.randint(10**6, 4 * 10**7)),
        }[kind]
        return {"id-type": kind, "id": value, "asserted-by": "subject"}, _Entry(None, False)

    def work(self, serial: int, created: datetime, deposited: datetime, indexed: datetime,
             doi: str | None = None) -> tuple[dict, list[_Entry]]:
        rng = self.rng
        doi = doi or _subject_doi(rng, serial)
        names, weights = zip(*TYPES)
        entries: list[_Entry] = []
        refs: list[dict] = []
        if rng.random() > 0.3:
            count = min(int(rng.lognormvariate(0, 0.8) * self.refs_scale) + 1, 3000)
            if rng.random() < self.huge_rate:
                count = rng.randint(5000, 20000)  # the rare huge reference list
            earlier: list[str] = []
            for n in range(1, count + 1):
                ref, entry = self.reference(doi, n, earlier)
                refs.append(ref)
                entries.append(entry)
                if entry.key:
                    earlier.append(entry.key[2])
        prefix = doi.split("/")[0]
        member, publisher = OWNERS.get(prefix, ("", "Simulated Publishing"))
        work = {
            "indexed": date_field(indexed),
            "publisher": publisher,
            "DOI": doi,
            "type": rng.choices(names, weights)[0],
            "created": date_field(created),
            "source": "Crossref",
            "is-referenced-by-count": rng.randint(0, 500),
            "title": [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))).capitalize()],
            "prefix": prefix,
            # The prefix's member; the old random draw is kept so that a seed's links stay the same.
            "member": (str(rng.randint(1, 30000)), member)[1] if member else str(rng.randint(1, 30000)),
            "container-title": [rng.choice(JOURNALS)],
            "deposited": date_field(deposited),
            "score": 1.0,
            "issued": {"date-parts": [[created.year, created.month]]},
            "reference-count": len(refs),
            "references-count": len(refs),
            "URL": f"https://doi.org/{doi}",
        }
        if refs:
            work["reference"] = refs
        r = rng.random()
        if r < 0.25:
            relation: dict[str, list[dict]] = {}
            for name in rng.sample(RELATION_NAMES, rng.randint(1, 3)):
                items = relation.setdefault(name, [])
                for _ in range(rng.randint(1, 3)):
                    item, entry = self.relation_item(doi, name)
                    items.append(item)
                    entries.append(entry)
            work["relation"] = relation
        elif r < 0.5:
            work["relation"] = rng.choice(({}, {"cites": []}))
        self.extras(work)
        return work, entries

    def extras(self, work: dict) -> None:
        """Authors, abstract, license, funder: what the `has-*` filters read, from `extra`
        (drawn with plain `random()` and ready-made pools: generation stays fast)."""
        rand = self.extra.random
        draw = rand()
        if draw < 0.92:
            count = 1 + int(rand() * rand() * 8)
            authors = [{"given": given, "family": family, "sequence": "additional", "affiliation": []}
                       for given, family in (_NAMES[int(rand() * len(_NAMES))] for _ in range(count))]
            authors[0]["sequence"] = "first"
            if draw < 0.3:
                orcid = f"http://orcid.org/0000-000{int(rand() * 10)}-{int(rand() * 10**4):04d}-{int(rand() * 10**4):04d}"
                authors[int(rand() * count)].update({"ORCID": orcid, "authenticated-orcid": rand() < 0.5})
            work["author"] = authors
        if rand() < 0.4:
            work["abstract"] = self.abstracts[int(rand() * len(self.abstracts))]
        if rand() < 0.6:
            work["license"] = [{"start": work["created"], "content-version": "vor", "delay-in-days": 0,
                                "URL": LICENSES[int(rand() * len(LICENSES))]}]
        if rand() < 0.2:
            funder_doi, name = FUNDERS[int(rand() * len(FUNDERS))]
            work["funder"] = [{"DOI": funder_doi, "name": name, "doi-asserted-by": "publisher",
                               "award": [str(100000 + int(rand() * 900000))]}]
