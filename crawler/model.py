"""The values that flow between stages.

`Work` is what both readers produce (the REST API's JSON via `decode`, Crossref XML via `xmlreader`):
only the fields the events need, shaped like the API's JSON so that typed decoding can fill it
directly. `Link` is what extraction makes of a work; `Problem` names a kind of bad data.

The structs are not tracked by the garbage collector (`gc=False`): they hold only strings
and each other, so they cannot form cycles, and a page creates ~60,000 of them; tracking
them made decoding twice as slow through repeated collections.
"""

from __future__ import annotations

from typing import NamedTuple

import msgspec


class DateField(msgspec.Struct, frozen=True, gc=False):
    date_time: str | None = msgspec.field(default=None, name="date-time")


class Reference(msgspec.Struct, frozen=True, gc=False):
    DOI: str | None = None
    unstructured: str | None = None


class RelationItem(msgspec.Struct, frozen=True, gc=False):
    id_type: str | None = msgspec.field(default=None, name="id-type")
    id: str | None = None


class Work(msgspec.Struct, frozen=True, gc=False):
    DOI: str
    type: str | None = None
    created: DateField | None = None
    deposited: DateField | None = None
    indexed: DateField | None = None
    reference: list[Reference] | None = None
    relation: dict[str, list[RelationItem]] | None = None

    @property
    def occurred_at(self) -> str | None:
        """When the link was asserted: the last deposit, else the registration."""
        for date in (self.deposited, self.created):
            if date is not None and date.date_time:
                return date.date_time
        return None


# The fields a work list must carry for the events (the `select` parameter).
SELECT_FIELDS = ("DOI", "type", "created", "deposited", "indexed", "reference", "relation")


class Link(NamedTuple):
    """One candidate link of a work; `mined` when the object came from unstructured text."""

    relation: str
    obj: str  # lower-cased DOI
    mined: bool


class Problem:
    """Kinds of bad data, counted per kind; the rest of the work is still used."""

    NO_DOI = "work-without-doi"
    BAD_FIELD = "field-of-wrong-type"
    INVALID_DOI = "invalid-doi"
    UNKNOWN_AGENCY = "unknown-agency"
    MINED_NOT_CROSSREF = "mined-doi-not-crossref"
