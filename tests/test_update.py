"""`crawler update`: backfill the simulator's corpus, change the corpus, update, and check the
new output against the links the change added (recorded by the corpus generator, never by the
crawler's code): each added link exactly once, nothing earlier repeated, rewritten or deleted."""

from __future__ import annotations

import asyncio
import gzip
import json
import queue
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from crawler.errors import StateError
from crawler.jobs import backfill, update
from crawler.simulator.app import Faults, Simulator, SimulatorThread
from crawler.simulator.corpus import Corpus, generate
from crawler.status import status_report
from tests.conftest import ROOT, crawler_args, crawler_config, event_key, fast_sim_config, output_keys, read_events, run_crawler


def _today() -> date:
    return datetime.now(UTC).date()


def _files(out: Path) -> dict[str, bytes]:
    """The finished output files, name -> bytes."""
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.jsonl.gz"))}


def _written_since(out: Path, before: dict[str, bytes]) -> Counter:
    """Keys (with counts) of the events in files that are not in `before`; the files in
    `before` must be unchanged byte for byte (events are never rewritten or deleted)."""
    after = _files(out)
    for name, data in before.items():
        assert after.get(name) == data, f"{name} changed after it was completed"
    assert not list(out.glob("*.part")), "a finished run leaves no partial file"
    keys: Counter = Counter()
    for name in sorted(set(after) - set(before)):
        for line in gzip.decompress(after[name]).decode().splitlines():
            keys[event_key(json.loads(line))] += 1
    return keys


def _assert_exact(written: Counter, expected: set) -> None:
    repeated = {k: n for k, n in written.items() if n > 1}
    assert not repeated, f"{len(repeated)} link(s) written more than once"
    missing, extra = expected - set(written), set(written) - expected
    assert not missing and not extra, f"{len(missing)} missing, {len(extra)} unexpected"


def _meta(state: Path) -> dict[str, str]:
    """The state's meta table, read-only (safe beside a live or killed run)."""
    con = sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=5)
    try:
        return dict(con.execute("SELECT key, value FROM meta").fetchall())
    finally:
        con.close()


async def _backfilled(corpus: Corpus, sim: Simulator, tmp: Path, **overrides):
    config = crawler_config(sim.url, tmp, **overrides)
    outcome = await backfill(config, asyncio.Event())
    assert outcome.code == 0, outcome.message
    keys, repeated = output_keys(config.out)
    assert keys == corpus.expected and not repeated
    return config


# -- 1, 2: an update emits exactly the added links; a second one emits nothing ----------------
async def test_update_emits_exactly_the_added_links(tmp_path):
    corpus = generate(800, seed=41)
    async with Simulator(corpus, fast_sim_config()) as sim:
        config = await _backfilled(corpus, sim, tmp_path)
        old, before = corpus.expected, _files(config.out)
        # A real backfill runs for days: say this one started five days ago, and works were
        # re-indexed three days ago, after their windows had been scrolled.
        started = (datetime.now(UTC) - timedelta(days=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
        with sqlite3.connect(config.state) as con:
            con.execute("UPDATE meta SET value=? WHERE key='backfill_started_at'", (started,))
        con.close()
        report = await status_report(config.state)
        assert report["update"]["high_water_mark"] == started[:10]
        assert report["update"]["mark_from"] == "backfill start" and report["update"]["last"] is None

        then = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)
        added = corpus.mutate(seed=1, new_works=30, changed_works=60, at=then)
        assert len(added) > 100 and not added & old
        day = _today()
        outcome = await update(config, asyncio.Event())
        assert outcome.code == 0, outcome.message
        written = _written_since(config.out, before)
        _assert_exact(written, added)
        keys, repeated = output_keys(config.out)
        assert keys == old | added and not repeated
        assert f"high-water mark now {day}" in outcome.message

        report = await status_report(config.state)
        assert report["update"]["high_water_mark"] == day.isoformat()
        assert report["update"]["mark_from"] == "update"
        last = report["update"]["last"]
        # The first update starts on the day the backfill started (not when it finished) and
        # ends on the day it ran.
        assert (last["from"], last["until"]) == (started[:10], day.isoformat())
        assert last["works"] == len(corpus.changed) == 90
        assert last["events"] == len(added)
        assert report["update"]["running"] is None, "a finished update is not running"
        assert sum(sim.stats.over_limit.values()) == 0


async def test_second_update_without_changes_emits_nothing(tmp_path):
    corpus = generate(800, seed=42)
    async with Simulator(corpus, fast_sim_config()) as sim:
        config = await _backfilled(corpus, sim, tmp_path)
        corpus.mutate(seed=2, new_works=20, changed_works=40)
        assert (await update(config, asyncio.Event())).code == 0
        before, requests = _files(config.out), sim.stats.requests
        day = _today()
        outcome = await update(config, asyncio.Event())
        assert outcome.code == 0, outcome.message
        assert "0 new events this run" in outcome.message
        assert sim.stats.requests > requests, "the second update asked the API"
        assert _files(config.out) == before, "no new file, no changed file"
        last = (await status_report(config.state))["update"]["last"]
        # A day's overlap: it starts on the previous mark and re-reads that day's 60 works.
        assert (last["from"], last["until"]) == (day.isoformat(), day.isoformat())
        assert (last["works"], last["events"]) == (60, 0)


# -- 3: works that lost references keep their earlier events ---------------------------------
async def test_lost_references_keep_their_events_and_nothing_is_reemitted(tmp_path):
    corpus = generate(800, seed=43)
    async with Simulator(corpus, fast_sim_config()) as sim:
        config = await _backfilled(corpus, sim, tmp_path)
        old, before = corpus.expected, _files(config.out)
        added = corpus.mutate(seed=3, new_works=10, changed_works=150)
        lost = old - corpus.expected
        assert len(lost) >= 20, "the change must drop links of some works for this test"
        assert (await update(config, asyncio.Event())).code == 0
        _assert_exact(_written_since(config.out, before), added)  # earlier files byte for byte
        keys, repeated = output_keys(config.out)
        assert lost <= keys and not repeated
        assert keys == old | added


# -- the mark waits for a complete update -----------------------------------------------------
async def test_a_short_window_does_not_hold_the_mark_back(tmp_path):
    """One work re-indexed three days ago is counted by the API but never served: its window
    ends short at the same count, scroll after scroll. The update still writes everything
    else, moves the mark to today and says the window stays; the next update fetches what was
    indexed since *and* tries the short window again, which the API now serves whole."""
    corpus = generate(800, seed=48)
    async with Simulator(corpus, fast_sim_config()) as sim:
        config = await _backfilled(corpus, sim, tmp_path)
        before = _files(config.out)
        three_days_ago = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)
        added = corpus.mutate(seed=10, new_works=100, changed_works=150, at=three_days_ago)
        hidden = next(doi for doi in corpus.changed if any(k[0] == doi.lower() for k in added))
        sim.app.faults = Faults(hidden_dois=frozenset({hidden}))
        since = (three_days_ago - timedelta(days=2)).date()
        outcome = await update(config, asyncio.Event(), since)
        assert outcome.code == 1 and "1 short window(s)" in outcome.message, outcome.message
        today = _today().isoformat()
        assert f"high-water mark now {today}" in outcome.message
        meta, report = _meta(config.state), await status_report(config.state)
        assert meta["update_mark"] == today and report["update"]["high_water_mark"] == today
        (short,) = report["short_windows"]
        assert short["job"] == "update" and short["start"] <= three_days_ago.date().isoformat() <= short["end"]
        first = _written_since(config.out, before)
        _assert_exact(first, {k for k in added if k[0] != hidden.lower()})

        sim.app.faults = Faults()
        later = corpus.mutate(seed=11, new_works=40, changed_works=40)  # indexed now
        outcome = await update(config, asyncio.Event())
        assert outcome.code == 0, outcome.message
        _assert_exact(_written_since(config.out, before), added | later)
        report = await status_report(config.state)
        assert report["short_windows"] == [] and report["update"]["last"]["from"] == today


# -- 4: --since overrides the mark -----------------------------------------------------------
async def test_since_overrides_the_mark(tmp_path):
    corpus = generate(800, seed=44)
    async with Simulator(corpus, fast_sim_config()) as sim:
        config = await _backfilled(corpus, sim, tmp_path)
        old, before = corpus.expected, _files(config.out)
        then = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)
        added = corpus.mutate(seed=4, new_works=20, changed_works=40, at=then)
        assert added

        with pytest.raises(StateError, match="is in the future"):
            await update(config, asyncio.Event(), since=_today() + timedelta(days=2))
        with pytest.raises(StateError, match="has no high-water mark"):
            await update(crawler_config(sim.url, tmp_path / "fresh"), asyncio.Event())

        # After the change's index date: nothing to fetch.
        outcome = await update(config, asyncio.Event(), since=then.date() + timedelta(days=1))
        assert outcome.code == 0, outcome.message
        assert _files(config.out) == before
        last = (await status_report(config.state))["update"]["last"]
        assert last["from"] == (then.date() + timedelta(days=1)).isoformat()
        assert (last["works"], last["events"]) == (0, 0)

        # The mark (today) is past the change; only --since reaches back to it.
        assert (await update(config, asyncio.Event())).code == 0
        assert _files(config.out) == before
        outcome = await update(config, asyncio.Event(), since=then.date())
        assert outcome.code == 0, outcome.message
        _assert_exact(_written_since(config.out, before), added)
        last = (await status_report(config.state))["update"]["last"]
        assert (last["from"], last["events"]) == (then.date().isoformat(), len(added))

        # Far back: every work is read again, and nothing is emitted again.
        before = _files(config.out)
        outcome = await update(config, asyncio.Event(), since=date(2000, 1, 1))
        assert outcome.code == 0, outcome.message
        assert _files(config.out) == before
        last = (await status_report(config.state))["update"]["last"]
        assert (last["works"], last["events"]) == (len(corpus.works), 0)
        assert (await status_report(config.state))["update"]["high_water_mark"] == _today().isoformat()
        keys, repeated = output_keys(config.out)
        assert keys == old | added and not repeated


# -- 6: a work re-indexed while a crawl runs is caught by the next update --------------------
async def test_change_during_an_update_is_caught_by_the_next(tmp_path):
    corpus = generate(800, seed=46)
    async with Simulator(corpus, fast_sim_config()) as sim:
        config = await _backfilled(corpus, sim, tmp_path)
        old, before = corpus.expected, _files(config.out)
        # Changes spread over several index dates, so the update runs several windows.
        added_a: set = set()
        for n, days in enumerate((12, 8, 4, 0)):
            at = datetime.now(UTC).replace(microsecond=0) - timedelta(days=days)
            added_a |= corpus.mutate(seed=60 + n, new_works=40, changed_works=100, at=at)
        since = _today() - timedelta(days=12)
        today = _today().isoformat()
        during: list[set] = []
        jumped: list[str] = []  # works that leave an earlier window of this update for today's

        def change_once(filters: dict[str, str], page: int) -> None:
            # Once the window holding today scrolls (past its first page: a window started unsized
            # may be cut after it): works re-indexed now jump past the end of every window still
            # to come, and miss the ones already scrolled.
            if not during and filters.get("until-index-date") == today and page >= 2:
                indexed = {w["DOI"]: w["indexed"]["date-time"][:10] for w in corpus.works}
                during.append(corpus.mutate(seed=70, new_works=15, changed_works=80))
                jumped.extend(d for d in corpus.changed if since.isoformat() <= indexed.get(d, "") < today)

        sim.app.on_page = change_once
        outcome = await update(config, asyncio.Event(), since=since)
        sim.app.on_page = None
        assert outcome.code == 0, outcome.message
        assert during, "the change did not happen during the update"
        assert jumped, "no work left an earlier window of the update: the test shows less"
        assert (await status_report(config.state))["update"]["high_water_mark"] == today
        con = sqlite3.connect(f"file:{config.state}?mode=ro", uri=True)
        windows = con.execute("SELECT count(*) FROM windows WHERE job='update'").fetchone()[0]
        con.close()
        assert windows >= 2, "the update ran in one window: give it more works"
        added_b = during[0]
        first = _written_since(config.out, before)
        # A scroll started after the change may serve it (the plan may cut today's window into
        # parts that start one after another); the parts that started before it cannot.
        missed = added_b - set(first)
        assert missed, "the update saw the whole change: the test shows nothing"

        before = _files(config.out)
        assert (await update(config, asyncio.Event())).code == 0
        second = _written_since(config.out, before)
        assert missed <= set(second), "the next update did not catch the change"
        keys, repeated = output_keys(config.out)
        assert not repeated
        assert corpus.expected <= keys, "a link of the corpus as it stands was never emitted"
        # Nothing else: links the corpus no longer has are only those it had at some point.
        assert keys <= old | added_a | added_b


async def test_change_during_the_backfill_is_caught_by_the_first_update(tmp_path):
    corpus = generate(800, seed=47)
    async with Simulator(corpus, fast_sim_config()) as sim:
        during: list[set] = []

        def change_once(filters: dict[str, str], page: int) -> None:
            # Once a scroll is under way (past its first page: a window started unsized may be
            # cut after it, and its parts start after the change).
            if not during and sim.stats.pages >= 3 and page >= 2:
                during.append(corpus.mutate(seed=80, new_works=20, changed_works=120))

        old = corpus.expected
        sim.app.on_page = change_once
        config = crawler_config(sim.url, tmp_path)
        assert (await backfill(config, asyncio.Event())).code == 0
        sim.app.on_page = None
        assert during
        first, before = output_keys(config.out)[0], _files(config.out)
        missed = during[0] - first
        assert missed, "the backfill saw the whole change: the test shows nothing"
        assert (await update(config, asyncio.Event())).code == 0
        second = _written_since(config.out, before)
        assert missed <= set(second)
        keys, repeated = output_keys(config.out)
        assert not repeated and corpus.expected <= keys <= old | during[0]


# -- 5: SIGKILL during an update, then a rerun -----------------------------------------------
def _update_args(url: str, tmp: Path, *extra: str) -> list[str]:
    args = crawler_args(url, tmp, *extra)
    args[args.index("backfill")] = "update"
    return args


def _update_events(state: Path) -> int:
    """Events the update has committed so far (its windows' counts), read-only."""
    con = sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=5)
    try:
        return con.execute("SELECT coalesce(sum(events), 0) FROM windows WHERE job='update'").fetchone()[0]
    finally:
        con.close()


def _pages(state: Path) -> int:
    con = sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=5)
    try:
        row = con.execute("SELECT value FROM counters WHERE name='pages'").fetchone()
        return row[0] if row else 0
    finally:
        con.close()


def _wait_for_pages(state: Path, n: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """Until the crawler has committed n pages in all (its state, read-only), while it runs."""
    deadline = time.monotonic() + timeout
    while _pages(state) < n:
        assert proc.poll() is None and time.monotonic() < deadline, f"no page {n} committed"
        time.sleep(0.02)


def _status_json(tmp: Path) -> dict:
    done = run_crawler([sys.executable, "-m", "crawler", "status", "--json", "--state", str(tmp / "state.sqlite3")], timeout=30)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def sim_thread():
    corpus = generate(800, seed=45)
    sim = SimulatorThread(corpus, fast_sim_config())
    sim.start()
    yield sim
    sim.stop()


def _set_latency(sim: SimulatorThread, latency_s: float, per_row_s: float) -> None:
    app = sim.simulator.app

    def change() -> None:
        app.config = replace(app.config, latency_s=latency_s, latency_per_row_s=per_row_s)

    sim.call(change)


def test_sigkill_during_an_update_then_rerun_gives_exactly_the_added_links(sim_thread, tmp_path):
    sim, out = sim_thread, tmp_path / "events"
    done = run_crawler(crawler_args(sim.url, tmp_path))
    assert done.returncode == 0, done.stderr
    old, before = sim.corpus.expected, _files(out)
    added = sim.call(sim.corpus.mutate, seed=5, new_works=200, changed_works=300)
    assert added
    _set_latency(sim, 0.3, 0.0)  # 5 pages of 100 works: the update's scroll lasts about 2 s
    state, args = tmp_path / "state.sqlite3", _update_args(sim.url, tmp_path)
    rng = random.Random(20261124)
    seen_midway = False
    for run in range(4):
        proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            if run == 0:  # anywhere in the start: opening, planning, the first request
                time.sleep(rng.uniform(0.2, 0.8))
            else:  # between committed pages: after 1-3 more of them, and a little more
                _wait_for_pages(state, _pages(state) + rng.randint(1, 3), proc)
                time.sleep(rng.uniform(0.0, 0.2))
        finally:
            proc.kill()
            proc.wait(timeout=40)
        assert proc.returncode == -signal.SIGKILL, f"run {run} ended before its kill: {proc.stderr.read()}"  # type: ignore[union-attr]
        # Killed mid-update: the mark has not moved and no update is recorded as done.
        meta = _meta(state)
        assert "update_mark" not in meta and "last_update" not in meta
        seen_midway |= 0 < _update_events(state) < len(added)
    assert seen_midway, "no kill came between two committed pages of the update"
    report = _status_json(tmp_path)
    assert report["update"]["mark_from"] == "backfill start" and report["update"]["last"] is None
    assert report["update"]["running"] is not None, "status shows the interrupted update"
    _set_latency(sim, 0.0, 0.0)
    done = run_crawler(args)
    assert done.returncode == 0, done.stderr
    _assert_exact(_written_since(out, before), added)
    keys, repeated = output_keys(out)
    assert keys == old | added and not repeated
    report = _status_json(tmp_path)
    assert report["update"]["mark_from"] == "update"
    assert report["update"]["last"]["events"] == len(added)


# -- 7: --follow --interval ------------------------------------------------------------------
def test_follow_updates_at_the_interval_until_sigterm(sim_thread, tmp_path):
    sim, out = sim_thread, tmp_path / "events"
    done = run_crawler(crawler_args(sim.url, tmp_path))
    assert done.returncode == 0, done.stderr
    old, before = sim.corpus.expected, _files(out)
    with open(tmp_path / "stderr", "w") as err_file:
        proc = subprocess.Popen(_update_args(sim.url, tmp_path, "--follow", "--interval", "1s"), cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=err_file, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    rounds: list[int] = []  # new events of each round

    def next_round(timeout: float = 30.0) -> int:
        line = lines.get(timeout=timeout)
        match = re.search(r"update of \S+ complete: [\d,]+ works and ([\d,]+) new events this run", line)
        assert match, line
        rounds.append(int(match.group(1).replace(",", "")))
        return rounds[-1]

    try:
        assert next_round() == 0
        added = sim.call(sim.corpus.mutate, seed=7, new_works=20, changed_works=40)
        assert added
        deadline = time.monotonic() + 30
        while sum(rounds) < len(added) and time.monotonic() < deadline:
            next_round()
        next_round()  # one more round: the follower keeps going, and finds nothing new
        assert rounds[-1] == 0
    finally:
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    err = (tmp_path / "stderr").read_text()
    assert len(rounds) >= 3 and sum(rounds) == len(added), rounds
    assert proc.returncode == 143, err
    assert not list(out.glob("*.part")), "a clean stop leaves no partial file"
    _assert_exact(_written_since(out, before), added)
    keys, repeated = output_keys(out)
    assert keys == old | added and not repeated


def _set_faults(sim: SimulatorThread, faults: Faults) -> None:
    app = sim.simulator.app

    def change() -> None:
        app.faults = faults

    sim.call(change)


def test_follow_survives_an_api_outage_between_rounds(sim_thread, tmp_path):
    """--follow keeps running: a round that fails after every retry (the API down) is tried
    again at the next interval, and the change made meanwhile is caught then."""
    sim, out = sim_thread, tmp_path / "events"
    assert run_crawler(crawler_args(sim.url, tmp_path)).returncode == 0
    old, before = sim.corpus.expected, _files(out)
    stderr = tmp_path / "stderr"
    with open(stderr, "w") as err_file:
        proc = subprocess.Popen(_update_args(sim.url, tmp_path, "--follow", "--interval", "1s"), cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=err_file, text=True)
    try:
        assert "complete" in proc.stdout.readline()  # type: ignore[union-attr]
        down = sim.stats.faults["error-503"]
        _set_faults(sim, Faults(error_rate=1.0, fault_attempts=10**6, error_kinds=("503",)))
        deadline = time.monotonic() + 30
        while "update failed" not in stderr.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, f"the follower died with the API down: {stderr.read_text()[-600:]}"
        assert sim.stats.faults["error-503"] > down
        added = sim.call(sim.corpus.mutate, seed=9, new_works=10, changed_works=20)
        _set_faults(sim, Faults())
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert f"and {len(added):,} new events this run" in line, line
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 143, stderr.read_text()
    _assert_exact(_written_since(out, before), added)
    assert output_keys(out)[0] == old | added


# -- 8: crawler status shows the mark and the last update ------------------------------------
def test_status_shows_the_mark_and_the_last_update(sim_thread, tmp_path):
    sim = sim_thread
    assert run_crawler(crawler_args(sim.url, tmp_path)).returncode == 0
    status = [sys.executable, "-m", "crawler", "status", "--state", str(tmp_path / "state.sqlite3")]
    shown = run_crawler(status)
    assert shown.returncode == 0, shown.stderr
    started = _meta(tmp_path / "state.sqlite3")["backfill_started_at"][:10]
    assert re.search(rf"high-water mark\s+{started} \(from the backfill start\)", shown.stdout), shown.stdout
    assert "last update" not in shown.stdout

    added = sim.call(sim.corpus.mutate, seed=8, new_works=10, changed_works=30)
    day = _today()
    done = run_crawler(_update_args(sim.url, tmp_path))
    assert done.returncode == 0, done.stderr
    assert f"high-water mark now {day}" in done.stdout
    shown = run_crawler(status)
    assert shown.returncode == 0, shown.stderr
    assert re.search(rf"high-water mark\s+{day} \(from the update\)", shown.stdout), shown.stdout
    assert re.search(rf"last update\s+index dates {started}\.\.{day}, finished \S+: 40 works, {len(added):,} new events",
                     shown.stdout), shown.stdout
    assert "update running" not in shown.stdout, shown.stdout
    report = _status_json(tmp_path)
    assert report["update"]["high_water_mark"] == day.isoformat()
    assert report["update"]["last"]["events"] == len(added) and report["update"]["last"]["works"] == 40
    assert report["totals"]["events"] == len(read_events(tmp_path / "events"))
