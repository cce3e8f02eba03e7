"""API scroll windows: one scroll cursor per window, as many windows at once as the API allows.

A window ends on an empty `items` page, or, lying wholly in the past, once it has delivered
the `total-results` of its first page (the scroll's snapshot; later pages may count works
indexed since). Only distinct works count, within a page and across pages.

A free slot may take a window the plan has not counted (a part of a cut into many): its
first page's `total-results` is its size, unless the plan finds it too big for a slot
(`Planner.fits`); then that page is dropped, not committed, and the window goes back to be cut.

Failures are never final. A request is retried where it failed (see `ApiClient`); a scroll
that breaks (expired cursor, a page that is not a page) starts over from `cursor=*` after a
pause; a page over the size cap makes its window start over with half the rows. A scroll
that ends with fewer distinct works than it announced starts over too, unless the API keeps
serving the same shortfall: `SHORT_RUNS` complete scrolls in a row, none of which lost an
answer on the way, ending at the same count mark the window *short* (never *done*).

Resume: a window that was running when the process died restarts from `cursor=*`: its
scroll position lived on the server and may be past pages never stored; the seen-key store
drops the links already written, so nothing is lost and nothing is repeated.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING

import msgspec

from crawler.api.body import Body
from crawler.decode import BadPage, ParsedPage, parse_body
from crawler.distinct import DistinctSet
from crawler.errors import CursorInvalid, PageTooLarge, RetryableError
from crawler.model import SELECT_FIELDS, Problem
from crawler.store import Window, WindowProgress

if TYPE_CHECKING:
    from crawler.engine import Crawl
    from crawler.sources.plan import Planner

log = logging.getLogger(__name__)

SHORT_RUNS = 3  # complete scrolls in a row ending at the same count before a window is short
_HEADS = (4096, 65536, 1 << 20)
_NEXT_CURSOR = re.compile(rb'"next-cursor"\s*:\s*("(?:[^"\\]|\\.)*")')
_TOTAL = re.compile(rb'"total-results"\s*:\s*(\d+)')
_ITEMS = re.compile(rb'"items"\s*:\s*(\[\s*\]?)')


@dataclass(frozen=True)
class Head:
    cursor: str | None
    total: int | None
    empty: bool


def scan_head(body: Body) -> Head:
    """next-cursor, total-results and whether items is empty, from the start of a page, without
    inflating or decoding it all, so the next request can leave while this page waits for a
    parser. The head grows until it holds the start of `items` (scroll ids grow with the
    index's shard count, past the first 4 KB)."""
    for size in (*_HEADS, None):
        head = body.inflate(head=size) if size is not None else body.inflate()
        items = _ITEMS.search(head)
        if items is not None or size is None or len(head) < size:
            break
    before = head[: items.start()] if items is not None else head
    match = _NEXT_CURSOR.search(before)
    total = _TOTAL.search(before)
    return Head(
        msgspec.json.decode(match.group(1)) if match else None,
        int(total.group(1)) if total else None,
        items is not None and items.group(1).endswith(b"]"),
    )


@dataclass
class _Scroll:
    """One pass of a window from `cursor=*`."""

    cursor: str | None = None
    total: int | None = None  # the first page's total-results: the scroll's snapshot
    received: int = 0  # distinct works
    finished: bool = False
    fetching: bool = True  # requests still to send: the scroll holds one of the API's slots
    dropped: bool = False  # started unsized, its first page said it is too big: back to the plan
    expected: int = 0  # started unsized: what the plan expects it to hold, until its first page says
    tainted: bool = False  # an answer was lost after the scroll may have moved: a page may be missing
    subjects: DistinctSet = field(default_factory=DistinctSet)


def _past(window: Window) -> bool:
    """Does the window lie wholly before yesterday (UTC), where nothing can join it?"""
    return date.fromisoformat(window.end) < datetime.now(timezone.utc).date() - timedelta(days=1)


class WindowScroller:
    """Scrolls the job's windows until none is left or the run is asked to stop."""

    def __init__(self, crawl: Crawl, job: str, planner: Planner, scope: str = "") -> None:
        self.crawl = crawl
        self.job = job
        self.planner = planner
        self.scope = scope  # the operator's --filter, on every request
        config = crawl.config
        self.rows = config.rows
        self.pause_initial, self.pause_max = config.retry_initial_s, config.retry_max_s
        self._scrolls: dict[int, _Scroll] = {}  # the scroll under way of each running window
        self._active: dict[int, asyncio.Task[None]] = {}  # each running window's task
        self._sized: dict[int, int] = {}  # windows started unsized: the size their first page gave

    def _filter(self, window: Window) -> str:
        return f"{window.filter},{self.scope}" if self.scope else window.filter

    def scrolling(self) -> int:
        """Scrolls with requests still to send."""
        return sum(1 for s in self._scrolls.values() if s.fetching)

    def free_slots(self) -> int:
        """Scroll slots a window may take now: the limiter's concurrency, less the windows with
        requests still to send (a window whose last request is answered leaves its slot to the
        next one while its pages are committed); in an outage, only one window, as the probe."""
        fetching = sum(1 for i in self._active if (s := self._scrolls.get(i)) is None or s.fetching)
        room = self.crawl.client.limiter.concurrency - fetching
        if self.crawl.client.health.down:  # an outage: start nothing new, but for one window
            room = 0 if fetching else min(room, 1)  # when none runs: its request is the probe
        return room

    def running_left(self, exclude: int | None = None) -> list[int]:
        """Works still to come of each scroll with requests to send (for the plan's tail)."""
        return [max(0, (s.expected if s.total is None else s.total) - s.received)
                for i, s in self._scrolls.items() if s.fetching and i != exclude]

    async def run(self) -> None:
        """Keep as many windows scrolling as the limiter allows until none is left."""
        crawl, planner = self.crawl, self.planner
        active = self._active
        planning = asyncio.create_task(planner.run())
        try:
            while not crawl.stopping.is_set():
                planner.changed.clear()
                pending = await crawl.store.windows(self.job, "pending")
                room = self.free_slots()
                if room > 0:
                    allowed = planner.allowed(pending)
                    for window in pending:  # the largest first
                        if room <= 0:
                            break
                        if window.id in active or not planner.startable(window, allowed):
                            continue
                        active[window.id] = asyncio.create_task(self.crawl_window(window))
                        room -= 1
                unsized = await crawl.store.windows(self.job, "unsized")
                if room > 0:  # a slot nothing sized may take: a part the plan expects to fit, unsized
                    for window in unsized:  # the earliest first
                        if room <= 0:
                            break
                        if window.id in active or window.id in planner.claimed or not planner.startable_unsized(window):
                            continue
                        planner.claimed.add(window.id)  # no count for it now: its first page sizes it
                        active[window.id] = asyncio.create_task(self.crawl_window(window))
                        room -= 1
                        planner.poke()
                if not active and not pending and not unsized and planner.idle:
                    break
                waiting: set[asyncio.Future] = {*active.values(), planning}
                changed = asyncio.ensure_future(planner.changed.wait())
                stop = asyncio.ensure_future(crawl.stopping.wait())
                await asyncio.wait(waiting | {stop, changed}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
                stop.cancel()
                changed.cancel()
                for window_id, task in list(active.items()):
                    if task.done():
                        del active[window_id]
                        self._sized.pop(window_id, None)
                        task.result()  # a fatal error stops the run
                        planner.poke()
                if planning.done():
                    planning.result()
        finally:
            for task in (*active.values(), planning):
                task.cancel()
            await asyncio.gather(*active.values(), planning, return_exceptions=True)

    async def crawl_window(self, window: Window) -> None:
        """Scroll one window until it is done, or the API keeps serving it short."""
        store = self.crawl.store
        rows = window.rows or self.rows
        short_runs, short_received = window.short_runs, window.short_received
        pause = self.pause_initial
        while not self.crawl.stopping.is_set():
            if window.total is None and window.id in self._sized:  # sized by its first page: a restart keeps it
                window = dataclasses.replace(window, total=self._sized.pop(window.id))
            if not await store.start_window(window):
                return  # cut or merged by the plan since it was read: its days are elsewhere
            try:
                scroll = await self.scroll(window, rows)
            except PageTooLarge as exc:
                if rows == 1:
                    await store.end_window(window.id, "failed", error=f"{exc} (even one work per page)")
                    return
                rows = max(1, rows // 2)
                log.warning("window %s: %s; %d rows per page now", window.describe(), exc, rows)
                await store.end_window(window.id, "running", error=str(exc), rows=rows)
                continue
            except (RetryableError, CursorInvalid, BadPage) as exc:
                log.warning("window %s: %s; starting it over in %.0f s", window.describe(), exc, pause)
                await store.end_window(window.id, "running", error=str(exc))
            else:
                if scroll.dropped:  # too big for its slot: the plan cuts it first
                    log.info("window %s holds %d works: cut before it scrolls", window.describe(), scroll.total)
                    await store.end_window(window.id, "pending", total=scroll.total)
                    self.planner.poke()
                    return
                if scroll.total is None or scroll.received >= scroll.total:
                    await store.end_window(window.id, "done", total=scroll.total)
                    return
                reason = f"the scroll ended after {scroll.received} of {scroll.total} works"
                if scroll.tainted:
                    log.warning("window %s: %s, after an answer was lost; starting it over",
                                window.describe(), reason)
                else:
                    short_runs = short_runs + 1 if short_received == scroll.received else 1
                    short_received = scroll.received
                    if short_runs >= SHORT_RUNS:
                        log.warning("window %s: %s, %d times in a row: left short", window.describe(),
                                    reason, short_runs)
                        await store.end_window(window.id, "short", error=f"{reason} ({short_runs} times in a row)",
                                               total=scroll.total, short_runs=short_runs,
                                               short_received=short_received)
                        return
                    log.warning("window %s: %s (%d in a row); starting it over", window.describe(), reason, short_runs)
                await store.end_window(window.id, "running", error=reason, short_runs=short_runs,
                                       short_received=short_received)
            await self._pause(pause)
            pause = min(pause * 2, self.pause_max)

    async def _pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.crawl.stopping.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass

    async def scroll(self, window: Window, rows: int) -> _Scroll:
        """One pass from cursor=* to the end; returns what it delivered."""
        crawl = self.crawl
        queue: asyncio.Queue[Body | None] = asyncio.Queue()
        # This window's bodies in memory: one parsing (or waiting for a parser), one arriving.
        room = asyncio.Semaphore(2)
        params = {"filter": self._filter(window), "rows": str(rows), "select": ",".join(SELECT_FIELDS)}
        state = self._scrolls[window.id] = _Scroll(total=window.total, expected=self.planner.expected(window) or 0)
        past = _past(window)
        held = 0  # bodies held of `crawl.bodies`: given back as pages are parsed, the rest at the end

        def lost(exc: RetryableError) -> None:
            if exc.maybe_advanced:
                state.tainted = True

        async def fetch() -> None:
            nonlocal held
            cursor, pages = "*", 0
            while True:
                await room.acquire()
                await crawl.bodies.acquire()
                held += 1
                body = await crawl.client.works({**params, "cursor": cursor}, on_retry=lost if cursor != "*" else None)
                head = scan_head(body)
                if pages == 0 and window.total is None and head.total is not None and not head.empty \
                        and not await self.planner.fits(window, head.total, self.running_left(exclude=window.id)):
                    # Started unsized, and larger than the plan lets a window start: its page is
                    # dropped (its works come with the window's parts) and the plan cuts it.
                    del body
                    room.release()
                    held -= 1
                    crawl.bodies.release()
                    state.total, state.dropped, state.finished = head.total, True, True
                    break
                if pages == 0 and window.total is None and head.total is not None:
                    self._sized[window.id] = head.total
                    await crawl.store.size_running(window.id, head.total)
                queue.put_nowait(body)
                del body  # the queue's now: freed as soon as it is parsed, not at the next answer
                if head.empty:
                    break
                if head.cursor is None:
                    raise BadPage("a page without next-cursor")
                if pages == 0 and head.total is not None:
                    state.total = head.total  # the scroll's own count replaces the plan's
                cursor = state.cursor = head.cursor
                pages += 1
                if past and state.total is not None and pages * rows >= state.total:
                    state.fetching = False  # most likely the last request: the slot may go on
                    self.planner.changed.set()
                    await queue.join()  # every page so far committed: is anything missing?
                    if state.received >= state.total:
                        state.finished = True
                        break
                    state.fetching = True
            state.fetching = False
            self.planner.changed.set()  # a slot is free
            queue.put_nowait(None)

        async def consume(fetcher: asyncio.Task[None]) -> None:
            nonlocal held
            while (body := await queue.get()) is not None:
                async with crawl.pages_in_hand:
                    page: ParsedPage = await crawl.parse(parse_body, body)
                    del body  # the parsed page replaces it: the window's next request may leave
                    room.release()
                    held -= 1
                    crawl.bodies.release()
                    if page.items == 0:
                        state.finished = True
                        fetcher.cancel()  # the head scan missed the end: stop asking
                        queue.task_done()
                        return
                    await self._commit(window, page, state)
                    del page  # not kept while the window waits for its next body
                queue.task_done()

        fetcher = asyncio.create_task(fetch())
        try:
            await _together(fetcher, asyncio.create_task(consume(fetcher)))
        finally:
            self._scrolls.pop(window.id, None)
            if held:
                crawl.bodies.release(held)
        if not state.finished:
            raise BadPage("the scroll stopped before its end")
        return state

    async def _commit(self, window: Window, page: ParsedPage, state: _Scroll) -> None:
        """A page's distinct new works (a repeat within the page too) into the commit path."""
        new = set(state.subjects.add_new(w.subject for w in page.works))
        fresh = []
        for work in page.works:
            if work.subject in new:
                new.discard(work.subject)
                fresh.append(work)
        received = len(fresh) + sum(1 for kind, _, _ in page.problems if kind == Problem.NO_DOI)
        state.received += received
        await self.crawl.commit_page(
            page, works=fresh, window=WindowProgress(window.id, received, state.received, state.cursor),
        )


async def _together(*tasks: asyncio.Task[None]) -> None:
    """Await tasks; the first failure cancels the rest and is raised as itself (no group).
    A task that ended cancelled (not by us) is a failure too: the others may wait for it."""
    try:
        pending = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if any(t.cancelled() or t.exception() is not None for t in done):
                break
    finally:
        for task in tasks:
            task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
