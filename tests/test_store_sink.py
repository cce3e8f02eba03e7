"""The state file and the output files: real SQLite files and real files in a tmp dir."""

from __future__ import annotations

import asyncio
import gzip
import sqlite3

import pytest

from crawler.errors import OutputError, StateError
from crawler.sink import Sink
from crawler.store import SCHEMA_VERSION, Store, WindowProgress, deferred_links_sql, unpack


async def test_schema_versioned_and_reopened(tmp_path):
    path = tmp_path / "s.sqlite3"
    async with await Store.open(path) as store:
        await store.set_meta({"backfill_from": "2020-01-01"})
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()
    async with await Store.open(path) as store:
        assert (await store.meta())["backfill_from"] == "2020-01-01"


async def test_a_version_4_state_file_gets_unit_stamps_and_keeps_its_rows(tmp_path):
    """Version 4's units rows had no stamp of their file nor note of their last problem: the
    upgrade adds both, empty (not known)."""
    path = tmp_path / "s.sqlite3"
    async with await Store.open(path):
        pass
    con = sqlite3.connect(path)
    con.executescript("ALTER TABLE units DROP COLUMN stamp; ALTER TABLE units DROP COLUMN note; PRAGMA user_version=4; "
                      "INSERT INTO units (key, records, done) VALUES ('snapshot:/a.tar::0.json.gz', 7, 1);")
    con.close()
    async with await Store.open(path) as store:
        assert await store.units() == {"snapshot:/a.tar::0.json.gz": (7, 0, True, False)}
        assert await store.unit_stamps("snapshot:") == {"snapshot:/a.tar::0.json.gz": ""}
        assert await store.unit_problems("snapshot:") == []
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    con.close()


async def test_a_state_file_with_other_link_hashes_is_refused_untouched(tmp_path):
    path = tmp_path / "s.sqlite3"
    async with await Store.open(path):
        pass
    con = sqlite3.connect(path)
    con.execute("PRAGMA user_version=1")  # what the first development version wrote
    con.close()
    before = path.read_bytes()
    with pytest.raises(StateError, match="link hashes differ"):
        await Store.open(path)
    assert path.read_bytes() == before


async def test_second_opener_is_refused_while_first_holds_it(tmp_path):
    path = tmp_path / "s.sqlite3"
    async with await Store.open(path):
        with pytest.raises(StateError, match="another crawler is using"):
            await Store.open(path)
        async with await Store.open(path, readonly=True) as reader:  # status beside a live run
            assert set(await reader.meta()) == {"state_id"}


async def test_foreign_sqlite_file_is_refused_untouched(tmp_path):
    path = tmp_path / "other.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    before = path.read_bytes()
    with pytest.raises(StateError, match="another program"):
        await Store.open(path)
    assert path.read_bytes() == before


async def test_corrupt_file_is_refused_untouched(tmp_path):
    path = tmp_path / "junk.sqlite3"
    path.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(StateError, match="not a usable state file"):
        await Store.open(path)
    assert path.read_bytes() == b"this is not a database at all" * 100


async def test_missing_file_for_status(tmp_path):
    with pytest.raises(StateError, match="no state file"):
        await Store.open(tmp_path / "nope.sqlite3", readonly=True)


async def test_commit_page_is_atomic_and_merges_counters(tmp_path):
    async with await Store.open(tmp_path / "s.sqlite3") as store:
        await store.add_windows("backfill", "created-date", [("2020-01-01", "2020-01-31")])
        (window,) = await store.windows("backfill", "unsized")
        await store.size_window(window.id, 10)
        await store.start_window(window)
        for _ in range(2):
            await store.commit_page(
                window=WindowProgress(window.id, 5, 5, "c"), seen={7: [3, 1, 2]},
                events=3, sink_seq=1, sink_offset=100, counters={"events": 3, "pages": 1},
            )
        assert await store.counters() == {"events": 6, "pages": 2}
        assert sorted(unpack((await store.seen_links([7, 8]))[7])) == [1, 2, 3]
        assert await store.sink_position() == (1, 100)
        summary = (await store.window_summary())["backfill"]
        assert summary["running"] == 1 and summary["works"] == 10 and summary["events"] == 6


async def test_links_waiting_for_an_agency_count_once_and_are_looked_up_by_key(tmp_path):
    """The same (prefix, subject) pairs committed again replace their counts (the counter moves
    by the difference); and the look-up of earlier counts searches the key instead of scanning
    the table, which a snapshot grows by ~1 row per record (a scan per batch is quadratic)."""
    pairs = {(f"10.{9000 + i % 7}", f"10.1/w{i}"): 1 + i % 3 for i in range(1000)}
    async with await Store.open(tmp_path / "s.sqlite3") as store:
        await store.commit_page(seen={}, events=0, sink_seq=1, sink_offset=0, counters={}, unknown=pairs)
        assert (await store.counters())["unknown-agency"] == sum(pairs.values())
        again = {pair: 2 for pair in list(pairs)[:500]}
        again[("10.9999", "10.1/new")] = 4
        await store.commit_page(seen={}, events=0, sink_seq=1, sink_offset=0, counters={}, unknown=again)
        expected = sum({**pairs, **again}.values())
        assert (await store.counters())["unknown-agency"] == expected
    con = sqlite3.connect(tmp_path / "s.sqlite3")
    try:
        assert con.execute("SELECT sum(links) FROM deferred").fetchone()[0] == expected
        plan = " | ".join(row[-1] for row in con.execute("EXPLAIN QUERY PLAN " + deferred_links_sql(3), ["a"] * 6))
    finally:
        con.close()
    assert "SEARCH d USING PRIMARY KEY" in plan and "SCAN d" not in plan, plan


async def test_a_write_cancelled_anywhere_leaves_the_connection_usable(tmp_path):
    # A cancelled await does not stop its statement in the connection's thread: cancelled at
    # BEGIN, a write used to leave the connection inside a transaction, failing all later ones.
    async with await Store.open(tmp_path / "s.sqlite3") as store:
        for ticks in range(12):  # cancel after 0, 1, 2, ... loop turns: BEGIN, the writes, COMMIT
            write = asyncio.create_task(store.set_meta({"cancelled": str(ticks), "other": str(ticks)}))
            for _ in range(ticks):
                await asyncio.sleep(0)
            write.cancel()
            await asyncio.gather(write, return_exceptions=True)
            await store.set_meta({"after": str(ticks)})
            meta = await store.meta()
            assert meta["after"] == str(ticks)
            assert meta.get("cancelled") == meta.get("other")  # all of a write, or none of it
            assert not store.db.in_transaction


async def test_split_and_requeue(tmp_path):
    async with await Store.open(tmp_path / "s.sqlite3") as store:
        await store.add_windows("backfill", "created-date", [("2020-01-01", "2020-12-31")])
        (window,) = await store.windows("backfill", "unsized")
        await store.split_window(window, [("2020-01-01", "2020-07-01", "", None), ("2020-07-02", "2020-12-31", "", None)])
        first, second = await store.windows("backfill", "unsized")
        assert (first.start, first.end, second.start, second.end) == ("2020-01-01", "2020-07-01", "2020-07-02", "2020-12-31")
        assert first.filter == "from-created-date:2020-01-01,until-created-date:2020-07-01"
        await store.size_window(first.id, 0)
        await store.size_window(second.id, 5)
        assert [w.id for w in await store.windows("backfill", "done")] == [first.id]
        await store.start_window(second)
        assert await store.requeue("backfill", "running") == 1
        assert [w.id for w in await store.windows("backfill", "pending")] == [second.id]


def _read_all(path):
    with gzip.open(path, "rb") as handle:
        return handle.read()


def test_sink_appends_members_and_finishes(tmp_path):
    sink = Sink(tmp_path, seq=1, offset=0)
    assert sink.recover() is False
    sink.append(gzip.compress(b"a\n"))
    offset = sink.append(gzip.compress(b"b\n"))
    assert offset == sink.path().stat().st_size
    assert not list(tmp_path.glob("*.jsonl.gz"))  # still a part file
    final = sink.finish_file()
    assert final.name == "events-000001.jsonl.gz" and _read_all(final) == b"a\nb\n"
    assert (sink.seq, sink.offset) == (2, 0)
    assert not list(tmp_path.glob("*.part"))


def test_sink_recovery_cuts_uncommitted_bytes(tmp_path):
    sink = Sink(tmp_path, seq=1, offset=0)
    committed = sink.append(gzip.compress(b"kept\n"))
    sink.append(gzip.compress(b"never committed\n"))
    sink.close()
    again = Sink(tmp_path, seq=1, offset=committed)
    assert again.recover() is False
    assert _read_all(again.path()) == b"kept\n"


def test_sink_recovery_after_rename_before_commit(tmp_path):
    sink = Sink(tmp_path, seq=1, offset=0)
    committed = sink.append(gzip.compress(b"x\n"))
    sink.finish_file()  # the crash comes before the state records (2, 0)
    again = Sink(tmp_path, seq=1, offset=committed)
    assert again.recover() is True
    assert (again.seq, again.offset) == (2, 0)


def test_sink_missing_part_file_is_an_error(tmp_path):
    with pytest.raises(OutputError, match="missing"):
        Sink(tmp_path, seq=3, offset=500).recover()


def test_sink_removes_empty_uncommitted_part(tmp_path):
    sink = Sink(tmp_path, seq=1, offset=0)
    sink.append(gzip.compress(b"lost\n"))
    sink.close()
    assert Sink(tmp_path, seq=1, offset=0).recover() is False
    assert not list(tmp_path.iterdir())


async def test_a_cancelled_batch_keeps_its_subjects_until_its_write_commits(tmp_path):
    """A batch's caller cancelled while its write waits (a window starting over, Ctrl-C): the
    write goes on, shielded, and a batch of the same subject must not read its seen set before
    that write commits, or it would choose the same links again."""
    from collections import Counter

    from crawler.engine import opened, started_crawl
    from crawler.jobs import prepare_output
    from crawler.select import Rendered
    from crawler.store import pack
    from tests.conftest import crawler_config

    subject = 42
    config = crawler_config("http://127.0.0.1:9", tmp_path)
    seen_by_second: list[dict[int, bytes]] = []

    async def first_select(seen, agencies):
        return Rendered(b"", 3, {subject: pack([1, 2, 3])}, Counter(), {})

    async def second_select(seen, agencies):
        seen_by_second.append(seen)
        return Rendered(b"", 0, {}, Counter(), {})

    async with opened(config) as (store, client):
        output = await prepare_output(config, store, await store.meta())
        async with started_crawl(config, store, client, output, asyncio.Event(), parse_pool=False) as crawl:
            async with crawl._commit_lock:  # holds the first batch's write before its commit
                first = asyncio.create_task(crawl.commit_selected([subject], set(), first_select, works=1))
                while not crawl._commits:
                    await asyncio.sleep(0.001)
                first.cancel()
                second = asyncio.create_task(crawl.commit_selected([subject], set(), second_select, works=1))
                for _ in range(20):
                    await asyncio.sleep(0.005)
                assert not seen_by_second, "the second batch read the subject's seen set before the first committed"
            await asyncio.wait_for(second, timeout=10)
            assert first.cancelled()
    assert len(seen_by_second) == 1 and sorted(unpack(seen_by_second[0][subject])) == [1, 2, 3]
