"""The state file: every read and write of durable state, in one SQLite file (WAL).

What must survive a crash is committed in one transaction with what it depends on: a page's
seen keys, its source's position (window counts, snapshot unit), the links waiting for an
agency and the output file's new length go together (`commit_page`). The seen-key store
keeps one row per subject work holding that work's emitted link hashes (48-bit, see `keys`),
packed as 6 bytes each, so a key costs about 8 bytes on disk with the row's share of overhead.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
import sys
import uuid
from array import array
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from crawler.errors import DiskError, StateError

SCHEMA_VERSION = 5  # 2: xxh3 link hashes; 3: 48-bit link hashes; 4: window scopes, deferred links, units;
# 5: the stamp of a unit's file, its last problem
APPLICATION_ID = 0x43524C52  # "CRLR": tells our state files from any other SQLite file

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE windows (
    id INTEGER PRIMARY KEY,
    job TEXT NOT NULL,             -- 'backfill' or 'update'
    field TEXT NOT NULL,           -- the date filter: 'created-date' or 'index-date'
    start TEXT NOT NULL,           -- inclusive YYYY-MM-DD
    end TEXT NOT NULL,             -- inclusive YYYY-MM-DD
    status TEXT NOT NULL,          -- unsized, pending, running, done, short, failed
    total INTEGER,                 -- total-results when sized (and as last seen)
    received INTEGER NOT NULL DEFAULT 0,   -- distinct works received in the current attempt
    works INTEGER NOT NULL DEFAULT 0,
    events INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    cursor TEXT,
    error TEXT,
    scope TEXT NOT NULL DEFAULT '',        -- filters that cut a day further (type-name:…, has-…:1)
    rows INTEGER,                          -- rows per page, when smaller than the run's
    short_runs INTEGER NOT NULL DEFAULT 0, -- complete scrolls in a row that ended at short_received
    short_received INTEGER,
    error_at TEXT
);
CREATE INDEX windows_status ON windows (job, status);
CREATE TABLE agency (prefix TEXT PRIMARY KEY, agency TEXT, checked_at TEXT) WITHOUT ROWID;
CREATE TABLE seen (subject INTEGER PRIMARY KEY, links BLOB NOT NULL);
CREATE TABLE deferred (prefix TEXT NOT NULL, subject TEXT NOT NULL, links INTEGER NOT NULL,
                       PRIMARY KEY (prefix, subject)) WITHOUT ROWID;
CREATE TABLE units (key TEXT PRIMARY KEY, records INTEGER NOT NULL DEFAULT 0,
                    problems INTEGER NOT NULL DEFAULT 0, done INTEGER NOT NULL DEFAULT 0,
                    failed INTEGER NOT NULL DEFAULT 0, bytes INTEGER NOT NULL DEFAULT 0,
                    stamp TEXT NOT NULL DEFAULT '',  -- the file's size:mtime when written
                    note TEXT NOT NULL DEFAULT '') WITHOUT ROWID;  -- its last problem: where, what
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE sink (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, offset INTEGER NOT NULL);
INSERT INTO sink VALUES (1, 1, 0);
"""

# One step per version: each runs in one transaction with the version bump.
_MIGRATIONS = {
    3: """
ALTER TABLE windows ADD COLUMN scope TEXT NOT NULL DEFAULT '';
ALTER TABLE windows ADD COLUMN rows INTEGER;
ALTER TABLE windows ADD COLUMN short_runs INTEGER NOT NULL DEFAULT 0;
ALTER TABLE windows ADD COLUMN short_received INTEGER;
ALTER TABLE windows ADD COLUMN error_at TEXT;
ALTER TABLE agency ADD COLUMN checked_at TEXT;
CREATE TABLE deferred (prefix TEXT NOT NULL, subject TEXT NOT NULL, links INTEGER NOT NULL,
                       PRIMARY KEY (prefix, subject)) WITHOUT ROWID;
CREATE TABLE units (key TEXT PRIMARY KEY, records INTEGER NOT NULL DEFAULT 0,
                    problems INTEGER NOT NULL DEFAULT 0, done INTEGER NOT NULL DEFAULT 0,
                    failed INTEGER NOT NULL DEFAULT 0, bytes INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
DELETE FROM counters WHERE name = 'unknown-agency';
""",
    # Rows written before have no stamp (''): they are taken as of the file as it is now.
    4: "ALTER TABLE units ADD COLUMN stamp TEXT NOT NULL DEFAULT ''; ALTER TABLE units ADD COLUMN note TEXT NOT NULL DEFAULT '';",
}

WINDOW_STATUSES = ("unsized", "pending", "running", "done", "short", "failed")
RUN_COUNTERS = ("works", "events", "pages", "retries", "429s")  # kept in total and per run
RUN = "run:"  # prefix of the last run's counters (and `run:ms`, its time to its last commit)
_WINDOW_COLUMNS = "id, job, field, start, end, scope, status, total, attempts, rows, short_runs, short_received, received, works"


@dataclass(frozen=True)
class Window:
    id: int
    job: str
    field: str
    start: str
    end: str
    scope: str
    status: str
    total: int | None
    attempts: int
    rows: int | None = None
    short_runs: int = 0
    short_received: int | None = None
    received: int = 0
    works: int = 0

    @property
    def filter(self) -> str:
        dates = f"from-{self.field}:{self.start},until-{self.field}:{self.end}"
        return f"{dates},{self.scope}" if self.scope else dates

    def describe(self) -> str:
        days = self.start if self.start == self.end else f"{self.start}..{self.end}"
        return f"{days} ({self.scope})" if self.scope else days


@dataclass(frozen=True)
class WindowProgress:
    """What a committed page changes in its window."""

    id: int
    works: int  # new distinct works in this page
    received: int  # distinct works of the current scroll so far
    cursor: str | None


@dataclass(frozen=True)
class UnitProgress:
    """What a committed batch changes in its snapshot (or XML) unit."""

    key: str
    records: int  # records of the unit consumed so far (good or bad)
    problems: int  # problems met in this batch
    done: bool
    failed: bool = False
    bytes: int = 0  # stored bytes of the unit, counted when done
    stamp: str = ""  # the size and modification time of the unit's file (`file_stamp`)
    note: str = ""  # the batch's last problem ("where: what"), kept for `status` until another comes


def file_stamp(info: os.stat_result) -> str:
    """What tells a file read before from another one copied over the same path since."""
    return f"{info.st_size}:{info.st_mtime_ns}"


_BIG_ENDIAN = sys.byteorder == "big"


def pack(hashes: Iterable[int]) -> bytes:
    """48-bit hashes -> 6 bytes each: all their low 32 bits, then all their high 16 bits."""
    ordered = sorted(hashes)
    low, high = array("I", [h & 0xFFFFFFFF for h in ordered]), array("H", [h >> 32 for h in ordered])
    if _BIG_ENDIAN:  # the file is little-endian on every machine
        low.byteswap()
        high.byteswap()
    return low.tobytes() + high.tobytes()


def unpack(blob: bytes) -> list[int]:
    """The hashes `pack` stored."""
    split = len(blob) // 6 * 4
    low, high = array("I"), array("H")
    low.frombytes(blob[:split])
    high.frombytes(blob[split:])
    if _BIG_ENDIAN:
        low.byteswap()
        high.byteswap()
    return [lo | hi << 32 for lo, hi in zip(low, high)]


def deferred_links_sql(pairs: int) -> str:
    """The links already waiting for these (prefix, subject) pairs (given flat, a pair each).

    A join that looks each pair up by the key: `(prefix, subject) IN (VALUES …)` scans the
    whole table (so SQLite plans it), and the table grows with every batch of a snapshot."""
    marks = ",".join(["(?, ?)"] * pairs)
    return (f"SELECT coalesce(sum(d.links), 0) FROM (VALUES {marks}) AS v JOIN deferred AS d "
            "ON d.prefix = v.column1 AND d.subject = v.column2")


class Store:
    """Async access to the state file. Open with `await Store.open(path)`."""

    def __init__(self, db: aiosqlite.Connection, path: Path, lock_fd: int) -> None:
        self.db = db
        self.path = path
        self._lock_fd = lock_fd
        self._tx_lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def transaction(self, *, durable: bool = False) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction at a time on the shared connection; rolled back on error.

        `durable`: on disk before this returns (fsynced WAL), with every commit before it; the
        others may be lost by a power cut (never torn), which the output's recovery allows for.
        """
        async with self._tx_lock:
            try:
                if durable:
                    await self.db.execute("PRAGMA synchronous=FULL")
                try:
                    await self.db.execute("BEGIN IMMEDIATE")
                    yield self.db
                    await self.db.execute("COMMIT")
                except BaseException:
                    await self._rollback()
                    raise
                finally:
                    if durable:
                        await self.db.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.OperationalError as exc:
                raise DiskError(
                    f"cannot write the state file {self.path} ({exc}); nothing committed was lost: "
                    "free space or fix permissions, then rerun the same command"
                ) from None

    async def _rollback(self) -> None:
        """End whatever transaction the connection is in. A cancelled `await` does not stop
        its statement: BEGIN or COMMIT still runs in the connection's thread, before this
        ROLLBACK. (Cancelled at BEGIN, a write used to leave the connection in a transaction,
        and every later write failed.)"""
        try:
            await self.db.execute("ROLLBACK")
        except sqlite3.OperationalError:
            pass  # no transaction was active: it had committed, or BEGIN had failed

    # -- opening -----------------------------------------------------------------------
    @classmethod
    async def open(
        cls, path: str | os.PathLike[str], *, create: bool = True, readonly: bool = False
    ) -> "Store":
        """Open (creating if allowed) and lock; `readonly` opens for reading beside a live run."""
        path = Path(path)
        if path.is_dir():
            raise StateError(f"{path} is a directory, not a state file: give a file path with --state")
        blocker = file_in_the_way(path)
        if blocker is not None:
            raise StateError(f"{path} cannot be a state file: {blocker} is a file, not a folder")
        if not path.exists():
            if not create or readonly:
                raise StateError(f"no state file at {path}: nothing has run with it yet")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StateError(f"cannot create the folder of the state file {path}: {exc.strerror}") from None
        lock_fd, made_lock = (-1, False) if readonly else _lock(path)
        try:
            if readonly:
                db = await aiosqlite.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
            else:
                db = await aiosqlite.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            _unlock(path, lock_fd, made_lock)
            raise StateError(f"cannot open the state file {path}: {exc}") from None
        store = cls(db, path, lock_fd)
        try:
            await store._prepare(create and not readonly, readonly)
        except BaseException:
            await store.db.close()
            _unlock(path, lock_fd, made_lock)
            raise
        return store

    async def _prepare(self, create: bool, readonly: bool) -> None:
        try:
            app_id = (await self._one("PRAGMA application_id"))[0]
            tables = (await self._one("SELECT count(*) FROM sqlite_master"))[0]
        except sqlite3.DatabaseError as exc:
            raise StateError(
                f"{self.path} is not a usable state file ({exc}); it was left untouched. "
                "Point --state at another file, or restore this one from a backup."
            ) from None
        if tables == 0 and app_id == 0:
            if not create:
                raise StateError(f"{self.path} is empty: nothing has run with it yet")
            try:
                await self._one("PRAGMA journal_mode=WAL")  # returns a row: consume it
                # One script, one transaction: a crash leaves either no schema or all of it.
                await self.db.executescript(
                    f"BEGIN IMMEDIATE; {_SCHEMA} INSERT INTO meta VALUES ('state_id', '{uuid.uuid4()}'); "
                    f"PRAGMA application_id={APPLICATION_ID}; PRAGMA user_version={SCHEMA_VERSION}; COMMIT;"
                )
            except sqlite3.OperationalError as exc:
                raise StateError(f"cannot create the state file {self.path}: {exc}") from None
        elif app_id != APPLICATION_ID:
            raise StateError(
                f"{self.path} is an SQLite file of another program (application id {app_id:#x}); "
                "refusing to touch it. Point --state at a crawler state file."
            )
        version = (await self._one("PRAGMA user_version"))[0]
        if version > SCHEMA_VERSION:
            raise StateError(
                f"{self.path} has schema version {version}, newer than this crawler "
                f"understands ({SCHEMA_VERSION}); upgrade the crawler"
            )
        if version < min(_MIGRATIONS):
            raise StateError(
                f"{self.path} has schema version {version}, from a development version of the "
                f"crawler whose link hashes differ from today's ({SCHEMA_VERSION}); start a new "
                "state file and output directory"
            )
        if version < SCHEMA_VERSION:
            if readonly:
                raise StateError(f"{self.path} has schema version {version}: run the crawler on it once to upgrade it")
            for step in range(version, SCHEMA_VERSION):
                await self.db.executescript(
                    f"BEGIN IMMEDIATE; {_MIGRATIONS[step]} PRAGMA user_version={step + 1}; COMMIT;"
                )
        if not readonly:
            # NORMAL in WAL: a power cut may lose the last commits, never consistency; the
            # output's committed length travels with them, so the sink truncates to match.
            await self.db.execute("PRAGMA synchronous=NORMAL")
            # A page's commit reads and then dirties ~1,000 random leaves of the seen-key
            # B-tree. 8 MB holds those (4 MB) and its inner pages (~2 MB at 100 M keys); 16 MB
            # was within the noise at 100 M keys (~5%) and costs 8 MB more of resident memory
            # once the state outgrows it. The WAL is copied back every ~160 MB rather than
            # every 4 MB: each copy's fsync was most of a commit's cost (4 MB -> 40 MB doubled
            # the rate at 10 M keys; 40 -> 160 MB added ~14%).
            await self.db.execute("PRAGMA cache_size=-8192")
            await self.db.execute("PRAGMA wal_autocheckpoint=40000")
            if "state_id" not in await self.meta():
                await self.set_meta({"state_id": str(uuid.uuid4())})

    async def close(self) -> None:
        try:
            await self.db.close()
        finally:
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1

    async def __aenter__(self) -> "Store":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _one(self, sql: str, params: tuple = ()) -> tuple:
        async with self.db.execute(sql, params) as cur:
            row = await cur.fetchone()
        return tuple(row) if row is not None else ()

    async def _all(self, sql: str, params: tuple = ()) -> list[tuple]:
        async with self.db.execute(sql, params) as cur:
            return [tuple(r) for r in await cur.fetchall()]

    # -- meta --------------------------------------------------------------------------
    async def meta(self) -> dict[str, str]:
        return dict(await self._all("SELECT key, value FROM meta"))

    async def set_meta(self, values: Mapping[str, str | None]) -> None:
        """Set keys; a None value removes its key."""
        async with self.transaction() as db:
            await db.executemany(
                "INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                [(k, v) for k, v in values.items() if v is not None],
            )
            await db.executemany("DELETE FROM meta WHERE key = ?", [(k,) for k, v in values.items() if v is None])

    # -- the plan ----------------------------------------------------------------------
    async def add_windows(self, job: str, field: str, ranges: Iterable[tuple[str, str]], scope: str = "",
                          total: int | None = None) -> None:
        """New windows, unsized, or all of this `total` when it is known already."""
        status = "unsized" if total is None else "done" if total == 0 else "pending"
        async with self.transaction() as db:
            await db.executemany(
                "INSERT INTO windows (job, field, start, end, scope, status, total) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(job, field, a, b, scope, status, total) for a, b in ranges],
            )

    async def windows(self, job: str, *statuses: str) -> list[Window]:
        """The job's windows of these statuses, the largest first (those sized)."""
        marks = ",".join("?" * len(statuses))
        rows = await self._all(
            f"SELECT {_WINDOW_COLUMNS} FROM windows WHERE job = ? AND status IN ({marks}) "
            "ORDER BY coalesce(total, 0) DESC, start, id",
            (job, *statuses),
        )
        return [Window(*row) for row in rows]

    async def size_window(self, window_id: int, total: int) -> None:
        status = "done" if total == 0 else "pending"
        async with self.transaction() as db:
            await db.execute(
                "UPDATE windows SET status = ?, total = ? WHERE id = ? AND status = 'unsized'", (status, total, window_id)
            )

    async def size_running(self, window_id: int, total: int) -> None:
        """A window started unsized: its first page's total-results is its size."""
        async with self.transaction() as db:
            await db.execute("UPDATE windows SET total = ? WHERE id = ? AND total IS NULL", (total, window_id))

    async def clear_windows(self, job: str, *statuses: str) -> None:
        marks = ",".join("?" * len(statuses))
        async with self.transaction() as db:
            await db.execute(f"DELETE FROM windows WHERE job = ? AND status IN ({marks})", (job, *statuses))

    async def split_window(self, window: Window, parts: list[tuple[str, str, str, int | None]]) -> bool:
        """Replace a window by parts (start, end, scope, total or None when not yet sized).
        Only a window that waits: False (nothing done) when it was started meanwhile."""
        async with self.transaction() as db:
            events = await self._waiting_events(db, [window])  # an interrupted run's: kept, by the first part
            if events is None:
                return False
            await db.execute("DELETE FROM windows WHERE id = ?", (window.id,))
            await db.executemany(
                "INSERT INTO windows (job, field, start, end, scope, status, total, rows, events) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(window.job, window.field, a, b, scope,
                  "unsized" if total is None else "done" if total == 0 else "pending", total, window.rows,
                  events if i == 0 else 0)
                 for i, (a, b, scope, total) in enumerate(parts)],
            )
        return True

    async def merge_windows(self, run: list[Window]) -> bool:
        """Replace adjacent sized windows of one scope by one window over all their days.
        Only windows that wait: False (nothing done) when one was started meanwhile."""
        first, last = run[0], run[-1]
        async with self.transaction() as db:
            events = await self._waiting_events(db, run)
            if events is None:
                return False
            await db.executemany("DELETE FROM windows WHERE id = ?", [(w.id,) for w in run])
            await db.execute(
                "INSERT INTO windows (job, field, start, end, scope, status, total, rows, events) "
                "VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?)",
                (first.job, first.field, first.start, last.end, first.scope, sum(w.total or 0 for w in run),
                 first.rows, events))
        return True

    @staticmethod
    async def _waiting_events(db: aiosqlite.Connection, windows: list[Window]) -> int | None:
        """The events the windows hold, or None unless every one of them still waits."""
        ids = [w.id for w in windows]
        async with db.execute(
            "SELECT count(*), coalesce(sum(events), 0) FROM windows "
            f"WHERE status IN ('pending', 'unsized') AND id IN ({','.join('?' * len(ids))})", ids,
        ) as cursor:
            waiting, events = await cursor.fetchone()
        return events if waiting == len(ids) else None

    async def start_window(self, window: Window) -> bool:
        """A fresh attempt: the scroll restarts at '*', so per-attempt counts restart too.
        False when the window is no longer there to start (the plan cut or merged it since it
        was read: its days are in other windows now)."""
        async with self.transaction() as db:
            cursor = await db.execute(
                "UPDATE windows SET status='running', attempts=attempts+1, received=0, works=0, "
                "cursor=NULL WHERE id = ? AND field = ? AND start = ? AND end = ? AND scope = ? "
                "AND status IN ('pending', 'running', 'unsized')",
                (window.id, window.field, window.start, window.end, window.scope),
            )
            return cursor.rowcount == 1

    async def end_window(
        self, window_id: int, status: str, *, total: int | None = None, error: str | None = None,
        short_runs: int | None = None, short_received: int | None = None, rows: int | None = None,
    ) -> None:
        """Record how an attempt ended; `status` 'pending' puts the window back in the queue."""
        async with self.transaction() as db:
            await db.execute(
                "UPDATE windows SET status=?, total=coalesce(?, total), error=coalesce(?, error), "
                "error_at=CASE WHEN ? IS NULL THEN error_at ELSE strftime('%Y-%m-%dT%H:%M:%SZ', 'now') END, "
                "cursor=NULL, short_runs=coalesce(?, short_runs), short_received=coalesce(?, short_received), "
                "rows=coalesce(?, rows) WHERE id=?",
                (status, total, error, error, short_runs, short_received, rows, window_id),
            )

    async def requeue(self, job: str, *statuses: str) -> int:
        """Windows of these statuses back to the queue (after a crash or a stop: 'running';
        on a new run: 'short' and 'failed', with a fresh streak)."""
        marks = ",".join("?" * len(statuses))
        async with self.transaction() as db:
            cur = await db.execute(  # one started unsized and stopped before its first page: unsized again
                "UPDATE windows SET status=CASE WHEN total IS NULL THEN 'unsized' ELSE 'pending' END, short_runs=0 "
                f"WHERE job=? AND status IN ({marks})",
                (job, *statuses),
            )
        return cur.rowcount

    async def window_summary(self) -> dict[str, dict[str, int]]:
        """Per job: windows by status, and the sums of works and events."""
        rows = await self._all(
            "SELECT job, status, count(*), coalesce(sum(works),0), coalesce(sum(events),0), "
            "coalesce(sum(total),0) FROM windows GROUP BY job, status"
        )
        summary: dict[str, dict[str, int]] = {}
        for job, status, count, works, events, total in rows:
            entry = summary.setdefault(job, {"works": 0, "events": 0, "planned": 0})
            entry[status] = count
            entry["works"] += works
            entry["events"] += events
            entry["planned"] += total
        return summary

    async def all_windows(self, job: str | None = None) -> list[tuple]:
        """Every window with its figures and last error, for `status --windows`."""
        where = "WHERE job = ?" if job else ""
        return await self._all(
            "SELECT job, field, start, end, scope, status, total, works, events, attempts, error, error_at "
            f"FROM windows {where} ORDER BY job, start, scope", (job,) if job else ())

    async def last_errors(self, limit: int = 5) -> list[tuple[str, str, str]]:
        return await self._all(
            "SELECT start || '..' || end || CASE WHEN scope = '' THEN '' ELSE ' (' || scope || ')' END, "
            "status, error FROM windows WHERE error IS NOT NULL ORDER BY error_at DESC, id DESC LIMIT ?",
            (limit,),
        )

    # -- agencies and links waiting for one --------------------------------------------
    async def agencies(self) -> dict[str, tuple[str | None, str | None]]:
        """prefix -> (agency or None, when it was asked)."""
        return {p: (a, t) for p, a, t in await self._all("SELECT prefix, agency, checked_at FROM agency")}

    async def save_agencies(self, found: Mapping[str, str | None], checked_at: str) -> None:
        async with self.transaction() as db:
            await db.executemany(
                "INSERT OR REPLACE INTO agency VALUES (?, ?, ?)", [(p, a, checked_at) for p, a in found.items()]
            )

    async def deferred_prefixes(self) -> list[str]:
        return [p for (p,) in await self._all("SELECT DISTINCT prefix FROM deferred")]

    async def deferred_subjects(self, prefixes: list[str]) -> list[str]:
        marks = ",".join("?" * len(prefixes))
        return [s for (s,) in await self._all(
            f"SELECT DISTINCT subject FROM deferred WHERE prefix IN ({marks}) ORDER BY subject", tuple(prefixes))]

    # -- snapshot and XML units --------------------------------------------------------
    async def units(self) -> dict[str, tuple[int, int, bool, bool]]:
        """unit key -> (records consumed, problems, done, failed)."""
        return {k: (r, p, bool(d), bool(f)) for k, r, p, d, f in
                await self._all("SELECT key, records, problems, done, failed FROM units")}

    async def unit_stamps(self, prefix: str = "") -> dict[str, str]:
        """unit key -> the stamp of the file its row was written from ('' if not known)."""
        return dict(await self._all("SELECT key, stamp FROM units WHERE substr(key, 1, ?) = ?", (len(prefix), prefix)))

    async def unit_problems(self, prefix: str = "", limit: int = 5) -> list[tuple[str, str]]:
        """(unit key, its last problem) of failed units, the first `limit` by key."""
        return await self._all("SELECT key, note FROM units WHERE failed = 1 AND note != '' AND substr(key, 1, ?) = ? "
                               "ORDER BY key LIMIT ?", (len(prefix), prefix, limit))

    async def unit_summary(self, prefix: str = "") -> dict[str, int]:
        """Units (those whose key starts with `prefix`) and their sums."""
        row = await self._one(
            "SELECT count(*), coalesce(sum(done),0), coalesce(sum(failed),0), coalesce(sum(records),0), "
            "coalesce(sum(problems),0), coalesce(sum(bytes),0) FROM units WHERE substr(key, 1, ?) = ?",
            (len(prefix), prefix))
        return dict(zip(("units", "done", "failed", "records", "problems", "bytes"), row))

    async def list_units(self, rows: list[tuple[str, str]]) -> None:
        """A row for each (unit key, file stamp) with none yet: listed, nothing read."""
        async with self.transaction() as db:
            await db.executemany("INSERT OR IGNORE INTO units (key, stamp) VALUES (?, ?)", rows)

    async def rename_units(self, renames: list[tuple[str, str]]) -> None:
        """(old key, new key): the same units, their file now elsewhere."""
        async with self.transaction() as db:
            await db.executemany("UPDATE units SET key = ? WHERE key = ?", [(new, old) for old, new in renames])

    async def forget_units(self, keys: list[str]) -> None:
        """Drop these units' rows: they are read again from their start, their problems anew."""
        async with self.transaction() as db:
            await db.executemany("DELETE FROM units WHERE key = ?", [(k,) for k in keys])

    async def reset_failed_units(self) -> None:
        async with self.transaction() as db:
            await db.execute("DELETE FROM units WHERE failed = 1")

    # -- seen keys ---------------------------------------------------------------------
    async def seen_links(self, subjects: list[int]) -> dict[int, bytes]:
        found: dict[int, bytes] = {}
        for i in range(0, len(subjects), 900):
            chunk = subjects[i : i + 900]
            marks = ",".join("?" * len(chunk))
            found.update(
                await self._all(f"SELECT subject, links FROM seen WHERE subject IN ({marks})", tuple(chunk))
            )
        return found

    # -- the page commit ---------------------------------------------------------------
    async def commit_page(
        self,
        *,
        seen: Mapping[int, Iterable[int] | bytes],  # a subject's whole seen set, or it packed
        events: int,
        sink_seq: int,
        sink_offset: int,
        counters: Mapping[str, int],
        unknown: Mapping[tuple[str, str], int] | None = None,
        window: WindowProgress | None = None,
        unit: UnitProgress | None = None,
        meta: Mapping[str, str] | None = None,
    ) -> None:
        """Everything one page changed, atomically: seen keys, the links waiting for an
        agency, the source's position, counters, the output's length and `meta` settings."""
        async with self.transaction() as db:
            await db.executemany(
                "INSERT OR REPLACE INTO seen VALUES (?, ?)",
                [(subject, hashes if isinstance(hashes, bytes) else pack(hashes)) for subject, hashes in seen.items()],
            )
            delta = 0
            if unknown:
                # In bulk: a snapshot's batch holds thousands of such pairs, and a round trip
                # to the database's thread each capped a snapshot backfill at ~1,000 works/s.
                pairs = list(unknown)
                for i in range(0, len(pairs), 400):
                    chunk = pairs[i : i + 400]
                    async with db.execute(deferred_links_sql(len(chunk)), [v for pair in chunk for v in pair]) as cur:
                        delta -= (await cur.fetchone())[0]  # type: ignore[index]
                delta += sum(unknown.values())
                await db.executemany("INSERT OR REPLACE INTO deferred VALUES (?, ?, ?)",
                                     [(prefix, subject, links) for (prefix, subject), links in unknown.items()])
            if window is not None:
                await db.execute(
                    "UPDATE windows SET works=works+?, received=?, events=events+?, cursor=? WHERE id=?",
                    (window.works, window.received, events, window.cursor, window.id),
                )
            if unit is not None:
                await db.execute(
                    "INSERT INTO units (key, records, problems, done, failed, bytes, stamp, note) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET records=excluded.records, problems=problems+excluded.problems, "
                    "done=excluded.done, failed=excluded.failed, bytes=excluded.bytes, stamp=excluded.stamp, "
                    "note=CASE excluded.note WHEN '' THEN note ELSE excluded.note END",
                    (unit.key, unit.records, unit.problems, int(unit.done), int(unit.failed), unit.bytes, unit.stamp,
                     unit.note),
                )
            if meta:
                await db.executemany(
                    "INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                    list(meta.items()),
                )
            await db.execute("UPDATE sink SET seq=?, offset=? WHERE id=1", (sink_seq, sink_offset))
            await db.executemany(
                "INSERT INTO counters VALUES (?, ?) ON CONFLICT(name) "
                "DO UPDATE SET value=value+excluded.value",
                [(k, v) for k, v in {**counters, "unknown-agency": delta}.items() if v],
            )

    async def forget_deferred(self, prefixes: list[str]) -> None:
        """Links of these prefixes were fetched again with the prefixes known: what is left
        waiting of them (a work that no longer cites them) waits no more."""
        marks = ",".join("?" * len(prefixes))
        async with self.transaction() as db:
            async with db.execute(f"SELECT coalesce(sum(links), 0) FROM deferred WHERE prefix IN ({marks})",
                                  tuple(prefixes)) as cur:
                (left,) = await cur.fetchone()  # type: ignore[misc]
            await db.execute(f"DELETE FROM deferred WHERE prefix IN ({marks})", tuple(prefixes))
            await db.execute("UPDATE counters SET value = value - ? WHERE name = 'unknown-agency'", (left,))

    async def add_counters(self, counters: Mapping[str, int]) -> None:
        async with self.transaction() as db:
            await db.executemany(
                "INSERT INTO counters VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value=value+excluded.value",
                [(k, v) for k, v in counters.items() if v],
            )

    async def begin_run(self, started_at: str) -> None:
        """A run starts: its own counters (`run:…`) from zero, and when it started."""
        async with self.transaction() as db:
            await db.execute("DELETE FROM counters WHERE name LIKE ?", (RUN + "%",))
            await db.execute("INSERT OR REPLACE INTO meta VALUES ('run_started_at', ?)", (started_at,))

    async def counters(self) -> dict[str, int]:
        return dict(await self._all("SELECT name, value FROM counters"))

    async def sink_position(self) -> tuple[int, int]:
        row = await self._one("SELECT seq, offset FROM sink WHERE id=1")
        return int(row[0]), int(row[1])

    async def set_sink_position(self, seq: int, offset: int, *, durable: bool = False) -> None:
        async with self.transaction(durable=durable) as db:
            await db.execute("UPDATE sink SET seq=?, offset=? WHERE id=1", (seq, offset))


def file_in_the_way(path: Path) -> Path | None:
    """The regular file among the path's parents, if one is (no file can exist below it)."""
    return next((p for p in path.parents if p.exists() and not p.is_dir()), None)


def _lock(path: Path) -> tuple[int, bool]:
    """An exclusive lock beside the state file; the OS drops it when the process dies.
    Returns the descriptor and whether this call created the lock file."""
    lock_path = path.with_name(path.name + ".lock")
    made = not lock_path.exists()
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StateError(f"cannot create the lock file {lock_path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StateError(
            f"another crawler is using {path} (lock {lock_path} is held); "
            "wait for it to finish or stop it first"
        ) from None
    return fd, made


def _unlock(path: Path, fd: int, made: bool) -> None:
    """Give up a lock taken by `open`; a lock file this open created goes too (a refused
    file leaves nothing beside it)."""
    if fd < 0:
        return
    if made:
        with contextlib.suppress(OSError):
            path.with_name(path.name + ".lock").unlink()
    os.close(fd)


def crawler_running(path: Path) -> bool:
    """Is a crawler holding this state file's lock right now? (Asked without taking it for long.)"""
    lock_path = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
