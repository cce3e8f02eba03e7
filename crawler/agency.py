"""Registration agency per DOI prefix: batched look-ups, cached in the state file.

A known agency is kept for the life of the state file (a prefix never changes agency). "No
agency knows it" is not forever: a DOI is often cited before it is registered, so a negative
answer expires after `NEGATIVE_TTL` and is asked again; the links it held back wait in the
state (see `select`) and are fetched again once the prefix is known (`sources.deferred`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone

from crawler.api.client import ApiClient
from crawler.events import utc_now
from crawler.store import Store

BATCH = 50  # prefixes per look-up: doi.org/ra takes a comma-separated list
NEGATIVE_TTL = timedelta(days=7)


def expired(checked_at: str | None, now: datetime | None = None) -> bool:
    """Is a negative answer given at `checked_at` old enough to ask again?"""
    if not checked_at:
        return True
    asked = datetime.fromisoformat(checked_at.replace("Z", "+00:00"))
    return (now or datetime.now(timezone.utc)) - asked >= NEGATIVE_TTL


class AgencyResolver:
    def __init__(self, client: ApiClient, store: Store, cache: dict[str, tuple[str | None, str | None]]) -> None:
        self.client = client
        self.store = store
        self.cache = cache  # prefix -> (agency or None, asked at)
        self._pending: dict[str, asyncio.Task[None]] = {}
        self.lookups = 0

    @classmethod
    async def load(cls, client: ApiClient, store: Store) -> "AgencyResolver":
        return cls(client, store, await store.agencies())

    def _stale(self, prefix: str) -> bool:
        entry = self.cache.get(prefix)
        return entry is None or (entry[0] is None and expired(entry[1]))

    async def resolve(self, prefixes: Iterable[str]) -> dict[str, str | None]:
        """Agencies for these prefixes, asking only for those never asked (or whose negative
        answer expired). Concurrent callers share in-flight look-ups, so a prefix is asked once.

        A look-up is a task of its own, not part of the caller that started it: a caller that
        is cancelled (its window starts over) must not take down the answer others wait for.
        """
        wanted = set(prefixes)
        missing = sorted(p for p in wanted if p not in self._pending and self._stale(p))
        for i in range(0, len(missing), BATCH):
            batch = missing[i : i + BATCH]
            task = asyncio.create_task(self._lookup(batch))
            self._pending.update(dict.fromkeys(batch, task))
            task.add_done_callback(lambda done, batch=batch: self._finished(done, batch))
        waits = {self._pending[p] for p in wanted if p in self._pending}
        if waits:
            await asyncio.wait(waits)  # unlike gather, a cancelled caller cancels no look-up
            for task in waits:
                task.result()  # a look-up's failure is every waiting caller's
        return {p: self.cache[p][0] for p in wanted}

    def _finished(self, task: asyncio.Task[None], batch: list[str]) -> None:
        for prefix in batch:
            if self._pending.get(prefix) is task:
                del self._pending[prefix]
        if not task.cancelled():
            task.exception()  # retrieved: every caller that waited for it raises it

    async def _lookup(self, batch: list[str]) -> None:
        found = await self.client.agencies(batch)
        self.lookups += 1
        now = utc_now()
        await self.store.save_agencies(found, now)
        self.cache.update({p: (a, now) for p, a in found.items()})

    async def close(self) -> None:
        """Cancel the look-ups still under way (the run is ending)."""
        tasks = set(self._pending.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
