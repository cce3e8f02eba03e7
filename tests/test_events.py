"""The event writer against an independent construction of each event.

`render` builds lines from a template, per group of events that differ only by their object,
with a hand-made UUIDv5; every line must parse to the dict Event Data's format prescribes,
with `uuid.uuid5`'s id.
"""

from __future__ import annotations

import gzip
import json
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from crawler.events import CROSSREF_TOKEN, LICENSE, OTHER_AGENCY_TOKEN, TERMS, render
from crawler.keys import EVENT_NAMESPACE

TEXT = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12)
DOI = st.one_of(st.sampled_from(["10.1234/abc", "10.5555/x.y", "10.1234/(a)"]), TEXT.map("10.1/".__add__))
GROUP = st.tuples(DOI, st.one_of(st.none(), st.sampled_from(["journal-article", 'odd "type"'])),
                  st.one_of(st.none(), st.just("2021-02-03T04:05:06Z")), st.sampled_from(["references", "is-preprint-of", "x\\y"]),
                  st.sampled_from([CROSSREF_TOKEN, OTHER_AGENCY_TOKEN]), st.lists(DOI, min_size=1, max_size=4))


def expected(group, timestamp):
    """The events of a group, each built as a dict by hand."""
    return [_event(*group[:5], obj, timestamp) for obj in group[5]]


def _event(subject, work_type, occurred_at, relation, token, obj, timestamp):
    subj, obj_url = "https://doi.org/" + subject, "https://doi.org/" + obj
    return {
        "id": str(uuid.uuid5(EVENT_NAMESPACE, f"{subject}\n{relation}\n{obj}")),
        "subj_id": subj, "obj_id": obj_url, "relation_type_id": relation, "source_id": "crossref",
        "source_token": token, "occurred_at": occurred_at or timestamp, "timestamp": timestamp, "action": "add",
        "license": LICENSE, "terms": TERMS, "evidence_record": None,
        "subj": {"pid": subj, "url": subj, "work_type_id": work_type},
        "obj": {"pid": obj_url, "url": obj_url, "method": "doi-literal", "verification": "literal"},
    }


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(GROUP, max_size=8))
def test_rendered_lines_are_the_events(groups):
    # Groups as the crawler writes them, with odd values (quotes, backslashes, any Unicode).
    data = render(groups, "2026-11-23T10:00:00Z")
    lines = gzip.decompress(data).decode().split("\n")
    assert lines.pop() == ""  # every line ends with a newline, and a DOI never breaks one
    assert [json.loads(line) for line in lines] == [e for g in groups for e in expected(g, "2026-11-23T10:00:00Z")]


def test_members_concatenate_into_one_readable_stream():
    groups = [("10.1/a", "journal-article", None, "references", CROSSREF_TOKEN, ["10.2/b"])]
    data = (render(groups, "2026-01-01T00:00:00Z") + render([], "2026-01-01T00:00:00Z")
            + render(groups, "2026-01-02T00:00:00Z"))
    lines = gzip.decompress(data).decode().splitlines()
    assert [json.loads(line)["timestamp"] for line in lines] == ["2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"]
    assert json.loads(lines[0])["id"] == json.loads(lines[1])["id"]


def test_a_page_larger_than_one_compression_chunk():
    groups = [(f"10.1/s{g}", "journal-article", None, "references", CROSSREF_TOKEN,
               [f"10.2/o{g}-{i}" for i in range(1 + g % 90)]) for g in range(120)]
    lines = gzip.decompress(render(groups, "2026-11-23T10:00:00Z")).decode().split("\n")
    assert lines.pop() == ""
    assert len(lines) > 2 * 2000  # several chunks
    assert [json.loads(line) for line in lines] == [e for g in groups for e in expected(g, "2026-11-23T10:00:00Z")]


def test_new_links_are_grouped_by_agent_and_filtered_by_the_agency_rules():
    from crawler.decode import LinkGroup, ParsedWork
    from crawler.keys import link_hash, subject_hash
    from crawler.select import rejected_hash, select_new
    from crawler.store import pack

    def group(relation, mined, objs):
        return LinkGroup(relation, mined, tuple(objs), tuple(link_hash(relation, o) for o in objs))

    doi = "10.1/s"
    work = ParsedWork(doi, "journal-article", "2020-01-01T00:00:00Z", subject_hash(doi), (
        group("references", False, ["10.2/a", "10.5061/d", "10.2/b", "10.9/unknown", "10.2/seen"]),
        group("references", True, ["10.2/mined", "10.5061/mined"]),
        group("is-preprint-of", False, ["10.2/p"]),
    ))
    agencies = {"10.2": "Crossref", "10.5061": "DataCite", "10.9": None}
    seen = {work.subject: pack([link_hash("references", "10.2/seen")])}
    groups, total, changed, counts, unknown = select_new([work], seen, agencies)
    head = (doi, "journal-article", "2020-01-01T00:00:00Z")
    assert [(g[:5], list(g[5])) for g in groups] == [
        (head + ("references", CROSSREF_TOKEN), ["10.2/a", "10.2/b"]),
        (head + ("references", OTHER_AGENCY_TOKEN), ["10.5061/d"]),
        (head + ("references", CROSSREF_TOKEN), ["10.2/mined"]),  # a mined DOI counts only if Crossref's
        (head + ("is-preprint-of", CROSSREF_TOKEN), ["10.2/p"]),
    ]
    assert total == 5
    assert changed[work.subject] == {link_hash(r, o) for r, o in [
        ("references", "10.2/seen"), ("references", "10.2/a"), ("references", "10.2/b"),
        ("references", "10.5061/d"), ("references", "10.2/mined"), ("is-preprint-of", "10.2/p")]} | {
        rejected_hash("references", "10.5061/mined")}  # decided once: never counted again
    assert unknown == {("10.9", doi): 1}  # waits in the state for its prefix to be known
    assert counts["mined-doi-not-crossref"] == 1 and "unknown-agency" not in counts
    assert counts["agency:Crossref"] == 4 and counts["agency:DataCite"] == 1
    assert counts["relation:references"] == 4 and counts["subject-prefix:10.1"] == 5
