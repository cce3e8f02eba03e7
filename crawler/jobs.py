"""The jobs a command runs: backfill (from the API or a snapshot), update, ingest-xml (and their
outcome for the CLI).

Each job checks the state file's settings (range, scope, output directory), claims its output
directory, starts a crawl and feeds the commit path from one source (`crawler.sources`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from crawler.api.client import ApiClient
from crawler.config import Config
from crawler.engine import Crawl, opened, output_dir, started_crawl
from crawler.errors import CrawlerError, StateError
from crawler.events import utc_now
from crawler.output import Output, claim
from crawler.figures import counted, duration, few
from crawler.progress import report_progress
from crawler.sources.deferred import fetch_again
from crawler.sources.plan import Planner
from crawler.sources.windows import WindowScroller
from crawler.store import Store

log = logging.getLogger(__name__)

TYPICAL_PAGE_S = 1.6  # seconds to answer a full page of 1,000 works, typical of the polite pool


@dataclass(frozen=True)
class Outcome:
    code: int
    message: str
    figures: dict[str, int | float] = field(default_factory=dict)  # for --log-format json


@dataclass(frozen=True)
class JobResult:
    complete: bool  # every window done
    stopped: bool
    works: int  # this run
    events: int  # this run
    summary: dict[str, int]  # the job's windows by status, works and events (state totals)
    all_events: int  # in the state file, every job
    run: dict[str, int | float]  # this run's figures (`Progress.figures`)

    def figures(self) -> str:
        return (
            f"{counted(self.works, 'work')} and {counted(self.events, 'new event')} this run; "
            f"{counted(self.all_events, 'event')} in the state in all"
        )

    def outcome(self, code: int, message: str) -> Outcome:
        return Outcome(code, message, {**self.run, "events_in_state": self.all_events})


def _today() -> date:
    return datetime.now(timezone.utc).date()


async def prepare_output(config: Config, store: Store, meta: dict[str, str]) -> Output:
    """The state file's output directory, claimed, and recorded in the state once it is."""
    out = output_dir(config, meta)
    if "out" in meta and str(out) != meta["out"]:
        raise StateError(
            f"{store.path} writes its events to {meta['out']}, not {out}; "
            "use the same --out, or another --state"
        )
    output = claim(out, meta["state_id"], store.path)
    if "out" not in meta:
        await store.set_meta({"out": str(out)})
    return output


async def _note_failure(store: Store, client: ApiClient) -> None:
    """For `crawler status`: what a run that failed before its crawl started met on the way."""
    stats = client.stats
    await store.add_counters({"retries": stats.retries, "429s": stats.throttled})
    if stats.last_error:
        await store.set_meta({"last_error": json.dumps({"at": utc_now(), "error": stats.last_error})})


def _check_setting(store: Store, meta: dict[str, str], key: str, wanted: str, what: str) -> None:
    if key in meta and meta[key] != wanted:
        raise StateError(
            f"{store.path} belongs to a {what} of {meta[key] or 'everything'}, not {wanted or 'everything'}; "
            "use another --state for another one"
        )


async def crawl_job(config: Config, store: Store, client: ApiClient, output: Output, job: str,
                    stop: asyncio.Event, scope: str) -> JobResult:
    """Plan, scroll and write every window of `job` until none is left (or a stop)."""
    restarted = await store.requeue(job, "running")
    if restarted:
        log.info("resuming: %d window(s) that were running restart from cursor=*", restarted)
    retried = await store.requeue(job, "short", "failed")
    if retried:
        log.info("trying %d short or failed window(s) again", retried)
    async with started_crawl(config, store, client, output, stop) as crawl:
        reporter = asyncio.create_task(report_progress(crawl, job, config.progress_s, config.live))
        try:
            await fetch_again(crawl)
            planner = Planner(store, client, job, rows=config.rows, window_pages=config.window_pages, scope=scope,
                              concurrency=lambda: client.limiter.concurrency)
            scroller = WindowScroller(crawl, job, planner, scope)
            planner.running_left, planner.scrolling = scroller.running_left, scroller.scrolling
            planner.free_slots = scroller.free_slots
            await scroller.run()
        finally:
            reporter.cancel()
            await asyncio.gather(reporter, return_exceptions=True)
            await store.requeue(job, "running")  # a clean stop leaves nothing "running"
    return await _result(store, crawl, job, stop)


async def _result(store: Store, crawl: Crawl, job: str, stop: asyncio.Event) -> JobResult:
    summary = (await store.window_summary()).get(job, {})
    incomplete = any(summary.get(s) for s in ("unsized", "pending", "running", "short", "failed"))
    events = (await store.counters()).get("events", 0)
    return JobResult(not incomplete and not stop.is_set(), stop.is_set(), crawl.progress.works,
                     crawl.progress.events, summary, events, crawl.progress.figures())


def _unfinished(result: JobResult, what: str) -> Outcome:
    if result.stopped:
        return result.outcome(130, f"stopped cleanly ({result.figures()}); run the same command again to resume")
    bad = result.summary.get("short", 0) + result.summary.get("failed", 0)
    return result.outcome(
        1,
        f"{what} incomplete: {bad} window(s) short or failed ({result.figures()}). "
        "See `crawler status --windows`; run the same command again to retry them.",
    )


async def plan_only(config: Config, store: Store, client: ApiClient, job: str, what: str) -> Outcome:
    """Size and cut the job's windows as a crawl would (counts and facets only), keep the plan
    in the state for the real run, and say what it holds and how long it should take."""
    planner = Planner(store, client, job, rows=config.rows, window_pages=config.window_pages, scope=config.scope,
                      concurrency=lambda: client.limiter.concurrency)
    await store.requeue(job, "running")
    planning = asyncio.create_task(planner.run())
    last_report = time.monotonic()
    try:
        while not (planner.idle and not await store.windows(job, "unsized")):
            await asyncio.wait({planning}, timeout=0.2)
            if planning.done():
                planning.result()
            if config.progress_s and time.monotonic() - last_report >= config.progress_s:
                last_report = time.monotonic()
                log.info("planning: %s window(s) so far, %s requests", f"{len(await store.windows(job, 'pending')):,}",
                         f"{client.stats.requests:,}")
    finally:
        planning.cancel()
        await asyncio.gather(planning, return_exceptions=True)
    windows = await store.windows(job, "pending")
    works = sum(w.total or 0 for w in windows)
    pages = sum(-(-(w.total or 0) // config.rows) + 1 for w in windows)  # + each scroll's last page
    limiter = client.limiter
    fastest = pages / limiter.rate
    typical = pages / min(limiter.rate, limiter.concurrency / TYPICAL_PAGE_S)
    figures = {"works": works, "windows": len(windows), "pages": pages, "requests": client.stats.requests,
               "eta_s": round(typical)}
    return Outcome(0, f"plan of {what}: {works:,} works in {len(windows):,} window(s), about {pages:,} pages of "
                      f"{config.rows:,}; at {limiter.rate:g} requests/s and {limiter.concurrency} at once, about "
                      f"{duration(typical)} if a full page takes {TYPICAL_PAGE_S} s to answer (at least "
                      f"{duration(fastest)}); planned with {client.stats.requests:,} request(s). Run the same "
                      "command without --plan-only to crawl it.", figures)


async def backfill(config: Config, stop: asyncio.Event, *, plan: bool = False) -> Outcome:
    """Every work created in the range; resumes; refuses a state file of another range.
    `plan`: only size the windows (see `plan_only`)."""
    async with opened(config, stop) as (store, client):
        meta = await store.meta()
        _check_setting(store, meta, "backfill_filter", config.scope, "backfill scoped to")
        if "backfill_from" not in meta and not config.date_from and meta.get("snapshot_started_at") \
                and not meta.get("snapshot_finished_at"):  # `--snapshot` left out of a rerun, most likely
            paths = " ".join(json.loads(meta.get("snapshot_paths", "[]")))
            raise StateError(f"{store.path} holds a snapshot backfill that has not finished: give "
                             f"`--snapshot {paths}` to go on with it (an API backfill of every work into this "
                             "state takes days; give --from to crawl a range through the API all the same)")
        if "backfill_from" in meta:
            start, until = date.fromisoformat(meta["backfill_from"]), date.fromisoformat(meta["backfill_until"])
            wanted = (config.date_from or start, config.date_until or until)
            if wanted != (start, until):
                raise StateError(
                    f"{store.path} belongs to the backfill of {start}..{until}, not "
                    f"{wanted[0]}..{wanted[1]}; use another --state for another range"
                )
        output = await prepare_output(config, store, meta)
        if "backfill_finished_at" in meta:
            summary = (await store.window_summary()).get("backfill", {})
            return Outcome(
                0,
                f"the backfill of {start}..{until} is already complete: {summary.get('works', 0):,} "
                f"works, {summary.get('events', 0):,} events in {output.path}. Nothing to do.",
            )
        if "backfill_from" not in meta:
            until = config.date_until or _today()
            total = None  # the range's count: the earliest look-up gives it, else the plan asks
            try:
                if config.date_from:
                    start = config.date_from
                else:
                    first, total = await client.earliest_created(config.scope, until)
                    start = first or until
            except CrawlerError:
                await _note_failure(store, client)
                raise
            if start > until:
                raise StateError(f"--from {start} is after --until {until}")
            await store.set_meta(
                {
                    "backfill_from": start.isoformat(),
                    "backfill_until": until.isoformat(),
                    "backfill_filter": config.scope,
                    "backfill_started_at": utc_now(),
                }
            )
            await store.add_windows("backfill", "created-date", [(start.isoformat(), until.isoformat())], total=total)
        if plan:
            return await plan_only(config, store, client, "backfill", f"{start}..{until}")
        result = await crawl_job(config, store, client, output, "backfill", stop, config.scope)
        if not result.complete:
            return _unfinished(result, "backfill")
        await store.set_meta({"backfill_finished_at": utc_now()})
        return result.outcome(0, f"backfill of {start}..{until} complete: {result.figures()}; output in {output.path}")


async def update(config: Config, stop: asyncio.Event, since: date | None = None) -> Outcome:
    """Works re-indexed since the high-water mark; the mark moves once all is written.

    The mark is a date and the next update starts *on* it (a day's overlap): a work re-indexed
    while this update runs gets an index date on or after it, so the next update catches it.
    A window the API keeps serving short does not hold the mark back: it stays in the state
    and is tried again by the next update, which also fetches everything indexed since.
    """
    async with opened(config, stop) as (store, client):
        meta = await store.meta()
        _check_setting(store, meta, "backfill_filter", config.scope, "crawl scoped to")
        output = await prepare_output(config, store, meta)
        scope = meta.get("backfill_filter", config.scope)
        if "backfill_filter" not in meta:  # an update without a backfill: its scope is the state's
            await store.set_meta({"backfill_filter": scope})
        unfinished = [w for w in await store.windows("update", "unsized", "pending", "running")]
        if unfinished and since is None:
            start, until = date.fromisoformat(meta["update_from"]), date.fromisoformat(meta["update_until"])
            log.info("resuming the update of %s..%s", start, until)
        else:
            mark = meta.get("update_mark") or first_mark(meta)
            if since is None and not mark and meta.get("snapshot_started_at") and not meta.get("snapshot_finished_at"):
                left = json.loads(meta.get("snapshot_unfinished") or "[]")
                what = (f"units of {few(left)} are not finished" if left else
                        "the snapshot backfill has not finished (it was stopped, or units had problems)")
                raise StateError(f"{store.path} has no high-water mark: {what}; run `backfill --snapshot` with its "
                                 "paths to its end first, or give --since YYYY-MM-DD")
            if since is None and not mark:
                raise StateError(
                    f"{store.path} has no high-water mark: run a backfill first, or give --since YYYY-MM-DD"
                )
            start, until = since or date.fromisoformat(mark), _today()
            if start > until:
                raise StateError(f"--since {start} is in the future")
            await store.clear_windows("update", "unsized", "pending", "running", "done")
            await store.set_meta(
                {"update_from": start.isoformat(), "update_until": until.isoformat(), "update_started_at": utc_now()}
            )
            await store.add_windows("update", "index-date", [(start.isoformat(), until.isoformat())])
        result = await crawl_job(config, store, client, output, "update", stop, scope)
        if result.stopped:
            return _unfinished(result, "update")
        left = sum(result.summary.get(s, 0) for s in ("unsized", "pending", "running"))
        if left:
            return _unfinished(result, "update")
        short = result.summary.get("short", 0) + result.summary.get("failed", 0)
        await store.set_meta(
            {
                "update_mark": until.isoformat(),
                "last_update": json.dumps(
                    {"from": start.isoformat(), "until": until.isoformat(), "finished_at": utc_now(),
                     "works": result.summary.get("works", 0), "events": result.summary.get("events", 0),
                     "short_windows": short}
                ),
            }
        )
        if short:
            return result.outcome(1, f"update of {start}..{until} done but for {short} short window(s), tried again by "
                              f"the next update ({result.figures()}); high-water mark now {until}")
        return result.outcome(0, f"update of {start}..{until} complete: {result.figures()}; high-water mark now {until}")


def first_mark(meta: dict[str, str]) -> str:
    """Where the first update starts: the earliest of the API backfill's start and the day
    before the snapshot's currency (a day's overlap: a snapshot's latest records need not all
    be indexed up to its latest date-time), "" when the state holds neither. Only the currency
    of a snapshot read to its end: records not read yet (a run stopped, units with problems,
    files left half read by an earlier run) may be older than it, and no update would ask for them."""
    marks = [meta.get("backfill_started_at", "")[:10]]
    if meta.get("snapshot_currency") and meta.get("snapshot_finished_at"):
        marks.append((date.fromisoformat(meta["snapshot_currency"][:10]) - timedelta(days=1)).isoformat())
    return min(filter(None, marks), default="")


async def backfill_snapshot(config: Config, stop: asyncio.Event, paths: list[Path]) -> Outcome:
    """Snapshot files -> the same events, state and output as an API backfill; no /works request.

    A state file may hold an API backfill and snapshots too (each link is emitted once either
    way); the first update then starts from the earlier of their marks (`first_mark`).
    """
    from crawler.snapshot import list_units
    from crawler.sources.snapshots import ingest

    # Listed before the state is opened: a path with nothing to read changes nothing, makes nothing.
    units = await asyncio.to_thread(lambda: list(list_units(paths)))
    async with opened(config, stop) as (store, client):
        meta = await store.meta()
        output = await prepare_output(config, store, meta)
        known = json.loads(meta.get("snapshot_paths", "[]"))
        recorded = set(known)
        new = [path for path in dict.fromkeys(str(p.resolve()) for p in paths) if path not in recorded]
        await store.set_meta({"snapshot_paths": json.dumps(known + new),
                              "snapshot_started_at": meta.get("snapshot_started_at") or utc_now(),
                              "snapshot_finished_at": None})  # until this run reads it all
        # The lanes are the snapshot's parser processes: they select and render too.
        async with started_crawl(config, store, client, output, stop, parse_pool=False) as crawl:
            tally = await ingest(crawl, units, config.parsers)
        records = (await store.unit_summary("snapshot:"))["records"]
        settings: dict[str, str | None] = {"snapshot_records": str(records)}
        if not stop.is_set():  # finished when nothing failed or is left; units to read again unfinish it
            settings["snapshot_finished_at"] = None if tally.failed or tally.left else utc_now()
            # Files an earlier run left half read: the currency is not the snapshot's (`first_mark`).
            settings["snapshot_unfinished"] = json.dumps(tally.left) if tally.left else None
        await store.set_meta(settings)
    whole = not (stop.is_set() or tally.failed or tally.left)  # else the currency of what was read so far
    figures = (f"{counted(tally.records, 'record')} this run ({records:,} in all), "
               f"{counted(crawl.progress.events, 'new event')}; "
               f"currency {'' if whole else 'so far '}{tally.currency or 'unknown'}")
    if stop.is_set():
        return Outcome(130, f"stopped cleanly after {figures}; run the same command again to resume")
    if tally.left:
        missing = [path for path in tally.left if not os.path.exists(path)]
        return Outcome(1, f"snapshot not finished: units of {few(tally.left)} from an earlier run are not "
                          f"finished or had problems ({figures}); give "
                          f"{'that path' if len(tally.left) == 1 else 'those paths'} to --snapshot again to finish them"
                          + (f". {few(missing)} {'is' if len(missing) == 1 else 'are'} no longer there: a file "
                             "moved is followed by its name, size and modification time when its new path is given; "
                             "else `crawler update --since DATE` starts updates without it" if missing else ""))
    if tally.failed:
        return Outcome(1, f"snapshot read but for {counted(tally.problems, 'problem')} in {counted(len(tally.failed), 'unit')}, "
                          f"reported above and in `crawler status` ({figures}); replace or download again the "
                          "files named, then run the same command again: only the units with problems are read again")
    return Outcome(0, f"snapshot backfill complete: {figures}; output in {output.path}")


async def ingest_xml(config: Config, stop: asyncio.Event, paths: list[Path]) -> Outcome:
    """Crossref XML files -> the same events, into the same state and output."""
    from crawler.sources.xmlfiles import ingest

    async with opened(config, stop) as (store, client):
        meta = await store.meta()
        output = await prepare_output(config, store, meta)
        async with started_crawl(config, store, client, output, stop) as crawl:
            files, records, bad = await ingest(crawl, paths)
        figures = (f"{counted(files, 'file')}, {counted(records, 'record')}, "
                   f"{counted(crawl.progress.events, 'new event')}"
                   + (f", {counted(bad, 'problem')} reported above" if bad else ""))
        run = {**crawl.progress.figures(), "files": files, "records": records, "problems": bad}
        if stop.is_set():
            return Outcome(130, f"stopped cleanly after {figures}; run the same command again to finish", run)
        return Outcome(1 if bad else 0, f"ingested {figures}; output in {output.path}", run)
