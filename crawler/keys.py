"""Identities of links: the hashes the seen-key store keeps and the Event id.

A link's key is (subject DOI, relation type, object DOI), DOIs lower-cased. The store keeps,
per subject, a 48-bit hash of (relation, object): 6 bytes on disk per link. A false "already
seen" needs two links of the same work to collide: about n²/2^49 for a work with n links,
which summed over the whole corpus (180 M works, their link counts squared) is expected to
cost well under one link per full backfill. xxh3 costs a tenth of a cryptographic hash per
call and is specified, so a state file's hashes stay valid across versions and machines.
The Event id is a UUIDv5 of the key, so one link always has one id.
"""

from __future__ import annotations

import uuid
from functools import lru_cache
from itertools import repeat
from hashlib import sha1
from typing import TYPE_CHECKING

from xxhash import xxh3_64_intdigest

if TYPE_CHECKING:
    from hashlib import _Hash

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


LINK_HASH_BITS = 48


def link_hash(relation: str, obj: str) -> int:
    return xxh3_64_intdigest(obj.encode(), relation_seed(relation)) >> (64 - LINK_HASH_BITS)


def link_hashes(relation: str, objs: list[str]) -> list[int]:
    """`link_hash` of each object; the hashing loop runs in C."""
    shift = 64 - LINK_HASH_BITS
    return [h >> shift for h in map(xxh3_64_intdigest, map(str.encode, objs), repeat(relation_seed(relation)))]


def event_id_hash(subject: str, relation: str) -> "_Hash":
    """The SHA-1 of a (subject, relation) group's ids with their shared start consumed: a
    link's id is this hash copied, updated with the object, and written as a UUIDv5
    (version digit 5, `VARIANT` bits; see `events.render`)."""
    return sha1(_NAMESPACE_BYTES + f"{subject}\n{relation}\n".encode())


# RFC 4122 variant: the top two bits of the 17th hex digit become 10.
VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}

