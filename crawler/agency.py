"""Registration agency per DOI prefix: batched look-ups, cached for the life of the state file."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from crawler.api.client import ApiClient
from crawler.store import Store

BATCH = 50  # prefixes per look-up: doi.org/ra takes a comma-separated list


class AgencyResolver:
    def __init__(self, client: ApiClient, store: Store, cache: dict[str, str | None]) -> None:
        self.client = client
        self.store = store
        self.cache = cache
        self._pending: dict[str, asyncio.Future[None]] = {}
        self.lookups = 0

    @classmethod
    async def load(cls, client: ApiClient, store: Store) -> "AgencyResolver":
        return cls(client, store, await store.agencies())

    async def resolve(self, prefixes: Iterable[str]) -> dict[str, str | None]:
        """Agencies for these prefixes, asking only for those never asked before.

        Concurrent callers share in-flight look-ups, so a prefix is asked once.
        """
        wanted = set(prefixes)
        waits = [self._pending[p] for p in wanted if p in self._pending]
        missing = sorted(p for p in wanted if p not in self.cache and p not in self._pending)
        batches = [missing[i : i + BATCH] for i in range(0, len(missing), BATCH)]
        if batches:
            loop = asyncio.get_running_loop()
            futures = [loop.create_future() for _ in batches]
            for batch, future in zip(batches, futures):
                for prefix in batch:
                    self._pending[prefix] = future
            try:
                await asyncio.gather(*(self._lookup(b, f) for b, f in zip(batches, futures)))
            finally:
                for batch in batches:
                    for prefix in batch:
                        self._pending.pop(prefix, None)
        if waits:
            await asyncio.gather(*waits)
        return {p: self.cache[p] for p in wanted}

    async def _lookup(self, batch: list[str], future: asyncio.Future[None]) -> None:
        try:
            found = await self.client.agencies(batch)
            self.lookups += 1
            await self.store.save_agencies(found)
            self.cache.update(found)
            future.set_result(None)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: the caller that started it raises it
            raise
