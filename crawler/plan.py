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


async def size_all(store: Store, client: ApiClient, job: str, target: int, parallel: int = 3) -> None:
    """Size every unsized window of `job`, splitting the large ones, until none is left."""
    gate = asyncio.Semaphore(parallel)

    async def size(window: Window) -> None:
        async with gate:
            total = await client.count(window.filter)
        start, end = date.fromisoformat(window.start), date.fromisoformat(window.end)
        if total > target and start < end:
            await store.split_window(
                window, [(a.isoformat(), b.isoformat()) for a, b in halves(start, end)]
            )
        else:
            if total > target:
                log.info("window %s holds %d works but cannot be split below a day", window.start, total)
            await store.size_window(window.id, total)

    while unsized := await store.windows(job, "unsized"):
        await asyncio.gather(*(size(w) for w in unsized))
