"""The event writer against an independent construction of each event.

`render` builds lines from a template, per group of rows, with a hand-made UUIDv5; every
line must parse to the dict Event Data's format prescribes, with `uuid.uuid5`'s id.
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
ROW = st.tuples(DOI, st.one_of(st.none(), st.sampled_from(["journal-article", 'odd "type"'])),
                st.one_of(st.none(), st.just("2021-02-03T04:05:06Z")), st.sampled_from(["references", "is-preprint-of", "x\\y"]),
                DOI, st.sampled_from([CROSSREF_TOKEN, OTHER_AGENCY_TOKEN]))


def expected(row, timestamp):
    subject, work_type, occurred_at, relation, obj, token = row
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
@given(st.lists(st.tuples(ROW, st.integers(1, 4)), max_size=8))
def test_rendered_lines_are_the_events(groups):
    # Runs of rows sharing a work and relation (as the crawler writes them), and odd values.
    rows = [row[:4] + (f"{row[4]}{i}",) + row[5:] for row, n in groups for i in range(n)]
    data = render(rows, "2026-11-23T10:00:00Z")
    lines = gzip.decompress(data).decode().split("\n")
    assert lines.pop() == ""  # every line ends with a newline, and a DOI never breaks one
    assert [json.loads(line) for line in lines] == [expected(row, "2026-11-23T10:00:00Z") for row in rows]


def test_members_concatenate_into_one_readable_stream():
    rows = [("10.1/a", "journal-article", None, "references", "10.2/b", CROSSREF_TOKEN)]
    data = render(rows, "2026-01-01T00:00:00Z") + render([], "2026-01-01T00:00:00Z") + render(rows, "2026-01-02T00:00:00Z")
    lines = gzip.decompress(data).decode().splitlines()
    assert [json.loads(line)["timestamp"] for line in lines] == ["2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"]
    assert json.loads(lines[0])["id"] == json.loads(lines[1])["id"]


def test_a_page_larger_than_one_compression_chunk():
    rows = [(f"10.1/s{i // 40}", "journal-article", None, "references", f"10.2/o{i}", CROSSREF_TOKEN) for i in range(5_003)]
    lines = gzip.decompress(render(rows, "2026-11-23T10:00:00Z")).decode().split("\n")
    assert lines.pop() == ""
    assert [json.loads(line) for line in lines] == [expected(row, "2026-11-23T10:00:00Z") for row in rows]
