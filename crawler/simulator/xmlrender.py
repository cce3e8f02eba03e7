"""The simulator's JSON works as one Crossref deposit (`doi_batch`, schema 5.4.0), so that the
XML path can be checked against the JSON path on the same corpus.

Every string goes in as text through lxml, which escapes it: an `unstructured` holding
`<i>Nature</i>` or `&amp;` reads back as exactly that string, as the JSON carries it. Each
work's `doi_data/timestamp` is its `deposited` date (else `created`), which is what the JSON
path takes for `occurred_at`. Containers (journal, book, proceedings, database) carry no DOI of
their own, so the deposit holds one record per JSON work and nothing else. The shapes follow
schema 5.x (element order, containers, `rel:` relations) but carry only what the crawler reads,
so the document is not meant to validate against the XSD.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from lxml import etree

SCHEMA_NS = "http://www.crossref.org/schema/5.4.0"
RELATIONS_NS = "http://www.crossref.org/relations.xsd"
_NSMAP = {None: SCHEMA_NS, "rel": RELATIONS_NS}
# Relations about the same work in another form are intra-work in the relations schema.
_INTRA = {
    "hasPreprint", "isPreprintOf", "isVersionOf", "hasVersion", "isIdenticalTo", "isSameAs",
    "isTranslationOf", "hasTranslation", "isManuscriptOf", "hasManuscript", "isReplacedBy", "replaces",
    "isExpressionOf", "hasExpression", "isManifestationOf", "hasManifestation",
    "isVariantFormOf", "isOriginalFormOf",
}


def camel(name: str) -> str:
    """The JSON API's kebab-case relation names -> XML's: has-preprint -> hasPreprint."""
    first, *rest = name.split("-")
    return first + "".join(part[:1].upper() + part[1:] for part in rest)


def _el(parent: etree._Element, name: str, text: str | None = None, ns: str = SCHEMA_NS, **attrs: str) -> etree._Element:
    elem = etree.SubElement(parent, f"{{{ns}}}{name}", attrs)
    if text is not None:
        elem.text = text
    return elem


def _stamp(work: dict) -> str:
    """`deposited` (else `created`) as a deposit timestamp, yyyyMMddHHmmss."""
    date_time = (work.get("deposited") or work["created"])["date-time"]
    return datetime.strptime(date_time, "%Y-%m-%dT%H:%M:%SZ").strftime("%Y%m%d%H%M%S")


def _title(work: dict) -> str:
    return (work.get("title") or ["Untitled"])[0]


def _year(work: dict) -> str:
    return str(work["created"]["date-parts"][0][0])


def _container(body: etree._Element, work: dict) -> etree._Element:
    """The element for the work itself, inside whatever container its type needs."""
    kind = work.get("type") or "journal-article"
    journal = (work.get("container-title") or ["Journal"])[0]
    if kind == "journal-article":
        parent = _el(body, "journal")
        metadata = _el(parent, "journal_metadata", language="en")
        _el(metadata, "full_title", journal)
        return _el(parent, "journal_article", publication_type="full_text")
    if kind in ("book-chapter", "book"):
        book = _el(body, "book", book_type="edited_book" if kind == "book-chapter" else "other")
        if kind == "book":
            return _el(book, "book_metadata", language="en")
        metadata = _el(book, "book_metadata", language="en")
        _el(_el(metadata, "titles"), "title", journal)
        _el(_el(metadata, "publication_date", media_type="print"), "year", _year(work))
        _el(metadata, "noisbn", reason="simple_series")
        _el(_el(metadata, "publisher"), "publisher_name", work.get("publisher", "Publisher"))
        return _el(book, "content_item", component_type="chapter")
    if kind == "proceedings-article":
        conference = _el(body, "conference")
        _el(_el(conference, "event_metadata"), "conference_name", journal)
        metadata = _el(conference, "proceedings_metadata", language="en")
        _el(metadata, "proceedings_title", journal)
        _el(_el(metadata, "publisher"), "publisher_name", work.get("publisher", "Publisher"))
        _el(_el(metadata, "publication_date"), "year", _year(work))
        _el(metadata, "noisbn", reason="simple_series")
        return _el(conference, "conference_paper")
    if kind == "posted-content":
        return _el(body, "posted_content", type="preprint")
    if kind == "peer-review":
        return _el(body, "peer_review", type="referee-report", stage="pre-publication")
    if kind == "dataset":
        database = _el(body, "database")
        _el(_el(_el(database, "database_metadata", language="en"), "titles"), "title", journal)
        return _el(database, "dataset", dataset_type="record")
    if kind == "report":
        return _el(_el(body, "report-paper"), "report-paper_metadata", language="en")
    if kind == "dissertation":
        return _el(body, "dissertation", language="en")
    if kind == "standard":
        return _el(_el(body, "standard"), "standard_metadata")
    if kind == "component":
        parent_doi = f"{work['DOI'].split('/')[0]}/parent.{work['DOI'].rsplit('.', 1)[-1]}"
        components = _el(_el(body, "sa_component", parent_doi=parent_doi), "component_list")
        return _el(components, "component", parent_relation="isPartOf")
    raise ValueError(f"no deposit shape for type {kind!r}")


def _work(body: etree._Element, work: dict) -> None:
    elem = _container(body, work)
    _el(_el(elem, "titles"), "title", _title(work))
    relations = [(name, item) for name, items in (work.get("relation") or {}).items() for item in items]
    if relations:
        program = _el(elem, "program", ns=RELATIONS_NS)
        for name, item in relations:
            related = _el(program, "related_item", ns=RELATIONS_NS)
            xml_name = camel(name)
            kind = "intra_work_relation" if xml_name in _INTRA else "inter_work_relation"
            attrs = {"relationship-type": xml_name, "identifier-type": (item.get("id-type") or "other").lower()}
            rel = etree.SubElement(related, f"{{{RELATIONS_NS}}}{kind}", attrs)
            rel.text = item.get("id", "")
    doi_data = _el(elem, "doi_data")
    _el(doi_data, "doi", work["DOI"])
    _el(doi_data, "timestamp", _stamp(work))
    _el(doi_data, "resource", work.get("URL") or f"https://example.org/{work['DOI']}")
    references = work.get("reference") or []
    if references:
        citations = _el(elem, "citation_list")
        for n, ref in enumerate(references, 1):
            citation = _el(citations, "citation", key=ref.get("key") or f"ref{n}")
            if "DOI" in ref:
                doi = _el(citation, "doi", ref["DOI"])
                if ref.get("doi-asserted-by"):
                    doi.set("provider", ref["doi-asserted-by"])
            if "unstructured" in ref:
                _el(citation, "unstructured_citation", ref["unstructured"])


def render_deposit(works: Iterable[dict], batch_id: str = "simulated-batch") -> bytes:
    """A `doi_batch` document holding every work, UTF-8 encoded with an XML declaration."""
    works = list(works)
    root = etree.Element(f"{{{SCHEMA_NS}}}doi_batch", nsmap=_NSMAP, version="5.4.0")
    head = _el(root, "head")
    _el(head, "doi_batch_id", batch_id)
    _el(head, "timestamp", max((_stamp(w) for w in works), default="20250101000000"))
    depositor = _el(head, "depositor")
    _el(depositor, "depositor_name", "Simulated Publishing")
    _el(depositor, "email_address", "deposits@example.org")
    _el(head, "registrant", "Simulated Publishing")
    body = _el(root, "body")
    for work in works:
        _work(body, work)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
