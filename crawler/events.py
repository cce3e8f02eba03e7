"""Links -> Event Data events, serialised as JSON Lines and compressed as one gzip member.

Runs in the parser processes: building and compressing tens of thousands of events per page
is the heaviest CPU work after decoding and must not stall the event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

import msgspec
from isal import isal_zlib

from crawler.keys import VARIANT, event_id_hash

CROSSREF_TOKEN = "36c35e23-8757-4a9d-aacf-345e9b7eb50d"  # Crossref -> Crossref agent
OTHER_AGENCY_TOKEN = "8676e950-8ac5-4074-8ac3-c0a18ada7e99"  # Crossref -> DataCite (and others)
LICENSE = "https://creativecommons.org/publicdomain/zero/1.0/"
TERMS = "https://doi.org/10.13003/CED-terms-of-use"
DOI_URL = "https://doi.org/"

# ISA-L's deflate (standard gzip, readable by any tool) at level 1: about 6 times faster than
# zlib's level 1 on event lines and smaller too (53 B/event against 58; zlib 6 gives 50).
GZIP_LEVEL = 1

_encoder = msgspec.json.Encoder()


# (subject, work type, occurred_at, relation, source token, objects): events that differ
# only by their object. A page's ~45,000 events come in ~1,000 of these.
EventGroup = tuple[str, "str | None", "str | None", str, str, "Sequence[str]"]


def token_for(agency: str | None) -> str | None:
    """The agent whose event this is, from the object's registration agency (None: no event)."""
    if agency is None:
        return None
    return CROSSREF_TOKEN if agency.lower() == "crossref" else OTHER_AGENCY_TOKEN


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _json(value: str | None) -> str:
    return _encoder.encode(value).decode()


def _plain(text: str) -> bool:
    """Can `text` go between JSON quotes as it is?"""
    return text.isascii() and text.isprintable() and '"' not in text and "\\" not in text


def render(groups: list[EventGroup], timestamp: str, level: int = GZIP_LEVEL) -> bytes:
    """One gzip member holding one JSON line per event (members concatenate into valid gzip).

    Lines come from a template with the few variable parts JSON-encoded, which is several
    times faster than encoding a dict per event. What a group's events share (all but the
    object) is built once per group, the SHA-1 of the id included: each event only copies it.
    """
    packer = isal_zlib.compressobj(level, isal_zlib.DEFLATED, 31)  # 31: a gzip member
    packed = []
    lines: list[str] = []
    append = lines.append
    ts = _json(timestamp)
    tail = _TAIL
    for subject, work_type, occurred_at, relation, token, objs in groups:
        id_hash = event_id_hash(subject, relation)
        subj = _json(DOI_URL + subject)
        head = f'","subj_id":{subj},"obj_id":'
        middle = (
            f',"relation_type_id":{_json(relation)},"source_id":"crossref","source_token":"{token}",'
            f'"occurred_at":{_json(occurred_at) if occurred_at else ts},"timestamp":{ts},"action":"add",'
            f'"license":"{LICENSE}","terms":"{TERMS}","evidence_record":null,'
            f'"subj":{{"pid":{subj},"url":{subj},"work_type_id":{_json(work_type)}}},"obj":{{"pid":'
        )
        plain = _plain("".join(objs))  # the usual case: no escaping at all
        for obj in objs:
            obj_url = f'"{DOI_URL}{obj}"' if plain else _json(DOI_URL + obj)
            one = id_hash.copy()
            one.update(obj.encode())
            h = one.hexdigest()
            append(
                f'{{"id":"{h[:8]}-{h[8:12]}-5{h[13:16]}-{VARIANT[h[16]]}{h[17:20]}-{h[20:32]}'
                f"{head}{obj_url}{middle}{obj_url},\"url\":{obj_url}{tail}"
            )
        if len(lines) >= _LINES_PER_CHUNK:  # compressed as it goes: a page's text is ~35 MB
            packed.append(packer.compress("".join(lines).encode()))
            lines.clear()
    packed.append(packer.compress("".join(lines).encode()))
    packed.append(packer.flush())
    return b"".join(packed)


_LINES_PER_CHUNK = 2000
_TAIL = ',"method":"doi-literal","verification":"literal"}}\n'
