"""Links -> Event Data events, serialised as JSON Lines and compressed as one gzip member.

Runs in the parser processes: building and compressing tens of thousands of events per page
is the heaviest CPU work after decoding and must not stall the event loop.
"""

from __future__ import annotations

import gzip
from datetime import datetime, timezone

import msgspec

from crawler.keys import event_id

CROSSREF_TOKEN = "36c35e23-8757-4a9d-aacf-345e9b7eb50d"  # Crossref -> Crossref agent
OTHER_AGENCY_TOKEN = "8676e950-8ac5-4074-8ac3-c0a18ada7e99"  # Crossref -> DataCite (and others)
LICENSE = "https://creativecommons.org/publicdomain/zero/1.0/"
TERMS = "https://doi.org/10.13003/CED-terms-of-use"
DOI_URL = "https://doi.org/"

# zlib level 1: on event lines it compresses nearly as well as 6 (they repeat a lot) at a
# fraction of the CPU; see BENCHMARKS.md.
GZIP_LEVEL = 1

_encoder = msgspec.json.Encoder()


# (subject, work type, occurred_at, relation, object, source token): one future event.
EventRow = tuple[str, "str | None", "str | None", str, str, str]


def token_for(agency: str | None) -> str | None:
    """The agent whose event this is, from the object's registration agency (None: no event)."""
    if agency is None:
        return None
    return CROSSREF_TOKEN if agency.lower() == "crossref" else OTHER_AGENCY_TOKEN


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def event(row: EventRow, timestamp: str) -> dict:
    """One event as a dict: the reference shape that `render`'s template must reproduce."""
    subject, work_type, occurred_at, relation, obj, token = row
    subj = DOI_URL + subject
    obj_url = DOI_URL + obj
    return {
        "id": event_id(subject, relation, obj),
        "subj_id": subj,
        "obj_id": obj_url,
        "relation_type_id": relation,
        "source_id": "crossref",
        "source_token": token,
        "occurred_at": occurred_at or timestamp,
        "timestamp": timestamp,
        "action": "add",
        "license": LICENSE,
        "terms": TERMS,
        "evidence_record": None,
        "subj": {"pid": subj, "url": subj, "work_type_id": work_type},
        "obj": {"pid": obj_url, "url": obj_url, "method": "doi-literal", "verification": "literal"},
    }


def _json(value: str | None) -> str:
    return _encoder.encode(value).decode()


def _plain(text: str) -> bool:
    """Can `text` go between JSON quotes as it is?"""
    return text.isascii() and text.isprintable() and '"' not in text and "\\" not in text


def render(rows: list[EventRow], timestamp: str, level: int = GZIP_LEVEL) -> bytes:
    """One gzip member holding one JSON line per row (members concatenate into valid gzip).

    Lines come from a template with the few variable parts JSON-encoded, which is several
    times faster than encoding a dict per event and yields the same JSON as `event`.
    """
    lines = []
    cache: dict[str | None, str] = {}

    def quoted(value: str | None) -> str:
        text = cache.get(value)
        if text is None:
            text = cache[value] = _json(value)
        return text

    ts = _json(timestamp)
    for subject, work_type, occurred_at, relation, obj, token in rows:
        subj = quoted(DOI_URL + subject)
        obj_url = f'"{DOI_URL}{obj}"' if _plain(obj) else _json(DOI_URL + obj)
        lines.append(
            f'{{"id":"{event_id(subject, relation, obj)}","subj_id":{subj},"obj_id":{obj_url},'
            f'"relation_type_id":{quoted(relation)},"source_id":"crossref","source_token":"{token}",'
            f'"occurred_at":{quoted(occurred_at) if occurred_at else ts},"timestamp":{ts},"action":"add",'
            f'"license":"{LICENSE}","terms":"{TERMS}","evidence_record":null,'
            f'"subj":{{"pid":{subj},"url":{subj},"work_type_id":{quoted(work_type)}}},'
            f'"obj":{{"pid":{obj_url},"url":{obj_url},"method":"doi-literal","verification":"literal"}}}}\n'
        )
    return gzip.compress("".join(lines).encode(), compresslevel=level, mtime=0)
