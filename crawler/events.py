"""Links -> Event Data events, serialised as JSON Lines and compressed as one gzip member.

Runs in the parser processes: building and compressing tens of thousands of events per page
is the heaviest CPU work after decoding and must not stall the event loop.
"""

from __future__ import annotations

from datetime import datetime, timezone
from hashlib import sha1
from operator import itemgetter

import msgspec
from isal import isal_zlib

from crawler.keys import VARIANT, event_id, event_id_prefix

CROSSREF_TOKEN = "36c35e23-8757-4a9d-aacf-345e9b7eb50d"  # Crossref -> Crossref agent
OTHER_AGENCY_TOKEN = "8676e950-8ac5-4074-8ac3-c0a18ada7e99"  # Crossref -> DataCite (and others)
LICENSE = "https://creativecommons.org/publicdomain/zero/1.0/"
TERMS = "https://doi.org/10.13003/CED-terms-of-use"
DOI_URL = "https://doi.org/"

# ISA-L's deflate (standard gzip, readable by any tool) at level 1: about 6 times faster than
# zlib's level 1 on event lines and smaller too (53 B/event against 58; zlib 6 gives 50).
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
    times faster than encoding a dict per event and yields the same JSON as `event`. Rows
    come grouped by work and relation: what a group shares is built once per group.
    """
    packer = isal_zlib.compressobj(level, isal_zlib.DEFLATED, 31)  # 31: a gzip member
    packed = []
    lines: list[str] = []
    append = lines.append
    ts = _json(timestamp)
    plain_objs = _plain("".join(map(itemgetter(4), rows)))  # the usual case: no escaping at all
    group = None
    id_prefix = b""
    middle = ""
    for subject, work_type, occurred_at, relation, obj, token in rows:
        if group != (subject, work_type, occurred_at, relation, token):
            group = (subject, work_type, occurred_at, relation, token)
            id_prefix = event_id_prefix(subject, relation)
            subj = _json(DOI_URL + subject)
            head = f'","subj_id":{subj},"obj_id":'
            middle = (
                f',"relation_type_id":{_json(relation)},"source_id":"crossref","source_token":"{token}",'
                f'"occurred_at":{_json(occurred_at) if occurred_at else ts},"timestamp":{ts},"action":"add",'
                f'"license":"{LICENSE}","terms":"{TERMS}","evidence_record":null,'
                f'"subj":{{"pid":{subj},"url":{subj},"work_type_id":{_json(work_type)}}},"obj":{{"pid":'
            )
        obj_url = f'"{DOI_URL}{obj}"' if plain_objs or _plain(obj) else _json(DOI_URL + obj)
        h = sha1(id_prefix + obj.encode()).hexdigest()  # `event_id_after`, inlined: a call is a fifth of a line
        append(
            f'{{"id":"{h[:8]}-{h[8:12]}-5{h[13:16]}-{VARIANT[h[16]]}{h[17:20]}-{h[20:32]}'
            f"{head}{obj_url}{middle}{obj_url},\"url\":{obj_url}{_TAIL}"
        )
        if len(lines) == _LINES_PER_CHUNK:  # compressed as it goes: a page's text is ~35 MB
            packed.append(packer.compress("".join(lines).encode()))
            lines.clear()
    packed.append(packer.compress("".join(lines).encode()))
    packed.append(packer.flush())
    return b"".join(packed)


_LINES_PER_CHUNK = 2000
_TAIL = ',"method":"doi-literal","verification":"literal"}}\n'
