"""Issue 3, "Survive a multi-day crawl": real backfills against the simulator with its seeded
faults switched on, each checked against the corpus's independently computed links.

Every fault here strikes only the first scrolls of a query or the first attempts of a request
(see `Faults`), so a crawler that recovers correctly always finishes; each test also checks
the simulator's fault counter, so a test cannot pass because the fault never happened.
Process-level faults (a full disk, an unwritable output, a bad Plus token, a corrupt state
file) run `crawler backfill` as a subprocess and check its exit code and its one-line error.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import random
import re
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from datetime import date
from pathlib import Path

import pytest

from crawler.errors import FatalApiError
from crawler.jobs import backfill
from crawler.sources.windows import SHORT_RUNS
from crawler.simulator.app import Faults, LimitChange, PoolLimits, SimConfig, Simulator, SimulatorThread
from crawler.simulator.corpus import generate
from tests.conftest import FAST_POOLS, ROOT, committed_pages, crawler_args, crawler_config, fast_sim_config, output_keys, run_crawler

FIRST_DAY, LAST_DAY = date(2005, 1, 1), date(2024, 12, 31)  # the generated corpus's created dates
TIMEOUT_S = 1.0  # the crawler gives up on a stalled response after this long
STALL_S = 2.0  # and a stalled simulator answers after this long


@pytest.fixture(scope="module")
def corpus():
    return generate(600, seed=31)


def _config(sim: Simulator, tmp: Path, **overrides):
    """The corpus's whole range, given: a range ending today would move the plan's windows,
    hence the simulator's seeded fault draws, from one day to the next."""
    return crawler_config(sim.url, tmp, **{"date_from": FIRST_DAY, "date_until": LAST_DAY, **overrides})


async def _backfill(sim: Simulator, tmp: Path, **overrides):
    return await backfill(_config(sim, tmp, **overrides), asyncio.Event())


def _assert_exact(tmp: Path, expected: set) -> None:
    """The output holds every expected link once, nothing else, and no partial file."""
    out = tmp / "events"
    keys, repeated = output_keys(out)
    assert not repeated, f"{len(repeated)} link(s) written more than once, e.g. {next(iter(repeated))}"
    assert keys == expected, f"{len(expected - keys)} link(s) missing, {len(keys - expected)} unexpected"
    assert not list(out.glob("*.part")), "a partial output file survived the run"


def _windows(state: Path) -> list[tuple[str, str, str, int, str | None]]:
    """(start, end, status, attempts, error) of every window, read from the state file."""
    con = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
    try:
        return con.execute("SELECT start, end, status, attempts, error FROM windows ORDER BY start").fetchall()
    finally:
        con.close()


def _statuses(state: Path) -> Counter:
    return Counter(status for _, _, status, _, _ in _windows(state))


def _all_done(tmp: Path) -> None:
    statuses = _statuses(tmp / "state.sqlite3")
    assert set(statuses) == {"done"}, statuses


def _restarted(tmp: Path) -> bool:
    """Did some window need a fresh scroll (more than one attempt)?"""
    return any(attempts > 1 for *_, attempts, _ in _windows(tmp / "state.sqlite3"))


# -- the scroll cursor ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "faults",
    [
        Faults(seed=1, lost_page_rate=0.4, lost_modes=("reset",)),
        Faults(seed=2, lost_page_rate=0.4, lost_modes=("truncate",)),
        Faults(seed=3, lost_page_rate=0.4, lost_modes=("stall",), stall_s=STALL_S),
        Faults(seed=4, lost_pages=frozenset({1}), stall_s=STALL_S),
    ],
    ids=["reset", "truncate", "stall", "page-1-any-mode"],
)
async def test_a_lost_page_restarts_the_window_and_nothing_is_skipped(corpus, tmp_path, faults, caplog):
    """The server advanced the scroll, then the answer was lost. The request is asked again
    in place (a 5xx from a proxy usually had not moved anything), so when it had, that page
    is missing: the window's count of distinct works shows it at the end, and the window
    starts over from cursor=* without counting towards a "short" verdict."""
    async with Simulator(corpus, fast_sim_config(faults=faults)) as sim:
        outcome = await _backfill(sim, tmp_path, timeout_s=TIMEOUT_S)
        lost = {k: v for k, v in sim.stats.faults.items() if k.startswith("lost-")}
    assert outcome.code == 0, outcome.message
    assert lost, "no page was lost: the test did not test anything"
    for mode in faults.lost_modes if faults.lost_page_rate else ():
        assert lost.get(f"lost-{mode}", 0) > 0
    _assert_exact(tmp_path, corpus.expected)
    _all_done(tmp_path)
    assert _restarted(tmp_path)
    restarts = [r.getMessage() for r in caplog.records if "after an answer was lost" in r.getMessage()]
    assert restarts, "no window found the page it lost"


async def test_expired_cursors_restart_their_windows(corpus, tmp_path):
    async with Simulator(corpus, fast_sim_config(faults=Faults(seed=5, expire_rate=0.5))) as sim:
        outcome = await _backfill(sim, tmp_path)
        expired = sim.stats.faults["cursor-expired"]
    assert outcome.code == 0, outcome.message
    assert expired > 0
    _assert_exact(tmp_path, corpus.expected)
    _all_done(tmp_path)
    assert _restarted(tmp_path)


async def test_a_cursor_left_idle_past_its_ttl_during_a_run(corpus, tmp_path):
    """A real expiry: the registration-agency service stalls, so the page being committed
    waits, the scroll's next request waits behind it, and the cursor expires unused."""
    faults = Faults(seed=6, ra_error_rate=1.0, ra_error_kinds=("stall",), stall_s=STALL_S, fault_attempts=1)
    config = fast_sim_config(faults=faults, cursor_ttl_s=0.5, latency_s=0.05)
    async with Simulator(corpus, config) as sim:
        # Small pages, long windows: a stalled look-up holds a window's scroll mid-way.
        outcome = await _backfill(sim, tmp_path, timeout_s=TIMEOUT_S, rows=20, window_pages=8)
        stats = sim.stats
    assert outcome.code == 0, outcome.message
    assert stats.faults["ra-stall"] > 0
    assert stats.faults["cursor-expired"] > 0, "no cursor outlived its TTL: the test did not test anything"
    _assert_exact(tmp_path, corpus.expected)
    _all_done(tmp_path)


async def _wait_for_pages(state: Path, n: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if committed_pages(state) >= n:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"the crawler did not commit {n} pages within {timeout} s")


async def test_resume_after_the_saved_cursors_expired(corpus, tmp_path):
    """Stopped mid-window, resumed after the cursors' TTL: the running windows restart from
    cursor=* (their saved cursor is stale, and its scroll may be past pages never stored)."""
    config = fast_sim_config(cursor_ttl_s=0.5, latency_s=0.15)
    async with Simulator(corpus, config) as sim:
        stop = asyncio.Event()
        first = asyncio.create_task(backfill(_config(sim, tmp_path), stop))
        await _wait_for_pages(tmp_path / "state.sqlite3", 3)
        stop.set()
        outcome = await first
        assert outcome.code == 130, outcome.message
        con = sqlite3.connect(f"file:{tmp_path / 'state.sqlite3'}?mode=ro", uri=True)
        stale = {c for (c,) in con.execute("SELECT cursor FROM windows WHERE status='pending'") if c}
        con.close()
        assert stale, "no running window had saved a cursor: nothing to resume"
        await asyncio.sleep(1.0)  # every saved cursor is now past its TTL
        sent = {c: sim.stats.cursors_sent[c] for c in stale}  # 0 for a cursor whose next page was never asked
        starts = sim.stats.scrolls
        outcome = await _backfill(sim, tmp_path)
        assert outcome.code == 0, outcome.message
        resent = {c: sim.stats.cursors_sent[c] for c in stale}
        assert resent == sent, "a saved (stale) cursor was sent again instead of cursor=*"
        assert sim.stats.scrolls > starts
    _assert_exact(tmp_path, corpus.expected)
    _all_done(tmp_path)


# -- what a scroll serves -------------------------------------------------------------------
async def test_duplicates_within_a_scroll_give_no_duplicate_events(corpus, tmp_path):
    async with Simulator(corpus, fast_sim_config(faults=Faults(seed=7, duplicate_rate=0.5))) as sim:
        outcome = await _backfill(sim, tmp_path)
        duplicates = sim.stats.faults["duplicates"]
    assert outcome.code == 0, outcome.message
    assert duplicates > 0
    _assert_exact(tmp_path, corpus.expected)
    _all_done(tmp_path)
    # Windows count distinct works: a repeated item is not a work twice.
    con = sqlite3.connect(tmp_path / "state.sqlite3")
    works, totals = con.execute("SELECT sum(works), sum(total) FROM windows").fetchone()
    con.close()
    assert works == totals == len(corpus.works)


async def test_a_short_scroll_is_retried_until_complete(corpus, tmp_path):
    async with Simulator(corpus, fast_sim_config(faults=Faults(seed=8, short_rate=1.0))) as sim:
        outcome = await _backfill(sim, tmp_path)
        short = sim.stats.faults["short"]
    assert outcome.code == 0, outcome.message
    assert short > 0
    _assert_exact(tmp_path, corpus.expected)
    _all_done(tmp_path)
    assert _restarted(tmp_path)


# -- error answers --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kind, counter",
    [("500", "error-500"), ("502", "error-502"), ("503", "error-503"), ("504", "error-504"),
     ("429", "error-429"), ("not-json", "error-200")],
)
async def test_error_answers_are_retried_and_the_output_is_exact(corpus, tmp_path, kind, counter):
    """A count or a first page is retried in place; a continuation that got a 5xx or a page
    that is not JSON may have moved the scroll, so its window starts over.

    The simulator strikes a continuation only in the first `fault_scrolls` scrolls of a window,
    so a restarted window always gets through.
    A 429 halves the crawler's pace and pauses it for two intervals, so that case has fewer
    of them and a pool with a short interval (the same rate) to stay quick.
    """
    faults = Faults(seed=9, error_rate=0.25 if kind == "429" else 0.3, error_kinds=(kind,), fault_attempts=1)
    pools = {**FAST_POOLS, "polite": PoolLimits(rate=10, interval_s=0.25, concurrency=4)} if kind == "429" else FAST_POOLS
    async with Simulator(corpus, SimConfig(pools=pools, faults=faults)) as sim:
        outcome = await _backfill(sim, tmp_path)
        injected = sim.stats.faults[counter]
        over_limit = sum(sim.stats.over_limit.values())
    assert outcome.code == 0, outcome.message
    assert injected > 0
    assert over_limit == 0
    _assert_exact(tmp_path, corpus.expected)
    _all_done(tmp_path)


async def test_a_request_the_api_refuses_fails_fast_with_its_words(corpus, tmp_path):
    """A 400 validation-failure cannot be cured by retrying: the run stops at once."""
    async with Simulator(corpus, fast_sim_config()) as sim:
        with pytest.raises(FatalApiError) as raised:
            await _backfill(sim, tmp_path, rows=5000, retry_initial_s=1.0, retry_max_s=60.0)
        refused = {key: n for key, n in sim.app.attempts.items() if ("rows", "5000") in key and ("cursor", "*") in key}
        served = sim.stats.pages
    assert raised.value.exit_code == 4 and raised.value.status == 400
    assert "less than or equal to 1000" in str(raised.value)  # the API's own words
    assert refused and set(refused.values()) == {1}, "a refused request was sent again"
    assert served == 0
    assert not list((tmp_path / "events").glob("*.jsonl.gz"))


def test_a_wrong_api_path_fails_fast_with_exit_code_4(corpus, tmp_path):
    sim = SimulatorThread(corpus, fast_sim_config())
    sim.start()
    try:
        args = crawler_args(f"{sim.url}/v1", tmp_path, "--retry-initial", "1", "--retry-max", "60")
        began = time.monotonic()
        done = run_crawler(args, timeout=60)
        took = time.monotonic() - began
    finally:
        sim.stop()
    assert done.returncode == 4, done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("crawler: error: the API rejected our request (404 from"), lines
    assert "Not Found" in lines[-1]  # the server's own words
    assert took < 10, "a 404 was retried (the first retry alone waits 1 s, all of them over a minute)"
    assert not list((tmp_path / "events").glob("events-*"))


# -- the Plus token -------------------------------------------------------------------------
def _files_mentioning(root: Path, secret: str) -> list[Path]:
    """Every file under root whose bytes (decompressed, for .gz) contain the secret."""
    found = []
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        if ".gz" in path.name:
            with gzip.open(path, "rb") as handle:
                data += handle.read()
        if secret.encode() in data:
            found.append(path)
    return found


def test_a_wrong_plus_token_stops_at_once_and_is_never_written(corpus, tmp_path):
    right, wrong = "plus-right-7f3a9c2e41", "plus-wrong-b81d0e5c77"
    sim = SimulatorThread(corpus, fast_sim_config(plus_token=right))
    sim.start()
    try:
        bad = run_crawler(crawler_args(sim.url, tmp_path / "bad", "--plus-token", wrong, "--verbose"), timeout=60)
        unauthorized = sim.stats.unauthorized
        env = {**os.environ, "CROSSREF_PLUS_TOKEN": right}
        good = subprocess.run(crawler_args(sim.url, tmp_path / "good", "--verbose"), capture_output=True,
                              text=True, timeout=120, cwd=ROOT, env=env)
        pools = dict(sim.stats.pools)
    finally:
        sim.stop()
    assert bad.returncode == 5, bad.stderr
    assert unauthorized == 1, "a refused token was sent again"
    last = [line for line in bad.stderr.splitlines() if line.strip()][-1]
    assert last.startswith("crawler: error:") and "401 Unauthorized" in last and "Plus token" in last
    for run, secret in ((bad, wrong), (good, right)):
        assert secret not in run.stdout and secret not in run.stderr
    assert not _files_mentioning(tmp_path / "bad", wrong)
    assert good.returncode == 0, good.stderr
    assert pools.get("plus", 0) > 0 and not pools.get("polite") and not pools.get("public")
    _assert_exact(tmp_path / "good", corpus.expected)
    assert not _files_mentioning(tmp_path / "good", right)


# -- rate limits ----------------------------------------------------------------------------
@pytest.mark.parametrize("mailto, pool", [(None, "public"), ("tests@example.org", "polite")])
async def test_a_normal_run_stays_within_the_limits(corpus, tmp_path, mailto, pool):
    async with Simulator(corpus, fast_sim_config(latency_s=0.02)) as sim:
        outcome = await _backfill(sim, tmp_path, mailto=mailto)
        stats = sim.stats
    assert outcome.code == 0, outcome.message
    assert set(stats.pools) == {pool}
    assert sum(stats.over_limit.values()) == 0, dict(stats.over_limit_why)
    assert 1 <= stats.max_in_flight[pool] <= FAST_POOLS[pool].concurrency
    _assert_exact(tmp_path, corpus.expected)


LOWERED = PoolLimits(rate=10, interval_s=1.0, concurrency=2)


@pytest.mark.parametrize(
    "inject_429, rows, after, latency",
    [(False, 20, 10, 0.03), (True, 50, 6, 0.15)],
    ids=["lowered", "lowered-and-429s"],
)
async def test_lowered_limits_are_followed(corpus, tmp_path, inject_429, rows, after, latency):
    """The API lowers the polite pool's limits mid-run: the crawler follows the headers, and
    the simulator, which enforces the new limits once clients could have seen them (grace_s),
    never has to refuse a request. With 429s injected as well (each halves the crawler's
    pace, so that run has fewer, larger pages to stay short)."""
    change = LimitChange(after_requests=after, pool="polite", limits=LOWERED)
    faults = Faults(seed=10, limit_changes=(change,), error_rate=0.2 if inject_429 else 0.0,
                    error_kinds=("429",), fault_attempts=1)
    config = fast_sim_config(faults=faults, latency_s=latency, grace_s=0.5)
    async with Simulator(corpus, config) as sim:
        task = asyncio.create_task(_backfill(sim, tmp_path, rows=rows))
        while sim.stats.requests < change.after_requests and not task.done():
            await asyncio.sleep(0.01)
        # From when the simulator enforces the lowered limits, watch the concurrency afresh.
        await asyncio.sleep(config.grace_s + FAST_POOLS["polite"].interval_s)
        assert not task.done(), "the run ended before the lowered limits were enforced"
        requests_before = sim.stats.requests
        sim.stats.max_in_flight["polite"] = 0
        outcome = await task
        stats = sim.stats
    assert outcome.code == 0, outcome.message
    assert stats.requests - requests_before >= 5, "too few requests under the lowered limits"
    assert sum(stats.over_limit.values()) == 0, dict(stats.over_limit_why)
    assert 1 <= stats.max_in_flight["polite"] <= LOWERED.concurrency
    if inject_429:
        assert stats.faults["error-429"] > 0
    _assert_exact(tmp_path, corpus.expected)


# -- the registration-agency service --------------------------------------------------------
@pytest.mark.parametrize("kind", ["503", "garbage", "stall", "reset"])
async def test_registration_agency_faults_are_retried(corpus, tmp_path, kind):
    """Every look-up's first attempts fail (one for a stall, which costs the timeout)."""
    faults = Faults(seed=11, ra_error_rate=1.0, ra_error_kinds=(kind,), stall_s=STALL_S,
                    fault_attempts=1 if kind == "stall" else 2)
    async with Simulator(corpus, fast_sim_config(faults=faults)) as sim:
        outcome = await _backfill(sim, tmp_path, timeout_s=TIMEOUT_S)
        struck = sim.stats.faults[f"ra-{kind}"]
    assert outcome.code == 0, outcome.message
    assert struck > 0
    _assert_exact(tmp_path, corpus.expected)
    _all_done(tmp_path)


# -- the disk -------------------------------------------------------------------------------
def _file_size_limit(limit: int):
    """A preexec_fn: files the crawler writes may not grow past `limit` bytes (EFBIG, as a
    full disk gives ENOSPC; the CLI ignores SIGXFSZ so the write fails instead of killing it)."""
    import resource

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def _integrity(state: Path) -> str:
    con = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
    try:
        return con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()


@pytest.fixture(scope="module")
def plain_sim(corpus):
    sim = SimulatorThread(corpus, fast_sim_config())
    sim.start()
    yield sim
    sim.stop()


RANGE = ["--from", FIRST_DAY.isoformat(), "--until", LAST_DAY.isoformat()]


@pytest.mark.parametrize(
    "rows, limit, code, words",
    [
        # Pages of ~160 kB of events: the second output write passes the limit first.
        ("200", 250_000, 3, "events-000001.jsonl.gz.part: File too large"),
        # Pages of ~50 kB: the state file's write-ahead log, which grows with every commit,
        # passes the limit first (after four pages, with ~190 kB of events written).
        ("60", 350_000, 3, "cannot write the state file"),
    ],
    ids=["output", "state"],
)
def test_a_full_disk_stops_cleanly_and_a_rerun_completes(plain_sim, tmp_path, rows, limit, code, words):
    args = crawler_args(plain_sim.url, tmp_path, *RANGE, "--rows", rows, "--quiet")
    full = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=ROOT, preexec_fn=_file_size_limit(limit))
    assert full.returncode == code, full.stderr
    assert "Traceback" not in full.stderr
    errors = [line for line in full.stderr.splitlines() if line.startswith("crawler: error:")]
    assert len(errors) == 1 and words in errors[0], full.stderr
    assert _integrity(tmp_path / "state.sqlite3") == "ok"
    con = sqlite3.connect(f"file:{tmp_path / 'state.sqlite3'}?mode=ro", uri=True)
    (pages,) = con.execute("SELECT value FROM counters WHERE name='pages'").fetchone() or (0,)
    con.close()
    assert pages > 0, "the disk filled before any page was committed: nothing partway to check"
    done = run_crawler(args)
    assert done.returncode == 0, done.stderr
    _assert_exact(tmp_path, plain_sim.corpus.expected)
    assert _integrity(tmp_path / "state.sqlite3") == "ok"


def _output_refused(tmp: Path, how: str) -> Path:
    """An --out the crawler cannot create: below a read-only directory, or below a file."""
    if how == "read-only-parent":
        if os.geteuid() == 0:
            pytest.skip("root ignores directory permissions")
        parent = tmp / "ro"
        parent.mkdir()
        parent.chmod(0o500)
    else:
        parent = tmp / "a-file"
        parent.write_text("not a directory\n")
    return parent / "events"


def _make_writable(out: Path) -> None:
    parent = out.parent
    if parent.is_dir():
        parent.chmod(0o700)
    else:
        parent.unlink()
        parent.mkdir()


@pytest.mark.parametrize("how", ["read-only-parent", "parent-is-a-file"])
def test_an_unwritable_output_directory_is_exit_code_3_and_a_rerun_completes(plain_sim, tmp_path, how):
    out = _output_refused(tmp_path, how)
    args = crawler_args(plain_sim.url, tmp_path, *RANGE, "--quiet")
    args[args.index("--out") + 1] = str(out)
    refused = run_crawler(args)
    assert refused.returncode == 3, refused.stderr
    assert "Traceback" not in refused.stderr
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"crawler: error: cannot create the output directory {out}"), lines
    assert _integrity(tmp_path / "state.sqlite3") == "ok"
    _make_writable(out)
    done = run_crawler(args)
    assert done.returncode == 0, done.stderr
    keys, repeated = output_keys(out)
    assert not repeated and keys == plain_sim.corpus.expected
    assert not list(out.glob("*.part"))


# -- the state file -------------------------------------------------------------------------
def _foreign_db(path: Path) -> None:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE moz_places (id INTEGER PRIMARY KEY, url TEXT)")  # someone's browser history
    con.execute("INSERT INTO moz_places (url) VALUES ('https://www.crossref.org/')")
    con.commit()
    con.close()


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda path: path.write_bytes(random.Random(12).randbytes(16384)), "is not a usable state file"),
        (_foreign_db, "is an SQLite file of another program"),
    ],
    ids=["random-bytes", "foreign-sqlite"],
)
def test_a_corrupt_or_foreign_state_file_is_refused_untouched(plain_sim, tmp_path, make, words):
    """Store.open's refusal itself is in tests/test_store_sink.py; here, the command line's:
    exit code 2, one line, the file's bytes unchanged, nothing fetched, nothing written."""
    state = tmp_path / "state.sqlite3"
    make(state)
    before = state.read_bytes()
    requests = plain_sim.stats.requests
    for argv in (crawler_args(plain_sim.url, tmp_path, *RANGE),
                 [sys.executable, "-m", "crawler", "status", "--state", str(state)]):
        done = run_crawler(argv)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith(f"crawler: error: {state} ") and words in lines[0], lines
        assert state.read_bytes() == before
    assert plain_sim.stats.requests == requests
    assert {p.name for p in tmp_path.iterdir()} <= {state.name, state.name + ".lock"}


# -- a window the API never serves whole ----------------------------------------------------
def _status_json(state: Path) -> dict:
    done = run_crawler([sys.executable, "-m", "crawler", "status", "--state", str(state), "--json"])
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_persistently_short_window_is_reported_never_done(corpus, tmp_path):
    """Two works are counted in total-results but no scroll ever serves them: their window
    ends short on every attempt. The rest is finished, the run exits 1 and says so, `status`
    lists the window, and a rerun tries it again without ever calling it done."""
    with_links = {subject for subject, _, _ in corpus.expected}
    by_doi = {w["DOI"].lower(): w for w in corpus.works}
    by_day: dict[str, list[str]] = {}
    for doi in sorted(with_links):
        by_day.setdefault(by_doi[doi]["created"]["date-time"][:10], []).append(doi)
    # Two works created on one day, so that one window holds both however the range is cut.
    hidden = set(next(dois for _, dois in sorted(by_day.items()) if len(dois) >= 2)[:2])
    created = {by_doi[doi]["created"]["date-time"][:10] for doi in hidden}
    faults = Faults(hidden_dois=frozenset(by_doi[doi]["DOI"] for doi in hidden))
    expected = {key for key in corpus.expected if key[0] not in hidden}
    sim = SimulatorThread(corpus, fast_sim_config(faults=faults))
    sim.start()
    try:
        args = crawler_args(sim.url, tmp_path, *RANGE)
        runs = [run_crawler(args), None]
        first_status = _status_json(tmp_path / "state.sqlite3")
        table = run_crawler([sys.executable, "-m", "crawler", "status", "--state", str(tmp_path / "state.sqlite3")])
        runs[1] = run_crawler(args)
    finally:
        sim.stop()
    for run in runs:
        assert run.returncode == 1, run.stderr
        assert "Traceback" not in run.stderr
        last = [line for line in run.stderr.splitlines() if line.strip()][-1]
        assert last.startswith("crawler: backfill incomplete: 1 window(s) short or failed"), last
        assert "crawler status" in last and "run the same command again" in last
        assert not re.search(r"\bcomplete\b", run.stdout + run.stderr)  # "incomplete" only
    assert sim.stats.faults == Counter() and sim.stats.scrolls > 0
    (short,) = first_status["short_windows"]
    assert short["status"] == "short" and short["job"] == "backfill"
    assert all(short["start"] <= day <= short["end"] for day in created)
    assert first_status["backfill"]["finished_at"] is None
    assert first_status["backfill"]["windows"]["short"] == 1
    assert table.returncode == 0 and "short window" in table.stdout
    assert f"{short['start']}..{short['end']}" in table.stdout
    # The rerun tried the window again (the plan may cut it first, for it is all that is left
    # to share between the scroll slots) and left the part holding the two works short again.
    windows = _windows(tmp_path / "state.sqlite3")
    holding = [(status, attempts) for start, end, status, attempts, _ in windows
               if all(start <= day <= end for day in created)]
    assert holding and all(status == "short" and attempts >= SHORT_RUNS for status, attempts in holding), holding
    assert {status for _, _, status, _, _ in windows} == {"done", "short"}
    second_status = _status_json(tmp_path / "state.sqlite3")
    assert second_status["backfill"]["finished_at"] is None and len(second_status["short_windows"]) == 1
    _assert_exact(tmp_path, expected)
