"""Work -> links: the rules of Event Data's crossref source, as pure functions.

Kept free of I/O so that the JSON and XML paths, the tests and the benchmarks share one truth.
"""

from __future__ import annotations

import html
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


# A start or end tag with a name, no `<` or `>` inside; and the names whose parsing can change
# what the text is (raw text, foster parenting, dropped newlines, foreign content, the document's
# frame): those go to the HTML parser.
_TAG = re.compile(r"</?([A-Za-z][^\s/<>]*)[^<>]*>")
_HTML_SPACE = " \t\n\x0c\r"
_SPECIAL = frozenset(
    "script style textarea title xmp plaintext noscript noembed noframes iframe template svg math pre listing "
    "table tbody thead tfoot tr td th caption colgroup col html head body frameset frame select option "
    "optgroup image form".split()
)


def plain_text(text: str) -> str:
    """Markup and HTML entities removed (tags vanish, nothing is put in their place).

    The fast path skips the parser for plain text; links in angle brackets are kept as text.
    Text with entities and simple tags only (a name, attributes with balanced quotes), as in
    nearly every reference, is stripped by a regex and unescaped, which reads as the parser
    does at a tenth of its cost; anything else goes through the HTML parser.
    """
    if "<" not in text and "&" not in text:
        return text
    text = _BRACKETED_LINK.sub(r"\1", text)
    if "\r" not in text and "\0" not in text:
        start = len(text)  # of the first start tag (`</br>` is one too)
        for match in _TAG.finditer(text):
            tag, name = match.group(), match.group(1).lower()
            if name in _SPECIAL or tag.count('"') % 2 or tag.count("'") % 2:
                break
            if start == len(text) and (tag[1] != "/" or name == "br"):
                start = match.start()
        else:
            head, rest = _TAG.sub("", text[:start]), _TAG.sub("", text[start:])
            if "<" not in head and "<" not in rest:
                # the parser drops the whitespace before the first start tag or character
                return html.unescape(head).lstrip(_HTML_SPACE) + html.unescape(rest)
    return LexborHTMLParser(text).text(separator="") or ""


def mine_doi(text: object) -> str | None:
    """The first valid DOI in free text (markup removed), lower-cased, or None."""
    if not isinstance(text, str) or "10" not in text:  # "10&#46;" still counts
        return None
    if "10." not in text and "<" not in text and "&" not in text:
        return None  # only markup can hide a DOI's "10." ("10<i>.</i>", "10&#46;")
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


# The batch form of `normalize_doi` for one line of text each: a valid DOI (group 1) or nothing.
_LINES = re.compile(
    r"^[^\S\n]*(?:(?:https?://(?:dx\.)?doi\.org/|doi:)[^\S\n]*)?(10\.[0-9]{4,9}/[^\s]+)[^\S\n]*$|^.*$",
    re.MULTILINE,
)


def normalize_many(values: list[str | None]) -> list[str | None]:
    """`normalize_doi` of each value, in a few C-speed passes over the joined values.

    Reference lists hold dozens to thousands of DOI fields; one regex pass over all of them
    costs a fraction of one call per field. Values that could break the line framing (a
    newline inside) take the per-value path.
    """
    texts = [v if isinstance(v, str) else "" for v in values]
    joined = "\n".join(texts)
    if joined.count("\n") != len(texts) - 1:
        return [normalize_doi(v) for v in values]
    found = _LINES.findall(joined.lower())
    if len(found) != len(texts):  # lower() made a line break of something: be exact instead
        return [normalize_doi(v) for v in values]
    return [doi or None for doi in found]


# Every byte that `str.split()` (and the regexes' \\s) counts as whitespace in ASCII text, but "\\n".
_ASCII_SPACES = " \t\r\x0b\x0c\x1c\x1d\x1e\x1f"
# A line that starts like a DOI: its prefix and the slash.
_LINE_HEAD = re.compile(r"\n(10\.[0-9]{4,9})/")


def _bare_lines(fields: list[str]) -> tuple[list[str], set[str]] | None:
    """The fields lower-cased, and their prefixes, when every non-empty one is a bare DOI.

    A handful of C-speed passes over the joined fields decide it, which is the usual case of
    a whole page; anything else (spaces, `doi:` or URL forms, non-ASCII, a field that ends in
    a slash) returns None and is left to the exact rules.
    """
    low = "\n".join(fields).lower()
    if not low.isascii() or any(space in low for space in _ASCII_SPACES) or "/\n" in low or low.endswith("/"):
        return None
    lines = low.split("\n")
    if len(lines) != len(fields):
        return None  # a field held a line break
    heads = _LINE_HEAD.findall("\n" + low)
    if len(heads) != len(fields) - lines.count(""):
        return None
    return lines, set(heads)


def _reference_objects(fields: list[str]) -> list[str]:
    """`normalize_doi` of each field ("" for none)."""
    bare = _bare_lines(fields)
    if bare is not None:
        return bare[0]
    return [doi or "" for doi in normalize_many(fields)]


# The prefix of each object, one per line: objects are valid DOIs, never holding white space.
_PREFIXES = re.compile(r"^([^/\n]*)/", re.MULTILINE)


def page_links(works: list[Work]) -> tuple[list[dict[tuple[str, bool], list[str]]], set[str]]:
    """`grouped_links` of every work of a page, and the DOI prefixes of all their objects.

    The fast path of the parsers: the references of the whole page are normalized together,
    then cut back into works. A work whose fields are not all bare DOIs is normalized on its own
    by the exact rules, so one odd field costs its work, not the page.
    """
    refs = [work.reference or () for work in works]
    fields = [ref.DOI or "" for work_refs in refs for ref in work_refs]
    bare = _bare_lines(fields)
    lines = bare[0] if bare is not None else None
    result = []
    start = 0
    for work, work_refs in zip(works, refs):
        subject = work.DOI.strip().lower()
        groups: dict[tuple[str, bool], dict[str, None]] = {}
        if work_refs:
            end = start + len(work_refs)
            if lines is not None:
                found = lines[start:end]
            else:
                found = _reference_objects(fields[start:end])
            start = end
            if "" in found:
                mined = dict.fromkeys(
                    m for ref, obj in zip(work_refs, found) if not obj and ref.unstructured
                    and (m := mine_doi(ref.unstructured))
                )
                if mined:
                    groups[("references", True)] = mined
                objs = dict.fromkeys(filter(None, found))
            else:
                objs = dict.fromkeys(found)
            if objs:
                groups[("references", False)] = objs
        if work.relation:
            for name, items in work.relation.items():
                for item in items:
                    if item.id_type is not None and item.id_type.lower() == "doi":
                        doi = normalize_doi(item.id)
                        if doi is not None:
                            groups.setdefault((name, False), {})[doi] = None
        structured = groups.get(("references", False), {})
        mined = groups.get(("references", True))
        if mined:
            for obj in [obj for obj in mined if obj in structured]:
                del mined[obj]  # a structured occurrence wins: it needs no agency check
        work_groups = {}
        for key, objs in groups.items():
            if subject in objs:
                del objs[subject]  # a work linking to itself emits nothing
            if objs:
                work_groups[key] = list(objs)
        result.append(work_groups)
    # One C-speed pass over the objects kept (a self-link's prefix is not wanted).
    prefixes = set(_PREFIXES.findall("\n".join([obj for groups in result for objs in groups.values() for obj in objs])))
    return result, prefixes


def grouped_links(work: Work) -> dict[tuple[str, bool], list[str]]:
    """`unique_links` of a work as {(relation, mined): [object, …]}, without a Link per link."""
    return page_links([work])[0][0]


def unique_links(work: Work) -> list[Link]:
    """Links of one work keyed by (relation, object): self-links dropped, each key once.

    A structured occurrence of a key wins over a mined one, since it needs no agency check.
    """
    return [Link(relation, obj, mined) for (relation, mined), objs in grouped_links(work).items() for obj in objs]


def prefix_of(doi: str) -> str:
    return doi.split("/", 1)[0]
