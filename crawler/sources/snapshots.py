"""Crossref snapshot files (public data file, Metadata Plus) as a source of works.

The units (`crawler.snapshot.list_units`) are shared out among lanes, one per parser: a lane is
one process of its own that reads its units one after the other, inflating, decoding and
extracting links there (`read_batch`), so the main process only routes parsed batches to the one
commit path. A lane keeps its unit's reader open between calls (a unit is read once, not once per
batch) and is asked for the next batch before the current one is committed. Each batch is
committed with its unit's progress (records consumed, a `units` row keyed `snapshot:<unit key>`)
and, when it raised it, the snapshot's currency (the latest `indexed` date-time read, meta
`snapshot_currency`), so a rerun skips finished units, resumes an interrupted one after its
committed records, and reads a unit that had problems again from its start (the seen store
keeps its links from being emitted twice). A row also keeps its file's size and modification
time: a file copied over since (another snapshot at the same path, members of the same names)
is read again whole, the old file's rows not trusted (by names alone, its first members passed
as read).
Every unit listed gets its row at once, read or not: rows left unfinished by an earlier run, of
files this run was not given (half read, or never reached), are named in `Tally.left`, and the
snapshot is not finished while they are.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, NamedTuple

from crawler.decode import BadPage, ParsedWork, parse_works
from crawler.engine import ParserPool
from crawler.errors import Stopped
from crawler.events import utc_now
from crawler.figures import counted, duration
from crawler.snapshot import Batch, SnapshotProblem, Unit, read_unit
from crawler.select import Rendered, select_and_render
from crawler.store import UnitProgress

if TYPE_CHECKING:
    from crawler.engine import Crawl

log = logging.getLogger(__name__)

KEY_PREFIX = "snapshot:"  # the units table also holds XML files' rows
PROBLEMS_SHOWN = 20  # logged per unit; the rest are counted


class Parsed(NamedTuple):
    """One batch of a unit as a lane hands it over; its works stay in the lane's process."""

    subjects: list[int]  # the works' subject hashes: the seen sets their selection reads
    works: int
    prefixes: set[str]
    problems: list[SnapshotProblem]
    records: int  # consumed by this batch, good or bad
    end: bool
    currency: str  # the latest `indexed` date-time of the batch's works ("" if none)
    position: int = 0  # bytes of the unit read so far (`Batch.position`)


# -- in the lane's process ------------------------------------------------------------------
_open: tuple[str, int, Iterator[Batch]] | None = None  # the unit being read: key, position, batches
_held: dict[int, list[ParsedWork]] = {}  # read batches waiting for their selection, by ticket


def read_batch(unit: Unit, skip: int, batch: int, now: str, ticket: int) -> Parsed:
    """The unit's next batch from record `skip`, parsed and held here under `ticket` for
    `select_batch`. The lane's process keeps the reader open at its new position for the
    next call (any other position reopens it)."""
    global _open
    if _open is not None and _open[:2] == (unit.key, skip):
        batches = _open[2]
    else:
        if _open is not None:
            _open[2].close()
        batches = read_unit(unit, skip=skip, batch=batch)
    _open = None
    got = next(batches)
    if got.end:
        batches.close()
    else:
        _open = (unit.key, skip + got.records, batches)
    parsed, prefixes = parse_works(got.works) if got.works else ([], set())
    _held[ticket] = parsed
    return Parsed([w.subject for w in parsed], len(parsed), prefixes, got.problems, got.records, got.end,
                  currency(got.works, now), got.position)


def select_batch(ticket: int, seen_blobs: dict[int, bytes], agencies: dict[str, str | None], timestamp: str,
                 again: tuple[Unit, int, int, str]) -> Rendered:
    """The held batch's new links, rendered. A process that replaced a dead one holds nothing:
    it reads the batch again (`again`: where it was read from), which yields the same works."""
    works = _held.pop(ticket, None)
    if works is None:
        read_batch(*again, ticket)
        works = _held.pop(ticket)
    return select_and_render(works, seen_blobs, agencies, (), timestamp)


def currency(works: list, now: str) -> str:  # type: ignore[type-arg]
    """The latest `indexed` date-time of the works that looks like one and is not after `now`."""
    latest = ""
    for work in works:
        indexed = work.indexed
        if indexed is not None and (moment := indexed.date_time) and latest < moment <= now \
                and len(moment) >= 20 and moment[4] == "-" and moment[10] == "T" and moment[:4].isdigit():
            latest = moment
    return latest


# -- in the main process --------------------------------------------------------------------
@dataclass
class Tally:
    """This run's figures, for progress lines and the job's outcome."""

    units: int = 0  # in the snapshot
    total_bytes: int = 0
    skipped_units: int = 0  # finished by an earlier run
    skipped_bytes: int = 0
    done_units: int = 0  # this run
    done_bytes: int = 0
    records: int = 0  # this run
    problems: int = 0  # this run
    failed: list[str] = field(default_factory=list)  # unit keys with problems, this run
    left: list[str] = field(default_factory=list)  # files not given whose units an earlier run left unfinished
    currency: str = ""
    reading: dict[str, int] = field(default_factory=dict)  # bytes read so far of each unit in progress
    read_bytes: int = 0  # read this run (a resumed unit's bytes before its resume point not counted)
    started: float = field(default_factory=time.monotonic)

    def read(self, unit: Unit, position: int, resumed: bool) -> None:
        """A batch of `unit` committed, the reading `position` bytes into it: bytes done and the
        rate behind the ETA move within a unit too (a Plus snapshot's .tar.gz is one unit)."""
        before = self.reading.get(unit.key)
        if before is not None or not resumed:  # a resumed unit's first batch: where it stands, not read
            self.read_bytes += max(position - (before or 0), 0)
        if position >= unit.length:
            self.reading.pop(unit.key, None)
        else:
            self.reading[unit.key] = position

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.records / elapsed
        done = self.skipped_bytes + self.done_bytes + sum(self.reading.values())
        left = self.total_bytes - done
        byte_rate = self.read_bytes / elapsed
        eta = duration(left / byte_rate if byte_rate > 0 else None)
        return (f"snapshot: {self.skipped_units + self.done_units:,}/{self.units:,} units, "
                f"{done / 1e9:,.2f}/{self.total_bytes / 1e9:,.2f} GB done; {self.records:,} records this run, "
                f"{rate:,.0f} records/s; {counted(self.problems, 'problem')}; ETA {eta}")


async def ingest(crawl: Crawl, units: list[Unit], lanes: int) -> Tally:
    """Every unread record of the snapshot's `units` (`list_units`) into the commit path, read by
    up to `lanes` processes; returns this run's figures."""
    config = crawl.config
    done = {k[len(KEY_PREFIX):]: v for k, v in (await crawl.store.units()).items() if k.startswith(KEY_PREFIX)}
    stamps = {k[len(KEY_PREFIX):]: v for k, v in (await crawl.store.unit_stamps(KEY_PREFIX)).items()}
    tally = Tally(units=len(units), total_bytes=sum(u.length for u in units))
    tally.currency = (await crawl.store.meta()).get("snapshot_currency", "")
    todo: list[tuple[Unit, int, int]] = []  # unit, records committed, problems counted
    listed = {u.key for u in units}
    files = {u.path: u.stamp for u in units}
    moved = _moved(done, stamps, units, listed)
    if moved:
        for old, new in sorted(moved.items()):
            log.info("%s is read on as %s (moved: the same name, size and modification time)", old, new)
        await crawl.store.rename_units([(KEY_PREFIX + old, KEY_PREFIX + new) for old, new in moved.items()])
        done = {moved.get(key, key): row for key, row in done.items()}
        stamps = {moved.get(key, key): stamp for key, stamp in stamps.items()}
    # Rows of a file that changed since they were written (a stamp recorded and another now) are
    # of another file: its units are read again from their start.
    changed = {path for key, stamp in stamps.items()
               if stamp and (path := _file_of(key)) in files and files[path] != stamp}
    for path in sorted(changed):
        log.warning("%s changed since an earlier run listed it (size or modification time): it is read from "
                    "its start (links already written are not written again)", path)
    # Failed rows are read again whole; failed or unfinished ones of units no longer listed in these
    # files (a cut tar mended) are gone for good: none should count in `status`. Nor a changed file's.
    forget = {key for key, (_, _, finished, failed) in done.items()
              if _file_of(key) in changed or (failed and key in listed)
              or ((failed or not finished) and key not in listed and _file_of(key) in files)}
    await crawl.store.forget_units([KEY_PREFIX + key for key in sorted(forget)])
    done = {key: row for key, row in done.items() if key not in forget}
    tally.left = sorted({_file_of(key) for key, (_, _, finished, failed) in done.items()
                         if (failed or not finished) and key not in listed})
    # Every unit listed has its row from now on, read or not: a rerun not given its file knows
    # that file's records are still to read (a folder half reached, a path never reached).
    await crawl.store.list_units([(KEY_PREFIX + unit.key, unit.stamp) for unit in units if unit.key not in done])
    for unit in units:
        records, problems, finished, failed = done.get(unit.key, (0, 0, False, False))
        if finished and not failed:
            tally.skipped_units += 1
            tally.skipped_bytes += unit.length
        else:
            todo.append((unit, 0, 0) if failed else (unit, records, problems))
    queue = iter(todo)
    pools = [ParserPool(1) for _ in range(min(lanes, len(todo)) or 1)]
    reporter = asyncio.create_task(_report(tally, config.progress_s))
    try:
        await asyncio.gather(*(pool.start() for pool in pools))
        await asyncio.gather(*(_lane(crawl, pool, queue, tally) for pool in pools))
    finally:
        reporter.cancel()
        await asyncio.gather(reporter, return_exceptions=True)
        await asyncio.gather(*(asyncio.to_thread(pool.shutdown) for pool in pools))
    return tally


def _moved(rows: dict[str, object], stamps: dict[str, str], units: list[Unit], listed: set[str]) -> dict[str, str]:
    """Unit keys of files no longer there -> the keys of the same units in a file listed now with
    the same name and stamp (a snapshot folder moved or renamed: `mv` keeps size and mtime).
    `listed`: the keys of `units`."""
    gone = [key for key in rows if key not in listed and not os.path.exists(_file_of(key))]
    if not gone:
        return {}
    found: dict[tuple[str, str, str], str | None] = {}
    for unit in units:
        place = (os.path.basename(unit.path), unit.key[len(unit.path):], unit.stamp)
        found[place] = None if place in found else unit.key  # a name and stamp met twice: neither
    moved = {}
    for key in gone:
        file = _file_of(key)
        new = found.get((os.path.basename(file), key[len(file):], stamps.get(key, "")))
        if new is not None and new not in rows:
            moved[key] = new
    targets = Counter(moved.values())  # two gone files alike (copies): neither is followed
    return {old: new for old, new in moved.items() if targets[new] == 1}


def _file_of(key: str) -> str:
    """The file a unit key names (`path`, `path::member`, `path#part`)."""
    return re.sub(r"#\d+$", "", key.split("::", 1)[0])


async def _report(tally: Tally, every_s: float) -> None:
    if every_s <= 0:
        return
    while True:
        await asyncio.sleep(every_s)
        log.info("%s", tally.line())


async def _lane(crawl: Crawl, lane: ParserPool, queue: Iterator[tuple[Unit, int, int]], tally: Tally) -> None:
    """Units one after the other in one process. The process always has the next thing to do:
    the next batch is read while this one is selected and rendered there, and this one's
    selection is asked before the last one's commit ends (commits stay in the unit's order)."""
    batch, now = crawl.config.rows, datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    tickets = itertools.count()
    for unit, skip, problems in queue:
        if crawl.stopping.is_set():
            return
        if skip:
            log.info("resuming %s after record %s", unit.key, f"{skip:,}")
        ticket = next(tickets)
        ahead = asyncio.create_task(lane.run(read_batch, unit, skip, batch, now, ticket))
        last: asyncio.Task[None] | None = None  # the previous batch's commit
        try:
            while True:
                at = skip
                try:
                    got: Parsed = await ahead
                except BadPage as exc:  # the unit kills its reader: given up, the next one read
                    got = Parsed([], 0, set(), [SnapshotProblem(unit.path, f"after record {skip}", str(exc))], 0,
                                 True, "")
                this = ticket
                if not got.end and not crawl.stopping.is_set():
                    ticket = next(tickets)
                    ahead = asyncio.create_task(lane.run(read_batch, unit, skip + got.records, batch, now, ticket))
                skip += got.records
                problems += len(got.problems)
                before = last  # held as `last` from here on: cancelled below if `before` fails
                last = asyncio.create_task(_commit(crawl, lane, unit, got, this, (unit, at, batch, now),
                                                   skip, problems, tally, before))
                if before is not None:
                    await before
                if got.end or crawl.stopping.is_set():
                    break
            await last
        except Stopped:
            return  # a stop abandoned a batch waiting on a failing service: the next run reads it again
        finally:
            if not ahead.done():
                ahead.cancel()
            if last is not None and not last.done():
                last.cancel()  # not its write: `commit_selected` shields that
            await asyncio.gather(ahead, *([last] if last else []), return_exceptions=True)


async def _commit(crawl: Crawl, lane: ParserPool, unit: Unit, got: Parsed, ticket: int,
                  again: tuple[Unit, int, int, str], records: int, problems: int, tally: Tally,
                  after: asyncio.Task[None] | None) -> None:
    """The batch selected and rendered in its lane's process once the batch before it is
    committed (waiting before its subjects are claimed: a record in both waits in order)."""
    before = problems - len(got.problems)  # the unit's problems before this batch
    for problem in got.problems[:max(PROBLEMS_SHOWN - before, 0)]:
        log.warning("%s: %s: %s", problem.path, problem.where, problem.message)
    if got.end and problems > PROBLEMS_SHOWN:  # a damaged stretch of a file is one line per record
        log.warning("%s: %s not shown (all are counted)", unit.key, counted(problems - PROBLEMS_SHOWN, "more problem"))
    failed = got.end and problems > 0
    last = got.problems[-1] if got.problems else None
    progress = UnitProgress(KEY_PREFIX + unit.key, records, len(got.problems), got.end, failed,
                            unit.length if got.end else 0, unit.stamp,
                            f"{last.where}: {last.message}" if last else "")

    async def select(seen_blobs: dict[int, bytes], agencies: dict[str, str | None]) -> Rendered:
        if not got.works:
            return Rendered(b"", 0, {}, Counter(), {})
        return await lane.run(select_batch, ticket, seen_blobs, agencies, utc_now(), again)

    if after is not None:
        await after  # a failed batch before this one fails this one too: no gap in the unit
    meta = None
    if got.currency > tally.currency:
        tally.currency = got.currency
        meta = {"snapshot_currency": got.currency}
    await crawl.commit_selected(got.subjects, got.prefixes, select, works=got.works, unit=progress, meta=meta)
    tally.records += got.records
    tally.problems += len(got.problems)
    tally.read(unit, unit.length if got.end else got.position, resumed=again[1] > 0)
    if got.end:
        tally.done_units += 1
        tally.done_bytes += unit.length
        if failed:
            tally.failed.append(unit.key)
