"""What a snapshot record costs the single writer, and what would make it cheaper (issue 20).

    .venv/bin/python scripts/bench_seen_layout.py                 # at 0 and 2 M works held, ~3 min
    .venv/bin/python scripts/bench_seen_layout.py --held 0,6000000

Each record of a snapshot adds one row to the seen store (`seen`: its subject's hash, a random
64-bit key, and its ~14 link hashes packed): a lookup of the batch's subjects, then one
transaction per batch of 1,000. The store's B-tree is keyed by a random hash, so every row lands
on its own leaf once the table outgrows a batch: each costs a page written to the WAL and again
at the checkpoint. This script times that write (CPU of this process per row: SQLite runs in it)
as the crawler does it and in the layouts one might hope would do better, in turns on copies of
the same file:

- as built: `Store.seen_links` + `Store.commit_page` (the crawler's commit, counters included);
- sorted: the batch's rows inserted in key order;
- 5,000-row batches: fewer, bigger transactions;
- 2 KB / 8 KB pages (the store uses 4 KB);
- append-only log: rows appended in arrival order to a table with no key and no lookup — the
  floor of any log-structured bulk fill, which would still have to find duplicates and sort.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import shutil
import sqlite3
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from crawler.store import Store, pack  # noqa: E402

LINKS = 14  # link hashes per row: the real-mix snapshot's 14.6 per record
BATCH = 1000
ROWS_TIMED = 100_000
TURNS = 3


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _batches(seed: int, rows: int, per: int) -> list[list[tuple[int, bytes]]]:
    rng = random.Random(seed)
    blob = pack(rng.getrandbits(48) for _ in range(LINKS))
    keys = [rng.getrandbits(64) - (1 << 63) for _ in range(rows)]
    return [[(k, blob) for k in keys[i:i + per]] for i in range(0, rows, per)]


def _prefill(path: Path, held: int, page: int) -> None:
    """A state file holding `held` rows, made by the crawler's own code (then its page size)."""
    async def make() -> None:
        store = await Store.open(path)
        await store.close()
    if page != 4096:
        with sqlite3.connect(path) as db:  # before the store creates its tables
            db.execute(f"PRAGMA page_size={page}")
    asyncio.run(make())
    db = sqlite3.connect(path, isolation_level=None)
    for batch in _batches(1, held, 100_000):
        db.execute("BEGIN")
        db.executemany("INSERT OR REPLACE INTO seen VALUES (?, ?)", batch)
        db.execute("COMMIT")
    db.execute("CREATE TABLE log (subject INTEGER NOT NULL, links BLOB NOT NULL)")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def _raw(path: Path, batches: list[list[tuple[int, bytes]]], *, sort: bool = False, log: bool = False) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "cache_size=-8192", "wal_autocheckpoint=40000"):
        db.execute(f"PRAGMA {pragma}")
    for batch in batches:
        if not log:
            for i in range(0, len(batch), 900):
                keys = [k for k, _ in batch[i:i + 900]]
                db.execute(f"SELECT subject, links FROM seen WHERE subject IN ({','.join('?' * len(keys))})",
                           keys).fetchall()
        db.execute("BEGIN IMMEDIATE")
        db.executemany("INSERT INTO log VALUES (?, ?)" if log else "INSERT OR REPLACE INTO seen VALUES (?, ?)",
                       sorted(batch) if sort else batch)
        db.execute("COMMIT")
    db.close()


def _as_built(path: Path, batches: list[list[tuple[int, bytes]]]) -> None:
    async def run() -> None:
        store = await Store.open(path)
        for batch in batches:
            await store.seen_links([k for k, _ in batch])
            await store.commit_page(seen=dict(batch), events=LINKS * len(batch), sink_seq=1, sink_offset=0,
                                    counters={"relation:references": LINKS * len(batch)})
        await store.close()
    asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--held", default="0,2000000", help="comma-separated works already held (default 0,2000000)")
    args = parser.parse_args()
    (ROOT / "state").mkdir(exist_ok=True)
    timed = _batches(2, ROWS_TIMED, BATCH)
    big = _batches(2, ROWS_TIMED, 5 * BATCH)
    variants = {
        "as built (Store.seen_links + commit_page)": (4096, lambda p: _as_built(p, timed)),
        "sorted rows": (4096, lambda p: _raw(p, timed, sort=True)),
        "5,000-row batches": (4096, lambda p: _raw(p, big)),
        "2 KB pages": (2048, lambda p: _raw(p, timed)),
        "8 KB pages": (8192, lambda p: _raw(p, timed)),
        "append-only log (no key, no lookup)": (4096, lambda p: _raw(p, timed, log=True)),
    }
    print(f"{os.cpu_count()} cores; {ROWS_TIMED:,} rows timed in batches of {BATCH:,}, {LINKS} link hashes each; "
          f"CPU microseconds per row, median of {TURNS} turns")
    for held in [int(h) for h in args.held.split(",")]:
        with tempfile.TemporaryDirectory(dir=ROOT / "state") as tmp:
            bases = {}
            for page in sorted({page for page, _ in variants.values()}):
                bases[page] = Path(tmp) / f"base-{page}.sqlite3"
                _prefill(bases[page], held, page)
            results: dict[str, list[float]] = {name: [] for name in variants}
            for _ in range(TURNS):
                for name, (page, fn) in variants.items():
                    work = Path(tmp) / "work.sqlite3"
                    shutil.copy(bases[page], work)
                    start = _cpu()
                    fn(work)
                    results[name].append((_cpu() - start) / ROWS_TIMED * 1e6)
                    for suffix in ("", "-wal", "-shm", ".lock"):
                        Path(f"{work}{suffix}").unlink(missing_ok=True)
            for name, values in results.items():
                print(f"  holding {held:>11,} works | {name:42s} | {statistics.median(values):5.1f} us/row "
                      f"({min(values):.1f}-{max(values):.1f})", flush=True)


if __name__ == "__main__":
    main()
