"""Issue 17, "never give up on a transient failure": real backfills over real TCP against a
simulator that fails the way the real API does at its worst (persistently, deep into long
scrolls and after any number of attempts; outages that last a minute), each run checked
against the corpus's independently computed links. The run must finish in one go, exit 0,
exact, and stop early only for what waiting cannot fix.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import time
from datetime import date
from pathlib import Path

import pytest

from crawler.jobs import backfill
from crawler.simulator.app import Faults, Outage, Simulator
from crawler.simulator.corpus import generate
from crawler.simulator.faults import ERROR_KINDS, LOST_MODES
from crawler.sources.windows import SHORT_RUNS
from crawler.status import status_report
from tests.conftest import child_pids, committed_pages, crawler_config, fast_sim_config, output_keys

FIRST_DAY, LAST_DAY = date(2005, 1, 1), date(2024, 12, 31)
TIMEOUT_S = 1.0  # the crawler's --timeout
STALL_S = 2.0  # a stalled answer: past the crawler's timeout


@pytest.fixture(scope="module")
def corpus():
    return generate(1500, seed=71)


def _config(sim: Simulator, tmp: Path, **overrides):
    return crawler_config(sim.url, tmp, **{"date_from": FIRST_DAY, "date_until": LAST_DAY, **overrides})


def _assert_exact(tmp: Path, expected: set) -> None:
    keys, repeated = output_keys(tmp / "events")
    assert not repeated, f"{len(repeated)} link(s) written more than once"
    assert keys == expected, f"{len(expected - keys)} link(s) missing, {len(keys - expected)} unexpected"
    assert not list((tmp / "events").glob("*.part")), "a partial output file survived the run"


def _statuses(state: Path) -> dict[str, int]:
    con = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
    try:
        return dict(con.execute("SELECT status, count(*) FROM windows GROUP BY status").fetchall())
    finally:
        con.close()


async def test_a_persistent_mix_of_every_fault_is_ridden_out_in_one_run(corpus, tmp_path):
    """A quarter of the requests fail, in every way the real API fails, for the whole run:
    500 JSON, 502/503/504/408 and a firewall's 403/404 HTML, 429 with and without Retry-After,
    200s that are not JSON or cut mid-JSON, resets and truncations after the scroll moved,
    stalls past the timeout, duplicates, repeats within a page, scrolls ending early, expired
    cursors, and the same at doi.org; every kind at least once early on."""
    faults = Faults.mix(0.25, seed=17, stall_s=STALL_S)
    async with Simulator(corpus, fast_sim_config(faults=faults)) as sim:
        outcome = await backfill(_config(sim, tmp_path, timeout_s=TIMEOUT_S), asyncio.Event())
        stats = sim.stats
    assert outcome.code == 0, outcome.message
    _assert_exact(tmp_path, corpus.expected)
    assert _statuses(tmp_path / "state.sqlite3") == {"done": _statuses(tmp_path / "state.sqlite3")["done"]}
    met = set(stats.faults)
    kinds = {answer.counter for answer in ERROR_KINDS.values()} | {f"lost-{m}" for m in LOST_MODES}
    kinds |= {"short", "cursor-expired", "duplicates", "repeat-within-page"}
    assert kinds <= met, f"kinds never met: {sorted(kinds - met)}"
    assert any(k.startswith("ra-") for k in met)
    assert stats.struck / stats.requests > 0.15, "the mix was too mild to test anything"
    assert sum(stats.over_limit.values()) == 0


async def test_an_api_outage_and_an_overlapping_ra_outage_pause_the_crawl(corpus, tmp_path):
    """Every /works request answers 503 for a minute, mid-run, and doi.org fails for 70 s
    around it. The crawl waits (probing at capped intervals, not hammering), says so in its
    log and in `crawler status`, outlives its scrolls' cursors, and finishes, exact."""
    # Both begin at the first look-up at doi.org, once planning is under way and the first
    # page is in: /works for a minute, doi.org until after the API is back.
    outages = (Outage(after_requests=1, duration_s=60.0, trigger="ra"),
               Outage(after_requests=1, duration_s=65.0, target="ra"))
    config = fast_sim_config(faults=Faults(outages=outages), cursor_ttl_s=5.0, latency_s=0.05)
    seen: dict[str, object] = {}
    async with Simulator(corpus, config) as sim:
        run = asyncio.create_task(backfill(_config(sim, tmp_path, retry_max_s=4.0), asyncio.Event()))
        while not run.done() and "waiting" not in seen:
            await asyncio.sleep(0.5)
            if (tmp_path / "state.sqlite3").exists():
                report = await status_report(tmp_path / "state.sqlite3")
                if report["waiting"]:
                    seen["waiting"] = report["waiting"]
                    seen["requests"] = sim.stats.requests
                    seen["at"] = time.monotonic()
        outcome = await run
        during = sim.stats.requests - seen.get("requests", 0)  # type: ignore[operator]
        faults = dict(sim.stats.faults)
    assert outcome.code == 0, outcome.message
    _assert_exact(tmp_path, corpus.expected)
    assert faults.get("outage-works", 0) > 0 and faults.get("outage-ra", 0) > 0
    (line, *_) = seen["waiting"]  # type: ignore[misc]
    assert line.startswith("waiting for the API since ") and "503 Service Temporarily Unavailable" in line
    assert "next try in" in line
    assert faults.get("cursor-expired", 0) > 0, "no scroll outlived its cursor: the outage was too short to test that"
    # Probes, not a storm: one request at a time, at intervals growing to 4 s.
    assert faults["outage-works"] < 40, faults


async def test_a_repeat_within_a_page_does_not_hide_a_missing_work(corpus, tmp_path):
    """One work is counted in total-results but never served, and pages repeat one of their
    own items: counted naively, the repeat makes up for the missing work and the window looks
    complete. It must be left short (and the run say so), never done."""
    with_links = sorted({s for s, _, _ in corpus.expected})
    hidden = with_links[len(with_links) // 2]
    doi = next(w["DOI"] for w in corpus.works if w["DOI"].lower() == hidden)
    faults = Faults(hidden_dois=frozenset({doi}), repeat_within_page_rate=1.0, fault_scrolls=None)
    async with Simulator(corpus, fast_sim_config(faults=faults)) as sim:
        outcome = await backfill(_config(sim, tmp_path), asyncio.Event())
        repeats = sim.stats.faults["repeat-within-page"]
    assert repeats > 0
    assert outcome.code == 1 and "1 window(s) short" in outcome.message, outcome.message
    assert _statuses(tmp_path / "state.sqlite3").get("short") == 1
    report = await status_report(tmp_path / "state.sqlite3")
    (short,) = report["short_windows"]
    assert short["status"] == "short"
    _assert_exact(tmp_path, {k for k in corpus.expected if k[0] != hidden})


async def test_cursors_longer_than_the_first_4_kb_of_a_page(corpus, tmp_path):
    async with Simulator(corpus, fast_sim_config(faults=Faults(long_cursor=True))) as sim:
        outcome = await backfill(_config(sim, tmp_path), asyncio.Event())
        long_ones = [c for c in sim.stats.cursors_sent if len(c) > 4096]
    assert outcome.code == 0, outcome.message
    assert long_ones, "no cursor crossed 4 KB: the test did not test anything"
    _assert_exact(tmp_path, corpus.expected)


async def test_a_page_over_the_size_cap_is_fetched_again_with_fewer_rows(corpus, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    async with Simulator(corpus, fast_sim_config()) as sim:
        # 100-row pages inflate to ~150-300 kB here; 50-row ones fit under 140 kB.
        config = _config(sim, tmp_path, max_body_bytes=140_000)
        outcome = await backfill(config, asyncio.Event())
    assert outcome.code == 0, outcome.message
    _assert_exact(tmp_path, corpus.expected)
    assert "rows per page now" in caplog.text
    con = sqlite3.connect(tmp_path / "state.sqlite3")
    halved = con.execute("SELECT count(*) FROM windows WHERE rows < 100").fetchone()[0]
    con.close()
    assert halved > 0


async def test_a_parser_process_that_dies_is_replaced_and_its_page_parsed_again(tmp_path, caplog):
    """SIGKILL the parser processes (as the OOM killer would) while pages are being parsed."""
    caplog.set_level(logging.WARNING)
    heavy = generate(2500, seed=72, refs_mean=58)
    # Slow enough answers that the kills fall while pages are still to come and be parsed.
    async with Simulator(heavy, fast_sim_config(latency_s=0.3)) as sim:
        run = asyncio.create_task(backfill(_config(sim, tmp_path, rows=100), asyncio.Event()))
        killed = 0
        while not run.done() and killed < 2:
            await asyncio.sleep(0.05)
            # Once a page is committed the parsers are up: a kill before that falls on their
            # start, which is tried again without a word (the first pages may come that early).
            if sim.stats.pages < 2 + 4 * killed or not committed_pages(tmp_path / "state.sqlite3"):
                continue
            # The parsers are the forkserver's children; the forkserver is ours.
            parsers = [c for server in child_pids(os.getpid()) for c in child_pids(server)]
            if parsers:
                os.kill(parsers[0], signal.SIGKILL)
                killed += 1
        outcome = await run
    assert killed == 2
    assert outcome.code == 0, outcome.message
    assert "a parser process died" in caplog.text
    _assert_exact(tmp_path, heavy.expected)


async def test_a_shared_agency_look_up_outlives_the_caller_that_started_it(corpus, tmp_path):
    """Two pages wait for the same prefix's agency while doi.org is down; the window of the
    first starts over (its commit is cancelled). The look-up they share must go on for the
    second: taken down with the first, it left the second waiting for ever (a CI run hung)."""
    from crawler.agency import AgencyResolver
    from crawler.engine import open_session
    from crawler.store import Store

    prefix, agency = next((p, a) for p, a in corpus.agencies.items() if a)
    outage = Outage(after_requests=1, duration_s=1.0, target="ra")
    async with Simulator(corpus, fast_sim_config(faults=Faults(outages=(outage,)))) as sim:
        session, client = open_session(_config(sim, tmp_path, retry_max_s=0.2))
        async with session, await Store.open(tmp_path / "state.sqlite3") as store:
            resolver = await AgencyResolver.load(client, store)
            first = asyncio.create_task(resolver.resolve([prefix]))
            while not sim.stats.faults.get("outage-ra"):
                await asyncio.sleep(0.01)
            second = asyncio.create_task(resolver.resolve([prefix]))
            await asyncio.sleep(0.05)
            first.cancel()
            answer = await asyncio.wait_for(second, timeout=30)
            await resolver.close()
    assert answer == {prefix: agency}
    assert first.cancelled()


async def test_a_scroll_half_that_ends_cancelled_ends_the_other_half():
    """A scroll is a fetching task and a committing one. If the committing one ends cancelled
    (not by the scroll), the fetching one fills its two places in the queue and waits for
    ever: the scroll must end (and its window start over) instead."""
    from crawler.sources.windows import _together

    async def fetch_for_ever() -> None:
        await asyncio.Event().wait()

    async def commit_cancelled() -> None:
        raise asyncio.CancelledError  # what a look-up cancelled under it used to raise

    fetcher = asyncio.create_task(fetch_for_ever())
    await asyncio.wait_for(_together(fetcher, asyncio.create_task(commit_cancelled())), timeout=10)
    assert fetcher.cancelled()
