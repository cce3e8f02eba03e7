"""The plan: the created-date (or index-date) range cut into windows of a few pages each.

Windows are sized with rows=0 counts and halved until each holds at most `target` works or
is a single day (the filters' finest grain). Each step is committed, so planning resumes
too, and windows become crawlable as soon as they are sized.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import date, timedelta

from crawler.api.client import ApiClient
from crawler.store import Store, Window

log = logging.getLogger(__name__)


def halves(start: date, end: date) -> list[tuple[date, date]]:
    """Two adjacent, non-overlapping inclusive ranges covering start..end (start < end)."""
    middle = start + timedelta(days=(end - start).days // 2)
    return [(start, middle), (middle + timedelta(days=1), end)]


class Planner:
    def __init__(self, store: Store, client: ApiClient, job: str, target: int, scope: str = "",
                 parallel: int = 3) -> None:
        self.store = store
        self.client = client
        self.job = job
        self.target = target  # works per window at most
        self.scope = scope
        self._gate = asyncio.Semaphore(parallel)

    def _filter(self, window: Window) -> str:
        return f"{window.filter},{self.scope}" if self.scope else window.filter

    async def run(self) -> None:
        """Size every unsized window of the job, splitting the large ones, until none is left."""
        while unsized := await self.store.windows(self.job, "unsized"):
            await asyncio.gather(*(self._size(w) for w in unsized))

    async def ready(self, window: Window, active: int) -> Window | None:
        """The window to start now, or None when it was replaced by parts."""
        return window

    async def _size(self, window: Window) -> None:
        async with self._gate:
            total = await self.client.count(self._filter(window))
        start, end = date.fromisoformat(window.start), date.fromisoformat(window.end)
        if total > self.target and start < end:
            await self.store.split_window(
                window, [(a.isoformat(), b.isoformat(), window.scope, None) for a, b in halves(start, end)]
            )
        else:
            if total > self.target:
                log.info("window %s holds %d works but cannot be split below a day", window.start, total)
            await self.store.size_window(window.id, total)
