"""The simulated API: `/works` with filters, facets, `select` and scroll cursors, and `/ra/{prefixes}`.

It behaves as `docs/crossref-notes.md` describes the real one: one opaque cursor string
(with `+ / =`) for a whole scroll whose position lives on the server, cursors expiring when
unused, an empty `items` at the end, pools chosen by mailto or Plus token with their limits in
`x-rate-limit-*` headers, a 429 page for whoever exceeds them (and a count of it, so tests can
assert that a normal run never does), and the error bodies recorded from the live API.

This module is the front: `Simulator` (in the running loop) and `SimulatorThread` (in a
thread of its own), and the names other code imports. The rest: `state.py` (SimConfig,
SimStats), `handlers.py` (the routes), `faults.py` (Faults, Outage, the answers and the
seeded draws), `query.py` (filters, facets, select), `pools.py` (limits and their headers),
`corpus.py` and `vocab.py` (the generated works and their truth). By default a fault that could break a
window strikes only the first scrolls of a query and a failing request only its first
attempts, so a crawler that recovers correctly always finishes, whatever the timing of its
requests; `Faults(fault_scrolls=None, fault_attempts=None)` and `Faults.mix()` never stop.
"""

from __future__ import annotations

import asyncio
import threading

from aiohttp import web

from crawler.simulator.corpus import Corpus
from crawler.simulator.faults import (  # noqa: F401  (re-exported: other code imports them from here)
    BODY_500, ERROR_KINDS, PAGE_429, PAGE_5XX, Faults, Outage,
)
from crawler.simulator.handlers import SimulatorApp
from crawler.simulator.pools import POLITE_LIST, LimitChange, PoolLimits  # noqa: F401
from crawler.simulator.query import FILTERS, MAX_OFFSET, MAX_ROWS, SELECTABLE  # noqa: F401
from crawler.simulator.state import SimConfig, SimStats

__all__ = [
    "Faults", "LimitChange", "Outage", "POLITE_LIST", "PoolLimits", "SimConfig", "SimStats",
    "Simulator", "SimulatorApp", "SimulatorThread",
]


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
