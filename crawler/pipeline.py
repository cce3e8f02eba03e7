"""Wires the stages: plan -> pager (one scroll per window) -> parse pool -> agencies -> store + sink.

The only module that knows them all. Data flows one way; every page ends in one commit that
holds its seen keys, its window's counts and the output file's new length (see `sink`).

Resume policy: a window that was running when the process died restarts from `cursor=*`.
Its scroll position lived on the server and may be past pages we never stored; the seen-key
store drops the links already written, so nothing is lost and nothing is repeated.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import multiprocessing
import os
import re
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path

import aiohttp
import msgspec

from crawler.agency import AgencyResolver
from crawler.api.body import Body
from crawler.api.client import ApiClient, RequestStats, RetryPolicy, new_session
from crawler.api.limits import POLITE, PUBLIC, Limiter, LiveSemaphore
from crawler.config import DEFAULT_OUT, Config
from crawler.decode import BadPage, ParsedPage, ParsedWork, parse_body, parse_works
from crawler.errors import (
    CrawlerError,
    CursorInvalid,
    RetryableError,
    StateError,
)
from crawler.events import CROSSREF_TOKEN, EventGroup, render, token_for, utc_now
from crawler.extract import prefix_of
from crawler.memory import map_big_blocks
from crawler.model import SELECT_FIELDS, Problem, Work
from crawler.plan import size_all
from crawler.progress import Progress, report_progress
from crawler.sink import Sink
from crawler.store import WINDOW_STATUSES, Store, Window, unpack

log = logging.getLogger(__name__)

_HEAD = 4096
_NEXT_CURSOR = re.compile(rb'"next-cursor"\s*:\s*("(?:[^"\\]|\\.)*")')
_EMPTY_ITEMS = re.compile(rb'"items"\s*:\s*\[\s*\]')


def scan_head(body: Body) -> tuple[str | None, bool]:
    """(next-cursor, items empty?) from the start of a page, without inflating or decoding
    it all, so the next request can leave while this page waits for a parser."""
    head = body.inflate(head=_HEAD)
    match = _NEXT_CURSOR.search(head)
    cursor = msgspec.json.decode(match.group(1)) if match else None
    return cursor, _EMPTY_ITEMS.search(head) is not None


async def _together(*tasks: asyncio.Task[None]) -> None:
    """Await tasks; the first failure cancels the rest and is raised as itself (no group)."""
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


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


def _start_workers(pool: ProcessPoolExecutor, workers: int) -> None:
    """Start the parser processes (and the forkserver) from a thread. Left to the first page,
    that start would run on the event loop and stall it for ~150 ms."""
    for started in [pool.submit(int) for _ in range(workers)]:
        started.result()


class Crawl:
    """One run of a job against one state file."""

    def __init__(
        self,
        config: Config,
        store: Store,
        sink: Sink,
        client: ApiClient,
        pool: ProcessPoolExecutor,
        stop: asyncio.Event,
    ) -> None:
        self.config = config
        self.store = store
        self.sink = sink
        self.client = client
        self.pool = pool
        self.resolver: AgencyResolver | None = None
        self.progress = Progress()
        self._commit_lock = asyncio.Lock()
        # Pages between their parse and their commit, across windows. Unbounded, each window's
        # parsed page (~6 MB of objects on heavy pages) queued for the commit lock while the
        # parsers took the next window's page ahead of this one's rendering.
        self._pages_in_hand = asyncio.Semaphore(config.parsers + 1)
        # Bodies in memory across windows (a heavy page is ~4 MB of gzip): one per request in
        # flight, one per parser and one waiting for it. Each window may hold two (one parsing,
        # one arriving), which without this bound would be twice the concurrency.
        self._bodies = LiveSemaphore(lambda: client.limiter.concurrency + config.parsers + 1)
        self._commits: set[asyncio.Task[None]] = set()
        self._reported = (0, 0)  # retries and 429s already added to the state's counters
        self.stopping = stop  # set by SIGINT/SIGTERM: start nothing new, keep what is committed

    async def _in_pool(self, fn, *args):  # type: ignore[no-untyped-def]
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    # -- windows -----------------------------------------------------------------------
    async def run_windows(self, job: str, planner: asyncio.Task[None] | None) -> None:
        """Keep as many windows scrolling as the limiter allows until none is left."""
        active: dict[int, asyncio.Task[None]] = {}
        try:
            while not self.stopping.is_set():
                if len(active) < self.client.limiter.concurrency:
                    for window in await self.store.windows(job, "pending"):
                        if len(active) >= self.client.limiter.concurrency:
                            break
                        if window.id not in active:
                            active[window.id] = asyncio.create_task(self.crawl_window(window))
                planning = planner is not None and not planner.done()
                if not active and not planning:
                    break
                waiting: set[asyncio.Future] = set(active.values())
                if planning:
                    waiting.add(planner)  # type: ignore[arg-type]
                stop = asyncio.ensure_future(self.stopping.wait())
                done, _ = await asyncio.wait(waiting | {stop}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
                stop.cancel()
                for window_id, task in list(active.items()):
                    if task.done():
                        del active[window_id]
                        task.result()  # a fatal error stops the run
                if planner is not None and planner.done():
                    planner.result()
        finally:
            for task in active.values():
                task.cancel()
            await asyncio.gather(*active.values(), return_exceptions=True)

    async def crawl_window(self, window: Window) -> None:
        """Scroll one window to its end, starting over (bounded) when the scroll breaks."""
        reason = ""
        for attempt in range(1, self.config.window_attempts + 1):
            await self.store.start_window(window.id)
            try:
                received, total = await self.scroll(window)
            except (RetryableError, CursorInvalid, BadPage) as exc:
                reason = str(exc)
                log.warning("window %s..%s: %s; starting it over (attempt %d)", window.start, window.end, reason, attempt)
            else:
                if total is None or received >= total:
                    await self.store.end_window(window.id, "done", total=total)
                    return
                reason = f"the scroll ended after {received} of {total} works"
                log.warning("window %s..%s: %s (attempt %d)", window.start, window.end, reason, attempt)
            if attempt < self.config.window_attempts:
                await asyncio.sleep(min(self.config.retry_max_s, self.config.retry_initial_s * 2**attempt))
        status = "short" if reason.startswith("the scroll ended") else "failed"
        await self.store.end_window(window.id, status, error=reason)

    async def scroll(self, window: Window) -> tuple[int, int | None]:
        """One pass from cursor=* to the empty page; returns (distinct works, total-results)."""
        queue: asyncio.Queue[Body | None] = asyncio.Queue()
        # This window's bodies in memory: one parsing (or waiting for a parser), one arriving.
        # The next request leaves once a page is parsed, not after it is received.
        room = asyncio.Semaphore(2)
        params = {
            "filter": window.filter,
            "rows": str(self.config.rows),
            "select": ",".join(SELECT_FIELDS),
        }
        state = _ScrollState()
        bodies = 0  # held of `self._bodies`: given back as pages are parsed, the rest at the end

        async def fetch() -> None:
            nonlocal bodies
            cursor = "*"
            while True:
                await room.acquire()
                await self._bodies.acquire()
                bodies += 1
                body = await self.client.works({**params, "cursor": cursor}, continuation=cursor != "*")
                next_cursor, empty = scan_head(body)
                queue.put_nowait(body)
                if empty:
                    break
                if next_cursor is None:
                    raise BadPage("a page without next-cursor")
                cursor = state.cursor = next_cursor
            queue.put_nowait(None)

        async def consume(fetcher: asyncio.Task[None]) -> None:
            nonlocal bodies
            while (body := await queue.get()) is not None:
                async with self._pages_in_hand:
                    page: ParsedPage = await self._in_pool(parse_body, body)
                    del body  # the parsed page replaces it: the window's next request may leave
                    room.release()
                    bodies -= 1
                    self._bodies.release()
                    state.total = page.total if page.total is not None else state.total
                    if page.items == 0:
                        state.finished = True
                        fetcher.cancel()  # the head scan missed the end: stop asking
                        return
                    await self.commit_page(window, page, state)
                    del page  # not kept while the window waits for its next body

        fetcher = asyncio.create_task(fetch())
        try:
            await _together(fetcher, asyncio.create_task(consume(fetcher)))
        finally:
            if bodies:
                self._bodies.release(bodies)
        if not state.finished:
            raise BadPage("the scroll stopped before its empty page")
        return state.received, state.total

    # -- pages -------------------------------------------------------------------------
    async def commit_page(self, window: Window | None, page: ParsedPage, state: "_ScrollState") -> None:
        for kind, doi, detail in page.problems:
            self.progress.problems[kind] += 1
            log.info("bad data in %s: %s", doi, detail)
        if window is None:  # files: a work may legitimately come again, in a newer version
            fresh = page.works
        else:  # a scroll: the same work again is a duplicate page or item
            fresh = [w for w in page.works if w.subject not in state.subjects]
            state.subjects.update(w.subject for w in fresh)
        state.received += len(fresh) + sum(1 for kind, _, _ in page.problems if kind == Problem.NO_DOI)
        assert self.resolver is not None
        agencies = await self.resolver.resolve(page.prefixes)
        # The write and its commit must not be torn apart by a cancellation (Ctrl-C):
        # shielded, and awaited again at shutdown.
        task = asyncio.create_task(self._write(window, fresh, agencies, state, page))
        self._commits.add(task)
        task.add_done_callback(self._commits.discard)
        await asyncio.shield(task)

    async def _write(self, window, works, agencies, state, page) -> None:  # type: ignore[no-untyped-def]
        async with self._commit_lock:
            seen_blobs = await self.store.seen_links([w.subject for w in works])
            # Plain Python over every link of the page: in a thread, so the loop keeps sending.
            groups, events, changed, counts = await asyncio.to_thread(select_new, works, seen_blobs, agencies)
            offset = before = self.sink.offset
            if groups:
                data = await self._in_pool(render, groups, utc_now())
                offset = await asyncio.to_thread(self.sink.append, data)
            stats = self.client.stats
            counters = Counter(
                {
                    "works": len(works),
                    "events": events,
                    "pages": 1,
                    "retries": stats.retries - self._reported[0],
                    "429s": stats.throttled - self._reported[1],
                }
            )
            self._reported = (stats.retries, stats.throttled)
            counters.update(counts)
            counters.update(Counter(kind for kind, _, _ in page.problems))
            try:
                await self.store.commit_page(
                    window_id=window.id if window is not None else None,
                    works=len(works),
                    received=state.received,
                    cursor=state.cursor,
                    seen=changed,
                    events=events,
                    sink_seq=self.sink.seq,
                    sink_offset=offset,
                    counters=counters,
                )
            except StateError:
                # Not committed (the transaction rolled back): the page's events must leave
                # the file too, or renaming it would keep them and the redone page repeat them.
                if self.sink.offset != before:
                    await asyncio.to_thread(self.sink.rollback, before)
                raise
            self.progress.pages += 1
            self.progress.works += len(works)
            self.progress.events += events
            if self.sink.wants_rotation():
                await self._finish_file()

    async def _finish_file(self) -> None:
        finished = await asyncio.to_thread(self.sink.finish_file)
        if finished is not None:
            await self.store.set_sink_position(self.sink.seq, self.sink.offset)
            log.info("completed %s", finished)

    async def close(self) -> None:
        """Let started commits end, then give the part file its final name.

        Never raises: after a failure (disk full) the part file stays and the next start
        cuts it back to the committed length.
        """
        await asyncio.gather(*list(self._commits), return_exceptions=True)
        path = self.sink.path()
        try:
            async with self._commit_lock:
                await self._finish_file()
        except (CrawlerError, OSError) as exc:
            log.warning("left %s for the next run to complete (%s)", path, exc)
        finally:
            self.sink.close()


@dataclass
class _ScrollState:
    cursor: str | None = None
    total: int | None = None
    received: int = 0
    finished: bool = False
    subjects: set[int] = field(default_factory=set)  # hashes of the works seen: ~half a DOI's memory


# -- jobs ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    code: int
    message: str


@dataclass(frozen=True)
class JobResult:
    complete: bool
    stopped: bool
    works: int  # this run
    events: int  # this run
    summary: dict[str, int]  # the job's windows by status, works and events (state totals)

    def figures(self) -> str:
        return (
            f"{self.works:,} works and {self.events:,} new events this run; "
            f"{self.summary.get('works', 0):,} works, {self.summary.get('events', 0):,} events in all"
        )


def select_new(
    works: list[ParsedWork], seen_blobs: dict[int, bytes], agencies: dict[str, str | None]
) -> tuple[list[EventGroup], int, dict[int, set[int]], Counter[str]]:
    """The links of a page never emitted before that may become events, by the agency rules.

    Returns them in groups of events that differ only by their object, how many events that
    is, the updated seen-sets of the subjects they belong to, and counts for the state: what
    was skipped and why, and the new events by relation, object agency and subject prefix
    (`crawler stats` reads these instead of the output).
    """
    known: dict[int, set[int]] = {}
    changed: dict[int, set[int]] = {}
    groups: list[EventGroup] = []
    total = 0
    counts: Counter[str] = Counter()
    tokens = {prefix: token_for(agency) for prefix, agency in agencies.items()}
    new_prefixes: list[str] = []
    for work in works:
        hashes = known.get(work.subject)
        if hashes is None:
            hashes = known[work.subject] = set(unpack(seen_blobs.get(work.subject, b"")))
        work_events = 0
        for relation, mined, objs, link_hashes in work.groups:
            if hashes:
                unseen = [i for i, link_hash in enumerate(link_hashes) if link_hash not in hashes]
                if len(unseen) < len(objs):
                    objs, link_hashes = [objs[i] for i in unseen], [link_hashes[i] for i in unseen]
            if not objs:
                continue
            prefixes = [obj[: obj.index("/")] for obj in objs]
            group_tokens = list(map(tokens.__getitem__, prefixes))
            kept: dict[str, Sequence[str]]  # objects by source token (agent)
            agent = group_tokens[0]
            if not mined and agent is not None and group_tokens.count(agent) == len(objs):
                # The usual case: every link becomes an event, all for the same agent.
                kept = {agent: objs}
                hashes.update(link_hashes)
                new_prefixes += prefixes
            else:
                by_agent: dict[str, list[str]] = {}
                for obj, link_hash, prefix, token in zip(objs, link_hashes, prefixes, group_tokens):
                    if token is None:
                        counts[Problem.UNKNOWN_AGENCY] += 1
                    elif mined and token != CROSSREF_TOKEN:
                        counts[Problem.MINED_NOT_CROSSREF] += 1
                    else:
                        by_agent.setdefault(token, []).append(obj)
                        hashes.add(link_hash)
                        new_prefixes.append(prefix)
                kept = by_agent
            for token, these in kept.items():
                groups.append((work.doi, work.type, work.occurred_at, relation, token, these))
                counts[f"relation:{relation}"] += len(these)
                work_events += len(these)
        if work_events:
            changed[work.subject] = hashes
            counts[f"subject-prefix:{prefix_of(work.doi)}"] += work_events
            total += work_events
    for prefix, n in Counter(new_prefixes).items():
        counts[f"agency:{agencies[prefix]}"] += n
    return groups, total, changed, counts


def _today() -> date:
    return datetime.now(timezone.utc).date()


def _output_dir(store: Store, meta: dict[str, str], config: Config) -> Path:
    """The state file's output directory: recorded once, the same ever after."""
    out = (config.out or Path(meta.get("out", DEFAULT_OUT))).resolve()
    if "out" in meta and str(out) != meta["out"]:
        raise StateError(
            f"{store.path} writes its events to {meta['out']}, not {out}; "
            "use the same --out, or another --state"
        )
    return out


def open_session(config: Config) -> tuple[aiohttp.ClientSession, ApiClient]:
    start = POLITE if config.mailto else PUBLIC
    limiter = Limiter(*start, cap=config.concurrency, name="api")
    ra_limiter = Limiter(5, 1.0, 2, name="ra")
    session = new_session(config.timeout_s)
    client = ApiClient(
        session,
        api_url=config.api_url,
        ra_url=config.ra_url,
        mailto=config.mailto,
        plus_token=config.plus_token,
        limiter=limiter,
        ra_limiter=ra_limiter,
        retry=RetryPolicy(config.retry_attempts, config.retry_initial_s, config.retry_max_s),
        stats=RequestStats(),
    )
    return session, client


@contextlib.asynccontextmanager
async def opened(config: Config) -> AsyncIterator[tuple[Store, ApiClient]]:
    store = await Store.open(config.state)
    try:
        session, client = open_session(config)
        async with session:
            yield store, client
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def started_crawl(
    config: Config, store: Store, client: ApiClient, out: Path, stop: asyncio.Event
) -> AsyncIterator[Crawl]:
    """A Crawl ready to write: the output cut back to what the state committed, the parser
    processes started, the agency cache loaded; on the way out its output is closed cleanly."""
    map_big_blocks()
    seq, offset = await store.sink_position()
    sink = Sink(out, seq, offset, config.rotate_bytes)
    if sink.recover():
        await store.set_sink_position(sink.seq, sink.offset)
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(config.parsers, mp_context=context, initializer=_init_parser, initargs=(os.getpid(),)) as pool:
        await asyncio.to_thread(_start_workers, pool, config.parsers)
        # What exists now lives as long as the run: out of the collector's sight, a full
        # collection (which runs on the loop, between pages) costs a fraction as much.
        gc.freeze()
        crawl = Crawl(config, store, sink, client, pool, stop)
        try:
            crawl.resolver = await AgencyResolver.load(client, store)
            yield crawl
        finally:
            await crawl.close()


async def crawl_job(config: Config, store: Store, client: ApiClient, out: Path, job: str, stop: asyncio.Event) -> JobResult:
    """Plan, scroll and write every window of `job` until none is left (or a stop)."""
    restarted = await store.requeue_running(job)
    if restarted:
        log.info("resuming: %d window(s) that were running restart from cursor=*", restarted)
    for window in await store.windows(job, "failed", "short"):
        await store.size_window(window.id, window.total or 1)  # back to pending: try again
    async with started_crawl(config, store, client, out, stop) as crawl:
        reporter = asyncio.create_task(report_progress(crawl, job, config.progress_s, config.live))
        planner = asyncio.create_task(size_all(store, client, job, config.rows * config.window_pages))
        try:
            await crawl.run_windows(job, planner)
        finally:
            reporter.cancel()
            if not planner.done():
                planner.cancel()
            await asyncio.gather(planner, reporter, return_exceptions=True)
    summary = (await store.window_summary()).get(job, {})
    incomplete = any(summary.get(s) for s in ("unsized", "pending", "running", "short", "failed"))
    return JobResult(not incomplete and not stop.is_set(), stop.is_set(), crawl.progress.works, crawl.progress.events, summary)


def _unfinished(result: JobResult, what: str) -> Outcome:
    if result.stopped:
        return Outcome(130, f"stopped cleanly ({result.figures()}); run the same command again to resume")
    bad = result.summary.get("short", 0) + result.summary.get("failed", 0)
    return Outcome(
        1,
        f"{what} incomplete: {bad} window(s) short or failed ({result.figures()}). "
        "See `crawler status`; run the same command again to retry them.",
    )


async def backfill(config: Config, stop: asyncio.Event) -> Outcome:
    """Every work created in the range; resumes; refuses a state file of another range."""
    async with opened(config) as (store, client):
        meta = await store.meta()
        out = _output_dir(store, meta, config)
        if "backfill_from" in meta:
            start, until = date.fromisoformat(meta["backfill_from"]), date.fromisoformat(meta["backfill_until"])
            wanted = (config.date_from or start, config.date_until or until)
            if wanted != (start, until):
                raise StateError(
                    f"{store.path} belongs to the backfill of {start}..{until}, not "
                    f"{wanted[0]}..{wanted[1]}; use another --state for another range"
                )
            if "backfill_finished_at" in meta:
                summary = (await store.window_summary()).get("backfill", {})
                return Outcome(
                    0,
                    f"the backfill of {start}..{until} is already complete: {summary.get('works', 0):,} "
                    f"works, {summary.get('events', 0):,} events in {out}. Nothing to do.",
                )
        else:
            until = config.date_until or _today()
            start = config.date_from or await client.earliest_created() or until
            if start > until:
                raise StateError(f"--from {start} is after --until {until}")
            await store.set_meta(
                {
                    "backfill_from": start.isoformat(),
                    "backfill_until": until.isoformat(),
                    "out": str(out),
                    "backfill_started_at": utc_now(),
                }
            )
            await store.add_windows("backfill", "created-date", [(start.isoformat(), until.isoformat())])
        result = await crawl_job(config, store, client, out, "backfill", stop)
        if not result.complete:
            return _unfinished(result, "backfill")
        await store.set_meta({"backfill_finished_at": utc_now()})
        return Outcome(0, f"backfill of {start}..{until} complete: {result.figures()}; output in {out}")


async def update(config: Config, stop: asyncio.Event, since: date | None = None) -> Outcome:
    """Works re-indexed since the high-water mark; the mark moves only when all is written.

    The mark is a date and the next update starts *on* it (a day's overlap): a work re-indexed
    while this update runs gets an index date on or after it, so the next update catches it.
    """
    async with opened(config) as (store, client):
        meta = await store.meta()
        out = _output_dir(store, meta, config)
        unfinished = [w for w in await store.windows("update", *WINDOW_STATUSES) if w.status != "done"]
        if unfinished and since is None:
            start, until = date.fromisoformat(meta["update_from"]), date.fromisoformat(meta["update_until"])
            log.info("resuming the update of %s..%s", start, until)
        else:
            mark = meta.get("update_mark") or meta.get("backfill_started_at", "")[:10]
            if since is None and not mark:
                raise StateError(
                    f"{store.path} has no high-water mark: run a backfill first, or give --since YYYY-MM-DD"
                )
            start, until = since or date.fromisoformat(mark), _today()
            if start > until:
                raise StateError(f"--since {start} is in the future")
            await store.clear_windows("update")
            await store.set_meta(
                {"update_from": start.isoformat(), "update_until": until.isoformat(), "update_started_at": utc_now(), "out": str(out)}
            )
            await store.add_windows("update", "index-date", [(start.isoformat(), until.isoformat())])
        result = await crawl_job(config, store, client, out, "update", stop)
        if not result.complete:
            return _unfinished(result, "update")
        finished = utc_now()
        await store.set_meta(
            {
                "update_mark": until.isoformat(),
                "last_update": json.dumps(
                    {"from": start.isoformat(), "until": until.isoformat(), "finished_at": finished,
                     "works": result.summary.get("works", 0), "events": result.summary.get("events", 0)}
                ),
            }
        )
        return Outcome(0, f"update of {start}..{until} complete: {result.figures()}; high-water mark now {until}")


async def ingest_xml(config: Config, stop: asyncio.Event, paths: list[Path]) -> Outcome:
    """Crossref XML files -> the same events, into the same state and output."""
    from crawler.xmlreader import XmlProblem, iter_paths, read_works

    batch_size = config.rows

    def batches() -> Iterator[tuple[Path, list[Work], list[XmlProblem]]]:
        for path in iter_paths(paths):
            works: list[Work] = []
            problems: list[XmlProblem] = []
            for item in read_works(path):
                if isinstance(item, XmlProblem):
                    problems.append(item)
                    continue
                works.append(item)
                if len(works) >= batch_size:
                    yield path, works, problems
                    works, problems = [], []
            yield path, works, problems

    async with opened(config) as (store, client):
        meta = await store.meta()
        out = _output_dir(store, meta, config)
        if "out" not in meta:
            await store.set_meta({"out": str(out)})
        async with started_crawl(config, store, client, out, stop) as crawl:
            source = batches()
            files: set[Path] = set()
            bad = 0
            last_report = time.monotonic()
            while not stop.is_set():
                item = await asyncio.to_thread(next, source, None)
                if item is None:
                    break
                path, works, problems = item
                if path not in files:
                    files.add(path)
                    log.info("reading %s", path)
                for problem in problems:
                    bad += 1
                    log.warning("%s:%s: %s", problem.path, problem.line or "?", problem.message)
                if works:
                    parsed, prefixes = await crawl._in_pool(parse_works, works)
                    page = ParsedPage(None, None, len(works), parsed, [], prefixes)
                    await crawl.commit_page(None, page, _ScrollState())
                if config.progress_s and time.monotonic() - last_report >= config.progress_s:
                    last_report = time.monotonic()
                    log.info("%d file(s), %s records, %s new events so far", len(files),
                             f"{crawl.progress.works:,}", f"{crawl.progress.events:,}")
        figures = (f"{len(files)} file(s), {crawl.progress.works:,} records, {crawl.progress.events:,} new events"
                   + (f", {bad} problem(s) reported above" if bad else ""))
        if stop.is_set():
            return Outcome(130, f"stopped cleanly after {figures}; run the same command again to finish")
        return Outcome(1 if bad else 0, f"ingested {figures}; output in {out}")
