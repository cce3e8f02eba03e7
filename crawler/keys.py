"""Identities of links: the hashes the seen-key store keeps and the Event id.

A link's key is (subject DOI, relation type, object DOI), DOIs lower-cased. The store keeps,
per subject, 64-bit hashes of (relation, object): a false "already seen" needs two works'
subject hashes and then two of their links' hashes to collide, which does not happen at
Crossref's scale. The Event id is a UUIDv5 of the key, so one link always has one id.
"""

from __future__ import annotations

import uuid
from hashlib import blake2b

EVENT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/crossref-event-data/crawler/event")


def _h64(text: str) -> int:
    return int.from_bytes(blake2b(text.encode(), digest_size=8).digest(), "little", signed=True)


def subject_hash(subject: str) -> int:
    return _h64(subject)


def link_hash(relation: str, obj: str) -> int:
    return _h64(f"{relation}\n{obj}")


def event_id(subject: str, relation: str, obj: str) -> str:
    return str(uuid.uuid5(EVENT_NAMESPACE, f"{subject}\n{relation}\n{obj}"))
