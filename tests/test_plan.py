"""Issue 19, the plan: windows that partition the range exactly, below a day too.

Each run is checked against the simulator's own evaluation of every window's filter (the
API's answer to that filter): every work of the range falls in exactly one finished window,
and the output holds exactly the corpus's independently computed links.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crawler.jobs import backfill, update
from crawler.simulator.app import Simulator
from crawler.simulator.corpus import generate
from crawler.simulator.query import WorkIndex, parse
from crawler.sources.plan import _pack, parts
from tests.conftest import crawler_config, fast_sim_config, output_keys

BIG_DAY = date(2019, 5, 14)
ROWS, WINDOW_PAGES = 100, 3  # windows of at most 300 works


@pytest.fixture(scope="module")
def crowded():
    """3,000 works of which ~60% were created (and deposited, and indexed) on one day."""
    return generate(3000, seed=23, day_share=0.6, big_day=BIG_DAY)


def _windows(state: Path, job: str) -> list[tuple[str, str, str, str, str, int | None]]:
    con = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
    try:
        return con.execute("SELECT field, start, end, scope, status, total FROM windows WHERE job = ?",
                           (job,)).fetchall()
    finally:
        con.close()


def _filter(field: str, start: str, end: str, scope: str) -> str:
    return ",".join(p for p in (f"from-{field}:{start},until-{field}:{end}", scope) if p)


def _assert_partition(corpus, windows, wanted: set[str]) -> list[set[str]]:
    """Every wanted work in exactly one window, and no other work in any; returns each
    window's works (as the API's filter evaluation gives them)."""
    index = WorkIndex(corpus)
    hits: Counter = Counter()
    found = []
    for field, start, end, scope, status, total in windows:
        assert status == "done", (start, end, scope, status)
        matched = {w["DOI"].lower() for w in index.matching(parse({"filter": _filter(field, start, end, scope)}).filters)}
        assert total is None or total == len(matched), (start, end, scope, total, len(matched))
        hits.update(matched)
        found.append(matched)
    assert set(hits) == wanted, f"{len(wanted - set(hits))} work(s) in no window, {len(set(hits) - wanted)} not wanted"
    twice = [doi for doi, n in hits.items() if n > 1]
    assert not twice, f"{len(twice)} work(s) in more than one window"
    return found


def _assert_day_cut(found: list[set[str]], day: set[str]) -> None:
    """The crowded day's works are spread over windows of at most about a window's size
    (the plan may cut it by kind over a range of days around it, or on the day itself)."""
    holding = [len(works & day) for works in found if works & day]
    assert len(holding) >= -(-len(day) // (ROWS * WINDOW_PAGES)), holding
    assert max(holding) <= ROWS * WINDOW_PAGES * 1.15, holding


async def test_a_crowded_day_is_cut_into_parts_that_partition_it(crowded, tmp_path):
    first, last = date(2005, 1, 1), date(2024, 12, 31)
    async with Simulator(crowded, fast_sim_config()) as sim:
        config = crawler_config(sim.url, tmp_path, rows=ROWS, window_pages=WINDOW_PAGES,
                                date_from=first, date_until=last)
        outcome = await backfill(config, asyncio.Event())
        kinds = dict(sim.stats.requests_by_kind)
    assert outcome.code == 0, outcome.message
    keys, repeated = output_keys(tmp_path / "events")
    assert keys == crowded.expected and not repeated
    on_day = {w["DOI"].lower() for w in crowded.works if w["created"]["date-time"][:10] == BIG_DAY.isoformat()}
    assert len(on_day) > 3 * ROWS * WINDOW_PAGES, "the day is not crowded enough to need cutting"
    wanted = {w["DOI"].lower() for w in crowded.works}
    _assert_day_cut(_assert_partition(crowded, _windows(tmp_path / "state.sqlite3", "backfill"), wanted), on_day)
    assert kinds.get("facet", 0) >= 1, kinds


async def test_a_busy_index_day_in_an_update_is_cut_the_same_way(crowded, tmp_path):
    today = datetime.now(timezone.utc).date()
    async with Simulator(crowded, fast_sim_config()) as sim:
        config = crawler_config(sim.url, tmp_path, rows=ROWS, window_pages=WINDOW_PAGES)
        outcome = await update(config, asyncio.Event(), since=BIG_DAY)
    assert outcome.code == 0, outcome.message
    wanted = {w["DOI"].lower() for w in crowded.works
              if BIG_DAY.isoformat() <= w["indexed"]["date-time"][:10] <= today.isoformat()}
    on_day = {w["DOI"].lower() for w in crowded.works if w["indexed"]["date-time"][:10] == BIG_DAY.isoformat()}
    assert len(on_day) > 3 * ROWS * WINDOW_PAGES
    _assert_day_cut(_assert_partition(crowded, _windows(tmp_path / "state.sqlite3", "update"), wanted), on_day)
    keys, repeated = output_keys(tmp_path / "events")
    expected = {k for k in crowded.expected if k[0] in wanted}
    assert keys == expected and not repeated


@given(st.dates(date(1990, 1, 1), date(2030, 1, 1)), st.integers(0, 4000), st.integers(1, 40))
def test_parts_cover_a_range_exactly_once(start, length, n):
    from datetime import timedelta

    end = start + timedelta(days=length)
    ranges = parts(start, end, n)
    assert ranges[0][0] == start and ranges[-1][1] == end
    assert all(a <= b for a, b in ranges)
    assert all(b + timedelta(days=1) == c for (_, b), (c, _) in zip(ranges, ranges[1:]))
    assert len(ranges) == min(n, length + 1)


@given(st.dictionaries(st.text(min_size=1, max_size=8), st.integers(0, 5000), max_size=30), st.integers(1, 3000))
def test_packing_keeps_every_value_once_within_capacity(values, capacity):
    bins = _pack(values, capacity)
    packed = [v for names, _ in bins for v in names]
    assert sorted(packed) == sorted(v for v, n in values.items() if n > 0)
    for names, size in bins:
        assert size == sum(values[v] for v in names)
        assert size <= capacity or len(names) == 1


def test_plan_only_sizes_the_windows_without_a_page_and_keeps_the_plan(crowded, tmp_path):
    """`backfill --plan-only`: counts and facets only, the works and pages of the range as the
    corpus holds them, the plan kept in the state; the real run then crawls it, exact."""
    from crawler.simulator.app import SimulatorThread
    from tests.conftest import crawler_args, run_crawler

    first, last = "2016-01-01", "2021-12-31"
    in_range = sum(1 for w in crowded.works if first <= w["created"]["date-time"][:10] <= last)
    sim = SimulatorThread(crowded, fast_sim_config())
    sim.start()
    try:
        args = crawler_args(sim.url, tmp_path, "--from", first, "--until", last)
        planned = run_crawler([*args, "--plan-only"])
        kinds = dict(sim.stats.requests_by_kind)
        windows = _windows(tmp_path / "state.sqlite3", "backfill")
        written = list((tmp_path / "events").glob("*.jsonl.gz"))
        done = run_crawler(args)
    finally:
        sim.stop()
    assert planned.returncode == 0, planned.stderr
    assert "page" not in kinds and kinds.get("count", 0) > 0, kinds
    waiting = [total for *_, status, total in windows if status == "pending"]
    assert f"{in_range:,} works in {len(waiting):,} window(s)" in planned.stdout, planned.stdout
    assert all(total == 0 for *_, status, total in windows if status != "pending"), windows  # empty parts
    assert sum(waiting) == in_range
    assert not written, "a plan wrote events"
    assert done.returncode == 0, done.stderr
    keys, repeated = output_keys(tmp_path / "events")
    subjects = {w["DOI"].lower() for w in crowded.works if first <= w["created"]["date-time"][:10] <= last}
    assert keys == {k for k in crowded.expected if k[0] in subjects} and not repeated


async def test_the_earliest_look_up_counts_the_range_too(tmp_path):
    """A backfill without --from asks for the earliest created work with the range's end as a
    filter: that answer's total-results is the whole range's count, so no count is asked for
    before the first page (a range that fits one page starts at once)."""
    corpus = generate(90, seed=29)
    async with Simulator(corpus, fast_sim_config()) as sim:
        config = crawler_config(sim.url, tmp_path, rows=ROWS, window_pages=WINDOW_PAGES)
        outcome = await backfill(config, asyncio.Event())
        kinds = dict(sim.stats.requests_by_kind)
    assert outcome.code == 0, outcome.message
    assert kinds.get("other") == 1 and "count" not in kinds and "facet" not in kinds, kinds
    windows = _windows(tmp_path / "state.sqlite3", "backfill")
    assert [(status, total) for *_, status, total in windows] == [("done", len(corpus.works))], windows
    keys, repeated = output_keys(tmp_path / "events")
    assert keys == corpus.expected and not repeated


async def test_parts_cut_without_counts_are_sized_by_their_first_page(tmp_path):
    """A range cut into many parts inserts them unsized; free scroll slots take them at once,
    with no count but the range's before their first pages, and each first page's
    total-results is the part's size (recorded, and exact: checked against the API's own
    evaluation of each window). Fewer counts are asked than there are windows holding works:
    only what waits for the last round of windows is counted, for the tail."""
    corpus = generate(3000, seed=31)
    first, last = date(2005, 1, 1), date(2024, 12, 31)
    async with Simulator(corpus, fast_sim_config()) as sim:
        counted_before: list[int] = []  # counts asked before each of the first pages

        def first_pages(filters: dict[str, str], page: int) -> None:
            if page == 1:
                counted_before.append(sim.stats.requests_by_kind["count"])

        sim.app.on_page = first_pages
        config = crawler_config(sim.url, tmp_path, rows=ROWS, window_pages=WINDOW_PAGES,
                                date_from=first, date_until=last)
        outcome = await backfill(config, asyncio.Event())
        kinds = dict(sim.stats.requests_by_kind)
    assert outcome.code == 0, outcome.message
    assert counted_before[:3] == [1, 1, 1], f"counts before the first three pages: {counted_before[:3]}"
    windows = _windows(tmp_path / "state.sqlite3", "backfill")
    holding = [w for w in windows if w[-1]]
    assert kinds.get("count", 0) < len(holding), (kinds, len(holding))
    wanted = {w["DOI"].lower() for w in corpus.works}
    _assert_partition(corpus, windows, wanted)
    keys, repeated = output_keys(tmp_path / "events")
    assert keys == corpus.expected and not repeated


async def test_a_part_too_big_for_its_slot_is_cut_after_its_first_page_and_loses_nothing(crowded, tmp_path, caplog):
    """A part started unsized whose first page says it holds far more than its share (here
    the crowded day, in the first part of the range) goes back to the plan: its page is
    dropped, not committed, and the parts it is cut into deliver its works, each once."""
    first, last = date(2019, 5, 1), date(2024, 12, 31)
    caplog.set_level("INFO", logger="crawler.sources.windows")
    async with Simulator(crowded, fast_sim_config()) as sim:
        config = crawler_config(sim.url, tmp_path, rows=ROWS, window_pages=WINDOW_PAGES,
                                date_from=first, date_until=last)
        outcome = await backfill(config, asyncio.Event())
    assert outcome.code == 0, outcome.message
    assert any("cut before it scrolls" in r.getMessage() for r in caplog.records), "no part was cut after its first page"
    wanted = {w["DOI"].lower() for w in crowded.works if first.isoformat() <= w["created"]["date-time"][:10] <= last.isoformat()}
    windows = _windows(tmp_path / "state.sqlite3", "backfill")
    _assert_partition(crowded, windows, wanted)
    con = sqlite3.connect(f"file:{tmp_path / 'state.sqlite3'}?mode=ro", uri=True)
    works = con.execute("SELECT sum(works) FROM windows WHERE job = 'backfill'").fetchone()[0]
    con.close()
    assert works == len(wanted), "a work was counted twice, or the dropped page was committed"
    keys, repeated = output_keys(tmp_path / "events")
    assert keys == {k for k in crowded.expected if k[0] in wanted} and not repeated
