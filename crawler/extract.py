"""Work -> links: the rules of Event Data's crossref source, as pure functions.

Kept free of I/O so that the JSON and XML paths, the tests and the benchmarks share one truth.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from selectolax.lexbor import LexborHTMLParser

from crawler.model import Link, Work

_PREFIX = re.compile(r"^(?:https?://(?:dx\.)?doi\.org/|doi:)\s*", re.IGNORECASE)
_VALID = re.compile(r"10\.[0-9]{4,9}/\S+")
# A DOI inside free text: not glued to a preceding digit.
_IN_TEXT = re.compile(r"(?<![0-9])10\.[0-9]{4,9}/\S+")
# `<https://doi.org/10.1/x>`: a link in angle brackets is text, not a tag, for our purpose.
_BRACKETED_LINK = re.compile(r"<((?:https?:|doi:)[^<>\s]*)>", re.IGNORECASE)
_TRAILING = ".,;:"
_PAIRS = {")": "(", "]": "["}


def normalize_doi(raw: object) -> str | None:
    """A DOI field or relation id -> lower-cased DOI, or None when it is not a valid DOI."""
    if not isinstance(raw, str):
        return None
    doi = _PREFIX.sub("", raw.strip(), count=1).strip()
    if _VALID.fullmatch(doi) is None:
        return None
    return doi.lower()


def _is_closed(candidate: str) -> bool:
    """Does the final bracket of `candidate` have its opening partner inside it?"""
    closing = candidate[-1]
    opening = _PAIRS[closing]
    depth = 0
    for char in reversed(candidate):
        if char == closing:
            depth += 1
        elif char == opening:
            depth -= 1
            if depth == 0:
                return True
    return False


def _trim_mined(candidate: str) -> str:
    """Drop trailing punctuation and closing brackets that do not close anything in the DOI."""
    while candidate:
        last = candidate[-1]
        if last in _TRAILING or (last in _PAIRS and not _is_closed(candidate)):
            candidate = candidate[:-1]
        else:
            break
    return candidate


def plain_text(text: str) -> str:
    """Markup and HTML entities removed (tags vanish, nothing is put in their place).

    The fast path skips the parser for plain text; links in angle brackets are kept as text.
    """
    if "<" not in text and "&" not in text:
        return text
    return LexborHTMLParser(_BRACKETED_LINK.sub(r"\1", text)).text(separator="") or ""


def mine_doi(text: object) -> str | None:
    """The first valid DOI in free text (markup removed), lower-cased, or None."""
    if not isinstance(text, str) or "10" not in text:  # "10&#46;" still counts
        return None
    for match in _IN_TEXT.finditer(plain_text(text)):
        doi = _trim_mined(match.group())
        if _VALID.fullmatch(doi):
            return doi.lower()
    return None


def links(work: Work) -> Iterator[Link]:
    """Every candidate link of a work, before agency checks and de-duplication.

    A reference yields its DOI field when valid, else the first DOI mined from its
    unstructured text (marked `mined`: only Crossref objects become events then).
    Relations yield each entry whose id-type is doi.
    """
    for ref in work.reference or ():
        doi = normalize_doi(ref.DOI)
        if doi is not None:
            yield Link("references", doi, False)
            continue
        mined = mine_doi(ref.unstructured)
        if mined is not None:
            yield Link("references", mined, True)
    for name, items in (work.relation or {}).items():
        for item in items:
            if item.id_type is None or item.id_type.lower() != "doi":
                continue
            doi = normalize_doi(item.id)
            if doi is not None:
                yield Link(name, doi, False)


def unique_links(work: Work) -> list[Link]:
    """Links of one work keyed by (relation, object): self-links dropped, first occurrence kept.

    A structured occurrence of a key wins over a mined one, since it needs no agency check.
    """
    subject = work.DOI.strip().lower()
    chosen: dict[tuple[str, str], Link] = {}
    for link in links(work):
        if link.obj == subject:
            continue
        key = (link.relation, link.obj)
        previous = chosen.get(key)
        if previous is None or (previous.mined and not link.mined):
            chosen[key] = link
    return list(chosen.values())


def prefix_of(doi: str) -> str:
    return doi.split("/", 1)[0]
