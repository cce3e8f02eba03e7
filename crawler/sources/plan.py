"""The plan: the range cut into windows that keep `concurrency` scrolls busy to the very end.

The crawler's pace is the API's bound only while `concurrency` scrolls run at once, from the
first minute to the last, so the plan sizes windows for the slots, not only for length:

- Fair shares (`allowed`): what waits and what the scrolls under way still have to deliver,
  spread over the slots, is each slot's share. Waiting windows go, the largest first, to the
  slot that frees first; each may hold what its slot needs to reach its share (at most
  `window_pages` pages). A larger one is cut while the scrolls work: at the start the range
  is cut into one window per slot, and at the end the last windows are small and end
  together instead of leaving one lonely scroll.
- Cutting a range of days: into parts of equal length (as many as the share asks for, at
  most MAX_PARTS), counted with rows=0 but for the last, which is the rest. Many parts (more
  than three) are not counted: a free scroll slot takes one at once and its first page's
  `total-results` sizes it, with no count; one far over its share goes back to be cut, its
  page dropped (`fits`). The parts still waiting are counted once they fit in one round of
  windows: their sizes decide how the last windows are cut. A part holding most of its
  range's works holds a bulk-deposit day: it is cut by kind next.
- Cutting below a day (or a crowded range): by a second filter that partitions it exactly —
  the work type (one `facet=type-name:*` request gives every value and its count, accepted
  only when they add up to the window's count; types are packed into parts, a repeated type
  filter being an OR), then yes/no flags (`has-references:1` / `:0`, ...: two counts that
  must add up). Where nothing cuts a day further its scroll stays long (logged), which the
  compact distinct-work set and the retries bear.
- Nearly empty neighbours (what cutting towards a crowded day leaves) are merged back.

Windows are cut or merged only while they wait (`Store.split_window` refuses one a scroll has
started). Each cut is committed, so planning resumes too. Counts and facets share the API's
limits with the pages (one at a time once scrolls are under way, ahead of their pages);
`RequestStats.kinds` says what share of the requests they were.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import math
import logging
from collections.abc import Callable
from datetime import date, timedelta

from crawler.api.client import ApiClient
from crawler.api.limits import LiveSemaphore
from crawler.store import Store, Window

log = logging.getLogger(__name__)

FLAGS = ("has-references", "has-abstract", "has-orcid", "has-license", "has-funder")
TYPE_FACET = "type-name"
SLACK = 1.15  # a window a little over its share starts anyway: parts of equal length are not equal
MAX_PARTS = 16  # a range of days is cut into at most this many parts at once
CROWDED = 0.5  # a part holding this share of its range's works is cut by kind next
PARALLEL = 3  # planning requests in flight at most (the limiter gates them with the pages)
PARALLEL_SCROLLING = 1  # ... once scrolls are under way: each takes a page's place for a moment


def parts(start: date, end: date, n: int) -> list[tuple[date, date]]:
    """Up to n adjacent, non-overlapping inclusive ranges of about equal length covering start..end."""
    days = (end - start).days + 1
    n = max(1, min(n, days))
    bounds = [start + timedelta(days=days * i // n) for i in range(n + 1)]
    return [(bounds[i], bounds[i + 1] - timedelta(days=1)) for i in range(n)]


def _names(scope: str) -> set[str]:
    return {part.split(":", 1)[0] for part in scope.split(",") if part}


def _join(*scopes: str) -> str:
    return ",".join(s for s in scopes if s)


class Planner:
    def __init__(self, store: Store, client: ApiClient, job: str, *, rows: int, window_pages: int,
                 scope: str = "", concurrency: Callable[[], int] = lambda: 3,
                 running_left: Callable[[], list[int]] = list) -> None:
        self.store = store
        self.client = client
        self.job = job
        self.rows = rows
        self.max_target = rows * window_pages
        self.scope = scope  # the operator's --filter, on every request
        self.concurrency = concurrency
        self.running_left = running_left  # works still to come, per scroll under way
        self.changed = asyncio.Event()  # set when windows were sized or cut
        self.idle = False  # nothing unsized, nothing being cut
        self._atomic: set[int] = set()  # windows nothing can cut further
        self._cutting: set[int] = set()
        self._crowded: set[int] = set()  # windows holding most of their parent's works
        # Planning requests in flight: all the API's slots while nothing scrolls, one once
        # scrolls are under way (ahead of their pages: see `ApiClient.count`).
        self.scrolling: Callable[[], int] = lambda: 0
        # Scroll slots free for a window (the scroller's), and the unsized windows a scroll took
        # (its first page's total-results sizes it) or a count is under way for.
        self.free_slots: Callable[[], int] | None = None  # None: no scroller (`plan_only`), all is counted
        self.claimed: set[int] = set()
        self.sizing: set[int] = set()
        self._guessed: dict[tuple[str, str, str, str], int] = {}  # parts cut unsized: the size expected
        self._unsized_expected = 0  # what the parts waiting unsized are expected to hold, together
        self._gate = LiveSemaphore(lambda: PARALLEL_SCROLLING if self.scrolling() else PARALLEL)
        self._poked = asyncio.Event()

    def poke(self) -> None:
        """Something changed (a window ended): look again at what to cut."""
        self._poked.set()

    # -- what may start ------------------------------------------------------------------
    def allowed(self, pending: list[Window], lefts: list[int] | None = None,
                unsized: int | None = None) -> dict[int, int]:
        """The most works each sized waiting window may hold when it starts (at most
        `window_pages` pages, at least one), so that every scroll slot ends when the others do.

        What waits and what the scrolls under way still have to deliver, spread over the slots,
        is each slot's fair share. Waiting windows go, the largest first, to the slot that frees
        first (an idle one at once); each may hold what its slot still needs to reach its share.
        A window over that is cut while the scrolls work, so the last windows are small and end
        together instead of leaving one lonely scroll at the end. Parts not counted yet count in
        the share at the size expected (`unsized`: their sum, the last one seen by default).
        """
        lanes = max(1, self.concurrency())
        lefts = sorted(self.running_left() if lefts is None else lefts)[-lanes:]
        lefts = [0] * (lanes - len(lefts)) + lefts  # an idle slot has nothing left
        sized = sorted((w for w in pending if w.total is not None), key=lambda w: -(w.total or 0))
        unsized = self._unsized_expected if unsized is None else unsized
        share = (sum(w.total or 0 for w in sized) + sum(lefts) + unsized) / lanes
        heapq.heapify(lefts)
        allowed: dict[int, int] = {}
        for window in sized:
            left = heapq.heappop(lefts)
            allowed[window.id] = int(min(self.max_target, max(share - left, self.rows)))
            heapq.heappush(lefts, left + min(window.total or 0, allowed[window.id]))
        return allowed

    def _too_big(self, window: Window, allowed: dict[int, int]) -> bool:
        limit = allowed.get(window.id)
        return (limit is not None and (window.total or 0) > limit * SLACK and (window.total or 0) > self.rows
                and window.id not in self._atomic)

    def startable(self, window: Window, allowed: dict[int, int]) -> bool:
        return window.id not in self._cutting and not self._too_big(window, allowed)

    def expected(self, window: Window) -> int | None:
        """The size expected of a part cut without counts: its share of what its range held."""
        return self._guessed.get((window.field, window.start, window.end, window.scope))

    def startable_unsized(self, window: Window) -> bool:
        """May a free slot take this unsized window, its first page sizing it? A part of a cut
        made without counts (expected to fit), whose count is not under way."""
        return window.id not in self.sizing and self.expected(window) is not None

    async def fits(self, window: Window, total: int, others_left: list[int]) -> bool:
        """May the scroll of a window started unsized go on, now that its first page says how
        many works it holds (`others_left`: what the other scrolls under way still have to
        deliver)? Yes when it holds about what the cut expected of it (the cut was made for the
        shares then); else not when the plan would cut it, were it waiting with that size for its
        slot (the range's works are not spread evenly over its days)."""
        if total <= (self.expected(window) or 0) * SLACK:
            return True
        sized = dataclasses.replace(window, total=total)
        pending = [w for w in await self.store.windows(self.job, "pending") if w.id != window.id]
        unsized = sum(self.expected(w) or 0 for w in await self.store.windows(self.job, "unsized"))
        return not self._too_big(sized, self.allowed([*pending, sized], others_left, unsized))

    # -- the loop ------------------------------------------------------------------------
    async def run(self) -> None:
        """Size and cut windows until cancelled (the scroller cancels it when all is done)."""
        while True:
            unsized = [w for w in await self.store.windows(self.job, "unsized") if w.id not in self.claimed]
            self._unsized_expected = sum(self.expected(w) or 0 for w in unsized)
            if self.free_slots is not None and any(self.startable_unsized(w) for w in unsized) \
                    and not await self._near_the_end(unsized, self.free_slots()):
                # Parts expected to fit: free slots take them, their first pages sizing them with
                # no count, until the plan's end is near and its last windows must be sized.
                unsized = [w for w in unsized if not self.startable_unsized(w)]
            if unsized:
                self.idle = False
                await asyncio.gather(*(self._size(w) for w in unsized))
                await self._mark_crowded([w.id for w in unsized])
                self.changed.set()
                continue
            pending = await self.store.windows(self.job, "pending")
            if await self._coalesce(pending):
                continue
            allowed = self.allowed(pending)
            big = [w for w in pending if self._too_big(w, allowed)]
            if big:
                self.idle = False
                self._cutting.update(w.id for w in big)
                try:
                    await asyncio.gather(*(self._cut(w, allowed[w.id]) for w in big))
                finally:
                    self._cutting.difference_update(w.id for w in big)
                self.changed.set()
                continue
            self.idle = not await self.store.windows(self.job, "unsized")
            self.changed.set()
            self._poked.clear()
            try:
                await asyncio.wait_for(self._poked.wait(), timeout=0.25)
            except asyncio.TimeoutError:
                pass

    async def _near_the_end(self, unsized: list[Window], free: int) -> bool:
        """With no free slot to take them, does what waits (unsized parts at the size expected)
        fit in one round of windows, so that how it is cut decides how the scrolls end?"""
        if free > 0:
            return False
        waiting = sum(w.total or 0 for w in await self.store.windows(self.job, "pending"))
        waiting += sum(self.expected(w) or 0 for w in unsized)
        return waiting <= max(1, self.concurrency()) * self.max_target

    def _filter(self, window: Window, *extra: str) -> str:
        return _join(window.filter, self.scope, *extra)

    async def _count(self, filter_: str) -> int:
        await self._gate.acquire()
        try:
            return await self.client.count(filter_)
        finally:
            self._gate.release()

    async def _size(self, window: Window) -> None:
        await self._gate.acquire()
        try:
            if window.id in self.claimed:
                return  # a scroll took it meanwhile: its first page sizes it
            self.sizing.add(window.id)
            total = await self.client.count(self._filter(window))
            await self.store.size_window(window.id, total)
        finally:
            self._gate.release()
            self.sizing.discard(window.id)
        self.changed.set()  # it may start now

    async def _coalesce(self, pending: list[Window]) -> bool:
        """Merge runs of adjacent, nearly empty windows (what cutting towards a crowded day
        leaves around it) into windows of at most a page: each window costs a request."""
        runs: list[list[Window]] = []
        for window in sorted(pending, key=lambda w: (w.field, w.scope, w.start)):
            if window.id in self._cutting or window.total is None or window.total >= self.rows // 2:
                continue
            run = runs[-1] if runs else None
            if run and (run[-1].field, run[-1].scope) == (window.field, window.scope) \
                    and date.fromisoformat(run[-1].end) + timedelta(days=1) == date.fromisoformat(window.start) \
                    and sum(w.total or 0 for w in run) + (window.total or 0) <= self.rows:
                run.append(window)
            else:
                runs.append([window])
        merged = False
        for run in runs:
            if len(run) > 1:
                merged = await self.store.merge_windows(run) or merged
        return merged

    # -- cutting -------------------------------------------------------------------------
    async def _cut(self, window: Window, limit: int) -> None:
        """Replace a window by parts that partition it exactly (see the module's doc)."""
        start, end = date.fromisoformat(window.start), date.fromisoformat(window.end)
        total = window.total or 0
        if start == end or window.id in self._crowded:
            by_kind = await self._cut_by_kind(window, total, limit)
            if by_kind is not None:
                if await self._replace(window, [(window.start, window.end, scope, n) for scope, n in by_kind]) \
                        and start != end:
                    # The parts of a crowded range are crowded too: cut by kind again (flags),
                    # not day by day towards the crowded day, which costs more counts in a row.
                    self._crowded.update(w.id for w in await self.store.windows(self.job, "pending")
                                         if (w.field, w.start, w.end) == (window.field, window.start, window.end)
                                         and w.scope.startswith(window.scope))
                return
            if start == end:
                self._atomic.add(window.id)
                log.info("window %s holds %d works and nothing cuts that day further: its scroll stays long",
                         window.describe(), total)
                return
        # As many parts of equal length as the limit asks for (at most MAX_PARTS), counted at
        # once but the last, which is the rest. A part holding most of the range's works is
        # crowded (a bulk-deposit day inside): it is cut by kind next, rather than day by day
        # down to that day; nearly empty parts met on the way are merged back (`_coalesce`).
        ranges = parts(start, end, min(MAX_PARTS, _parts_for(total, limit, self.max_target)))
        if len(ranges) > 3:
            # Many parts: each is sized (and may start) on its own as its count comes in, for
            # the counts queue behind the API's rate; or a free slot takes it unsized, its first
            # page sizing it (`fits`).
            if await self._replace(window, [(a.isoformat(), b.isoformat(), window.scope, None) for a, b in ranges]):
                self._guessed.update(((window.field, a.isoformat(), b.isoformat(), window.scope), total // len(ranges))
                                     for a, b in ranges)
            return
        counts = list(await asyncio.gather(*(
            self._count(_join(f"from-{window.field}:{a},until-{window.field}:{b}", window.scope, self.scope))
            for a, b in ranges[:-1])))
        rest = total - sum(counts)
        sized = [*counts, rest if rest >= 0 else None]  # None: sized again (a count moved meanwhile)
        if not await self._replace(
                window, [(a.isoformat(), b.isoformat(), window.scope, n) for (a, b), n in zip(ranges, sized)]):
            return
        await self._mark_crowded(None, window)

    async def _mark_crowded(self, ids: list[int] | None, parent: Window | None = None) -> None:
        """Among parts just sized (by id, or the parts of `parent`), one holding most of their
        works is crowded: a bulk-deposit day inside, cut by kind next rather than day by day."""
        parts_ = [w for w in await self.store.windows(self.job, "pending")
                  if (ids is not None and w.id in ids) or (
                      parent is not None and (w.field, w.scope) == (parent.field, parent.scope)
                      and parent.start <= w.start and w.end <= parent.end)]
        whole = sum(w.total or 0 for w in parts_)
        if len(parts_) > 1:
            self._crowded.update(w.id for w in parts_ if w.start != w.end and (w.total or 0) >= CROWDED * whole > 0)

    async def _replace(self, window: Window, parts: list[tuple[str, str, str, int | None]]) -> bool:
        """The window replaced by its parts, unless a scroll started it meanwhile."""
        if not await self.store.split_window(window, parts):
            return False
        self._crowded.discard(window.id)
        return True

    async def _cut_by_kind(self, window: Window, total: int, limit: int) -> list[tuple[str, int]] | None:
        """Parts (scope, count) that partition the window exactly by a second filter, or None:
        its work types (one facet request; the types packed into parts of at most the limit,
        a type filter repeated being an OR), else a yes/no flag (two counts)."""
        used = _names(window.scope) | _names(self.scope)
        if not used & {"type", "type-name"}:
            await self._gate.acquire()
            try:
                counted, values = await self.client.facet(self._filter(window), TYPE_FACET)
            finally:
                self._gate.release()
            if len(values) > 1 and counted == total and sum(values.values()) == total and \
                    not any("," in v for v in values):
                even = -(-total // _parts_for(total, limit, self.max_target))  # as many parts as the limit asks for, evened out
                return [(_join(window.scope, *(f"{TYPE_FACET}:{v}" for v in kinds)), n)
                        for kinds, n in _pack(values, even)]
        for flag in FLAGS:
            if flag in used:
                continue
            yes, no = await asyncio.gather(self._count(self._filter(window, f"{flag}:1")),
                                           self._count(self._filter(window, f"{flag}:0")))
            if yes and no and yes + no == total:
                return [(_join(window.scope, f"{flag}:1"), yes), (_join(window.scope, f"{flag}:0"), no)]
        return None


def _parts_for(total: int, limit: int, cap: int) -> int:
    """How many parts a window over its limit is cut into: parts may hold a little more than
    a fair share (SLACK), as a window that size may start, but not more than `window_pages`
    pages; at least two."""
    return max(2, math.ceil(total / (limit * SLACK if limit < cap else limit)))


def _pack(values: dict[str, int], capacity: int) -> list[tuple[list[str], int]]:
    """Facet values into parts of at most `capacity` works (first fit, largest first); a value
    larger than that is a part of its own, cut further later."""
    bins: list[tuple[list[str], int]] = []
    for value, n in sorted(values.items(), key=lambda kv: -kv[1]):
        if n <= 0:
            continue
        for i, (names, size) in enumerate(bins):
            if size + n <= capacity:
                bins[i] = (names + [value], size + n)
                break
        else:
            bins.append(([value], n))
    return bins
