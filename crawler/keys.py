"""Identities of links: the hashes the seen-key store keeps and the Event id.

A link's key is (subject DOI, relation type, object DOI), DOIs lower-cased. The store keeps,
per subject, 64-bit hashes of (relation, object): a false "already seen" needs two links of
one work to collide in 64 bits (about 1 in 10^16 for a work with 20,000 links). xxh3 is used
because it costs a tenth of a cryptographic hash per call and is specified, so a state file's
hashes stay valid across versions and machines. The Event id is a UUIDv5 of the key, so one
link always has one id.
"""

from __future__ import annotations

import uuid
from functools import lru_cache
from hashlib import sha1

from xxhash import xxh3_64_intdigest

EVENT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/crossref-event-data/crawler/event")
_NAMESPACE_BYTES = EVENT_NAMESPACE.bytes


def subject_hash(subject: str) -> int:
    """A signed 64-bit hash: SQLite's INTEGER PRIMARY KEY of the seen-key table."""
    value = xxh3_64_intdigest(subject.encode())
    return value - (1 << 64) if value >= 1 << 63 else value


@lru_cache(maxsize=4096)
def relation_seed(relation: str) -> int:
    """Each relation type hashes its objects with its own seed: no string joining per link."""
    return xxh3_64_intdigest(relation.encode())


def link_hash(relation: str, obj: str) -> int:
    return xxh3_64_intdigest(obj.encode(), relation_seed(relation))


def link_hashes(relation: str, objs: list[str]) -> list[int]:
    seed = relation_seed(relation)
    return [xxh3_64_intdigest(obj.encode(), seed) for obj in objs]


def event_id(subject: str, relation: str, obj: str) -> str:
    """`str(uuid.uuid5(EVENT_NAMESPACE, "subject\\nrelation\\nobj"))`, computed without the UUID object."""
    digest = bytearray(sha1(_NAMESPACE_BYTES + f"{subject}\n{relation}\n{obj}".encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
