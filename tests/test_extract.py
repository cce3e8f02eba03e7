"""Extraction rules (crawler.extract) and page decoding (crawler.decode), checked against the
rules of the issue, not against what the code happens to do:

1. subject = the work's DOI lower-cased.
2. reference[]: object = the reference's `DOI` field when it is a valid DOI; otherwise the first
   valid DOI in its `unstructured` text once markup and HTML entities are removed, marked
   mined=True. Relation type `references`.
3. relation{}: every entry whose id-type is doi (any case); object = its id with any
   https://doi.org/, http://dx.doi.org/ or doi: prefix removed; relation type = the name as given.
4. Valid DOI: after trimming and prefix removal, `10.<4-9 digits>/<one or more non-space chars>`.
   A DOI mined from text loses trailing . , ; : and a closing ) or ] with no opening partner.
5. Keys lower-cased; a work linking to itself emits nothing; the same (relation, object) once.

Expectations are hand-checked against the recorded samples in tests/data/crossref, or
computed by `expected_links`, a separate plain re-implementation of the rules (json + re +
html.unescape) that never calls crawler.extract.

Several hand-written cases (markup inside a DOI, links in angle brackets, non-ASCII digits,
bracket pairing, entity-encoded dots) were found when the code disagreed with the rules; the
code was fixed and the cases stay as regressions.
"""

from __future__ import annotations

import html
import json
import re
from collections import Counter
from functools import lru_cache

import msgspec
import pytest

from crawler import decode
from crawler.decode import BadPage, parse_page
from crawler.extract import links, mine_doi, normalize_doi, prefix_of, unique_links
from crawler.keys import link_hash, subject_hash
from crawler.model import Link, Problem, Work
from tests.samples import sample_bytes

# --------------------------------------------------------------------------------------------
# Samples



LIST_FILES = [
    "works-list-heavy-100.json",
    "member-works-cursor-page-0.json",
    "member-works-cursor-page-1.json",
    "member-works-cursor-page-2.json",
    "works-2018-related.json",
    *(f"works-cursor-page-{i}.json" for i in range(5)),
]
SINGLE_FILES = [
    *(f"work-single-{i}.json" for i in range(5)),
    "work-2025-biorxiv.json",
    "work-2025-f1000.json",
    "work-2025-jmir-journal.json",
    "work-2025-preprintsorg-title-containing-encoded-html.json",
    "work-2025-scielo-journal.json",
    "work-2025-ssrn-encoded-html.json",
]


@lru_cache(maxsize=None)
def raw(name: str) -> bytes:
    return sample_bytes(f"rest-api/{name}")


@lru_cache(maxsize=None)
def doc(name: str) -> dict:
    return json.loads(raw(name))


def items_of(name: str) -> list[dict]:
    message = doc(name)["message"]
    return message["items"] if "items" in message else [message]


def item(name: str, doi: str) -> dict:
    found = [it for it in items_of(name) if it["DOI"] == doi]
    assert len(found) == 1, f"{doi} not (uniquely) in {name}"
    return found[0]


def reference(name: str, doi: str, key: str) -> dict:
    found = [r for r in item(name, doi).get("reference") or [] if r.get("key") == key]
    assert len(found) == 1, f"reference {key} not (uniquely) in {doi}"
    return found[0]


def work(d: dict) -> Work:
    return msgspec.convert(d, Work)


def got(d: dict) -> set[tuple[str, str, bool]]:
    """unique_links of an API item as plain tuples; also checks it has no repeated key."""
    found = unique_links(work(d))
    keys = [(link.relation, link.obj) for link in found]
    assert len(keys) == len(set(keys)), f"repeated keys in {keys}"
    return {tuple(link) for link in found}


# --------------------------------------------------------------------------------------------
# An independent, deliberately plain implementation of the rules (no crawler.extract).

_ORACLE_PREFIX = re.compile(r"^(?:https://doi\.org/|http://dx\.doi\.org/|doi:)", re.IGNORECASE)
_ORACLE_VALID = re.compile(r"10\.[0-9]{4,9}/\S+")
# Real tags only: a name of letters, digits, ':', '-', '_' (jats:italic, ext-link, mml:mi, sup),
# then attributes or '/' or '>'. `<https://doi.org/...>` and `<www.x.com>` are not tags.
_ORACLE_TAG = re.compile(r"</?[A-Za-z][\w:-]*(?:\s[^<>]*)?/?>")


def oracle_doi(value) -> str | None:
    if not isinstance(value, str):
        return None
    value = _ORACLE_PREFIX.sub("", value.strip()).strip()
    return value.lower() if _ORACLE_VALID.fullmatch(value) else None


def _closes_nothing(text: str) -> bool:
    """Is the last character a ) or ] without an opening partner earlier in `text`?"""
    close = text[-1]
    opening = {")": "(", "]": "["}[close]
    depth = 0
    for ch in text[:-1]:
        if ch == opening:
            depth += 1
        elif ch == close and depth:
            depth -= 1
    return depth == 0


def oracle_trim(candidate: str) -> str:
    while candidate:
        if candidate[-1] in ".,;:":
            candidate = candidate[:-1]
        elif candidate[-1] in ")]" and _closes_nothing(candidate):
            candidate = candidate[:-1]
        else:
            break
    return candidate


def oracle_mine(text) -> str | None:
    if not isinstance(text, str):
        return None
    plain = html.unescape(_ORACLE_TAG.sub("", text))
    for match in re.finditer(r"10\.[0-9]{4,9}/\S+", plain):
        candidate = oracle_trim(match.group())
        if _ORACLE_VALID.fullmatch(candidate):
            return candidate.lower()
    return None


def expected_links(d: dict) -> set[tuple[str, str, bool]]:
    subject = d["DOI"].lower()
    chosen: dict[tuple[str, str], bool] = {}

    def add(relation: str, obj: str, mined: bool) -> None:
        if obj == subject:
            return
        key = (relation, obj)
        chosen[key] = chosen.get(key, True) and mined  # structured wins over mined

    for ref in d.get("reference") or []:
        obj = oracle_doi(ref.get("DOI"))
        if obj is not None:
            add("references", obj, False)
        else:
            obj = oracle_mine(ref.get("unstructured"))
            if obj is not None:
                add("references", obj, True)
    for name, entries in (d.get("relation") or {}).items():
        for entry in entries:
            if str(entry.get("id-type", "")).lower() == "doi":
                obj = oracle_doi(entry.get("id"))
                if obj is not None:
                    add(name, obj, False)
    return {(rel, obj, mined) for (rel, obj), mined in chosen.items()}


def test_oracle_sanity():
    """The independent implementation itself follows the rules on the brief's examples."""
    assert oracle_mine("(doi:10.1016/0021-9991(83)90001-4).") == "10.1016/0021-9991(83)90001-4"
    assert oracle_mine("[10.1234/abc]") == "10.1234/abc"
    assert oracle_mine("10.1234/a)b)") == "10.1234/a)b"
    assert oracle_mine("10.1234/a&amp;b") == "10.1234/a&b"
    assert oracle_mine('<ext-link xlink:href="https://doi.org/10.5555/X">10.5555/X</ext-link>') == "10.5555/x"
    assert oracle_doi("DOI: 10.1234/ABC") == "10.1234/abc"
    assert oracle_doi("10.123/abc") is None


# --------------------------------------------------------------------------------------------
# normalize_doi (rule 4, structured fields)


@pytest.mark.parametrize(
    "raw_value, expected",
    [
        ("10.1234/abc", "10.1234/abc"),
        ("10.1234/ABC", "10.1234/abc"),
        ("https://doi.org/10.1234/ABC", "10.1234/abc"),
        ("http://dx.doi.org/10.1234/abc", "10.1234/abc"),
        ("doi:10.1234/abc", "10.1234/abc"),
        ("DOI:10.1234/abc", "10.1234/abc"),
        ("DOI: 10.1234/abc", "10.1234/abc"),
        ("  10.1234/abc\n", "10.1234/abc"),
        (" https://doi.org/10.5555/X ", "10.5555/x"),
        # registrant code: 4 to 9 digits
        ("10.1234/x", "10.1234/x"),
        ("10.123456789/x", "10.123456789/x"),
        ("10.123/abc", None),
        ("10.1234567890/abc", None),
        # whitespace inside is not a DOI (the `10.1126/science. 1109070` shape)
        ("10.1126/science. 1109070", None),
        ("10.1234/a b", None),
        ("10.1234/a\tb", None),
        ("10.1234/a\u00a0b", None),
        # not a DOI at all
        ("10.1234/", None),
        ("10.1234", None),
        ("11.1234/abc", None),
        ("10.abcd/x", None),
        ("", None),
        ("   ", None),
        ("doi.org/10.1234/x", None),  # not one of the prefixes the rule removes
        # SICI DOIs are valid as they are (real shapes from the samples)
        (
            "10.1002/(SICI)1097-0142(19970315)79:6<1138::AID-CNCR12>3.0.CO;2-0",
            "10.1002/(sici)1097-0142(19970315)79:6<1138::aid-cncr12>3.0.co;2-0",
        ),
        ("10.1175/1520-0493(1996)124<1256:DAUIAU>2.0.CO;2", "10.1175/1520-0493(1996)124<1256:dauiau>2.0.co;2"),
        ("10.1061/(ASCE)0733-9399(1997)123:9(897)", "10.1061/(asce)0733-9399(1997)123:9(897)"),
        ("10.1002/1097-0142(196509)18:9<1145::AID-CNCR2820180915>3.0.CO;2-#",
         "10.1002/1097-0142(196509)18:9<1145::aid-cncr2820180915>3.0.co;2-#"),
        # trailing punctuation is only trimmed from mined DOIs, never from a DOI field
        ("10.1234/abc.", "10.1234/abc."),
        ("10.1234/abc)", "10.1234/abc)"),
        # non-ASCII suffixes are non-space characters: valid, lower-cased
        ("10.1234/ÄBC-Ωmega", "10.1234/äbc-ωmega"),
        # non-strings
        (None, None),
        (12, None),
        (10.1234, None),
        (["10.1234/a"], None),
        ({"DOI": "10.1234/a"}, None),
        (b"10.1234/a", None),
    ],
)
def test_normalize_doi(raw_value, expected):
    assert normalize_doi(raw_value) == expected


@pytest.mark.parametrize("raw_value", ["10.１２３４/abc", "10.١٢٣٤/abc"])
def test_normalize_doi_rejects_non_ascii_digits(raw_value):
    assert normalize_doi(raw_value) is None


def test_prefix_of():
    assert prefix_of("10.1234/abc/def") == "10.1234"
    assert prefix_of("10.1002/(sici)1097-0142") == "10.1002"


# --------------------------------------------------------------------------------------------
# mine_doi (rules 2 and 4, unstructured text)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("(doi:10.1016/0021-9991(83)90001-4).", "10.1016/0021-9991(83)90001-4"),
        ("[10.1234/abc]", "10.1234/abc"),
        ("10.1234/a)b)", "10.1234/a)b"),  # only the unmatched ) at the very end goes
        ("see 10.1234/a)b).", "10.1234/a)b"),
        ("(10.1234/(x))", "10.1234/(x)"),  # the inner ) is matched: kept
        ("[10.1234/x[1]]", "10.1234/x[1]"),
        ("10.1234/x]).", "10.1234/x"),
        ("10.1234/abc.,;:", "10.1234/abc"),
        ("Smith J. A paper. Journal 2020;1:2. doi: 10.1234/ABC.", "10.1234/abc"),
        ("https://doi.org/10.1234/ABC;", "10.1234/abc"),
        ("http://dx.doi.org/10.1234/abc, 2019", "10.1234/abc"),
        # the first valid one
        ("a 10.1234/first; b 10.5678/second", "10.1234/first"),
        ("bad 10.123/short then 10.1234/good", "10.1234/good"),
        ("10.1234/. then 10.5678/y", "10.5678/y"),  # 10.1234/ is not valid once trimmed
        # markup and entities removed first
        (
            '<ext-link ext-link-type="doi" xlink:href="https://doi.org/10.5555/X">10.5555/X</ext-link>',
            "10.5555/x",
        ),
        ("Title. <jats:italic>J</jats:italic> 2019. doi:10.5555/ABC", "10.5555/abc"),
        ("10.1234/a&amp;b", "10.1234/a&b"),
        ("Smith &amp; Jones (2001) doi:10.1234/ABC", "10.1234/abc"),
        ("doi:10.1234/x&#46;", "10.1234/x"),  # the entity is a '.', then trimmed
        ("doi:10.1234/abc&nbsp;2019", "10.1234/abc"),  # &nbsp; is a space
        ("p &lt; 0.05; doi:10.1234/abc", "10.1234/abc"),
        # non-ASCII text and suffix
        ("Müller J. Über Tiere. doi:10.1234/ÄÖ.", "10.1234/äö"),
        # nothing there
        ("no doi here", None),
        ("arXiv:1410.8516 (2014)", None),
        ("10.1234", None),
        ("", None),
        (None, None),
        (12, None),
        (["10.1234/abc"], None),
    ],
)
def test_mine_doi(text, expected):
    assert mine_doi(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("doi:10.1234/<i>abc</i>", "10.1234/abc"),
        ("doi:<i>10.1234</i>/abc", "10.1234/abc"),
    ],
)
def test_mine_doi_markup_inside_a_doi(text, expected):
    assert mine_doi(text) == expected


@pytest.mark.parametrize(
    "text",
    ["Report; 2014. <https://doi.org/10.1234/abc>.", "Dataset. <http://dx.doi.org/10.1234/ABC>"],
)
def test_mine_doi_in_angle_bracketed_url(text):
    assert mine_doi(text) == "10.1234/abc"


def test_mine_doi_entity_encoded_dot():
    assert mine_doi("doi:10&#46;1234/abc") == "10.1234/abc"


def test_mine_doi_closing_bracket_with_partner_after_a_stray_one():
    assert mine_doi("10.1234/a)(b)") == "10.1234/a)(b)"


@pytest.mark.parametrize("tag", ["title", "style"])
def test_mine_doi_keeps_text_of_head_elements(tag):
    assert mine_doi(f"<{tag}>doi:10.1234/x</{tag}> rest") == "10.1234/x"


def test_mine_doi_rejects_non_ascii_digits():
    assert mine_doi("doi:10.١٢٣٤/abc") is None


# --------------------------------------------------------------------------------------------
# links / unique_links on hand-written works


def W(doi="10.9999/SUBJ", reference=None, relation=None) -> dict:
    d: dict = {"DOI": doi}
    if reference is not None:
        d["reference"] = reference
    if relation is not None:
        d["relation"] = relation
    return d


def test_reference_doi_field_is_lower_cased_and_not_mined():
    assert got(W(reference=[{"DOI": "10.1007/BF01985757"}])) == {("references", "10.1007/bf01985757", False)}


def test_reference_doi_field_with_prefix():
    refs = [{"DOI": "https://doi.org/10.5555/A"}, {"DOI": "doi:10.5555/B"}, {"DOI": "http://dx.doi.org/10.5555/C"}]
    assert got(W(reference=refs)) == {
        ("references", "10.5555/a", False),
        ("references", "10.5555/b", False),
        ("references", "10.5555/c", False),
    }


def test_valid_doi_field_wins_over_unstructured():
    ref = {"DOI": "10.5555/FIELD", "unstructured": "Other. doi:10.5555/TEXT"}
    assert got(W(reference=[ref])) == {("references", "10.5555/field", False)}


def test_unstructured_only_reference_is_mined():
    ref = {"key": "r1", "unstructured": "Author A. Title. J 2001;1:1. https://doi.org/10.5555/ABC."}
    assert got(W(reference=[ref])) == {("references", "10.5555/abc", True)}


def test_broken_doi_field_falls_back_to_unstructured():
    """`10.1126/science. 1109070` is not a valid DOI (space); rule 2 then mines the text."""
    ref = {
        "DOI": "10.1126/science. 1109070",
        "unstructured": "Kerr JB. Science 308, 1437 (2005). doi:10.1126/science.1109070",
    }
    assert got(W(reference=[ref])) == {("references", "10.1126/science.1109070", True)}


def test_broken_doi_field_without_unstructured_gives_nothing():
    assert got(W(reference=[{"DOI": "10.1126/science. 1109070"}, {"DOI": "10.123/short"}])) == set()


def test_reference_with_neither_gives_nothing():
    refs = [{"key": "k", "author": "X", "year": "2001"}, {"unstructured": "No DOI, 2010."}, {}]
    assert got(W(reference=refs)) == set()


def test_no_references_or_relations():
    assert got(W()) == set()
    assert got(W(reference=[], relation={})) == set()
    assert got(W(relation={"cites": []})) == set()
    assert list(links(work(W(relation={"cites": []})))) == []


def test_relation_doi_entries():
    relation = {
        "is-review-of": [{"id-type": "doi", "id": "10.1002/JTS5.90", "asserted-by": "subject"}],
        "has-preprint": [{"id-type": "DOI", "id": "https://doi.org/10.1101/2020.06.17.20133843"}],
        "isPreprintOf": [{"id-type": "Doi", "id": "http://dx.doi.org/10.5555/Pub"}],
        "has-version": [{"id-type": "doi", "id": "doi:10.12688/F1000RESEARCH.161261.1"}],
    }
    assert got(W(relation=relation)) == {
        ("is-review-of", "10.1002/jts5.90", False),
        ("has-preprint", "10.1101/2020.06.17.20133843", False),
        ("isPreprintOf", "10.5555/pub", False),  # the name as given, not normalised
        ("has-version", "10.12688/f1000research.161261.1", False),
    }


def test_relation_non_doi_id_types_are_ignored():
    relation = {
        "is-supplemented-by": [
            {"id-type": "uri", "id": "https://doi.org/10.5555/uri"},
            {"id-type": "arxiv", "id": "10.5555/arxiv"},
            {"id-type": "issn", "id": "1234-5678"},
            {"id": "10.5555/no-type"},
            {"id-type": "doi", "id": "10.5555/KEEP"},
            {"id-type": "doi", "id": "10.123/bad"},
            {"id-type": "doi"},
        ],
    }
    assert got(W(relation=relation)) == {("is-supplemented-by", "10.5555/keep", False)}


def test_relation_entries_are_not_mined_from_text():
    relation = {"references": [{"id-type": "doi", "id": "see doi:10.5555/x"}]}
    assert got(W(relation=relation)) == set()


def test_self_links_are_dropped():
    d = W(
        doi="10.9999/Self",
        reference=[
            {"DOI": "10.9999/SELF"},
            {"unstructured": "doi:10.9999/self."},
            {"DOI": "10.9999/other"},
        ],
        relation={
            "is-version-of": [{"id-type": "doi", "id": "https://doi.org/10.9999/SELF"}],
            "has-version": [{"id-type": "doi", "id": "10.9999/self.v2"}],
        },
    )
    assert got(d) == {("references", "10.9999/other", False), ("has-version", "10.9999/self.v2", False)}


def test_same_key_twice_is_emitted_once():
    d = W(
        reference=[{"DOI": "10.5555/ABC"}, {"DOI": "10.5555/abc"}, {"DOI": "https://doi.org/10.5555/Abc"}],
        relation={
            "has-review": [
                {"id-type": "doi", "id": "10.5555/R"},
                {"id-type": "DOI", "id": "doi:10.5555/r"},
            ],
            "references": [{"id-type": "doi", "id": "10.5555/abc"}],
        },
    )
    found = unique_links(work(d))
    assert sorted((link.relation, link.obj) for link in found) == [
        ("has-review", "10.5555/r"),
        ("references", "10.5555/abc"),
    ]
    assert len(list(links(work(d)))) == 6  # links() is before de-duplication


def test_same_relation_different_objects_and_same_object_different_relations():
    d = W(
        reference=[{"DOI": "10.5555/a"}],
        relation={"is-version-of": [{"id-type": "doi", "id": "10.5555/a"}]},
    )
    assert got(d) == {("references", "10.5555/a", False), ("is-version-of", "10.5555/a", False)}


def test_same_object_mined_and_in_a_doi_field_is_one_structured_link():
    """The object has a valid DOI field in one reference, so it needs no mining (rule 2, first branch)."""
    for refs in (
        [{"unstructured": "doi:10.5555/X"}, {"DOI": "10.5555/x"}],
        [{"DOI": "10.5555/x"}, {"unstructured": "doi:10.5555/X"}],
    ):
        assert got(W(reference=refs)) == {("references", "10.5555/x", False)}


def test_subject_is_lower_cased_for_the_self_check():
    d = W(doi="10.1061/(ASCE)AS.1943-5525.0000822", reference=[{"DOI": "10.1061/(asce)as.1943-5525.0000822"}])
    assert got(d) == set()


def test_links_yield_link_tuples():
    found = list(links(work(W(reference=[{"DOI": "10.5555/A"}, {"unstructured": "10.5555/B"}]))))
    assert found == [Link("references", "10.5555/a", False), Link("references", "10.5555/b", True)]


# --------------------------------------------------------------------------------------------
# Real samples: specific, hand-checked cases


def test_sample_upper_case_reference_dois_work_single_3():
    """work-single-3 (10.1109/icdcsw.2003.1203662): 13 references, 3 with a DOI field, all in
    upper case (ref10, ref3, ref2); the others have no DOI and no unstructured text."""
    d = items_of("work-single-3.json")[0]
    assert d["DOI"] == "10.1109/icdcsw.2003.1203662"
    assert got(d) == {
        ("references", "10.1109/wsc.1996.873340", False),
        ("references", "10.1109/infcom.2001.916251", False),
        ("references", "10.1007/bf01985757", False),
    }


def test_sample_work_single_0_has_review_relation():
    """10.1016/j.neurobiolaging.2010.03.024: 57 references, 55 with distinct DOI fields, 2 without
    DOI or unstructured; relation has-review -> 10.3410/f.3904957.3650055 (asserted-by object)."""
    d = items_of("work-single-0.json")[0]
    found = got(d)
    assert ("has-review", "10.3410/f.3904957.3650055", False) in found
    assert Counter(rel for rel, _, _ in found) == {"references": 55, "has-review": 1}
    assert found == expected_links(d)


def test_sample_f1000_duplicates_and_has_version():
    """10.12688/f1000research.161261.2: 47 references, 6 without any DOI (ref4, 10, 13, 16, 30, 31),
    ref35/ref36 both 10.3390/ph16101388 and ref46/ref47 both 10.5281/zenodo.14715820 -> 39 distinct;
    plus has-version 10.12688/f1000research.161261.1."""
    d = items_of("work-2025-f1000.json")[0]
    found = got(d)
    assert Counter(rel for rel, _, _ in found) == {"references": 39, "has-version": 1}
    assert ("has-version", "10.12688/f1000research.161261.1", False) in found
    assert ("references", "10.3390/ph16101388", False) in found
    assert ("references", "10.5281/zenodo.14715820", False) in found
    assert ("references", "10.1023/b:bioc.0000018147.54695.b3", False) in found  # ref1, upper case
    assert ("references", "10.1177/1934578x1200701109", False) in found  # ref20
    assert found == expected_links(d)


@pytest.mark.parametrize(
    "name", ["work-2025-biorxiv.json", "work-2025-preprintsorg-title-containing-encoded-html.json", "work-single-4.json"]
)
def test_sample_works_without_references_or_relations(name):
    """The biorxiv sample (10.1101/2025.02.05.636615) has relation {} and no reference list; its
    encoded HTML is in title/abstract only. Same for the preprints.org one and work-single-4."""
    d = items_of(name)[0]
    assert "reference" not in d and d["relation"] == {}
    assert got(d) == set()


def test_sample_member_works_without_references():
    """Member-works items without a reference list and without relations give nothing (26 + 22 + 22)."""
    counted = 0
    for name in ("member-works-cursor-page-0.json", "member-works-cursor-page-1.json", "member-works-cursor-page-2.json"):
        for d in items_of(name):
            if "reference" not in d and not d.get("relation"):
                assert got(d) == set(), d["DOI"]
                counted += 1
    assert counted > 0


def test_sample_upper_case_relation_id_is_review_of():
    """member-works page 0, 10.1002/jts5.90/v1/review1: is-review-of id 10.1002/JTS5.90, no references."""
    d = item("member-works-cursor-page-0.json", "10.1002/jts5.90/v1/review1")
    assert d["relation"]["is-review-of"][0]["id"] == "10.1002/JTS5.90"
    assert got(d) == {("is-review-of", "10.1002/jts5.90", False)}


def test_sample_is_review_of_relations_in_member_pages():
    """Hand-counted from the raw pages: 6, 2 and 4 works with one is-review-of entry each."""
    page0 = {
        ("10.1002/2050-7038.13176/v1/review3", "10.1002/2050-7038.13176"),
        ("10.1002/2050-7038.12686/v2/response1", "10.1002/2050-7038.12686"),
        ("10.1002/2050-7038.12430/v3/review1", "10.1002/2050-7038.12430"),
        ("10.1002/2050-7038.12771/v2/decision1", "10.1002/2050-7038.12771"),
        ("10.1002/jts5.90/v1/review1", "10.1002/jts5.90"),
        ("10.1002/2050-7038.12777/v1/review2", "10.1002/2050-7038.12777"),
    }
    found = {
        (d["DOI"], obj)
        for d in items_of("member-works-cursor-page-0.json")
        for rel, obj, _ in got(d)
        if rel == "is-review-of"
    }
    assert found == page0
    for name, count in (("member-works-cursor-page-1.json", 2), ("member-works-cursor-page-2.json", 4)):
        relations = Counter(rel for d in items_of(name) for rel, _, _ in got(d) if rel != "references")
        assert relations == {"is-review-of": count}


def test_sample_has_preprint_relations_in_heavy_page():
    expected = {
        ("10.1016/j.eng.2021.03.017", "10.1101/2020.06.17.20133843"),
        ("10.1016/j.ymben.2020.09.002", "10.1101/2020.02.08.940007"),
        ("10.1038/s44172-023-00071-6", "10.21203/rs.3.rs-2002756/v1"),
        ("10.1016/j.ymben.2025.03.017", "10.1101/2024.11.15.623819"),
        ("10.1016/j.ymben.2025.04.007", "10.1101/2025.02.12.637931"),
    }
    found = {
        (d["DOI"], obj)
        for d in items_of("works-list-heavy-100.json")
        for rel, obj, _ in got(d)
        if rel != "references"
    }
    assert found == expected


def test_sample_mined_dx_doi_url_with_trailing_period():
    """works-list-heavy-100, 10.1016/j.engstruct.2015.07.040, reference _b0120 has no DOI field; its
    text ends 'http://dx.doi.org/10.4231/D3ZW18T1Q.' -> mined 10.4231/d3zw18t1q (the '.' dropped).
    It is the only mined link in the whole page."""
    name, subject = "works-list-heavy-100.json", "10.1016/j.engstruct.2015.07.040"
    ref = reference(name, subject, "10.1016/j.engstruct.2015.07.040_b0120")
    assert "DOI" not in ref
    assert mine_doi(ref["unstructured"]) == "10.4231/d3zw18t1q"
    assert ("references", "10.4231/d3zw18t1q", True) in got(item(name, subject))
    mined = [(d["DOI"], obj) for d in items_of(name) for _, obj, m in got(d) if m]
    assert mined == [(subject, "10.4231/d3zw18t1q")]


def test_sample_angle_bracket_urls_and_arxiv_ids_are_not_dois():
    """Same work: <https://nees.org/resources/7702> and friends hold no DOI; in 10.1016/j.eng.2019.09.010
    'arXiv:1410.8516' and in 10.1038/s44172-023-00127-7 'arxiv.org/abs/1710.10903' are not DOIs."""
    cases = [
        ("works-list-heavy-100.json", "10.1016/j.engstruct.2015.07.040", "10.1016/j.engstruct.2015.07.040_b0010"),
        ("works-list-heavy-100.json", "10.1016/j.eng.2019.09.010", "10.1016/j.eng.2019.09.010_b0185"),
        ("works-list-heavy-100.json", "10.1038/s44172-023-00127-7", "127_CR51"),
        ("works-list-heavy-100.json", "10.1016/j.eng.2021.12.002", "10.1016/j.eng.2021.12.002_b0285"),
    ]
    for name, subject, key in cases:
        ref = reference(name, subject, key)
        assert "DOI" not in ref
        assert mine_doi(ref["unstructured"]) is None, key


def test_sample_ext_link_markup_without_doi_and_cites_empty():
    """works-2018-related 10.1371/journal.pone.0189048: relation {"cites": []}; 27 references, 20 with
    distinct DOI fields, ref3/7/8/10/18 carry <ext-link ... xlink:href="http://...">URL</ext-link>
    markup with no DOI, ref19/ref26 have neither -> exactly the 20 DOI fields, lower-cased."""
    d = item("works-2018-related.json", "10.1371/journal.pone.0189048")
    assert d["relation"] == {"cites": []}
    for key in ("ref3", "ref7", "ref8", "ref10", "ref18"):
        ref = reference("works-2018-related.json", d["DOI"], key)
        assert "<ext-link" in ref["unstructured"] and "DOI" not in ref
        assert mine_doi(ref["unstructured"]) is None
    fields = {r["DOI"].lower() for r in d["reference"] if "DOI" in r}
    assert len(fields) == 20
    assert got(d) == {("references", doi, False) for doi in fields}


def test_sample_cites_empty_everywhere_in_2018_page():
    for d in items_of("works-2018-related.json"):
        assert d["relation"] == {"cites": []}
        assert {rel for rel, _, _ in got(d)} <= {"references"}


@pytest.mark.parametrize(
    "name, subject, key, expected",
    [
        # 'http://doi.org/10.1016/j.compstruct.2017.12.063.' - trailing '.' dropped
        ("works-2018-related.json", "10.1016/j.compstruct.2017.12.064", "10.1016/j.compstruct.2017.12.064_b0005",
         "10.1016/j.compstruct.2017.12.063"),
        # '...3174–3196.10.1002/rnc.3733' - glued to the page range by a '.'
        ("works-2018-related.json", "10.1061/(asce)as.1943-5525.0000822", "e_1_3_2_7_1", "10.1002/rnc.3733"),
        # 'doi:\n                    10.7945/C25K5P\n' - newline-delimited, upper case
        ("works-list-heavy-100.json", "10.1007/s00766-017-0271-0", "271_CR38", "10.7945/c25k5p"),
        # 'https://doi.org/10.1155/2018/6564158 (2018).'
        ("works-list-heavy-100.json", "10.1038/s44172-023-00071-6", "71_CR13", "10.1155/2018/6564158"),
        # 'https://doi.org/10.1109/SENSORS52175.2022.9967274.' - dots inside kept, the last dropped
        ("works-list-heavy-100.json", "10.1038/s44172-023-00071-6", "71_CR14", "10.1109/sensors52175.2022.9967274"),
    ],
)
def test_sample_unstructured_texts_mine_to_their_doi_field(name, subject, key, expected):
    """Real references carrying both a DOI field and the DOI in the text: mining the text gives the
    same DOI; with the field removed, the reference yields the mined link (rule 2 fallback)."""
    ref = reference(name, subject, key)
    assert ref["DOI"].lower() == expected
    assert mine_doi(ref["unstructured"]) == expected
    d = item(name, subject)
    assert ("references", expected, False) in got(d)
    without_field = {"key": key, "unstructured": ref["unstructured"]}
    assert got(W(doi=subject, reference=[without_field])) == {("references", expected, True)}


def test_sample_sici_doi_fields():
    """member-works page 1: SICI DOI fields with < > ; ( ) # are valid as given. 10.1155/2016/2878751
    ref 11 has the entity-encoded '10.1892/0891-6640(2005)19&lt;115:UTMOPI>2.0.CO;2': entity
    removal is only for unstructured text (rule 2), so the DOI field is kept verbatim, lower-cased."""
    name = "member-works-cursor-page-1.json"
    assert ("references", "10.1002/1097-0142(196509)18:9<1145::aid-cncr2820180915>3.0.co;2-#", False) in got(
        item(name, "10.1155/2012/421065")
    )
    assert ("references", "10.1002/(sici)1097-0339(199707)17:1<8::aid-dc2>3.0.co;2-e", False) in got(
        item(name, "10.1155/2012/421065")
    )
    assert ("references", "10.1892/0891-6640(2005)19&lt;115:utmopi>2.0.co;2", False) in got(
        item(name, "10.1155/2016/2878751")
    )
    assert ("references", "10.1061/(asce)0733-9399(1997)123:9(897)", False) in got(item(name, "10.1155/2019/5636053"))


def test_sample_repeated_reference_doi_is_one_link():
    """member-works page 1, 10.1155/2013/387194: refs 11 and 25 both '10.1016/S0305-0548(02)00068-0'."""
    d = item("member-works-cursor-page-1.json", "10.1155/2013/387194")
    assert [r["key"] for r in d["reference"] if r.get("DOI") == "10.1016/S0305-0548(02)00068-0"] == ["11", "25"]
    objs = [link.obj for link in unique_links(work(d))]
    assert objs.count("10.1016/s0305-0548(02)00068-0") == 1


def test_sample_near_self_reference_is_kept():
    """10.1016/j.compstruct.2017.12.064 cites 10.1016/j.compstruct.2017.12.063 (Part I): not itself."""
    d = item("works-2018-related.json", "10.1016/j.compstruct.2017.12.064")
    assert ("references", "10.1016/j.compstruct.2017.12.063", False) in got(d)


def test_no_sample_work_links_to_itself():
    for name in LIST_FILES + SINGLE_FILES:
        for d in items_of(name):
            assert all(obj != d["DOI"].lower() for _, obj, _ in got(d)), d["DOI"]


# --------------------------------------------------------------------------------------------
# Real samples against the independent implementation


@pytest.mark.parametrize("name", LIST_FILES + SINGLE_FILES)
def test_every_sample_work_matches_the_independent_rules(name):
    per_relation_got: Counter = Counter()
    per_relation_expected: Counter = Counter()
    for d in items_of(name):
        found, expected = got(d), expected_links(d)
        assert found == expected, (d["DOI"], found ^ expected)
        per_relation_got.update((rel, mined) for rel, _, mined in found)
        per_relation_expected.update((rel, mined) for rel, _, mined in expected)
    assert per_relation_got == per_relation_expected


def test_heavy_and_member_pages_key_sets_and_counts():
    """Whole-page key sets (subject, relation, object) and per-relation counts."""
    for name in ("works-list-heavy-100.json", *(f"member-works-cursor-page-{i}.json" for i in range(3))):
        found = {(d["DOI"].lower(), rel, obj, mined) for d in items_of(name) for rel, obj, mined in got(d)}
        expected = {(d["DOI"].lower(), rel, obj, mined) for d in items_of(name) for rel, obj, mined in expected_links(d)}
        assert found == expected, name
        assert Counter(k[1] for k in found) == Counter(k[1] for k in expected)
    heavy = Counter(
        (rel, mined) for d in items_of("works-list-heavy-100.json") for rel, _, mined in got(d)
    )
    assert heavy[("has-preprint", False)] == 5 and heavy[("references", True)] == 1


# --------------------------------------------------------------------------------------------
# decode.parse_page


@pytest.mark.parametrize("name", LIST_FILES)
def test_parse_page_equals_unique_links_per_item(name):
    page = parse_page(raw(name))
    message = doc(name)["message"]
    assert page.problems == []
    assert page.items == len(message["items"])
    assert page.total == message.get("total-results")
    assert page.next_cursor == message.get("next-cursor")
    assert [w.doi for w in page.works] == [it["DOI"].lower() for it in message["items"]]
    for parsed, it in zip(page.works, message["items"]):
        assert parsed.links == unique_links(work(it))
        assert {tuple(link) for link in parsed.links} == expected_links(it)
        assert parsed.subject == subject_hash(parsed.doi)
        assert parsed.hashes == [link_hash(link.relation, link.obj) for link in parsed.links]
        assert parsed.type == it.get("type")


def test_parse_page_occurred_at_is_deposited_date():
    name = "member-works-cursor-page-0.json"
    page = parse_page(raw(name))
    for parsed, it in zip(page.works, items_of(name)):
        assert parsed.occurred_at == it["deposited"]["date-time"]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json at all",
        b"{",
        b'{"message": {"items": [',
        b"\xff\xfe\x00garbage",
        b"[]",
        b'"a string"',
        b'{"message": "nope"}',
        b'{"message": {"items": 5}}',
    ],
)
def test_parse_page_garbage_raises_bad_page(body):
    with pytest.raises(BadPage):
        parse_page(body)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(lambda: raw("works-cursor-page-0.json")[:1000], id="truncated-page"),
        pytest.param(lambda: raw("error-504-gateway.html"), id="504-html"),
        pytest.param(lambda: raw("error-404-cursor-invalid.json"), id="404-message-list"),
    ],
)
def test_parse_page_real_non_pages_raise_bad_page(body):
    with pytest.raises(BadPage):
        parse_page(body())


def _mixed_page() -> tuple[bytes, list[dict]]:
    good = [
        item("member-works-cursor-page-0.json", "10.1002/jts5.90/v1/review1"),
        item("member-works-cursor-page-1.json", "10.1155/2013/387194"),
    ]
    bad = [
        {  # reference is a string: relations still used
            "DOI": "10.5555/BAD-REF",
            "type": "journal-article",
            "reference": "oops",
            "relation": {"is-review-of": [{"id-type": "doi", "id": "10.5555/Target"}]},
        },
        {  # relation values of the wrong types; the references still count
            "DOI": "10.5555/bad-rel",
            "reference": [{"DOI": "10.5555/REF-OK"}],
            "relation": {"has-preprint": "10.5555/x", "cites": None},
        },
        {"DOI": 12345, "reference": [{"DOI": "10.5555/lost"}]},  # no usable DOI: skipped
        {"reference": [{"DOI": "10.5555/lost"}]},  # no DOI at all: skipped
        None,  # not a record
        {  # bad entries inside the reference list; the good ones survive
            "DOI": "10.5555/Bad-Entries",
            "type": 5,
            "reference": [
                None,
                "a string",
                {"DOI": 123, "unstructured": "Title. doi:10.5555/Mined."},
                {"DOI": "10.5555/GOOD"},
            ],
        },
    ]
    items = [good[0], *bad[:3], good[1], *bad[3:]]
    body = json.dumps(
        {"status": "ok", "message-type": "work-list", "message": {"total-results": 42, "next-cursor": "abc", "items": items}}
    ).encode()
    return body, good


def test_parse_page_salvages_a_page_with_wrong_types():
    body, good = _mixed_page()
    page = parse_page(body)
    assert page.items == 8
    assert page.total == 42 and page.next_cursor == "abc"
    by_doi = {w.doi: {tuple(link) for link in w.links} for w in page.works}
    # the good items are untouched
    for it in good:
        assert by_doi[it["DOI"].lower()] == got(it) == expected_links(it)
    assert by_doi["10.5555/bad-ref"] == {("is-review-of", "10.5555/target", False)}
    assert by_doi["10.5555/bad-rel"] == {("references", "10.5555/ref-ok", False)}
    assert by_doi["10.5555/bad-entries"] == {
        ("references", "10.5555/good", False),
        ("references", "10.5555/mined", True),  # a numeric DOI field is no valid DOI: rule 2 mines
    }
    assert set(by_doi) == {it["DOI"].lower() for it in good} | {"10.5555/bad-ref", "10.5555/bad-rel", "10.5555/bad-entries"}
    assert [w.doi for w in page.works][:2] == [good[0]["DOI"].lower(), "10.5555/bad-ref"]  # page order

    problems = page.problems
    assert sum(1 for kind, _, _ in problems if kind == Problem.NO_DOI) == 3  # 12345, missing, None

    def has(doi: str, field: str) -> bool:
        return any(kind == Problem.BAD_FIELD and d == doi and field in detail for kind, d, detail in problems)

    assert has("10.5555/BAD-REF", "reference")
    assert has("10.5555/bad-rel", "has-preprint")
    assert has("10.5555/bad-rel", "cites")
    assert has("10.5555/Bad-Entries", "type")
    assert has("10.5555/Bad-Entries", "reference.DOI")
    assert sum(1 for kind, d, detail in problems if d == "10.5555/Bad-Entries" and "reference[]" in detail) == 2
    for it in good:
        assert not any(d == it["DOI"] for _, d, _ in problems)


def test_parse_page_empty_doi_is_a_problem_not_a_work():
    body = json.dumps({"message": {"items": [{"DOI": "  "}, {"DOI": "10.5555/ok", "reference": [{"DOI": "10.5555/R"}]}]}}).encode()
    page = parse_page(body)
    assert [w.doi for w in page.works] == ["10.5555/ok"]
    assert page.works[0].links == [Link("references", "10.5555/r", False)]
    assert [kind for kind, _, _ in page.problems] == [Problem.NO_DOI]
    assert page.items == 2


def test_salvage_keeps_good_parts():
    problems: list = []
    w = decode.salvage(
        {
            "DOI": "10.5555/S",
            "reference": [{"DOI": "10.5555/A"}, 7],
            "relation": {"is-version-of": [{"id-type": "doi", "id": "10.5555/V"}, "x"]},
        },
        problems,
    )
    assert w is not None
    assert {tuple(link) for link in unique_links(w)} == {
        ("references", "10.5555/a", False),
        ("is-version-of", "10.5555/v", False),
    }
    assert len(problems) == 2 and all(kind == Problem.BAD_FIELD for kind, _, _ in problems)
    assert decode.salvage("not a dict", problems) is None
    assert problems[-1][0] == Problem.NO_DOI
