"""The request handlers: `/works` (counts, facets, offset pages, scrolls) and `/ra/{ids}`.

A request meets, in order: an outage, a redirect, the Plus token, the pool's limits, an
injected error, the query's validation, then its scroll (expiry, duplicates, a repeat within
the page, a lost page). Every fault is counted in `SimStats.faults` under its name.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
from aiohttp import web

from crawler.simulator.corpus import Corpus
from crawler.simulator.faults import (
    CONTINUATION_KINDS, ERROR_KINDS, PAGE_429, PAGE_5XX, Faults, Injector, draw, new_cursor, status_page,
)
from crawler.simulator.pools import Limits
from crawler.simulator.query import MAX_OFFSET, Invalid, Query, WorkIndex, facet_counts, parse
from crawler.simulator.state import SimConfig, SimStats


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
    facets: dict = field(default_factory=dict)


class _Call:
    """One request as the fault counters see it: its route, its number there, struck or not."""

    __slots__ = ("route", "number", "struck")

    def __init__(self, route: str, number: int) -> None:
        self.route, self.number, self.struck = route, number, False


class SimulatorApp:
    """The request handlers and their state; `Simulator` serves it."""

    def __init__(self, corpus: Corpus, config: SimConfig) -> None:
        self.corpus = corpus
        self.config = config
        self.stats = SimStats()
        self.injector = Injector(config.faults)
        self.limits = Limits(config.pools, self.stats, config.grace_s, config.advertise)
        self.scrolls: dict[str, _Scroll] = {}
        self.scroll_counts: Counter[str] = Counter()
        self.swept: set[int] = set()  # hashes of cursors dropped unused past their TTL
        self._swept_at = time.monotonic()
        self.attempts: Counter[tuple] = Counter()
        self._pending_changes = sorted(self.faults.limit_changes, key=lambda c: c.after_requests)
        self.index = WorkIndex(corpus)
        self._encoded: dict[tuple[int, tuple[str, ...] | None], bytes] = {}
        self._encoded_version = corpus.version
        # A test hook: on_page(filters, pages served by that scroll so far) runs each time a
        # scroll serves a page, e.g. to change the corpus while a crawl is in flight (a scroll
        # that has started keeps serving its snapshot, as a search snapshot does).
        self.on_page: Callable[[dict[str, str], int], None] | None = None

    @property
    def faults(self) -> Faults:
        return self.injector.faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        """New faults start afresh: their outages' clocks and the kinds owed early."""
        self.injector = Injector(faults)

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
            "faults": dict(stats.faults), "struck": stats.struck, "ra_requests": stats.ra_requests,
            "requests_by_kind": dict(stats.requests_by_kind), "items_served": stats.items_served,
            "seconds": (stats.last_answer_at - stats.first_request_at)
            if stats.first_request_at and stats.last_answer_at else None,
        })

    def _fault(self, call: _Call, name: str) -> None:
        """Count a fault, its first request, and (once per /works request) the request struck."""
        self.stats.faults[name] += 1
        self.stats.first_fault_at.setdefault(name, call.number)
        if call.route == "works" and not call.struck:
            call.struck = True
            self.stats.struck += 1

    def _encode(self, work: dict, select: tuple[str, ...] | None) -> bytes:
        if self._encoded_version != self.corpus.version:  # ids of replaced works may be reused
            self._encoded.clear()
            self._encoded_version = self.corpus.version
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
        stats = self.stats
        stats.first_request_at = stats.first_request_at or time.monotonic()
        try:
            return await self._works_route(request)
        finally:
            stats.last_answer_at = time.monotonic()

    async def _works_route(self, request: web.Request) -> web.StreamResponse:
        stats = self.stats
        stats.requests += 1
        query = request.query
        stats.requests_by_kind["facet" if "facet" in query else "count" if query.get("rows") == "0"
                               else "page" if "cursor" in query else "other"] += 1
        call = _Call("works", stats.requests)
        _record(request, stats.works_headers, stats.works_header_names)
        while self._pending_changes and stats.requests >= self._pending_changes[0].after_requests:
            change = self._pending_changes.pop(0)
            self.limits.change(change.pool, change.limits)
        outage = self.injector.outage("works", {"works": stats.requests, "ra": stats.ra_requests})
        if outage is not None:
            self._fault(call, "outage-works")
            return status_page(outage.status)
        if self.config.redirect_to is not None:
            stats.redirects += 1
            location = f"{self.config.redirect_to.rstrip('/')}/works?{request.query_string}"
            return web.Response(status=307, headers={"Location": location}, text="Temporary Redirect")
        pool = self._pool(request)
        if pool is None:
            stats.unauthorized += 1
            return web.Response(status=401, text="Unauthorized: the Plus API token is not valid.",
                                content_type="text/plain")
        stats.pools[pool] += 1
        if not self.limits.admit(pool):
            return web.Response(status=429, body=PAGE_429, content_type="text/html",
                                headers={"Connection": "close", "Cache-Control": "no-cache"})
        try:
            return await self._works(request, call, pool)
        finally:
            self.limits.release(pool)

    async def _works(self, request: web.Request, call: _Call, pool: str) -> web.StreamResponse:
        headers = self.limits.headers(pool)
        query = request.query
        injector = self.injector
        request_key = tuple(sorted((k, v) for k, v in query.items() if k != "mailto"))
        if query.get("cursor", "*") != "*":
            self.stats.cursors_sent[query["cursor"]] += 1
        scroll_now = self.scrolls.get(query.get("cursor", "*"))
        kind_owed = query.get("cursor") == "*" and injector.owes("short")
        if scroll_now is not None:
            # A continuation is named by its scroll's query, number and page, not by the cursor
            # (a fresh one per scroll): the draw is seeded, and restarted windows get past it.
            request_key = ("page", scroll_now.query, scroll_now.number, scroll_now.page)
            kind_owed = (scroll_now.position < len(scroll_now.items) and injector.scroll_in_reach(scroll_now.number)
                         and injector.owes(*CONTINUATION_KINDS))
        attempt = self.attempts[request_key]
        self.attempts[request_key] += 1
        kind = injector.error(request_key, attempt, scroll_now.number if scroll_now else None, kind_owed)
        if kind is not None:
            answer = ERROR_KINDS[kind]
            self._fault(call, answer.counter)
            return answer.response()
        try:
            parsed = parse(query)
        except Invalid as exc:
            return web.Response(status=400, body=exc.body, content_type="application/json", headers=headers)
        cursor = query.get("cursor")
        if cursor is None:
            return await self._list(request, parsed, headers)
        if cursor == "*":
            self._sweep()
            scroll = self._start_scroll(call, parsed)
            cursor = new_cursor(self.stats.scrolls, self.faults.long_cursor)
            self.scrolls[cursor] = scroll
            early = None
        else:
            scroll, early, expired = self.scrolls.get(cursor), None, hash(cursor) in self.swept
            if scroll is not None:
                expired = time.monotonic() - scroll.last_used > self.config.cursor_ttl_s
                if not expired:
                    early = injector.take(*CONTINUATION_KINDS) if kind_owed else None
                    expired = early == "expire" or injector.strikes(
                        "expire", scroll.query, scroll.number, scroll.page, self.faults.expire_rate)
                if expired:
                    del self.scrolls[cursor]
                    scroll = None
            if expired:
                self.swept.discard(hash(cursor))
                self._fault(call, "cursor-expired")
            if scroll is None:
                body = msgspec.json.encode({
                    "status": "failed", "message-type": "resource-failure",
                    "message": [{"type": "cursor-invalid", "value": cursor, "message": "Cursor specified but it is invalid"}],
                })
                return web.Response(status=404, body=body, content_type="application/json", headers=headers)
        return await self._serve_page(request, call, scroll, cursor, early, headers)

    def _sweep(self) -> None:
        """Forget scrolls unused past their TTL (abandoned by restarts), now and then, keeping
        only their cursors' hashes: a late use still counts as an expired cursor."""
        now = time.monotonic()
        if now - self._swept_at < self.config.cursor_ttl_s / 4:
            return
        self._swept_at = now
        for cursor in [c for c, s in self.scrolls.items() if now - s.last_used > self.config.cursor_ttl_s]:
            del self.scrolls[cursor]
            self.swept.add(hash(cursor))

    async def _serve_page(self, request: web.Request, call: _Call, scroll: _Scroll, cursor: str,
                          early: str | None, headers: dict[str, str]) -> web.StreamResponse:
        faults, injector = self.faults, self.injector
        where = (scroll.query, scroll.number, scroll.page)
        items = scroll.items[scroll.position: scroll.position + scroll.rows]
        advance = len(items)
        duplicates: list[dict] = []
        if items and scroll.position and (early == "duplicate" or injector.strikes("duplicate", *where, faults.duplicate_rate)):
            earlier = scroll.items[max(0, scroll.position - scroll.rows): scroll.position]
            duplicates = earlier[: max(1, len(earlier) // 3)]
            self._fault(call, "duplicates")
        if items and (early == "repeat" or injector.strikes("repeat", *where, faults.repeat_within_page_rate)):
            items = _repeat_within(items, scroll.rows, faults.seed, where)
            advance = len(items) - 1
            self._fault(call, "repeat-within-page")
        lost_mode = ""
        if early and early.startswith("lost:"):
            lost_mode = early.removeprefix("lost:")
        elif items and (
            injector.strikes("lost", *where, faults.lost_page_rate)
            or (scroll.page in faults.lost_pages and injector.scroll_in_reach(scroll.number))
        ):
            lost_mode = injector.lost_mode(*where)
        scroll.position += advance
        scroll.page += 1
        scroll.last_used = time.monotonic()
        self.stats.pages += 1
        self.stats.last_page_at = time.monotonic()
        self.stats.first_page_at = self.stats.first_page_at or self.stats.last_page_at
        if self.on_page is not None:
            self.on_page(scroll.filters, scroll.page)
        served = duplicates + items
        self.stats.items_served += len(served)
        if not served:
            self.stats.requests_by_kind["empty-page"] += 1
        await self._latency(len(served))
        body = self._page(cursor, scroll.total, served, scroll.rows, scroll.select, facets=scroll.facets)
        if lost_mode:
            self._fault(call, f"lost-{lost_mode}")
            return await self._lose(request, body, headers, lost_mode)
        return self._json(body, headers)

    async def _list(self, request: web.Request, parsed: Query, headers: dict[str, str]) -> web.StreamResponse:
        """A request without a cursor: counts, facets, offset pages and sort=created."""
        query = request.query
        works = self.index.matching(parsed.filters)
        total = len(works)
        facets = facet_counts(works, parsed.facets) if parsed.facets else {}
        if query.get("sort") == "created":  # `matching` keeps the created order already
            works = works[::-1] if query.get("order") == "desc" else works
        offset = query.get("offset", "0")
        if not offset.isdigit() or int(offset) > MAX_OFFSET:
            body = Invalid("integer-not-valid", offset, f"Integer specified as {offset} but must be a positive integer less than or equal to {MAX_OFFSET}. ").body
            return web.Response(status=400, body=body, content_type="application/json", headers=headers)
        page = works[int(offset): int(offset) + parsed.rows]
        await self._latency(len(page))
        return self._json(self._page(None, total, page, parsed.rows, parsed.select, int(offset), facets), headers)

    def _start_scroll(self, call: _Call, parsed: Query) -> _Scroll:
        works = self.index.matching(parsed.filters)
        filters = parsed.filter_map
        query = repr(sorted(filters.items()))
        number = self.scroll_counts[query]
        self.scroll_counts[query] += 1
        self.stats.scrolls += 1
        hidden = self.faults.hidden_dois
        served = [w for w in works if w["DOI"] not in hidden] if hidden else list(works)
        facets = facet_counts(works, parsed.facets) if parsed.facets else {}
        scroll = _Scroll(query, served, len(works), max(parsed.rows, 1), parsed.select, number,
                         filters=filters, facets=facets)
        if len(served) > 1 and (
            (self.injector.scroll_in_reach(number) and self.injector.take("short"))
            or self.injector.strikes("short", query, number, 0, self.faults.short_rate)
        ):
            cut = 1 + int(draw(self.faults.seed, "cut", query, number) * (len(served) - 1))
            scroll.items = served[:cut]
            self._fault(call, "short")
        return scroll

    def _page(self, cursor: str | None, total: int, works: list[dict], rows: int,
              select: tuple[str, ...] | None, offset: int = 0, facets: dict | None = None) -> bytes:
        """The work-list envelope, keys in the live API's order, items pre-encoded."""
        items = b",".join(self._encode(w, select) for w in works)
        head = {"facets": facets or {}, **({"next-cursor": cursor} if cursor else {}), "total-results": total}
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
        call = _Call("ra", self.stats.ra_requests)
        _record(request, self.stats.ra_headers, self.stats.ra_header_names)
        if (outage := self.injector.outage("ra", {"works": self.stats.requests, "ra": self.stats.ra_requests})) is not None:
            self._fault(call, "outage-ra")
            return status_page(outage.status)
        ids = request.match_info["ids"]
        attempt = self.attempts[("ra", ids)]
        self.attempts[("ra", ids)] += 1
        kind = self.injector.ra_error(ids, attempt)
        if kind is not None:
            self._fault(call, f"ra-{kind}")
            if kind == "503":
                return web.Response(status=503, body=PAGE_5XX[503], content_type="text/html")
            if kind == "garbage":
                return web.Response(text='{"DOI": "10.1000", "RA": ', content_type="application/json")
            if kind == "stall":
                await asyncio.sleep(self.faults.stall_s)
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


def _record(request: web.Request, kept: deque[dict[str, str]], names: Counter[str]) -> None:
    headers = {name.lower(): value for name, value in request.headers.items()}
    kept.append(headers)
    names.update(headers.keys())


def _repeat_within(items: list[dict], rows: int, seed: int, where: tuple) -> list[dict]:
    """The page with one of its items served twice; a full page keeps its size (its last item
    moves to the next page, so nothing is skipped)."""
    if len(items) >= rows and len(items) > 1:
        items = items[:-1]
    source = int(draw(seed, "repeat-which", *where) * len(items))
    at = source + 1 + int(draw(seed, "repeat-where", *where) * (len(items) - source))
    return items[:at] + [items[source]] + items[at:]
