"""Page bytes -> works -> candidate links. Runs in the parser processes.

Typed decoding (msgspec) skips every field the events do not need, which is most of a page.
A record that does not fit the types (a null where a list belongs, a number for a DOI, ...)
sends the page through a tolerant path that salvages each field on its own and names the
problem, so one bad value never costs more than itself.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec

from crawler.api.body import Body
from crawler.extract import page_links
from crawler.keys import link_hashes, subject_hash
from crawler.model import DateField, Link, Problem, Reference, RelationItem, Work


class _Message(msgspec.Struct, gc=False):
    items: list[Work] = []
    total_results: int | None = msgspec.field(default=None, name="total-results")
    next_cursor: str | None = msgspec.field(default=None, name="next-cursor")


class _Envelope(msgspec.Struct, gc=False):
    message: _Message


# The typed decode alone, public for the benchmark: the part of parsing no extraction can skip.
PAGE_DECODER = msgspec.json.Decoder(_Envelope)
_ANY = msgspec.json.Decoder()


class BadPage(ValueError):
    """The body is not a work-list page (not JSON, truncated, or the wrong shape)."""


class LinkGroup(NamedTuple):
    """A work's links of one relation type, found the same way (mined from text or not).

    Columns rather than one object per link: cheaper to build, to send between processes
    and to filter. Tuples, not lists: the collector stops tracking a tuple of strings or ints
    after one pass, so pages waiting in the main process add nothing to its full collections.
    """

    relation: str
    mined: bool
    objs: tuple[str, ...]  # lower-cased DOIs, each once
    hashes: tuple[int, ...]  # link_hash(relation, obj) per obj, same order


class ParsedWork(NamedTuple):
    doi: str  # lower-cased
    type: str | None
    occurred_at: str | None
    subject: int  # subject_hash(doi)
    groups: tuple[LinkGroup, ...]

    @property
    def links(self) -> list[Link]:
        return [Link(g.relation, obj, g.mined) for g in self.groups for obj in g.objs]

    @property
    def hashes(self) -> list[int]:
        return [h for g in self.groups for h in g.hashes]


class ParsedPage(NamedTuple):
    total: int | None
    next_cursor: str | None
    items: int  # items on the page, good or bad
    works: list[ParsedWork]
    problems: list[tuple[str, str, str]]  # (kind, DOI or '?', detail)
    prefixes: set[str] = set()  # of every object on the page: what the agency lookup needs


def parse_body(body: Body) -> ParsedPage:
    """`parse_page` of a page as it came over the wire: inflated here, in a parser process."""
    return parse_page(body.inflate())


def parse_page(body: bytes) -> ParsedPage:
    """A /works page -> its works' candidate links and the problems met on the way."""
    problems: list[tuple[str, str, str]] = []
    try:
        message = PAGE_DECODER.decode(body).message
        works: list[Work] = message.items
        total, cursor, items = message.total_results, message.next_cursor, len(works)
    except msgspec.ValidationError:
        total, cursor, raw_items = _loose_envelope(body)
        items = len(raw_items)
        works = [w for w in (salvage(item, problems) for item in raw_items) if w is not None]
    except msgspec.DecodeError as exc:
        raise BadPage(f"the page is not valid JSON ({exc})") from None
    good = []
    for work in works:
        if work.DOI.strip():
            good.append(work)
        else:
            problems.append((Problem.NO_DOI, "?", "a record with an empty DOI"))
    parsed, prefixes = parse_works(good)
    return ParsedPage(total, cursor, items, parsed, problems, prefixes)


def parse_works(works: list[Work]) -> tuple[list[ParsedWork], set[str]]:
    """Works -> their candidate links with hashes, and the DOI prefixes of all objects."""
    groups, prefixes = page_links(works)
    parsed = []
    for work, work_groups in zip(works, groups):
        doi = work.DOI.strip().lower()
        parsed.append(ParsedWork(doi, work.type, work.occurred_at, subject_hash(doi), tuple(
            LinkGroup(relation, mined, tuple(objs), tuple(link_hashes(relation, objs)))
            for (relation, mined), objs in work_groups.items()
        )))
    return parsed, prefixes


def _loose_envelope(body: bytes) -> tuple[int | None, str | None, list[Any]]:
    try:
        doc = _ANY.decode(body)
    except msgspec.DecodeError as exc:
        raise BadPage(f"the page is not valid JSON ({exc})") from None
    message = doc.get("message") if isinstance(doc, dict) else None
    if not isinstance(message, dict) or not isinstance(message.get("items", []), list):
        raise BadPage("the page has no message.items list")
    total = message.get("total-results")
    cursor = message.get("next-cursor")
    return (
        total if isinstance(total, int) and not isinstance(total, bool) else None,
        cursor if isinstance(cursor, str) else None,
        message.get("items", []),
    )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _date(value: Any) -> DateField | None:
    if isinstance(value, dict) and isinstance(value.get("date-time"), str):
        return DateField(value["date-time"])
    return None


def salvage(item: Any, problems: list[tuple[str, str, str]]) -> Work | None:
    """A work from a record of any shape; each unusable field is dropped and reported."""
    if not isinstance(item, dict) or not isinstance(item.get("DOI"), str) or not item["DOI"].strip():
        shown = repr(item.get("DOI") if isinstance(item, dict) else item)[:80]
        problems.append((Problem.NO_DOI, "?", f"a record without a usable DOI: {shown}"))
        return None
    doi = item["DOI"]
    try:
        return msgspec.convert(item, Work)
    except msgspec.ValidationError:
        pass

    def bad(field: str, value: Any) -> None:
        problems.append((Problem.BAD_FIELD, doi, f"{field} is {type(value).__name__}"))

    for field in ("type", "created", "deposited", "indexed"):
        value = item.get(field)
        if value is not None and (_text(value) if field == "type" else _date(value)) is None:
            bad(field, value)
    references: list[Reference] = []
    raw_refs = item.get("reference")
    if raw_refs is not None and not isinstance(raw_refs, list):
        bad("reference", raw_refs)
        raw_refs = None
    for ref in raw_refs or ():
        if not isinstance(ref, dict):
            bad("reference[]", ref)
            continue
        fields = {k: ref.get(k) for k in ("DOI", "unstructured")}
        for key, value in fields.items():
            if value is not None and not isinstance(value, str):
                bad(f"reference.{key}", value)
        references.append(Reference(_text(fields["DOI"]), _text(fields["unstructured"])))
    relations: dict[str, list[RelationItem]] = {}
    raw_rel = item.get("relation")
    if raw_rel is not None and not isinstance(raw_rel, dict):
        bad("relation", raw_rel)
        raw_rel = None
    for name, entries in (raw_rel or {}).items():
        if not isinstance(entries, list):
            bad(f"relation.{name}", entries)
            entries = [entries] if isinstance(entries, dict) else []
        good = []
        for entry in entries:
            if not isinstance(entry, dict):
                bad(f"relation.{name}[]", entry)
                continue
            good.append(RelationItem(_text(entry.get("id-type")), _text(entry.get("id"))))
        relations[name] = good
    return Work(
        DOI=doi,
        type=_text(item.get("type")),
        created=_date(item.get("created")),
        deposited=_date(item.get("deposited")),
        indexed=_date(item.get("indexed")),
        reference=references,
        relation=relations,
    )
