"""The state file: every read and write of durable state, in one SQLite file (WAL).

What must survive a crash is committed in one transaction with what it depends on: a page's
seen keys, its window's counts and the output file's new length go together (`commit_page`).
The seen-key store keeps one row per subject work holding that work's emitted link hashes
(48-bit, see `keys`), packed as 6 bytes each, so a key costs about 8 bytes on disk with
the row's share of overhead.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
import sys
from array import array
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from crawler.errors import StateError

SCHEMA_VERSION = 3  # 2: xxh3 link hashes, packed unsigned; 3: 48-bit link hashes
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
    error TEXT
);
CREATE INDEX windows_status ON windows (job, status);
CREATE TABLE agency (prefix TEXT PRIMARY KEY, agency TEXT) WITHOUT ROWID;
CREATE TABLE seen (subject INTEGER PRIMARY KEY, links BLOB NOT NULL);
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE sink (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, offset INTEGER NOT NULL);
INSERT INTO sink VALUES (1, 1, 0);
"""

WINDOW_STATUSES = ("unsized", "pending", "running", "done", "short", "failed")


@dataclass(frozen=True)
class Window:
    id: int
    job: str
    field: str
    start: str
    end: str
    status: str
    total: int | None
    attempts: int

    @property
    def filter(self) -> str:
        return f"from-{self.field}:{self.start},until-{self.field}:{self.end}"


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


class Store:
    """Async access to the state file. Open with `await Store.open(path)`."""

    def __init__(self, db: aiosqlite.Connection, path: Path, lock_fd: int) -> None:
        self.db = db
        self.path = path
        self._lock_fd = lock_fd
        self._tx_lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction at a time on the shared connection; rolled back on error."""
        async with self._tx_lock:
            try:
                try:
                    await self.db.execute("BEGIN IMMEDIATE")
                    yield self.db
                    await self.db.execute("COMMIT")
                except BaseException:
                    await self._rollback()
                    raise
            except sqlite3.OperationalError as exc:
                raise StateError(
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
        if not path.exists():
            if not create or readonly:
                raise StateError(f"no state file at {path}: nothing has run with it yet")
            path.parent.mkdir(parents=True, exist_ok=True)
        lock_fd = -1 if readonly else _lock(path)
        try:
            if readonly:
                db = await aiosqlite.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
            else:
                db = await aiosqlite.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            if lock_fd >= 0:
                os.close(lock_fd)
            raise StateError(f"cannot open the state file {path}: {exc}") from None
        store = cls(db, path, lock_fd)
        try:
            await store._prepare(create and not readonly, readonly)
        except BaseException:
            await store.close()
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
            await self._one("PRAGMA journal_mode=WAL")  # returns a row: consume it
            # One script, one transaction: a crash leaves either no schema or all of it.
            await self.db.executescript(
                f"BEGIN IMMEDIATE; {_SCHEMA} PRAGMA application_id={APPLICATION_ID}; "
                f"PRAGMA user_version={SCHEMA_VERSION}; COMMIT;"
            )
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
        if version < SCHEMA_VERSION:
            raise StateError(
                f"{self.path} has schema version {version}, from a development version of the "
                f"crawler whose link hashes differ from today's ({SCHEMA_VERSION}); start a new "
                "state file and output directory"
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

    async def close(self) -> None:
        try:
            await self.db.close()
        finally:
            if self._lock_fd >= 0:
                os.close(self._lock_fd)

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

    async def set_meta(self, values: Mapping[str, str]) -> None:
        async with self.transaction() as db:
            await db.executemany(
                "INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                list(values.items()),
            )

    # -- the plan ----------------------------------------------------------------------
    async def add_windows(self, job: str, field: str, ranges: Iterable[tuple[str, str]]) -> None:
        async with self.transaction() as db:
            await db.executemany(
                "INSERT INTO windows (job, field, start, end, status) VALUES (?, ?, ?, ?, 'unsized')",
                [(job, field, a, b) for a, b in ranges],
            )

    async def windows(self, job: str, *statuses: str) -> list[Window]:
        marks = ",".join("?" * len(statuses))
        rows = await self._all(
            "SELECT id, job, field, start, end, status, total, attempts FROM windows "
            f"WHERE job = ? AND status IN ({marks}) ORDER BY start",
            (job, *statuses),
        )
        return [Window(*row) for row in rows]

    async def size_window(self, window_id: int, total: int) -> None:
        status = "done" if total == 0 else "pending"
        async with self.transaction() as db:
            await db.execute(
                "UPDATE windows SET status = ?, total = ? WHERE id = ?", (status, total, window_id)
            )

    async def clear_windows(self, job: str) -> None:
        async with self.transaction() as db:
            await db.execute("DELETE FROM windows WHERE job = ?", (job,))

    async def split_window(self, window: Window, halves: list[tuple[str, str]]) -> None:
        async with self.transaction() as db:
            await db.execute("DELETE FROM windows WHERE id = ?", (window.id,))
            await db.executemany(
                "INSERT INTO windows (job, field, start, end, status) VALUES (?, ?, ?, ?, 'unsized')",
                [(window.job, window.field, a, b) for a, b in halves],
            )

    async def start_window(self, window_id: int) -> None:
        """A fresh attempt: the scroll restarts at '*', so per-attempt counts restart too."""
        async with self.transaction() as db:
            await db.execute(
                "UPDATE windows SET status='running', attempts=attempts+1, received=0, works=0, "
                "cursor=NULL, error=NULL WHERE id = ?",
                (window_id,),
            )

    async def end_window(
        self, window_id: int, status: str, *, total: int | None = None, error: str | None = None
    ) -> None:
        async with self.transaction() as db:
            await db.execute(
                "UPDATE windows SET status=?, total=coalesce(?, total), error=?, cursor=NULL WHERE id=?",
                (status, total, error, window_id),
            )

    async def requeue_running(self, job: str) -> int:
        """After a crash: windows left running restart from '*' (their scroll may have moved)."""
        async with self.transaction() as db:
            cur = await db.execute(
                "UPDATE windows SET status='pending' WHERE job=? AND status='running'", (job,)
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

    async def last_errors(self, limit: int = 5) -> list[tuple[str, str, str]]:
        return await self._all(
            "SELECT start || '..' || end, status, error FROM windows WHERE error IS NOT NULL "
            "ORDER BY id DESC LIMIT ?",
            (limit,),
        )

    # -- agencies ----------------------------------------------------------------------
    async def agencies(self) -> dict[str, str | None]:
        return dict(await self._all("SELECT prefix, agency FROM agency"))

    async def save_agencies(self, found: Mapping[str, str | None]) -> None:
        async with self.transaction() as db:
            await db.executemany(
                "INSERT OR REPLACE INTO agency VALUES (?, ?)", list(found.items())
            )

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
        window_id: int | None,
        works: int,
        received: int,
        cursor: str | None,
        seen: Mapping[int, Iterable[int]],
        events: int,
        sink_seq: int,
        sink_offset: int,
        counters: Mapping[str, int],
    ) -> None:
        """Everything one page changed, atomically: seen keys, counts and the output's length."""
        async with self.transaction() as db:
            await db.executemany(
                "INSERT OR REPLACE INTO seen VALUES (?, ?)",
                [(subject, pack(hashes)) for subject, hashes in seen.items()],
            )
            if window_id is not None:
                await db.execute(
                    "UPDATE windows SET works=works+?, received=?, events=events+?, cursor=? "
                    "WHERE id=?",
                    (works, received, events, cursor, window_id),
                )
            await db.execute("UPDATE sink SET seq=?, offset=? WHERE id=1", (sink_seq, sink_offset))
            await db.executemany(
                "INSERT INTO counters VALUES (?, ?) ON CONFLICT(name) "
                "DO UPDATE SET value=value+excluded.value",
                [(k, v) for k, v in counters.items() if v],
            )

    async def counters(self) -> dict[str, int]:
        return dict(await self._all("SELECT name, value FROM counters"))

    async def sink_position(self) -> tuple[int, int]:
        row = await self._one("SELECT seq, offset FROM sink WHERE id=1")
        return int(row[0]), int(row[1])

    async def set_sink_position(self, seq: int, offset: int) -> None:
        async with self.transaction() as db:
            await db.execute("UPDATE sink SET seq=?, offset=? WHERE id=1", (seq, offset))


def _lock(path: Path) -> int:
    """An exclusive lock beside the state file; the OS drops it when the process dies."""
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StateError(
            f"another crawler is using {path} (lock {lock_path} is held); "
            "wait for it to finish or stop it first"
        ) from None
    return fd
