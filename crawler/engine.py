"""The one commit path every source feeds: parsed works -> new links -> events -> output + state.

Sources (API scroll windows, XML files, snapshot files; `crawler.sources`) hand `commit_page`
batches of parsed works with their position. It asks the agencies of the objects' prefixes,
selects the links never emitted before (`select`) and renders them in a parser process — a
source whose own processes hold the works does both there (`commit_selected`) —, appends
them to the output and fsyncs, then commits the seen keys, the links waiting for an agency,
the source's position, counters and the output's new length in one transaction (see `sink`).
Batches select and render side by side; only the append and the commit go one at a time.

Parsing and rendering run in a pool of parser processes that replaces a process that died
(its page is parsed again). Memory is bounded by the parsers, not by the sources: at most
`parsers + 1` batches are between their parse and their commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import multiprocessing
import multiprocessing.forkserver
import multiprocessing.resource_tracker
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import aiohttp

from crawler.agency import AgencyResolver
from crawler.api.client import ApiClient, RequestStats, RetryPolicy, new_session
from crawler.api.health import Health
from crawler.api.limits import POLITE, PUBLIC, Limiter, LiveSemaphore
from crawler.config import Config
from crawler.decode import BadPage, ParsedPage, ParsedWork
from crawler.errors import CrawlerError, DiskError
from crawler.events import render, utc_now
from crawler.memory import map_big_blocks
from crawler.output import Output, refuse_taken
from crawler.progress import Progress
from crawler.select import Rendered, problem_subjects, select_new
from crawler.sink import Sink, crash_point
from crawler.store import RUN, RUN_COUNTERS, Store, UnitProgress, WindowProgress

log = logging.getLogger(__name__)

PARSER_DEATHS_PER_PAGE = 3  # a page that kills this many parser processes is given up as bad

# What parser processes run, imported once by the fork server that forks them, so that each
# starts with it loaded instead of importing it again (~0.35 CPU-s a process). Under
# `python -m crawler` the server preloads no main module of its own.
PARSER_MODULES = ["crawler.decode", "crawler.events", "crawler.select", "crawler.sources.snapshots"]


def start_fork_server() -> None:
    """Start multiprocessing's fork server now, ignoring SIGINT and SIGTERM, if it is safe to.

    A terminal's Ctrl-C (a service manager's stop) reaches every process of the group: while
    the server imported the parser modules it died of it, with a traceback, and the run failed
    with EOFError instead of stopping. Ignored (which survives the exec), and inherited by the
    server and what it forks: how to stop is the main process's decision, and they go when it
    goes. Done while the main process has one thread, which blocks both meanwhile: a signal sent
    in that moment waits for its handler instead of being lost (with more threads, another one
    could take it while it is ignored; the pools then start the server as they need it). The
    resource tracker is started first: its start unblocks both, and one signal in two sent
    during the server's start was lost that way.
    """
    multiprocessing.set_forkserver_preload(PARSER_MODULES)
    if threading.active_count() > 1:
        return
    multiprocessing.resource_tracker.ensure_running()  # first: see above
    stops = (signal.SIGINT, signal.SIGTERM)
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, stops)
    handlers = {sig: signal.signal(sig, signal.SIG_IGN) for sig in stops}
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)  # None: set outside Python
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _init_parser(main_pid: int) -> None:
    """In each parser process: Ctrl-C is for the main process to handle, and when the main
    process is gone (SIGKILL, the OOM killer) the parser goes too instead of lingering."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    map_big_blocks()
    threading.Thread(target=_exit_without, args=(main_pid,), daemon=True).start()


def _exit_without(pid: int) -> None:
    while True:
        time.sleep(1)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os._exit(1)


class ParserPool:
    """Parser processes (forkserver) that replace themselves when one dies."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._replacing = asyncio.Lock()
        self._starting: asyncio.Task[None] | None = None
        self.replaced = 0

    def _new(self) -> ProcessPoolExecutor:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PARSER_MODULES)  # no effect once the server runs
        return ProcessPoolExecutor(self.workers, mp_context=context, initializer=_init_parser, initargs=(os.getpid(),))

    async def start(self) -> None:
        """Start the processes from a thread: left to the first page, that start would run
        on the event loop and stall it for ~150 ms. A process that dies while starting
        (the OOM killer does not wait) is replaced too."""
        for attempt in range(PARSER_DEATHS_PER_PAGE):
            pool = self._pool = self._new()
            try:
                await asyncio.to_thread(lambda: [f.result() for f in [pool.submit(int) for _ in range(self.workers)]])
                return
            except BrokenProcessPool:
                pool.shutdown(wait=False, cancel_futures=True)
        raise CrawlerError(f"parser processes keep dying as they start ({PARSER_DEATHS_PER_PAGE} times): "
                           "is the machine out of memory?")

    def begin(self) -> None:
        """Start the processes in the background: the plan's first requests leave meanwhile."""
        self._starting = asyncio.create_task(self.start())

    async def ready(self) -> None:
        """The processes started: begun now if nothing began them (a pool the run may not need)."""
        if self._starting is None:
            self.begin()
        await self.settled()

    async def settled(self) -> None:
        """The start begun, if any, ended (raising what it raised)."""
        if self._starting is not None:
            await asyncio.shield(self._starting)  # one caller's cancellation stops no start

    def pids(self) -> list[int]:
        return list(getattr(self._pool, "_processes", {}) or {})

    async def run(self, fn, *args):  # type: ignore[no-untyped-def]
        """fn(*args) in a parser process; done again in a new pool if a process died."""
        await self.ready()
        for death in range(PARSER_DEATHS_PER_PAGE + 1):
            pool = self._pool
            assert pool is not None
            try:
                return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)
            except BrokenProcessPool:
                if death == PARSER_DEATHS_PER_PAGE:
                    raise BadPage(f"a parser process died {death + 1} times on this page") from None
                await self._replace(pool)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _replace(self, broken: ProcessPoolExecutor) -> None:
        async with self._replacing:
            if self._pool is not broken:
                return  # another caller replaced it already
            log.warning("a parser process died; starting a new set and parsing its pages again")
            broken.shutdown(wait=False, cancel_futures=True)
            self.replaced += 1
            await self.start()

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


class Crawl:
    """One run of a job against one state file: the commit path and what it shares."""

    def __init__(self, config: Config, store: Store, sink: Sink, client: ApiClient, pool: ParserPool,
                 stop: asyncio.Event) -> None:
        self.config = config
        self.store = store
        self.sink = sink
        self.client = client
        self.pool = pool
        self.resolver: AgencyResolver | None = None
        self.progress = Progress()
        self._commit_lock = asyncio.Lock()
        # Pages between their parse and their commit, across sources. Unbounded, each window's
        # parsed page (~6 MB of objects on heavy pages) queued for the commit lock while the
        # parsers took the next window's page ahead of this one's rendering.
        self.pages_in_hand = asyncio.Semaphore(config.parsers + 1)
        # Bodies in memory across windows (a heavy page is ~4 MB of gzip): one per request in
        # flight, one per parser and one waiting for it.
        self.bodies = LiveSemaphore(lambda: client.limiter.concurrency + config.parsers + 1)
        self._commits: set[asyncio.Task[None]] = set()
        self._claimed: dict[int, asyncio.Future[None]] = {}  # subject -> its batch's commit (`_claim`)
        self._reported = (0, 0)  # retries and 429s already added to the state's counters
        self._timed = time.monotonic()  # the run's time up to here is in the state (`run:ms`)
        self.stopping = stop  # set by SIGINT/SIGTERM: start nothing new, keep what is committed

    async def parse(self, fn, *args):  # type: ignore[no-untyped-def]
        return await self.pool.run(fn, *args)

    async def commit_page(self, page: ParsedPage, *, works: list[ParsedWork] | None = None,
                          window: WindowProgress | None = None, unit: UnitProgress | None = None,
                          meta: dict[str, str] | None = None) -> None:
        """Everything a batch of parsed works yields, written and committed (see module doc).
        `works`, when given, replaces the page's (a scroll passes its distinct new ones);
        `meta`, state settings that must move with the batch (a snapshot's currency)."""
        works = page.works if works is None else works
        problems = page.problems
        for kind, doi, detail in problems:
            self.progress.problems[kind] += 1
            log.info("bad data in %s: %s", doi, detail)

        async def select(seen_blobs: dict[int, bytes], agencies: dict[str, str | None]) -> Rendered:
            # Plain Python over every link of the page: in a thread, so the loop keeps sending.
            chosen = await asyncio.to_thread(select_new, works, seen_blobs, agencies, problems)
            data = await self.parse(render, chosen.groups, utc_now()) if chosen.groups else b""
            return Rendered(data, chosen.events, chosen.seen, chosen.counts, chosen.unknown)

        subjects = [w.subject for w in works] + problem_subjects(problems, works)
        await self.commit_selected(subjects, page.prefixes, select, works=len(works), window=window, unit=unit,
                                   meta=meta)

    async def commit_selected(self, subjects: list[int], prefixes: set[str],
                              select: Callable[[dict[int, bytes], dict[str, str | None]], Awaitable[Rendered]], *,
                              works: int, window: WindowProgress | None = None, unit: UnitProgress | None = None,
                              meta: dict[str, str] | None = None) -> None:
        """A batch whose links `select(seen sets, agencies)` chooses and renders, committed.

        Batches select and render side by side, each on its subjects' seen sets as committed:
        a batch sharing a subject with one in flight waits for that one's commit first
        (`_claim`), so a link is chosen once whatever the order. Only appending to the output
        and the state's transaction go one batch at a time.
        """
        assert self.resolver is not None
        agencies = await self.resolver.resolve(prefixes)
        claim = await self._claim(subjects)
        try:
            seen_blobs = await self.store.seen_links(subjects)
            chosen = await select(seen_blobs, agencies)
        except BaseException:
            self._release(subjects, claim)
            raise
        # The write and its commit must not be torn apart by a cancellation (Ctrl-C, a window
        # starting over): shielded, awaited again at shutdown, and the subjects stay claimed
        # until it ends, or a batch of them could read their seen sets before it commits.
        task = asyncio.create_task(self._write(chosen, works, window, unit, meta))
        self._commits.add(task)
        task.add_done_callback(self._commits.discard)
        task.add_done_callback(lambda _: self._release(subjects, claim))
        await asyncio.shield(task)

    async def _claim(self, subjects: list[int]) -> asyncio.Future[None]:
        """Hold these subjects' seen sets from their read to their commit (`_release`)."""
        while busy := {self._claimed[s] for s in subjects if s in self._claimed}:
            await asyncio.wait(busy)
        claim = asyncio.get_running_loop().create_future()
        for subject in subjects:
            self._claimed[subject] = claim
        return claim

    def _release(self, subjects: list[int], claim: asyncio.Future[None]) -> None:
        for subject in subjects:
            if self._claimed.get(subject) is claim:
                del self._claimed[subject]
        if not claim.done():
            claim.set_result(None)

    async def _write(self, chosen: Rendered, works: int, window: WindowProgress | None, unit: UnitProgress | None,
                     meta: dict[str, str] | None) -> None:
        async with self._commit_lock:
            offset = before = self.sink.offset
            if chosen.data:
                offset = await asyncio.to_thread(self.sink.append, chosen.data)
            # A page of the API; a batch of records from files (a unit's) is not one.
            counters = Counter(self._with_run({"works": works, "events": chosen.events,
                                               "pages": int(unit is None), **self._request_counts()}))
            counters.update(chosen.counts)
            try:
                await self.store.commit_page(
                    seen=chosen.seen, events=chosen.events, sink_seq=self.sink.seq, sink_offset=offset,
                    counters=counters, unknown=chosen.unknown, window=window, unit=unit, meta=meta,
                )
            except DiskError:
                # Not committed (the transaction rolled back): the page's events must leave
                # the file too, or completing it would keep them and the redone page repeat them.
                if self.sink.offset != before:
                    await asyncio.to_thread(self.sink.rollback, before)
                raise
            self.progress.committed(counters["pages"], works, chosen.events)
            if self.sink.wants_rotation():
                await self._finish_file()

    def _with_run(self, counts: dict[str, int]) -> dict[str, int]:
        """The counts, and the same as this run's (`run:…`) with the time since the last ones:
        `crawler status` shows the run's speeds from them, even after a SIGKILL."""
        now = time.monotonic()
        ms = int((now - self._timed) * 1000)
        self._timed += ms / 1000
        return {**counts, **{RUN + k: v for k, v in counts.items() if k in RUN_COUNTERS}, RUN + "ms": ms}

    def _request_counts(self) -> dict[str, int]:
        """Retries and 429s since the last commit, for the state's counters."""
        stats = self.client.stats
        counts = {"retries": stats.retries - self._reported[0], "429s": stats.throttled - self._reported[1]}
        self._reported = (stats.retries, stats.throttled)
        return counts

    async def _finish_file(self) -> None:
        """Complete the part file: its length durable in the state first, so a power cut
        after the rename cannot leave a completed file longer than what the state knows."""
        if self.sink.offset == 0 or self.sink.stuck:
            return
        crash_point("complete:before-durable")
        await self.store.set_sink_position(self.sink.seq, self.sink.offset, durable=True)
        finished = await asyncio.to_thread(self.sink.finish_file)
        if finished is not None:
            await self.store.set_sink_position(self.sink.seq, self.sink.offset)
            crash_point("complete:after-commit")
            log.info("completed %s", finished)

    async def close(self) -> None:
        """Let started commits end, keep the run's request counters, complete the part file.

        Never raises: after a failure (disk full) the part file stays and the next start
        cuts it back to the committed length.
        """
        await asyncio.gather(*list(self._commits), return_exceptions=True)
        path = self.sink.path()
        try:
            async with self._commit_lock:
                await self.store.add_counters(self._with_run(self._request_counts()))
                if self.client.stats.last_error:
                    await self.store.set_meta({"last_error": json.dumps(
                        {"at": utc_now(), "error": self.client.stats.last_error})})
                await self._finish_file()
        except (CrawlerError, OSError) as exc:
            log.warning("left %s for the next run to complete (%s)", path, exc)
        finally:
            self.sink.close()


# -- setting a run up -------------------------------------------------------------------
def open_session(config: Config, stop: asyncio.Event | None = None) -> tuple[aiohttp.ClientSession, ApiClient]:
    """The session and its client; `stop`, the run's stop, ends waiting on a failing service."""
    if config.plus_token or config.trust_rate_headers:
        start, ceiling = POLITE, None  # Plus: its limits come from the headers
    elif config.mailto:
        start, ceiling = POLITE, (POLITE[0] / POLITE[1], POLITE[2])
    else:
        start, ceiling = PUBLIC, (PUBLIC[0] / PUBLIC[1], PUBLIC[2])
    limiter = Limiter(*start, cap=config.concurrency, name="api", ceiling=ceiling)
    ra_limiter = Limiter(5, 1.0, 2, name="ra", ceiling=(5.0, 2))
    session = new_session(config.timeout_s)
    retry = RetryPolicy(None, config.retry_initial_s, config.retry_max_s)
    client = ApiClient(
        session,
        api_url=config.api_url,
        ra_url=config.ra_url,
        mailto=config.mailto,
        plus_token=config.plus_token,
        limiter=limiter,
        ra_limiter=ra_limiter,
        retry=retry,
        stats=RequestStats(),
        max_body=config.max_body_bytes,
        health=Health("the API", first_wait_s=config.retry_initial_s, max_wait_s=config.retry_max_s,
                      give_up_after_s=config.give_up_after_s),
        ra_health=Health("the registration-agency service", first_wait_s=config.retry_initial_s,
                         max_wait_s=config.retry_max_s, give_up_after_s=config.give_up_after_s),
        stop=stop,
    )
    return session, client


@contextlib.asynccontextmanager
async def opened(config: Config, stop: asyncio.Event | None = None) -> AsyncIterator[tuple[Store, ApiClient]]:
    if not config.state.exists():  # a refused output folder makes no state file either
        refuse_taken(output_dir(config, {}), None, config.state)
    store = await Store.open(config.state)
    try:
        session, client = open_session(config, stop)
        async with session:
            yield store, client
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def started_crawl(
    config: Config, store: Store, client: ApiClient, output: Output, stop: asyncio.Event, *, parse_pool: bool = True
) -> AsyncIterator[Crawl]:
    """A Crawl ready to write: the output cut back to what the state committed, the parser
    processes started (without `parse_pool`, on first use only: a source with processes of
    its own), the agency cache loaded; on the way out its output is closed cleanly."""
    map_big_blocks()
    seq, offset = await store.sink_position()
    sink = Sink(output.path, seq, offset, config.rotate_bytes)
    if sink.recover():
        await store.set_sink_position(sink.seq, sink.offset)
    pool = ParserPool(config.parsers)
    if parse_pool:
        pool.begin()
    try:
        # What exists now lives as long as the run: out of the collector's sight, a full
        # collection (which runs on the loop, between pages) costs a fraction as much.
        gc.freeze()
        await store.begin_run(utc_now())
        crawl = Crawl(config, store, sink, client, pool, stop)
        watcher = asyncio.create_task(_watch_outages(store, client))
        try:
            crawl.resolver = await AgencyResolver.load(client, store)
            yield crawl
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            if crawl.resolver is not None:
                await crawl.resolver.close()
            await crawl.close()
            with contextlib.suppress(CrawlerError):
                await store.set_meta({"outage": None})
    finally:
        with contextlib.suppress(Exception):  # a failed start was raised by the first parse, if any
            await pool.settled()
        await asyncio.to_thread(pool.shutdown)


async def _watch_outages(store: Store, client: ApiClient, every_s: float = 2.0) -> None:
    """Keep the state's note of an outage current, for `crawler status` in another terminal."""
    last: object = None
    while True:
        outages = [h.state() for h in (client.health, client.ra_health) if h.down]
        if outages != last:
            with contextlib.suppress(CrawlerError):
                await store.set_meta({"outage": json.dumps(outages) if outages else None})
            last = outages
        await asyncio.sleep(every_s)


def output_dir(config: Config, meta: dict[str, str]) -> Path:
    """The state file's output directory: what it records, else --out, else beside it."""
    if config.out is not None:
        return config.out.resolve()
    if "out" in meta:
        return Path(meta["out"])
    return config.state.resolve().with_name(config.state.stem + "-events")
