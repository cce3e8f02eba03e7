"""The simulated API: `/works` with filters, `select` and scroll cursors, and `/ra/{prefixes}`.

It behaves as `docs/crossref-notes.md` describes the real one: one opaque cursor string
(with `+ / =`) for a whole scroll whose position lives on the server, cursors expiring when
unused, an empty `items` at the end, pools chosen by mailto or Plus token with their limits in
`x-rate-limit-*` headers, a 429 page for whoever exceeds them (and a count of it, so tests can
assert that a normal run never does), and the error bodies recorded from the live API.

Faults are seeded and switchable (`Faults`). A fault that could break a window strikes only
the first `fault_scrolls` scrolls of a query, and a failing request only its first attempts, so
a crawler that recovers correctly always finishes, whatever the timing of its requests.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import hashlib
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

import msgspec
from aiohttp import web

from crawler.simulator.corpus import Corpus

log = logging.getLogger(__name__)

MAX_ROWS = 1000
MAX_OFFSET = 10_000
SELECTABLE = {
    "DOI", "type", "reference", "relation", "created", "deposited", "indexed", "prefix", "member",
    "title", "publisher", "container-title", "issued", "URL", "score", "source",
    "reference-count", "references-count", "is-referenced-by-count",
}
FILTERS = {"from-created-date", "until-created-date", "from-index-date", "until-index-date"}

PAGE_429 = (
    b"<html><body><h1>429 Too Many Requests</h1>\n"
    b"You have sent too many requests in a given amount of time.\n</body></html>\n"
)
PAGE_5XX = {
    502: b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n",
    503: b"<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n<body>\r\n<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n</body>\r\n</html>\r\n",
    504: b"<html>\r\n<head><title>504 Gateway Time-out</title></head>\r\n<body>\r\n<center><h1>504 Gateway Time-out</h1></center>\r\n</body>\r\n</html>\r\n",
}
BODY_500 = msgspec.json.encode({
    "status": "error", "message-type": "exception", "message-version": "1.0.0",
    "message": {
        "name": "class clojure.lang.ExceptionInfo",
        "description": "clojure.lang.ExceptionInfo: Response Exception qbits.spandex.Response@40533e24",
        "message": "Response Exception",
        "stack": ["clojure.core$ex_info.invokeStatic(core.clj:4617)", "qbits.spandex$response_ex__GT_ex_info.invoke(spandex.clj:215)"],
    },
})


@dataclass(frozen=True)
class PoolLimits:
    rate: int  # requests per interval
    interval_s: float
    concurrency: int


POLITE_LIST = {  # the published list-request figures (notes: "Rate limits")
    "public": PoolLimits(rate=1, interval_s=1.0, concurrency=1),
    "polite": PoolLimits(rate=3, interval_s=1.0, concurrency=3),
    "plus": PoolLimits(rate=150, interval_s=1.0, concurrency=150),
}


@dataclass(frozen=True)
class LimitChange:
    """From the `after_requests`-th /works request on, `pool` advertises and enforces `limits`."""

    after_requests: int
    pool: str
    limits: PoolLimits


@dataclass(frozen=True)
class Faults:
    seed: int = 0
    fault_scrolls: int = 2  # scroll faults strike only the first scrolls of each query
    fault_attempts: int = 2  # request faults strike only the first attempts of each request
    lost_page_rate: float = 0.0  # the scroll advances, then the response is lost
    lost_pages: frozenset[int] = frozenset()  # these pages (0 = first) of a scroll are lost
    lost_modes: tuple[str, ...] = ("reset", "truncate", "stall")
    stall_s: float = 3.0  # a "stall" answers after this long (set the crawler's timeout below it)
    duplicate_rate: float = 0.0  # a page repeats items of earlier pages
    short_rate: float = 0.0  # a scroll ends early
    hidden_dois: frozenset[str] = frozenset()  # counted in total-results, never served by a scroll
    expire_rate: float = 0.0  # a cursor is forgotten before its next use
    error_rate: float = 0.0  # a request fails before reaching the scroll
    error_kinds: tuple[str, ...] = ("500", "502", "503", "504", "429", "not-json")
    ra_error_rate: float = 0.0
    ra_error_kinds: tuple[str, ...] = ("503", "garbage", "stall", "reset")
    limit_changes: tuple[LimitChange, ...] = ()


@dataclass(frozen=True)
class SimConfig:
    pools: dict[str, PoolLimits] = field(default_factory=lambda: dict(POLITE_LIST))
    latency_s: float = 0.0  # per /works page
    latency_per_row_s: float = 0.0
    cursor_ttl_s: float = 300.0
    compress: bool = True
    plus_token: str | None = field(default=None, repr=False)
    faults: Faults = Faults()
    grace_s: float = 2.0  # lowered limits are enforced only after clients could have seen them


@dataclass
class SimStats:
    requests: int = 0  # /works requests
    pages: int = 0  # scroll pages served
    first_page_at: float | None = None  # time.monotonic() of the first and last page served
    last_page_at: float | None = None
    scrolls: int = 0
    over_limit: Counter[str] = field(default_factory=Counter)  # by pool
    over_limit_why: Counter[str] = field(default_factory=Counter)  # "rate" or "concurrency"
    max_in_flight: Counter[str] = field(default_factory=Counter)
    pools: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    ra_requests: int = 0
    ra_prefixes_asked: list[str] = field(default_factory=list)
    user_agents: set[str] = field(default_factory=set)
    mailtos: set[str] = field(default_factory=set)
    unauthorized: int = 0
    cursors_sent: Counter[str] = field(default_factory=Counter)  # continuation cursors received


@dataclass
class _Scroll:
    query: str
    items: list[dict]  # the snapshot being served (hidden and short-cut works removed)
    total: int
    rows: int
    select: tuple[str, ...] | None
    number: int  # the how-many-th scroll of this query
    position: int = 0
    page: int = 0
    last_used: float = field(default_factory=time.monotonic)
    filters: dict[str, str] = field(default_factory=dict)


def _draw(seed: int, *key: object) -> float:
    """A uniform number in [0, 1) fixed by the key: faults do not depend on request timing."""
    digest = hashlib.blake2b(repr((seed, *key)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _date_bound(value: str, end: bool) -> str:
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


class _Invalid(Exception):
    def __init__(self, kind: str, value: str, message: str) -> None:
        super().__init__(message)
        self.body = msgspec.json.encode({
            "status": "failed", "message-type": "validation-failure",
            "message": [{"type": kind, "value": value, "message": message}],
        })


class _Limits:
    """Per-pool request rate and concurrency as enforced: counts, never waits."""

    def __init__(self, config: SimConfig, stats: SimStats) -> None:
        self.current = dict(config.pools)
        self.previous: dict[str, tuple[PoolLimits, float]] = {}  # pool -> (old limits, until)
        self.grace_s = config.grace_s
        self.stats = stats
        self.arrivals: dict[str, deque[float]] = {p: deque() for p in self.current}
        self.in_flight: Counter[str] = Counter()

    def change(self, pool: str, limits: PoolLimits) -> None:
        old = self.current[pool]
        self.previous[pool] = (old, time.monotonic() + self.grace_s + old.interval_s)
        self.current[pool] = limits

    def enforced(self, pool: str) -> PoolLimits:
        """The current limits, or while a lowering is fresh, the more permissive old ones."""
        limits = self.current[pool]
        old = self.previous.get(pool)
        if old is None or time.monotonic() >= old[1]:
            return limits
        before = old[0]
        faster = before if before.rate / before.interval_s >= limits.rate / limits.interval_s else limits
        return PoolLimits(faster.rate, faster.interval_s, max(limits.concurrency, before.concurrency))

    def admit(self, pool: str) -> bool:
        limits = self.enforced(pool)
        now = time.monotonic()
        arrivals = self.arrivals[pool]
        while arrivals and arrivals[0] <= now - limits.interval_s:
            arrivals.popleft()
        if len(arrivals) >= limits.rate or self.in_flight[pool] >= limits.concurrency:
            self.stats.over_limit[pool] += 1
            self.stats.over_limit_why["rate" if len(arrivals) >= limits.rate else "concurrency"] += 1
            return False
        arrivals.append(now)
        self.in_flight[pool] += 1
        self.stats.max_in_flight[pool] = max(self.stats.max_in_flight[pool], self.in_flight[pool])
        return True

    def release(self, pool: str) -> None:
        self.in_flight[pool] -= 1

    def headers(self, pool: str) -> dict[str, str]:
        limits = self.current[pool]
        interval = f"{limits.interval_s:g}s"
        return {
            "x-rate-limit-limit": str(limits.rate),
            "x-rate-limit-interval": interval,
            "x-concurrency-limit": str(limits.concurrency),
            "x-api-pool": pool,
        }


class SimulatorApp:
    """The request handlers and their state; `Simulator` serves it."""

    def __init__(self, corpus: Corpus, config: SimConfig) -> None:
        self.corpus = corpus
        self.config = config
        self.faults = config.faults
        self.stats = SimStats()
        self.limits = _Limits(config, self.stats)
        self.scrolls: dict[str, _Scroll] = {}
        self.scroll_counts: Counter[str] = Counter()
        self.attempts: Counter[tuple] = Counter()
        self._pending_changes = sorted(self.faults.limit_changes, key=lambda c: c.after_requests)
        self._index_version = -1
        self._encoded: dict[tuple[int, tuple[str, ...] | None], bytes] = {}
        # A test hook: on_page(filters, pages served by that scroll so far) runs each time a
        # scroll serves a page, e.g. to change the corpus while a crawl is in flight (a scroll
        # that has started keeps serving its snapshot, as a search snapshot does).
        self.on_page: Callable[[dict[str, str], int], None] | None = None

    def application(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/works", self.works)
        app.router.add_get("/ra/{ids}", self.ra)
        app.router.add_get("/_simulator/stats", self.report)
        return app

    async def report(self, request: web.Request) -> web.Response:
        """The counters, for a simulator in another process (demo, benchmarks)."""
        stats = self.stats
        return web.json_response({
            "requests": stats.requests, "pages": stats.pages, "scrolls": stats.scrolls,
            "pages_per_s": (stats.pages - 1) / (stats.last_page_at - stats.first_page_at)
            if stats.pages > 1 and stats.last_page_at != stats.first_page_at else None,
            "over_limit": dict(stats.over_limit), "over_limit_why": dict(stats.over_limit_why),
            "max_in_flight": dict(stats.max_in_flight), "pools": dict(stats.pools),
            "faults": dict(stats.faults), "ra_requests": stats.ra_requests,
        })

    # -- the corpus, indexed ------------------------------------------------------------
    def _index(self) -> None:
        if self._index_version == self.corpus.version:
            return
        self.by_created = sorted(self.corpus.works, key=lambda w: (w["created"]["date-time"], w["DOI"]))
        self.created_keys = [w["created"]["date-time"][:10] for w in self.by_created]
        self._encoded.clear()
        self._index_version = self.corpus.version

    def _matching(self, filters: dict[str, str]) -> list[dict]:
        self._index()
        lo, hi = 0, len(self.by_created)
        if "from-created-date" in filters:
            lo = bisect.bisect_left(self.created_keys, _date_bound(filters["from-created-date"], False))
        if "until-created-date" in filters:
            hi = bisect.bisect_right(self.created_keys, _date_bound(filters["until-created-date"], True))
        works = self.by_created[lo:hi]
        if "from-index-date" in filters or "until-index-date" in filters:
            first = _date_bound(filters.get("from-index-date", "0001"), False)
            last = _date_bound(filters.get("until-index-date", "9999"), True)
            works = [w for w in works if first <= w["indexed"]["date-time"][:10] <= last]
        return works

    def _encode(self, work: dict, select: tuple[str, ...] | None) -> bytes:
        key = (id(work), select)
        body = self._encoded.get(key)
        if body is None:
            shown = work if select is None else {k: work[k] for k in select if k in work}
            body = self._encoded[key] = msgspec.json.encode(shown)
        return body

    # -- /works -------------------------------------------------------------------------
    def _pool(self, request: web.Request) -> str | None:
        """The pool a request belongs to, or None for a refused Plus token."""
        token = request.headers.get("Crossref-Plus-API-Token")
        if token is not None:
            if self.config.plus_token and token == f"Bearer {self.config.plus_token}":
                return "plus"
            return None
        agent = request.headers.get("User-Agent", "")
        self.stats.user_agents.add(agent)
        mailto = request.query.get("mailto")
        if mailto:
            self.stats.mailtos.add(mailto)
        return "polite" if mailto or "mailto:" in agent else "public"

    async def works(self, request: web.Request) -> web.StreamResponse:
        self.stats.requests += 1
        while self._pending_changes and self.stats.requests >= self._pending_changes[0].after_requests:
            change = self._pending_changes.pop(0)
            self.limits.change(change.pool, change.limits)
        pool = self._pool(request)
        if pool is None:
            self.stats.unauthorized += 1
            return web.Response(status=401, text="Unauthorized: the Plus API token is not valid.",
                                content_type="text/plain")
        self.stats.pools[pool] += 1
        if not self.limits.admit(pool):
            return web.Response(status=429, body=PAGE_429, content_type="text/html",
                                headers={"Connection": "close", "Cache-Control": "no-cache"})
        try:
            return await self._works(request, pool)
        finally:
            self.limits.release(pool)

    async def _works(self, request: web.Request, pool: str) -> web.StreamResponse:
        headers = self.limits.headers(pool)
        query = request.query
        request_key = tuple(sorted((k, v) for k, v in query.items() if k != "mailto"))
        if query.get("cursor", "*") != "*":
            self.stats.cursors_sent[query["cursor"]] += 1
        scroll_now = self.scrolls.get(query.get("cursor", "*"))
        if scroll_now is not None:
            # A continuation is named by its scroll's query, number and page, not by the cursor
            # (a fresh one per scroll): the draw is seeded, and restarted windows get past it.
            request_key = ("page", scroll_now.query, scroll_now.number, scroll_now.page)
        attempt = self.attempts[request_key]
        self.attempts[request_key] += 1
        failure = None
        if scroll_now is None or scroll_now.number < self.faults.fault_scrolls:
            failure = self._injected_error(request_key, attempt)
        if failure is not None:
            self.stats.faults[f"error-{failure.status}"] += 1
            return failure
        try:
            filters, rows, select = self._parse(query)
        except _Invalid as exc:
            return web.Response(status=400, body=exc.body, content_type="application/json", headers=headers)
        cursor = query.get("cursor")
        if cursor is None:
            return await self._list(request, filters, rows, select, query, headers)
        if cursor == "*":
            scroll = self._start_scroll(filters, rows, select)
            cursor = self._new_cursor()
            self.scrolls[cursor] = scroll
        else:
            scroll = self.scrolls.get(cursor)
            if scroll is not None and (
                time.monotonic() - scroll.last_used > self.config.cursor_ttl_s
                or self._strikes("expire", scroll, self.faults.expire_rate)
            ):
                del self.scrolls[cursor]
                scroll = None
                self.stats.faults["cursor-expired"] += 1
            if scroll is None:
                body = msgspec.json.encode({
                    "status": "failed", "message-type": "resource-failure",
                    "message": [{"type": "cursor-invalid", "value": cursor, "message": "Cursor specified but it is invalid"}],
                })
                return web.Response(status=404, body=body, content_type="application/json", headers=headers)
        items = scroll.items[scroll.position: scroll.position + scroll.rows]
        duplicates: list[dict] = []
        if items and scroll.position and self._strikes("duplicate", scroll, self.faults.duplicate_rate):
            earlier = scroll.items[max(0, scroll.position - scroll.rows): scroll.position]
            duplicates = earlier[: max(1, len(earlier) // 3)]
            self.stats.faults["duplicates"] += 1
        lost = bool(items) and (
            self._strikes("lost", scroll, self.faults.lost_page_rate)
            or (scroll.page in self.faults.lost_pages and scroll.number < self.faults.fault_scrolls)
        )
        lost_mode = self.faults.lost_modes[int(_draw(self.faults.seed, "mode", scroll.query, scroll.number, scroll.page) * len(self.faults.lost_modes))] if lost else ""
        scroll.position += len(items)
        scroll.page += 1
        scroll.last_used = time.monotonic()
        self.stats.pages += 1
        self.stats.last_page_at = time.monotonic()
        self.stats.first_page_at = self.stats.first_page_at or self.stats.last_page_at
        if self.on_page is not None:
            self.on_page(scroll.filters, scroll.page)
        served = duplicates + items
        await self._latency(len(served))
        body = self._page(cursor, scroll.total, served, scroll.rows, scroll.select)
        if lost:
            self.stats.faults[f"lost-{lost_mode}"] += 1
            return await self._lose(request, body, headers, lost_mode)
        return self._json(body, headers)

    async def _list(self, request, filters, rows, select, query, headers) -> web.StreamResponse:  # type: ignore[no-untyped-def]
        """A request without a cursor: counts, offset pages and sort=created."""
        works = self._matching(filters)
        total = len(works)
        if query.get("sort") == "created":
            works = sorted(works, key=lambda w: w["created"]["date-time"], reverse=query.get("order") == "desc")
        offset = query.get("offset", "0")
        if not offset.isdigit() or int(offset) > MAX_OFFSET:
            body = _Invalid("integer-not-valid", offset, f"Integer specified as {offset} but must be a positive integer less than or equal to {MAX_OFFSET}. ").body
            return web.Response(status=400, body=body, content_type="application/json", headers=headers)
        page = works[int(offset): int(offset) + rows]
        await self._latency(len(page))
        return self._json(self._page(None, total, page, rows, select, int(offset)), headers)

    def _parse(self, query) -> tuple[dict[str, str], int, tuple[str, ...] | None]:  # type: ignore[no-untyped-def]
        filters: dict[str, str] = {}
        for part in filter(None, query.get("filter", "").split(",")):
            name, _, value = part.partition(":")
            if name not in FILTERS:
                raise _Invalid("filter-not-available", name, f"Filter '{name}' specified but there is no such filter for this route. Valid filters for this route are: {', '.join(sorted(FILTERS))}")
            try:
                _date_bound(value, False)
            except ValueError:
                raise _Invalid("date-not-valid", value, f"Date specified as {value} but must be of the form: yyyy or yyyy-mm or yyyy-mm-dd") from None
            filters[name] = value
        raw_rows = query.get("rows", "20")
        if not raw_rows.isdigit() or int(raw_rows) > MAX_ROWS:
            raise _Invalid("integer-not-valid", raw_rows, f"Integer specified as {raw_rows} but must be a positive integer less than or equal to {MAX_ROWS}. ")
        select = None
        if "select" in query:
            select = tuple(query["select"].split(","))
            unknown = [f for f in select if f not in SELECTABLE]
            if unknown:
                raise _Invalid("select-not-valid", unknown[0], f"Field specified as {unknown[0]} but must be one of: {', '.join(sorted(SELECTABLE))}")
        return filters, int(raw_rows), select

    def _start_scroll(self, filters: dict[str, str], rows: int, select) -> _Scroll:  # type: ignore[no-untyped-def]
        works = self._matching(filters)
        query = repr(sorted(filters.items()))
        number = self.scroll_counts[query]
        self.scroll_counts[query] += 1
        self.stats.scrolls += 1
        served = [w for w in works if w["DOI"] not in self.faults.hidden_dois] if self.faults.hidden_dois else list(works)
        scroll = _Scroll(query, served, len(works), max(rows, 1), select, number, filters=dict(filters))
        if len(served) > 1 and self._strikes("short", scroll, self.faults.short_rate):
            cut = 1 + int(_draw(self.faults.seed, "cut", query, number) * (len(served) - 1))
            scroll.items = served[:cut]
            self.stats.faults["short"] += 1
        return scroll

    def _strikes(self, kind: str, scroll: _Scroll, rate: float) -> bool:
        if rate <= 0 or scroll.number >= self.faults.fault_scrolls:
            return False
        return _draw(self.faults.seed, kind, scroll.query, scroll.number, scroll.page) < rate

    def _injected_error(self, request_key: tuple, attempt: int) -> web.Response | None:
        faults = self.faults
        if faults.error_rate <= 0 or attempt >= faults.fault_attempts:
            return None
        if _draw(faults.seed, "error", request_key, attempt) >= faults.error_rate:
            return None
        kind = faults.error_kinds[int(_draw(faults.seed, "kind", request_key, attempt) * len(faults.error_kinds))]
        if kind == "429":
            return web.Response(status=429, body=PAGE_429, content_type="text/html")
        if kind == "500":
            return web.Response(status=500, body=BODY_500, content_type="application/json")
        if kind == "not-json":
            return web.Response(status=200, text="<html><body>Service starting up</body></html>", content_type="text/html")
        return web.Response(status=int(kind), body=PAGE_5XX[int(kind)], content_type="text/html")

    def _new_cursor(self) -> str:
        digest = hashlib.sha256(f"{self.stats.scrolls}:{time.monotonic_ns()}".encode()).digest()
        return "DnF1ZXJ5VGhlbkZldGNo+/" + base64.b64encode(digest[:20]).decode() + "=="

    def _page(self, cursor: str | None, total: int, works: list[dict], rows: int,
              select: tuple[str, ...] | None, offset: int = 0) -> bytes:
        """The work-list envelope, keys in the live API's order, items pre-encoded."""
        items = b",".join(self._encode(w, select) for w in works)
        head = {"facets": {}, **({"next-cursor": cursor} if cursor else {}), "total-results": total}
        query = msgspec.json.encode({"start-index": offset, "search-terms": None})
        return (
            b'{"status":"ok","message-type":"work-list","message-version":"1.0.0","message":'
            + msgspec.json.encode(head)[:-1] + b',"items":[' + items + b'],"items-per-page":'
            + str(rows).encode() + b',"query":' + query + b"}}"
        )

    def _json(self, body: bytes, headers: dict[str, str]) -> web.Response:
        response = web.Response(body=body, content_type="application/json", headers=headers)
        if self.config.compress:
            response.enable_compression()
        return response

    async def _latency(self, rows: int) -> None:
        delay = self.config.latency_s + self.config.latency_per_row_s * rows
        if delay > 0:
            await asyncio.sleep(delay)

    async def _lose(self, request: web.Request, body: bytes, headers: dict[str, str], mode: str) -> web.StreamResponse:
        """The page was produced (the scroll moved on) but the client never gets all of it."""
        if mode == "stall":
            await asyncio.sleep(self.faults.stall_s)
            return self._json(body, headers)
        response = web.StreamResponse(headers={**headers, "Content-Type": "application/json"})
        response.content_length = len(body)
        if mode == "truncate":
            await response.prepare(request)
            await response.write(body[: len(body) // 2])
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError  # the connection is gone: nothing more to send

    # -- /ra ----------------------------------------------------------------------------
    async def ra(self, request: web.Request) -> web.StreamResponse:
        self.stats.ra_requests += 1
        ids = request.match_info["ids"]
        attempt = self.attempts[("ra", ids)]
        self.attempts[("ra", ids)] += 1
        faults = self.faults
        if faults.ra_error_rate > 0 and attempt < faults.fault_attempts and _draw(faults.seed, "ra", ids, attempt) < faults.ra_error_rate:
            kind = faults.ra_error_kinds[int(_draw(faults.seed, "ra-kind", ids, attempt) * len(faults.ra_error_kinds))]
            self.stats.faults[f"ra-{kind}"] += 1
            if kind == "503":
                return web.Response(status=503, body=PAGE_5XX[503], content_type="text/html")
            if kind == "garbage":
                return web.Response(text='{"DOI": "10.1000", "RA": ', content_type="application/json")
            if kind == "stall":
                await asyncio.sleep(faults.stall_s)
            elif kind == "reset":
                if request.transport is not None:
                    request.transport.abort()
                raise asyncio.CancelledError
        answers = []
        for asked in ids.split(","):
            prefix = asked.split("/", 1)[0]
            self.stats.ra_prefixes_asked.append(prefix)
            if prefix in self.corpus.agencies and self.corpus.agencies[prefix]:
                answers.append({"DOI": asked, "RA": self.corpus.agencies[prefix]})
            elif prefix.startswith("10.") and prefix[3:].isdigit():
                answers.append({"DOI": asked, "status": "DOI does not exist"})
            else:
                answers.append({"DOI": asked, "status": "Invalid DOI"})
        return web.Response(body=msgspec.json.encode(answers), content_type="application/json")


class Simulator:
    """The simulator on 127.0.0.1 in the running event loop: `async with Simulator(...) as sim`."""

    def __init__(self, corpus: Corpus, config: SimConfig | None = None, port: int = 0) -> None:
        self.app = SimulatorApp(corpus, config or SimConfig())
        self.port = port
        self.url = ""
        self._runner: web.AppRunner | None = None

    @property
    def corpus(self) -> Corpus:
        return self.app.corpus

    @property
    def stats(self) -> SimStats:
        return self.app.stats

    async def start(self) -> str:
        self._runner = web.AppRunner(self.app.application(), access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> "Simulator":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class SimulatorThread:
    """The simulator in a thread of its own, for tests that run the crawler as a subprocess."""

    def __init__(self, corpus: Corpus, config: SimConfig | None = None) -> None:
        self.simulator = Simulator(corpus, config)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="simulator", daemon=True)

    @property
    def url(self) -> str:
        return self.simulator.url

    @property
    def corpus(self) -> Corpus:
        return self.simulator.corpus

    @property
    def stats(self) -> SimStats:
        return self.simulator.stats

    def start(self) -> str:
        self._thread.start()
        return asyncio.run_coroutine_threadsafe(self.simulator.start(), self.loop).result(timeout=30)

    def call(self, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        """Run fn in the simulator's loop (e.g. `corpus.mutate`) and return its result."""

        async def run():  # type: ignore[no-untyped-def]
            return fn(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout=60)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.simulator.stop(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)
        self.loop.close()
