"""The /works query: filters, rows, select and facets, parsed and answered over the corpus.

Filters combine as `docs/crossref-notes.md` says: comma-separated, AND across names, OR when
one name repeats (`type:dataset,type:report,from-created-date:2019` is a dataset or a report,
created in 2019 or later). Anything the route does not know answers the API's 400
`validation-failure`, whose `message` is a list.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date

import msgspec

from crawler.simulator.corpus import Corpus
from crawler.simulator.vocab import TYPE_LABELS

MAX_ROWS = 1000
MAX_OFFSET = 10_000
SELECTABLE = {
    "DOI", "type", "reference", "relation", "created", "deposited", "indexed", "prefix", "member",
    "title", "publisher", "container-title", "issued", "URL", "score", "source",
    "reference-count", "references-count", "is-referenced-by-count",
    "author", "abstract", "license", "funder",
}
DATE_FILTERS = {"created-date": "created", "index-date": "indexed", "deposit-date": "deposited"}


def _has_relation(work: dict) -> bool:
    return any(bool(items) for items in (work.get("relation") or {}).values())


BOOLEAN_FILTERS: dict[str, Callable[[dict], bool]] = {
    "has-references": lambda w: bool(w.get("reference")),
    "has-relation": _has_relation,
    "has-abstract": lambda w: "abstract" in w,
    "has-orcid": lambda w: any("ORCID" in a for a in w.get("author") or ()),
    "has-license": lambda w: bool(w.get("license")),
    "has-funder": lambda w: bool(w.get("funder")),
}
VALUE_FILTERS: dict[str, Callable[[dict], object]] = {
    "type": lambda w: w.get("type"),
    "type-name": lambda w: TYPE_LABELS.get(w.get("type", "")),
    "member": lambda w: w.get("member"),
    "prefix": lambda w: w.get("prefix"),
    "doi": lambda w: w["DOI"].lower(),  # DOIs match whatever their case
}
FILTERS = (
    {f"{end}-{name}" for name in DATE_FILTERS for end in ("from", "until")}
    | set(VALUE_FILTERS) | set(BOOLEAN_FILTERS)
)
FACETS: dict[str, Callable[[dict], object]] = {
    "type-name": VALUE_FILTERS["type-name"],
    "publisher-name": lambda w: w.get("publisher"),
}
TRUE, FALSE = {"1", "true"}, {"0", "false"}


class Invalid(Exception):
    """A request the API refuses with 400 validation-failure; `body` is its answer."""

    def __init__(self, kind: str, value: str, message: str) -> None:
        super().__init__(message)
        self.body = msgspec.json.encode({
            "status": "failed", "message-type": "validation-failure",
            "message": [{"type": kind, "value": value, "message": message}],
        })


def date_bound(value: str, end: bool) -> str:
    """YYYY, YYYY-MM or YYYY-MM-DD as the first (or last) day it covers, ISO formatted."""
    parts = value.split("-")
    if len(parts) == 1:
        day = date(int(parts[0]), 12, 31) if end else date(int(parts[0]), 1, 1)
    elif len(parts) == 2:
        year, month = int(parts[0]), int(parts[1])
        if end:
            following = date(year + month // 12, month % 12 + 1, 1)
            day = date.fromordinal(following.toordinal() - 1)
        else:
            day = date(year, month, 1)
    else:
        day = date(int(parts[0]), int(parts[1]), int(parts[2]))
    return day.isoformat()


@dataclass
class Query:
    filters: dict[str, list[str]] = field(default_factory=dict)  # name -> values, in asked order
    rows: int = 20
    select: tuple[str, ...] | None = None
    facets: list[tuple[str, int | None]] = field(default_factory=list)  # (name, N or None for *)

    @property
    def filter_map(self) -> dict[str, str]:
        """name -> value (a repeated name's values joined with commas): a scroll's identity."""
        return {name: ",".join(values) for name, values in self.filters.items()}


def parse(query: dict[str, str]) -> Query:  # a MultiDictProxy in practice
    parsed = Query()
    for part in filter(None, query.get("filter", "").split(",")):
        name, _, value = part.partition(":")
        _check_filter(name, value)
        parsed.filters.setdefault(name, []).append(value)
    raw_rows = query.get("rows", "20")
    if not raw_rows.isdigit() or int(raw_rows) > MAX_ROWS:
        raise Invalid("integer-not-valid", raw_rows, f"Integer specified as {raw_rows} but must be a positive integer less than or equal to {MAX_ROWS}. ")
    parsed.rows = int(raw_rows)
    if "select" in query:
        parsed.select = tuple(query["select"].split(","))
        unknown = [f for f in parsed.select if f not in SELECTABLE]
        if unknown:
            raise Invalid("select-not-valid", unknown[0], f"Field specified as {unknown[0]} but must be one of: {', '.join(sorted(SELECTABLE))}")
    for part in filter(None, query.get("facet", "").split(",")):
        name, _, count = part.partition(":")
        if name not in FACETS:
            raise Invalid("facet-not-available", name, f"Facet '{name}' specified but there is no such facet for this route. Valid facets for this route are: {', '.join(sorted(FACETS))}")
        count = count or "*"
        if count != "*" and not (count.isdigit() and int(count) > 0):
            raise Invalid("integer-not-valid", count, f"Integer specified as {count} but must be a positive integer or *. ")
        parsed.facets.append((name, None if count == "*" else int(count)))
    return parsed


def _check_filter(name: str, value: str) -> None:
    if name not in FILTERS:
        raise Invalid("filter-not-available", name, f"Filter '{name}' specified but there is no such filter for this route. Valid filters for this route are: {', '.join(sorted(FILTERS))}")
    if name.startswith(("from-", "until-")):
        try:
            date_bound(value, False)
        except ValueError:
            raise Invalid("date-not-valid", value, f"Date specified as {value} but must be of the form: yyyy or yyyy-mm or yyyy-mm-dd") from None
    elif name in BOOLEAN_FILTERS and value.lower() not in TRUE | FALSE:
        raise Invalid("boolean-not-valid", value, f"Boolean specified as {value} but must be one of: true, false, 1, 0")
    elif name == "member" and not value.isdigit():
        raise Invalid("integer-not-valid", value, f"Integer specified as {value} but must be a positive integer. ")


class WorkIndex:
    """The corpus in the scroll's order (created, then DOI), rebuilt when the corpus changes."""

    def __init__(self, corpus: Corpus) -> None:
        self.corpus = corpus
        self.version = -1
        self.by_created: list[dict] = []
        self.created_keys: list[str] = []

    def refresh(self) -> bool:
        """Re-sort after a change of the corpus; True when it did."""
        if self.version == self.corpus.version:
            return False
        self.by_created = sorted(self.corpus.works, key=lambda w: (w["created"]["date-time"], w["DOI"]))
        self.created_keys = [w["created"]["date-time"][:10] for w in self.by_created]
        self.version = self.corpus.version
        return True

    def matching(self, filters: dict[str, list[str]]) -> list[dict]:
        self.refresh()
        lo, hi = 0, len(self.by_created)
        if "from-created-date" in filters:
            lo = bisect.bisect_left(self.created_keys, min(date_bound(v, False) for v in filters["from-created-date"]))
        if "until-created-date" in filters:
            hi = bisect.bisect_right(self.created_keys, max(date_bound(v, True) for v in filters["until-created-date"]))
        works = self.by_created[lo:hi]
        for name, key in DATE_FILTERS.items():
            if name == "created-date" or (f"from-{name}" not in filters and f"until-{name}" not in filters):
                continue
            first = min(date_bound(v, False) for v in filters.get(f"from-{name}", ["0001"]))
            last = max(date_bound(v, True) for v in filters.get(f"until-{name}", ["9999"]))
            works = [w for w in works if key in w and first <= w[key]["date-time"][:10] <= last]
        for name, values in filters.items():
            if name in VALUE_FILTERS:
                get, wanted = VALUE_FILTERS[name], {v.lower() for v in values} if name == "doi" else set(values)
                works = [w for w in works if get(w) in wanted]
            elif name in BOOLEAN_FILTERS:
                test, wanted_bools = BOOLEAN_FILTERS[name], {v.lower() in TRUE for v in values}
                if len(wanted_bools) == 1:
                    want = wanted_bools.pop()
                    works = [w for w in works if test(w) is want]
        return works


def facet_counts(works: Iterable[dict], facets: list[tuple[str, int | None]]) -> dict:
    """The envelope's `facets`: per asked facet, the counts of its values, largest first."""
    works = list(works)
    answer = {}
    for name, limit in facets:
        get = FACETS[name]
        counts = Counter(value for value in map(get, works) if value is not None)
        values = sorted(counts.items(), key=lambda item: (-item[1], str(item[0])))[:limit]
        answer[name] = {"value-count": len(values), "values": dict(values)}
    return answer
