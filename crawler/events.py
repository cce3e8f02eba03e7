"""Links -> Event Data events, serialised as JSON Lines and compressed as one gzip member.

Runs in the parser processes: building and compressing tens of thousands of events per page
is the heaviest CPU work after decoding and must not stall the event loop.
"""

from __future__ import annotations

import gzip
from datetime import datetime, timezone
from typing import NamedTuple

import msgspec

from crawler.keys import event_id

CROSSREF_TOKEN = "36c35e23-8757-4a9d-aacf-345e9b7eb50d"  # Crossref -> Crossref agent
OTHER_AGENCY_TOKEN = "8676e950-8ac5-4074-8ac3-c0a18ada7e99"  # Crossref -> DataCite (and others)
LICENSE = "https://creativecommons.org/publicdomain/zero/1.0/"
TERMS = "https://doi.org/10.13003/CED-terms-of-use"
DOI_URL = "https://doi.org/"

_encoder = msgspec.json.Encoder()


class NewLink(NamedTuple):
    """A link that passed every check and becomes exactly one event."""

    subject: str
    work_type: str | None
    occurred_at: str | None
    relation: str
    obj: str
    token: str


def token_for(agency: str | None) -> str | None:
    """The agent whose event this is, from the object's registration agency (None: no event)."""
    if agency is None:
        return None
    return CROSSREF_TOKEN if agency.lower() == "crossref" else OTHER_AGENCY_TOKEN


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def event(link: NewLink, timestamp: str) -> dict:
    subj = DOI_URL + link.subject
    obj = DOI_URL + link.obj
    return {
        "id": event_id(link.subject, link.relation, link.obj),
        "subj_id": subj,
        "obj_id": obj,
        "relation_type_id": link.relation,
        "source_id": "crossref",
        "source_token": link.token,
        "occurred_at": link.occurred_at or timestamp,
        "timestamp": timestamp,
        "action": "add",
        "license": LICENSE,
        "terms": TERMS,
        "evidence_record": None,
        "subj": {"pid": subj, "url": subj, "work_type_id": link.work_type},
        "obj": {"pid": obj, "url": obj, "method": "doi-literal", "verification": "literal"},
    }


def render(links: list[NewLink], timestamp: str, level: int = 6) -> bytes:
    """One gzip member holding one JSON line per link (members concatenate into valid gzip)."""
    lines = b"".join(_encoder.encode(event(link, timestamp)) + b"\n" for link in links)
    return gzip.compress(lines, compresslevel=level, mtime=0)
