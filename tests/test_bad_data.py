"""No value in any field of a work record can crash the crawler; the good parts are still used."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crawler.decode import parse_page
from crawler.model import Problem

JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30))
ANY_JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12,
)
GOOD_DOI = st.from_regex(r"10\.[0-9]{4,9}/[A-Za-z0-9._()<>;:-]{1,20}", fullmatch=True).filter(
    lambda d: d[-1] not in ".,;:)]"
)


def _page(items: list) -> bytes:
    return json.dumps({"status": "ok", "message": {"total-results": len(items), "items": items}}).encode()


@st.composite
def work_records(draw):
    """A work whose fields are sometimes right and sometimes anything at all."""
    record: dict = {}
    for field, good in (
        ("DOI", GOOD_DOI),
        ("type", st.sampled_from(["journal-article", "posted-content"])),
        ("created", st.just({"date-time": "2020-01-02T03:04:05Z"})),
        ("deposited", st.just({"date-time": "2021-01-02T03:04:05Z"})),
        ("reference", st.lists(st.one_of(st.fixed_dictionaries({"key": st.text(max_size=5), "DOI": GOOD_DOI}), ANY_JSON), max_size=5)),
        ("relation", st.dictionaries(st.sampled_from(["has-preprint", "is-review-of", "cites"]),
                                     st.one_of(st.lists(st.one_of(st.fixed_dictionaries({"id-type": st.just("doi"), "id": GOOD_DOI}), ANY_JSON), max_size=3), ANY_JSON),
                                     max_size=3)),
    ):
        choice = draw(st.sampled_from(["good", "good", "missing", "anything"]))
        if choice == "good":
            record[field] = draw(good)
        elif choice == "anything":
            record[field] = draw(ANY_JSON)
    return record


def _expected_reference_objects(record: dict) -> set[str]:
    """Objects that must survive whatever else is wrong: well-formed references with a good DOI."""
    doi = record.get("DOI")
    if not isinstance(doi, str) or not doi.strip():
        return set()
    refs = record.get("reference")
    if not isinstance(refs, list):
        return set()
    return {
        r["DOI"].lower() for r in refs
        if isinstance(r, dict) and isinstance(r.get("DOI"), str) and set(r) == {"key", "DOI"}
        and r["DOI"].lower() != doi.strip().lower()
    }


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(st.lists(st.one_of(work_records(), ANY_JSON), max_size=6))
def test_any_record_shape_is_survived_and_good_parts_kept(records):
    page = parse_page(_page(records))
    assert page.items == len(records)
    by_doi: dict[str, set[str]] = {}  # a DOI may come twice on a page: each record's links count
    for w in page.works:
        by_doi.setdefault(w.doi, set()).update(
            link.obj for link in w.links if link.relation == "references" and not link.mined
        )
    for record in records:
        expected = _expected_reference_objects(record if isinstance(record, dict) else {})
        if not expected:
            continue
        assert expected <= by_doi[record["DOI"].strip().lower()]
    for kind, doi, detail in page.problems:
        assert kind in (Problem.NO_DOI, Problem.BAD_FIELD) and detail


def test_each_problem_names_the_work_and_the_rest_is_used():
    records = [
        {"DOI": "10.1000/a", "reference": "not a list", "relation": {"cites": [{"id-type": "doi", "id": "10.1000/b"}]}},
        {"DOI": "10.1000/c", "reference": [None, 7, {"key": "1", "DOI": 12}, {"key": "2", "DOI": "10.1000/d"}]},
        {"DOI": 42, "reference": [{"key": "1", "DOI": "10.1000/e"}]},
        {"DOI": "10.1000/f", "relation": {"is-review-of": {"id-type": "doi", "id": "10.1000/g"}, "cites": "nope"}},
        "a string where a work belongs",
        None,
    ]
    page = parse_page(_page(records))
    links = {(w.doi, link.relation, link.obj) for w in page.works for link in w.links}
    assert links == {
        ("10.1000/a", "cites", "10.1000/b"),
        ("10.1000/c", "references", "10.1000/d"),
        ("10.1000/f", "is-review-of", "10.1000/g"),
    }
    kinds = [(kind, doi) for kind, doi, _ in page.problems]
    assert (Problem.BAD_FIELD, "10.1000/a") in kinds
    assert kinds.count((Problem.BAD_FIELD, "10.1000/c")) == 3  # None, 7, DOI of type int
    assert (Problem.BAD_FIELD, "10.1000/f") in kinds
    assert sum(1 for kind, _ in kinds if kind == Problem.NO_DOI) == 3


def test_huge_reference_list_and_long_non_ascii_dois():
    refs = [{"key": str(i), "DOI": f"10.5555/{i}"} for i in range(40_000)]
    long_doi = "10.5555/" + "ü" * 5000
    refs.append({"key": "x", "DOI": long_doi})
    page = parse_page(_page([{"DOI": "10.1000/ÄÖ-" + "z" * 3000, "reference": refs}]))
    (work,) = page.works
    objs = {link.obj for link in work.links}
    assert len(objs) == 40_001 and long_doi.lower() in objs
    assert work.doi.startswith("10.1000/äö-")


# The parsers' batch fast path must agree with the per-value rules on any input.
DOI_PIECES = st.sampled_from([
    "10.1234/abc", "10.12/x", "10.12345/A b", "10.5555/ÄİẞK", "10.99999/(x)", "10.1/y", "10.123456789/z", "10.2345/", "10.2345",
    "https://doi.org/", "HTTP://DX.DOI.ORG/", "doi:", " ", "\t", "\u00a0", "\n", "\u2028", "\x85", "x", ".", "",
])
FIELDS = st.lists(st.one_of(st.none(), st.lists(DOI_PIECES, max_size=4).map("".join)), max_size=12)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(FIELDS)
def test_batch_normalization_equals_the_per_value_rule(values):
    from crawler.extract import normalize_doi, normalize_many

    assert normalize_many(values) == [normalize_doi(v) for v in values]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(FIELDS, st.lists(st.one_of(st.none(), st.lists(DOI_PIECES, max_size=5).map(" ".join)), max_size=12),
       st.sampled_from(["10.1234/abc", "10.5555/äiẞk"]))
def test_grouped_links_equal_the_rules_link_by_link(dois, texts, subject):
    """`grouped_links` (whole lists at once) against `links` (one reference at a time) + dedupe."""
    import msgspec

    from crawler.extract import grouped_links, links
    from crawler.model import Work

    refs = [{"DOI": d, "unstructured": t} for d, t in zip(dois, texts + [None] * len(dois))]
    relation = {"references": [{"id-type": "doi", "id": d} for d in dois[:2] if d is not None]}
    work = msgspec.convert({"DOI": subject, "reference": refs, "relation": relation}, Work)
    chosen: dict[tuple[str, str], bool] = {}
    for link in links(work):
        if link.obj != subject.lower():
            key = (link.relation, link.obj)
            chosen[key] = chosen.get(key, True) and link.mined
    expected = {(rel, obj, mined) for (rel, obj), mined in chosen.items()}
    got = {(rel, obj, mined) for (rel, mined), objs in grouped_links(work).items() for obj in objs}
    assert got == expected


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.tuples(FIELDS, st.lists(st.one_of(st.none(), st.lists(DOI_PIECES, max_size=5).map(" ".join)),
                                           max_size=12),
                          st.sampled_from(["10.1234/abc", "10.5555/äiẞk", "10.99999/(x)"])), max_size=6))
def test_page_links_equal_the_rules_work_by_work(page):
    """`page_links` normalizes a whole page's references at once (and falls back per work);
    each work's links and the page's object prefixes must be what `links` gives one at a time."""
    import msgspec

    from crawler.extract import links, page_links, prefix_of
    from crawler.model import Work

    works = [
        msgspec.convert({"DOI": subject, "reference": [{"DOI": d, "unstructured": t}
                                                       for d, t in zip(dois, texts + [None] * len(dois))]}, Work)
        for dois, texts, subject in page
    ]
    groups, prefixes = page_links(works)
    expected_prefixes = set()
    for work, work_groups in zip(works, groups):
        chosen: dict[tuple[str, str], bool] = {}
        for link in links(work):
            if link.obj != work.DOI.lower():
                chosen[(link.relation, link.obj)] = chosen.get((link.relation, link.obj), True) and link.mined
        assert {(rel, obj, mined) for (rel, mined), objs in work_groups.items() for obj in objs} == {
            (rel, obj, mined) for (rel, obj), mined in chosen.items()}
        expected_prefixes |= {prefix_of(obj) for _, obj in chosen}
    assert prefixes == expected_prefixes
