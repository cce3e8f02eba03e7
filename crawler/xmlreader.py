"""Crossref XML files -> `Work`s, streamed, for the same extraction code as the JSON path.

Reads deposit XML (`doi_batch`, schema 4.x and 5.x), UNIXREF (`doi_records`), UNIXSD
(`crossref_result` with `crm-item`s) and OAI-PMH `ListRecords` pages wrapping either. Elements
are matched by local name inside the Crossref namespaces (or none: UNIXREF has none), never by
prefix: the API writes the relations program with a default namespace, deposits with `rel:`.

Streaming: `iterparse` reports only the ends of work and record elements; each one is read,
then cleared, and the siblings before it (and before its ancestors) are deleted, so memory holds
one record at a time whatever the size of the file.

What a record is:
- in a deposit, every work element with its own `doi_data/doi` (an article, the journal and
  issue it sits in when they carry DOIs, its components, ...);
- in UNIXREF, UNIXSD and OAI-PMH, one `doi_record` (or UNIXSD `query` / `crossref_metadata`):
  the work whose DOI is the record's (the UNIXSD `doi`), else the last work to end in it - the
  article rather than its journal or issue, which only give context there.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, NamedTuple

from lxml import etree

from crawler.errors import UsageError
from crawler.model import DateField, Reference, RelationItem, Work

RELATIONS_NS = "http://www.crossref.org/relations.xsd"
_CROSSREF_NS = (
    "http://www.crossref.org/schema/",  # deposits, 4.x and 5.x
    "http://www.crossref.org/xschema/",  # UNIXREF inside UNIXSD
    "http://www.crossref.org/qrschema/",  # UNIXSD
)
_RELATION_TAGS = (f"{{{RELATIONS_NS}}}inter_work_relation", f"{{{RELATIONS_NS}}}intra_work_relation")

# Work elements (those that may carry their own doi_data) -> the API's type name; see _type.
_TYPES = {
    "journal_article": "journal-article",
    "journal_issue": "journal-issue",
    "journal_volume": "journal-volume",
    "journal_metadata": "journal",
    "conference_paper": "proceedings-article",
    "proceedings_metadata": "proceedings",
    "proceedings_series_metadata": "proceedings",  # its own doi_data is the volume's
    "posted_content": "posted-content",
    "peer_review": "peer-review",
    "dataset": "dataset",
    "database_metadata": "database",
    "report-paper_metadata": "report",
    "report-paper_series_metadata": "report",
    "dissertation": "dissertation",
    "standard_metadata": "standard",
    "component": "component",
    "book_metadata": "book",
    "book_series_metadata": "book",
    "book_set_metadata": "book",
    "content_item": "book-chapter",
    "series_metadata": "book-series",
    "set_metadata": "book-set",
}
_BOOK_TYPES = {"edited_book": "edited-book", "monograph": "monograph", "reference": "reference-book"}
_CONTENT_ITEMS = {
    "chapter": "book-chapter", "section": "book-section", "part": "book-part", "track": "book-track",
    "reference_entry": "reference-entry", "other": "other",
}
_SERIES = {"proceedings_series_metadata": "proceedings-series", "report-paper_series_metadata": "report-series"}
# Works that are records in themselves: one without a DOI is reported. The others (a journal,
# an issue, a book holding chapters) may go without one and are only reported when they
# carry references or relations that would be lost.
_DOI_REQUIRED = {"journal_article", "conference_paper", "posted_content", "peer_review", "dissertation",
                 "dataset", "component", "content_item", "standard_metadata"}
# Output formats: one record per outermost container (UNIXREF doi_record, UNIXSD query, ...).
_CONTAINERS = {"doi_record", "crossref", "query", "crossref_metadata"}
_TAGS = [f"{{*}}{name}" for name in (*_TYPES, *_CONTAINERS, "head")]

_ISO = re.compile(r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})")
_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")


class XmlProblem(NamedTuple):
    """A file that is not well-formed, or a record without a DOI; `line` when known."""

    path: Path
    line: int | None
    message: str


def iter_paths(paths: Iterable[Path]) -> Iterator[Path]:
    """The files named, and the `.xml` / `.xml.gz` files under the directories named, sorted."""
    seen: set[Path] = set()
    for path in paths:
        if not path.exists():
            raise UsageError(f"no such file or directory: {path}")
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith((".xml", ".xml.gz")))
        else:
            found = [path]
        for file in found:
            if file not in seen:
                seen.add(file)
                yield file


def read_works(path: Path) -> Iterator[Work | XmlProblem]:
    """Every record of one file as a `Work`, and its problems as `XmlProblem`s.

    A record without a DOI is reported and skipped; a malformed file is reported where it
    breaks and not read further (the records before it are kept).
    """
    line: int | None = None
    try:
        with _open(path) as handle:
            reader = _Reader(path)
            events = etree.iterparse(handle, events=("end",), tag=_TAGS, resolve_entities=False, no_network=True)
            for _, elem in events:
                line = elem.sourceline
                yield from reader.end(elem)
    except etree.XMLSyntaxError as exc:
        yield XmlProblem(path, exc.lineno, f"malformed XML, file not read further: {exc.msg}")
    except (OSError, EOFError, ValueError) as exc:  # gzip and zlib errors, unreadable files
        where = f" after line {line}" if line else ""
        yield XmlProblem(path, line, f"unreadable{where}, file not read further: {exc}")


def _open(path: Path) -> IO[bytes]:
    """The file's bytes, gunzipped when it starts with the gzip magic (whatever its name)."""
    with open(path, "rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def _split(tag: str) -> tuple[str, str]:
    if tag[0] == "{":
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return "", tag


def _crossref_name(elem: etree._Element) -> str | None:
    """The element's local name if it is in a Crossref namespace (or in none), else None."""
    tag = elem.tag
    if not isinstance(tag, str):
        return None
    ns, local = _split(tag)
    if ns and not ns.startswith(_CROSSREF_NS):
        return None
    return local


def _child(elem: etree._Element | None, name: str) -> etree._Element | None:
    if elem is not None:
        for child in elem:
            if _crossref_name(child) == name:
                return child
    return None


def _children(elem: etree._Element | None, name: str) -> Iterator[etree._Element]:
    if elem is not None:
        for child in elem:
            if _crossref_name(child) == name:
                yield child


def _text(elem: etree._Element | None) -> str | None:
    """All the text inside an element (tags of face markup dropped), or None when absent."""
    return None if elem is None else "".join(elem.itertext())


def kebab(name: str) -> str:
    """XML's camelCase relation names -> the JSON API's: isPreprintOf -> is-preprint-of."""
    return _CAMEL.sub(r"-\1", name.strip()).lower()


def iso_time(value: str | None) -> str | None:
    """A Crossref timestamp -> `YYYY-MM-DDTHH:MM:SSZ` (UTC assumed), or None when unreadable.

    Seen in real files: `2017-08-24T09:57:32Z`, `2011-04-17 18:30:15.0`, deposit timestamps
    `yyyyMMddHHmmss` followed by any number of fraction digits, a bare `yyyyMMdd`, and Unix
    seconds (`1515604387`) or milliseconds.
    """
    if not value:
        return None
    value = value.strip()
    moment: datetime | None = None
    match = _ISO.match(value)
    try:
        if match:
            moment = datetime(*map(int, match.groups()), tzinfo=UTC)
        elif value.isascii() and value.isdigit():
            moment = _calendar(value)
            if moment is None and 9 <= len(value) <= 13:
                seconds = int(value) / (1000 if len(value) >= 12 else 1)
                moment = datetime.fromtimestamp(seconds, UTC)
    except (ValueError, OverflowError, OSError):
        return None
    if moment is None or not 1900 <= moment.year <= 2200:
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _calendar(digits: str) -> datetime | None:
    """`yyyyMMddHHmmss…` or `yyyyMMdd` digits as a date, when they make one."""
    try:
        if len(digits) >= 14:
            moment = datetime.strptime(digits[:14], "%Y%m%d%H%M%S").replace(tzinfo=UTC)
        elif len(digits) == 8:
            moment = datetime.strptime(digits, "%Y%m%d").replace(tzinfo=UTC)
        else:
            return None
    except ValueError:
        return None
    return moment if 1900 <= moment.year <= 2200 else None


def _type(name: str, elem: etree._Element) -> str:
    """The REST API's type name for a work element, as the API derives it from the deposit.

    journal_article -> journal-article (journal_metadata -> journal, journal_issue ->
    journal-issue, journal_volume -> journal-volume); conference_paper -> proceedings-article
    (proceedings_metadata -> proceedings); posted_content -> posted-content; peer_review ->
    peer-review; dataset -> dataset (database_metadata -> database); report-paper_metadata ->
    report; dissertation; standard_metadata -> standard; component -> component.
    Books: book_metadata (or book_series_metadata / book_set_metadata, whose own doi_data is the
    volume's) by the book's book_type: edited_book -> edited-book, monograph, reference ->
    reference-book, anything else -> book; their series_metadata -> book-series (proceedings-series,
    report-series under those), set_metadata -> book-set. content_item by component_type:
    chapter -> book-chapter, section, part, track -> book-section/-part/-track, reference_entry ->
    reference-entry, other -> other; inside a report-paper it is a report-component.
    """
    parent = elem.getparent()
    parent_name = _crossref_name(parent) if parent is not None else None
    if name == "content_item":
        if parent_name == "report-paper":
            return "report-component"
        if parent_name == "standard":
            return "other"
        return _CONTENT_ITEMS.get(elem.get("component_type", "chapter"), "other")
    if name in ("book_metadata", "book_series_metadata", "book_set_metadata") and parent is not None:
        return _BOOK_TYPES.get(parent.get("book_type", ""), "book")
    if name == "series_metadata" and parent_name in _SERIES:
        return _SERIES[parent_name]
    return _TYPES[name]


class _Candidate(NamedTuple):
    work: Work
    stamp: str | None  # doi_data/timestamp as ISO


class _Reader:
    """The state of one file: the deposit's batch timestamp and the record being read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.batch_time: str | None = None
        self.candidates: list[_Candidate] = []
        self.reported = False  # a problem was reported inside the current output record

    def end(self, elem: etree._Element) -> Iterator[Work | XmlProblem]:
        name = _crossref_name(elem)
        if name is None:
            return
        if name == "head":
            self.batch_time = iso_time(_text(_child(elem, "timestamp")))
            return
        in_container, in_work = False, False
        for ancestor in elem.iterancestors():
            ancestor_name = _crossref_name(ancestor)
            in_container = in_container or ancestor_name in _CONTAINERS
            in_work = in_work or ancestor_name in _TYPES
        if name in _CONTAINERS:
            if not in_container:
                yield from self.record(elem, name)
                _release(elem)
            return
        candidate = self.work(elem, name, in_container)
        if isinstance(candidate, XmlProblem):
            self.reported = True
            yield candidate
        elif candidate is not None and in_container:
            self.candidates.append(candidate)
        elif candidate is not None:  # a deposit: every work is a record
            work = candidate.work
            when = candidate.stamp or self.batch_time
            yield work if when is None else _with(work, deposited=when)
        if in_container or in_work:
            elem.clear()  # its container (or the work around it) is released at its own end
        else:
            _release(elem)

    def work(self, elem: etree._Element, name: str, in_record: bool) -> _Candidate | XmlProblem | None:
        """A work element -> its DOI, type, references and relations.

        Without a DOI it is a problem when links are lost, or when it is a deposit's record
        (inside an output record, the record as a whole is checked at its end instead).
        """
        doi_data = _child(elem, "doi_data")
        doi = (_text(_child(doi_data, "doi")) or "").strip()
        references = [_reference(c) for c in _children(_child(elem, "citation_list"), "citation")]
        relations: dict[str, list[RelationItem]] = {}
        for rel in elem.iter(*_RELATION_TAGS):
            kind = rel.get("relationship-type")
            if kind:
                relations.setdefault(kebab(kind), []).append(RelationItem(rel.get("identifier-type"), _text(rel)))
        if not doi:
            if references or relations or (name in _DOI_REQUIRED and not in_record):
                return XmlProblem(self.path, elem.sourceline, f"a {name} without a DOI (doi_data/doi): skipped")
            return None
        work = Work(DOI=doi, type=_type(name, elem), reference=references, relation=relations or None)
        return _Candidate(work, iso_time(_text(_child(doi_data, "timestamp"))))

    def record(self, elem: etree._Element, name: str) -> Iterator[Work | XmlProblem]:
        """The end of an output record: pick its work and date it."""
        candidates, self.candidates = self.candidates, []
        reported, self.reported = self.reported, False
        if name == "query" and elem.get("status", "resolved") != "resolved":
            return  # an unresolved query result holds no record
        record_doi = (_text(_child(elem, "doi")) or "").strip()
        items = {c.get("name"): _text(c) for c in _children(elem, "crm-item")}
        chosen = next((c for c in candidates if c.work.DOI.lower() == record_doi.lower()), None)
        if chosen is None and candidates:
            chosen = candidates[-1]
        if chosen is None:
            if not record_doi:
                if not reported:  # already said which of its works had no DOI
                    yield XmlProblem(self.path, elem.sourceline, f"a {name} record without a DOI: skipped")
                return
            chosen = _Candidate(Work(DOI=record_doi, type=_xml_type(_child(elem, "doi"))), None)
        doi_record = elem if name == "doi_record" else _child(elem, "doi_record")
        deposited = (
            iso_time(items.get("last-update"))
            or (iso_time(doi_record.get("timestamp")) if doi_record is not None else None)
            or chosen.stamp
            or iso_time(items.get("deposit-timestamp"))
        )
        yield _with(chosen.work, deposited=deposited, created=iso_time(items.get("created")))


def _xml_type(doi: etree._Element | None) -> str | None:
    """UNIXSD's `<doi type="journal_article">` -> the API's name, for a record without a body."""
    kind = doi.get("type") if doi is not None else None
    return _TYPES.get(kind, kind.replace("_", "-")) if kind else None


def _with(work: Work, deposited: str | None = None, created: str | None = None) -> Work:
    return Work(
        DOI=work.DOI,
        type=work.type,
        created=DateField(created) if created else None,
        deposited=DateField(deposited) if deposited else None,
        reference=work.reference,
        relation=work.relation,
    )


def _reference(citation: etree._Element) -> Reference:
    """`<citation>` -> a reference: `<doi>` is the DOI, `<unstructured_citation>` the text."""
    return Reference(DOI=_text(_child(citation, "doi")), unstructured=_text(_child(citation, "unstructured_citation")))


def _release(elem: etree._Element) -> None:
    """Free a finished element, and everything before it and before its ancestors."""
    elem.clear()
    node: etree._Element | None = elem
    while node is not None:
        parent = node.getparent()
        if parent is not None:
            while node.getprevious() is not None:
                del parent[0]
        node = parent
