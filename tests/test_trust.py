"""Issue "Never lose, never leak": output nobody else can overwrite, secrets and politeness,
counters and messages that tell the truth, a process that never aborts.

Every test talks to real things: the simulator over real TCP on 127.0.0.1 (in this loop, or in
a thread of its own for `crawler` subprocesses), real SQLite state files, real output files,
real subprocesses killed with SIGKILL. Expected links come from the generated corpus's
recorded entries (`corpus.expected`, `corpus.entries`), never from the crawler's own code;
every figure a test checks is either counted from the corpus or fixed by hand in the test.
Each test's docstring says what it guards.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from collections import Counter
from datetime import date, datetime, timezone
from pathlib import Path

import pytest

from crawler.errors import OutputError, StateError
from crawler.jobs import backfill, ingest_xml, update
from crawler.simulator.app import PoolLimits, SimConfig, Simulator, SimulatorThread
from crawler.simulator.corpus import AGENCIES, UNKNOWN_PREFIXES, generate
from crawler.simulator.xmlrender import render_deposit
from crawler.sink import Sink
from crawler.sources import xmlfiles
from crawler.status import status_report
from tests.conftest import FAST_POOLS, ROOT, crawler_args, committed_pages, crawler_config, fast_sim_config, output_keys, run_crawler

FIRST_DAY, LAST_DAY = date(2005, 1, 1), date(2024, 12, 31)  # the generated corpora's created dates
RANGE = ["--from", FIRST_DAY.isoformat(), "--until", LAST_DAY.isoformat()]
TOKEN = "plus-5e2b7d90c4a1f3e8"  # a Plus token that must never leave the API's host nor be written
TOKEN_HEADER = "crossref-plus-api-token"  # as the simulator records header names (lower-cased)
ROTATE_MB = 0.02  # ~20 KB output files: a small corpus completes many of them
ROTATE_BYTES = int(ROTATE_MB * 1024 * 1024)


# -- helpers ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus():
    return generate(400, seed=83)


def _config(url: str, tmp: Path, **overrides):
    """The corpora's whole created range, given, so the plan does not depend on today."""
    return crawler_config(url, tmp, **{"date_from": FIRST_DAY, "date_until": LAST_DAY, **overrides})


def _prefix(key: tuple[str, str, str]) -> str:
    return key[2].split("/", 1)[0]


def _all_links(corpus) -> set[tuple[str, str, str]]:
    """Every link the corpus's works carry (emitted or not), as the generator recorded them."""
    return {e.key for entries in corpus.entries.values() for e in entries if e.key}


def _assert_exact(out: Path, expected: set) -> None:
    keys, repeated = output_keys(out)
    assert not repeated, f"{len(repeated)} link(s) written more than once, e.g. {next(iter(repeated))}"
    assert keys == expected, f"{len(expected - keys)} link(s) missing, {len(keys - expected)} unexpected"
    assert not list(out.glob("*.part")), "a partial output file was left"


def _completed(out: Path) -> dict[str, bytes]:
    """Name -> bytes of every completed output file."""
    return {p.name: p.read_bytes() for p in sorted(out.glob("events-*.jsonl.gz"))}


def _tree(root: Path) -> dict[str, bytes | None]:
    """Relative path -> bytes (None for a directory) of everything under root."""
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes()) for p in sorted(root.rglob("*"))}


def _lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def _one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The run's stderr is one line and no traceback; returns that line."""
    assert "Traceback" not in done.stderr, done.stderr
    lines = _lines(done.stderr)
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n" + "\n".join(lines)
    return lines[0]


def _cli(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return run_crawler([sys.executable, "-m", "crawler", *argv], timeout=timeout)


def _dead_url() -> str:
    """The URL of a loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _ro(state: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{state}?mode=ro", uri=True)


def _sink_position(state: Path) -> tuple[int, int]:
    con = _ro(state)
    try:
        return con.execute("SELECT seq, offset FROM sink WHERE id=1").fetchone()
    finally:
        con.close()


async def _backfill_stopped(config, pages: int):
    """A backfill asked to stop (as SIGINT does) once `pages` more pages are committed: a
    point fixed by the state's own count, not by a sleep. Returns its outcome."""
    stop = asyncio.Event()
    target = committed_pages(config.state) + pages

    async def watch() -> None:
        while committed_pages(config.state) < target:
            await asyncio.sleep(0.005)
        stop.set()

    watcher = asyncio.create_task(watch())
    try:
        return await asyncio.wait_for(backfill(config, stop), 120)
    finally:
        watcher.cancel()


async def _run_async(args: list[str], env: dict[str, str], timeout: float = 120) -> tuple[int, str]:
    """A crawler subprocess while this loop keeps serving the in-loop simulator."""
    proc = await asyncio.create_subprocess_exec(*args, cwd=ROOT, env=env, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        _, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode, err.decode("utf-8", "replace")


def _env_without_crash() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "CRAWLER_CRASH_AT"}


def _files_mentioning(root: Path, secret: str) -> list[Path]:
    """Every file under root whose bytes (also decompressed, for .gz) contain the secret."""
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


@pytest.fixture(scope="module")
def plain_sim(corpus):
    sim = SimulatorThread(corpus, fast_sim_config())
    sim.start()
    yield sim
    sim.stop()


# == Output that nobody else can overwrite =====================================================

# -- 1 ----------------------------------------------------------------------------------------
async def test_a_second_state_file_is_refused_an_output_directory_in_use(corpus, tmp_path):
    """Guards the claim on an output directory (`output.claim`): two state files both number
    their files from events-000001, so B writing into A's directory would complete its files
    over A's. B is refused with one line naming the directory and A's state file, before it
    fetches anything, and A's files stay byte for byte with exactly A's links."""
    created = {w["DOI"].lower(): w["created"]["date-time"][:10] for w in corpus.works}
    split = date(2014, 12, 31)
    a_links = {k for k in corpus.expected if created[k[0]] <= split.isoformat()}
    assert a_links and a_links != corpus.expected
    shared = tmp_path / "D"
    a_state, b_state = tmp_path / "a.sqlite3", tmp_path / "b.sqlite3"
    async with Simulator(corpus, fast_sim_config()) as sim:
        a = _config(sim.url, tmp_path, state=a_state, out=shared, date_until=split)
        outcome = await backfill(a, asyncio.Event())
        assert outcome.code == 0, outcome.message
        before = _tree(shared)
        requests = sim.stats.requests
        b = _config(sim.url, tmp_path, state=b_state, out=shared, date_from=date(2015, 1, 1))
        with pytest.raises(StateError) as refused:
            await backfill(b, asyncio.Event())
        assert sim.stats.requests == requests, "the refused run fetched from the API"
    message = str(refused.value)
    assert "\n" not in message
    assert str(shared.resolve()) in message and str(a_state.resolve()) in message, message
    # The command line says the same, with exit code 2 (it must not need the API to refuse).
    dead = _dead_url()
    done = _cli("backfill", "--api-url", dead, "--ra-url", f"{dead}/ra", "--mailto", "tests@example.org",
                "--state", str(b_state), "--out", str(shared), "--from", "2015-01-01", "--until", LAST_DAY.isoformat())
    assert done.returncode == 2, done.stderr
    line = _one_line(done)
    assert line.startswith("crawler: error: ") and str(shared.resolve()) in line and str(a_state.resolve()) in line
    assert not b_state.exists() and not list(tmp_path.glob("b.sqlite3*")), "the refused run made a state file"
    assert _tree(shared) == before, "A's output directory changed"
    assert any(name.startswith("events-") for name in before)
    _assert_exact(shared, a_links)


# -- 2 ----------------------------------------------------------------------------------------
async def test_the_default_output_directory_follows_the_state_file(corpus, tmp_path):
    """Guards `engine.output_dir`'s default: without --out, X/a.sqlite3 writes into
    X/a-events and X/b.sqlite3 into X/b-events (one fixed default such as X/events would be
    the same directory for both, and the second would be refused or overwrite the first)."""
    folder = tmp_path / "X"
    async with Simulator(corpus, fast_sim_config()) as sim:
        for name in ("a", "b"):
            config = _config(sim.url, tmp_path, state=folder / f"{name}.sqlite3", out=None)
            outcome = await backfill(config, asyncio.Event())
            assert outcome.code == 0, outcome.message
    for name in ("a", "b"):
        _assert_exact(folder / f"{name}-events", corpus.expected)
        con = _ro(folder / f"{name}.sqlite3")
        (recorded,) = con.execute("SELECT value FROM meta WHERE key='out'").fetchone()
        con.close()
        assert recorded == str((folder / f"{name}-events").resolve())
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == ["a-events", "b-events"]
    assert not (tmp_path / "events").exists()


# -- 3 ----------------------------------------------------------------------------------------
def test_a_completed_file_is_never_renamed_over_an_existing_one(tmp_path):
    """Guards `Sink.finish_file`'s link-not-rename: a file with the final name already there
    (another run's, a user's) makes completing fail with OutputError and stays as it was; the
    part file keeps its events and the sink does not move on."""
    sink = Sink(tmp_path, seq=1, offset=0)
    assert sink.recover() is False
    ours = gzip.compress(b'{"ours": 1}\n')
    sink.append(ours)
    final = sink.path(final=True)
    theirs = gzip.compress(b'{"someone else": "s file"}\n')
    final.write_bytes(theirs)
    with pytest.raises(OutputError, match="already exists"):
        sink.finish_file()
    assert final.read_bytes() == theirs
    assert sink.path().read_bytes() == ours
    assert (sink.seq, sink.offset) == (1, len(ours))


# -- 4 ----------------------------------------------------------------------------------------
DEMO_WORKS, DEMO_SEED = 300, 7  # `crawler demo --works 300` and its default seed


def _demo(folder: Path) -> subprocess.CompletedProcess[str]:
    return _cli("demo", "--works", str(DEMO_WORKS), "--dir", str(folder), timeout=120)


def test_demo_refuses_a_folder_it_did_not_make(tmp_path):
    """Guards `demo.prepare_dir`: a non-empty folder the demo did not make (here a user's
    notes) is refused with exit code 2 and one line, before anything is written into it."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("a user's file\n")
    before = _tree(folder)
    done = _demo(folder)
    assert done.returncode == 2, done.stderr
    line = _one_line(done)
    assert line.startswith("crawler: error:") and str(folder) in line
    assert _tree(folder) == before


def test_demo_takes_an_empty_folder_and_reuses_only_its_own_files(tmp_path):
    """Guards `demo.prepare_dir` on the two folders it may use: an empty one is accepted;
    one an earlier demo made is reused with only the demo's own files replaced, so a user's
    files put in it (beside the state, and among the events) survive byte for byte, and the
    output is the corpus's links exactly once (the old event files did not stay beside the new)."""
    expected = generate(DEMO_WORKS, seed=DEMO_SEED).expected
    folder = tmp_path / "demo"
    folder.mkdir()
    first = _demo(folder)
    assert first.returncode == 0, first.stderr
    _assert_exact(folder / "events", expected)
    mine = {folder / "notes.txt": b"my notes\n", folder / "events" / "README.mine": b"mine too\n"}
    for path, data in mine.items():
        path.write_bytes(data)
    second = _demo(folder)
    assert second.returncode == 0, second.stderr
    for path, data in mine.items():
        assert path.read_bytes() == data, f"{path.name} was changed or removed"
    _assert_exact(folder / "events", expected)


# -- 5 ----------------------------------------------------------------------------------------
def test_a_run_refused_for_a_bad_out_records_nothing(plain_sim, tmp_path):
    """Guards the order in `cli.config_from`/`jobs.prepare_output`/`backfill`: a first run whose
    --out is a regular file is refused (exit 2) before a state file, an output directory or a
    range is recorded, so the corrected command (same --state, a good --out) is not refused for
    "another --out"."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the output directory should go\n")
    args = crawler_args(plain_sim.url, tmp_path, *RANGE, "--quiet")
    args[args.index("--out") + 1] = str(blocker)
    refused = run_crawler(args)
    assert refused.returncode == 2, refused.stderr
    line = _one_line(refused)
    assert line.startswith("crawler: error:") and str(blocker) in line
    assert blocker.read_text() == "a file where the output directory should go\n"
    assert not (tmp_path / "state.sqlite3").exists()
    good = tmp_path / "good-events"
    args[args.index("--out") + 1] = str(good)
    done = run_crawler(args)
    assert done.returncode == 0, done.stderr
    _assert_exact(good, plain_sim.corpus.expected)


# -- 6 ----------------------------------------------------------------------------------------
CRASH_STEPS = [
    "complete:before-durable", "complete:before-link", "complete:after-link",
    "complete:after-unlink", "complete:after-fsync", "complete:after-commit",
]


@pytest.fixture(scope="module")
def rotation_corpus():
    return generate(400, seed=61)


@pytest.mark.parametrize("step", CRASH_STEPS)
async def test_a_crash_at_any_step_of_completing_a_file_loses_and_repeats_nothing(rotation_corpus, tmp_path, step):
    """Guards the completion protocol (`Crawl._finish_file`, `Sink.finish_file`, `Sink.recover`):
    with ~20 KB files, a run stopped cleanly leaves completed files; the next run is killed
    (SIGKILL, by CRAWLER_CRASH_AT) at one step of completing its first file; the rerun ends
    with code 0, every link exactly once, no part file, and every file completed before the
    crash byte for byte as it was."""
    out, state = tmp_path / "events", tmp_path / "state.sqlite3"
    async with Simulator(rotation_corpus, fast_sim_config()) as sim:
        outcome = await _backfill_stopped(_config(sim.url, tmp_path, rows=50, rotate_bytes=ROTATE_BYTES), 2)
        assert outcome.code == 130, outcome.message
        earlier = _completed(out)
        assert earlier, "the clean stop completed no file"
        seq, offset = _sink_position(state)
        assert offset == 0 and f"events-{seq - 1:06d}.jsonl.gz" in earlier
        args = crawler_args(sim.url, tmp_path, *RANGE, "--rows", "50", "--rotate-mb", str(ROTATE_MB), "--quiet")
        code, err = await _run_async(args, {**_env_without_crash(), "CRAWLER_CRASH_AT": step})
        assert code == -signal.SIGKILL, f"the run was not killed at {step} (exit {code}): {err}"
        # The crash came where it was asked: the first completion of this run, file `seq`.
        part, final = out / f"events-{seq:06d}.jsonl.gz.part", out / f"events-{seq:06d}.jsonl.gz"
        on_disk = (part.exists(), final.exists())
        if step in ("complete:before-durable", "complete:before-link"):
            assert on_disk == (True, False)
        elif step == "complete:after-link":
            assert on_disk == (True, True) and os.path.samefile(part, final)
        else:
            assert on_disk == (False, True)
        assert _sink_position(state)[0] == (seq + 1 if step == "complete:after-commit" else seq)
        at_crash = _completed(out)
        assert earlier.items() <= at_crash.items(), "a file completed before the crash changed"
        # The rerun, without the variable (in this process: the state and the files are the same).
        outcome = await backfill(_config(sim.url, tmp_path, rows=50, rotate_bytes=ROTATE_BYTES), asyncio.Event())
        assert outcome.code == 0, outcome.message
    _assert_exact(out, rotation_corpus.expected)
    after = _completed(out)
    changed = [name for name, data in at_crash.items() if after.get(name) != data]
    assert not changed, f"completed before the crash, changed or gone after the rerun: {changed}"
    assert len(after) > len(at_crash) >= 1


@pytest.mark.parametrize("linked_only", [False, True], ids=["renamed", "linked-not-unlinked"])
def test_recovery_refuses_a_completed_file_longer_than_the_committed_length(tmp_path, linked_only):
    """Guards `Sink.recover` against a power cut that lost the durable commit of a file's full
    length: a completed file longer than the state's committed offset holds events the state
    never committed; moving on would keep them *and* redo their page (events twice), and
    cutting a completed file is never allowed. It must refuse, leaving the file as it is."""
    sink = Sink(tmp_path, seq=1, offset=0)
    sink.recover()
    committed = sink.append(gzip.compress(b'{"committed": 1}\n'))
    sink.append(gzip.compress(b'{"never committed": 2}\n'))
    part, final = sink.path(), sink.path(final=True)
    if linked_only:
        sink.close()
        os.link(part, final)  # the crash came between the link and the unlink of the part name
    else:
        assert sink.finish_file() == final
    data = final.read_bytes()
    again = Sink(tmp_path, seq=1, offset=committed)
    with pytest.raises(OutputError):
        again.recover()
    assert final.read_bytes() == data
    assert (again.seq, again.offset) == (1, committed)


# == Secrets and politeness ====================================================================

# -- 7 ----------------------------------------------------------------------------------------
def _assert_token_kept(run: subprocess.CompletedProcess[str], root: Path) -> None:
    assert TOKEN not in run.stdout and TOKEN not in run.stderr, "the token was printed"
    assert not _files_mentioning(root, TOKEN), "the token was written to a file"


def test_the_plus_token_goes_to_the_api_host_only(corpus, tmp_path):
    """Guards `ApiClient._headers_for`: the Plus token goes with /works requests only, never to
    the registration-agency service, even when that service shares the API's host (here: the
    same simulator serves /works and /ra). Nor is it printed (--verbose) or written anywhere."""
    sim = SimulatorThread(corpus, fast_sim_config(plus_token=TOKEN))
    sim.start()
    try:
        done = run_crawler(crawler_args(sim.url, tmp_path, *RANGE, "--plus-token", TOKEN, "--verbose"))
        stats = sim.stats
        works_names, ra_names = Counter(stats.works_header_names), Counter(stats.ra_header_names)
        requests, ra_requests, pools = stats.requests, stats.ra_requests, Counter(stats.pools)
    finally:
        sim.stop()
    assert done.returncode == 0, done.stderr
    assert set(pools) == {"plus"}, pools  # the token was sent to /works and accepted there
    assert works_names[TOKEN_HEADER] == requests > 0
    assert ra_requests > 0
    assert ra_names[TOKEN_HEADER] == 0, f"the /ra route received the token {ra_names[TOKEN_HEADER]} time(s)"
    _assert_exact(tmp_path / "events", corpus.expected)
    _assert_token_kept(done, tmp_path)


def test_the_plus_token_does_not_follow_a_redirect_to_another_host(corpus, tmp_path):
    """Guards the crawler's own redirect following (`ApiClient._get_once`, aiohttp's is off):
    the API answers every /works request with a 307 to a second server (another port, the same
    corpus); the crawl completes exactly from there, and that server never sees the token."""
    other = SimulatorThread(corpus, fast_sim_config(plus_token=TOKEN))
    other.start()
    api = SimulatorThread(corpus, fast_sim_config(plus_token=TOKEN, redirect_to=other.url))
    api.start()
    try:
        done = run_crawler(crawler_args(api.url, tmp_path, *RANGE, "--plus-token", TOKEN, "--verbose"))
        redirects, api_names = api.stats.redirects, Counter(api.stats.works_header_names)
        served, other_names = other.stats.requests, Counter(other.stats.works_header_names)
    finally:
        api.stop()
        other.stop()
    assert done.returncode == 0, done.stderr
    assert redirects > 0 and served > 0, "nothing was redirected: the test tested nothing"
    assert api_names[TOKEN_HEADER] > 0  # the API's own host does get it
    assert other_names[TOKEN_HEADER] == 0, f"the other host received the token {other_names[TOKEN_HEADER]} time(s)"
    _assert_exact(tmp_path / "events", corpus.expected)
    _assert_token_kept(done, tmp_path)


# -- 8 ----------------------------------------------------------------------------------------
PUBLISHED_POLITE = PoolLimits(rate=3, interval_s=1.0, concurrency=3)


@pytest.fixture(scope="module")
def pace_corpus():
    return generate(100, seed=19)


async def _paced_run(corpus, tmp: Path, sim_config: SimConfig):
    async with Simulator(corpus, sim_config) as sim:
        # The product's default: headers may lower the pace below the published figures only.
        config = _config(sim.url, tmp, trust_rate_headers=False, rows=10, window_pages=2)
        outcome = await backfill(config, asyncio.Event())
        stats = sim.stats
    assert outcome.code == 0, outcome.message
    return stats


async def test_limits_advertised_above_the_published_ones_do_not_raise_the_pace(pace_corpus, tmp_path):
    """Guards the published ceiling in `Limiter.observe` (engine: `ceiling` unless a Plus token
    or trust_rate_headers): a server whose headers advertise 10 requests/s and 8 concurrent
    but that enforces the published 3/s and 3 concurrent sees no request over its limits."""
    pools = {**FAST_POOLS, "polite": PUBLISHED_POLITE}
    sim_config = SimConfig(pools=pools, advertise={"polite": PoolLimits(10, 1.0, 8)}, latency_s=0.05)
    stats = await _paced_run(pace_corpus, tmp_path, sim_config)
    assert set(stats.pools) == {"polite"}
    assert stats.requests >= 8, "too few requests to tell 3/s from 10/s"
    assert sum(stats.over_limit.values()) == 0, dict(stats.over_limit_why)
    assert stats.max_in_flight["polite"] <= PUBLISHED_POLITE.concurrency
    con = _ro(tmp_path / "state.sqlite3")
    throttled = dict(con.execute("SELECT name, value FROM counters").fetchall()).get("429s", 0)
    con.close()
    assert throttled == 0
    _assert_exact(tmp_path / "events", pace_corpus.expected)


async def test_limits_advertised_below_the_published_ones_are_followed(pace_corpus, tmp_path):
    """Guards `Limiter.observe` lowering the pace: a server that advertises (and enforces)
    2 requests/s and 1 concurrent, below the published 3 and 3, sees no request over them."""
    lower = PoolLimits(rate=2, interval_s=1.0, concurrency=1)
    stats = await _paced_run(pace_corpus, tmp_path, SimConfig(pools={**FAST_POOLS, "polite": lower}, latency_s=0.3))
    assert stats.requests >= 8, "too few requests to tell 2/s from 3/s"
    assert sum(stats.over_limit.values()) == 0, dict(stats.over_limit_why)
    assert stats.max_in_flight["polite"] == 1
    _assert_exact(tmp_path / "events", pace_corpus.expected)


# -- 9 ----------------------------------------------------------------------------------------
def _counters(state: Path) -> dict[str, int]:
    con = _ro(state)
    try:
        return dict(con.execute("SELECT name, value FROM counters").fetchall())
    finally:
        con.close()


async def test_no_agency_is_not_forever(tmp_path):
    """Guards the expiry of negative agency answers (`agency.NEGATIVE_TTL`) and the links
    that wait for them (`select`, `sources.deferred`): a DataCite prefix unknown during the
    backfill holds its links back (counted as unknown-agency); a fresh negative answer is
    not asked again, but one older than a week is, and the update that finds the prefix
    known emits exactly the links that waited, once, leaving the output equal to the corpus.

    The corpus also cites prefixes no agency ever knows (10.99999, ...): their links stay in
    unknown-agency, so "drops to 0" is checked as: the prefix's share drops to 0."""
    corpus = generate(400, seed=29)
    late = "10.5061"
    links = _all_links(corpus)
    waiting = {k for k in corpus.expected if _prefix(k) == late}  # events once the prefix is known
    held = {k for k in links if _prefix(k) == late}  # every link citing it, mined ones too
    never = {k for k in links if _prefix(k) in UNKNOWN_PREFIXES}
    mined_elsewhere = {k for k in links if AGENCIES[_prefix(k)] not in (None, "Crossref") and k not in corpus.expected}
    assert waiting and held > waiting and never
    corpus.agencies[late] = None
    state, out = tmp_path / "state.sqlite3", tmp_path / "events"
    today = datetime.now(timezone.utc).date()
    async with Simulator(corpus, fast_sim_config()) as sim:
        config = _config(sim.url, tmp_path)
        outcome = await backfill(config, asyncio.Event())
        assert outcome.code == 0, outcome.message
        _assert_exact(out, corpus.expected - waiting)
        report = await status_report(state)
        assert report["not_emitted"]["unknown-agency"] == len(never) + len(held)
        asked = sim.stats.ra_prefixes_asked.count(late)
        assert asked == 1
        backfilled = _completed(out)

        corpus.agencies[late] = "DataCite"  # registered since
        outcome = await update(config, asyncio.Event(), since=today)
        assert outcome.code == 0, outcome.message
        assert sim.stats.ra_prefixes_asked.count(late) == asked, "a fresh negative answer was asked again"
        assert _counters(state)["unknown-agency"] == len(never) + len(held)
        _assert_exact(out, corpus.expected - waiting)

        con = sqlite3.connect(state)
        with con:
            aged = con.execute("UPDATE agency SET checked_at='2000-01-01T00:00:00Z' WHERE prefix=?", (late,)).rowcount
        con.close()
        assert aged == 1
        outcome = await update(config, asyncio.Event(), since=today)
        assert outcome.code == 0, outcome.message
        assert sim.stats.ra_prefixes_asked.count(late) == asked + 1
    _assert_exact(out, corpus.expected)
    after = _completed(out)
    assert all(after.get(name) == data for name, data in backfilled.items()), "a completed file changed"
    report = await status_report(state)
    assert report["not_emitted"]["unknown-agency"] == len(never)  # the late prefix's share is 0
    assert report["not_emitted"]["mined-doi-not-crossref"] == len(mined_elsewhere)


# == Counters and messages that tell the truth =================================================

# -- 10 ---------------------------------------------------------------------------------------
BAD_REFERENCES = [None, 7, {"key": "bad", "DOI": 12}]  # three problems of kind field-of-wrong-type


@pytest.fixture(scope="module")
def flawed_corpus():
    """A corpus whose every 20th work carries three reference entries of the wrong type
    (besides its good ones, whose links stay in `expected`)."""
    corpus = generate(400, seed=37)
    flawed = 0
    for i, work in enumerate(corpus.works):
        if i % 20 == 0:
            corpus.works[i] = {**work, "reference": list(work.get("reference") or []) + BAD_REFERENCES}
            flawed += 1
    return corpus, flawed


async def test_not_emitted_counters_after_stops_and_resumes_equal_a_clean_run(flawed_corpus, tmp_path):
    """Guards the once-only counting of what is not emitted (`select`: rejected and problem
    hashes in the seen sets, `store.commit_page`'s delta for waiting links): a backfill stopped
    three times mid-way and resumed fetches works again, and its unknown-agency,
    mined-doi-not-crossref and field-of-wrong-type counters still equal a clean run's, and
    the figures counted from the corpus."""
    corpus, flawed = flawed_corpus
    links = _all_links(corpus)
    truth = {
        "unknown-agency": len({k for k in links if _prefix(k) in UNKNOWN_PREFIXES}),
        "mined-doi-not-crossref": len(
            {k for k in links if AGENCIES[_prefix(k)] not in (None, "Crossref") and k not in corpus.expected}),
        "field-of-wrong-type": len(BAD_REFERENCES) * flawed,
    }
    async with Simulator(corpus, fast_sim_config()) as sim:
        clean = await backfill(_config(sim.url, tmp_path / "clean", rows=25), asyncio.Event())
        assert clean.code == 0, clean.message
        resumed = tmp_path / "resumed"
        for pages in (2, 3, 3):
            outcome = await _backfill_stopped(_config(sim.url, resumed, rows=25), pages)
            assert outcome.code == 130, outcome.message
        outcome = await backfill(_config(sim.url, resumed, rows=25), asyncio.Event())
        assert outcome.code == 0, outcome.message
    for tmp in (tmp_path / "clean", resumed):
        _assert_exact(tmp / "events", corpus.expected)
    assert _counters(resumed / "state.sqlite3")["works"] > len(corpus.works), "no work was fetched twice"
    reports = [await status_report(tmp / "state.sqlite3") for tmp in (tmp_path / "clean", resumed)]
    assert reports[0]["not_emitted"] == truth
    assert reports[1]["not_emitted"] == reports[0]["not_emitted"]


# -- 11 ---------------------------------------------------------------------------------------
def _assert_names_only_real_files(report: dict, out: Path) -> None:
    files = report["output_files"]
    for key in ("last_completed", "writing"):
        if files[key] is not None:
            assert (out / files[key]).exists(), f"status names {files[key]}, which does not exist"


async def test_status_after_a_clean_stop(corpus, tmp_path):
    """Guards `jobs.crawl_job`'s requeue on the way out and the state's lock: after a clean
    stop (130) no window is left "running", no crawler is said to run, and the output files
    status names exist."""
    state, out = tmp_path / "state.sqlite3", tmp_path / "events"
    async with Simulator(corpus, fast_sim_config()) as sim:
        outcome = await _backfill_stopped(_config(sim.url, tmp_path, rows=25), 3)
    assert outcome.code == 130, outcome.message
    report = await status_report(state)
    assert report["crawler_running"] is False
    assert report["backfill"]["windows"]["running"] == 0
    assert report["backfill"]["windows"]["pending"] > 0, "the run was not stopped mid-way"
    con = _ro(state)
    running = con.execute("SELECT count(*) FROM windows WHERE status='running'").fetchone()[0]
    con.close()
    assert running == 0
    assert report["output_files"]["last_completed"] is not None
    _assert_names_only_real_files(report, out)


@pytest.mark.parametrize("given_range", [True, False], ids=["range-given", "no-range"])
async def test_status_after_the_api_was_unreachable(tmp_path, given_range):
    """Guards the recording of a run's failure for `crawler status`: a backfill against a port
    nothing listens on ends with exit 6 (--give-up-after 1s); status then shows the last error
    and the retries it took, whether the run died while planning its windows (range given)
    or while asking for the earliest created date (no --from, the usual first command)."""
    url = _dead_url()
    extra = RANGE if given_range else []
    done = run_crawler(crawler_args(url, tmp_path, *extra, "--quiet", "--give-up-after", "1s"), timeout=60)
    assert done.returncode == 6, done.stderr
    report = await status_report(tmp_path / "state.sqlite3")
    assert report["last_error"] is not None, "status does not show why the run ended"
    assert "cannot connect to 127.0.0.1" in report["last_error"]["error"]
    assert report["totals"]["retries"] > 0
    assert report["crawler_running"] is False
    _assert_names_only_real_files(report, tmp_path / "events")


# -- 12 ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("flag, value", [("--timeout", "-5"), ("--timeout", "0"), ("--progress", "-1")])
def test_a_bad_flag_value_is_one_line_and_exit_2(tmp_path, flag, value):
    """Guards the flags' checks (`cli._seconds`, `_seconds_or_zero`) and how they are
    reported: exit 2, one line on stderr that names the flag and tells the truth about what it
    takes (--progress takes 0), no traceback, and nothing created."""
    state = tmp_path / "state.sqlite3"
    dead = _dead_url()
    done = _cli("backfill", "--state", str(state), "--api-url", dead, "--ra-url", f"{dead}/ra",
                "--mailto", "tests@example.org", flag, value)
    assert done.returncode == 2, done.stderr
    line = _one_line(done)
    assert line.startswith("crawler") and flag in line and repr(value) in line, line
    if flag == "--progress":
        assert "above 0" not in line, f"--progress 0 is allowed, yet the message says: {line}"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["status", "backfill"])
@pytest.mark.parametrize("case", ["parent-is-a-file", "a-directory"])
def test_an_unusable_state_path_is_one_clear_line_and_exit_2(tmp_path, command, case):
    """Guards `Store.open`'s and `cli._require_state`'s checks of --state: a path under a
    regular file, or a directory, is exit 2 with one line that names the path and says what
    is wrong with it (not an errno's "File exists"); the file in the way is left alone."""
    if case == "parent-is-a-file":
        blocker = tmp_path / "afile"
        blocker.write_text("in the way\n")
        state, why = blocker / "state.sqlite3", ("is a file", "not a directory", "not a folder")
    else:
        state, why = tmp_path / "adir", ("is a directory",)
        state.mkdir()
    dead = _dead_url()
    extra = ["--api-url", dead, "--ra-url", f"{dead}/ra", "--mailto", "tests@example.org"] if command == "backfill" else []
    before = _tree(tmp_path)
    done = _cli(command, "--state", str(state), *extra)
    assert done.returncode == 2, done.stderr
    line = _one_line(done)
    assert line.startswith("crawler: error:") and str(state) in line, line
    assert any(words in line for words in why), f"the line does not say what is wrong: {line}"
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("command", ["backfill", "update"])
def test_an_out_that_is_a_file_is_one_clear_line_exit_2_and_makes_no_state_file(tmp_path, command):
    """`--out notes.txt`: a usage mistake (exit 2), found before a state file is made for
    nothing; it was exit 3 (disk or permissions) with a new state file left behind."""
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    dead = _dead_url()
    before = _tree(tmp_path)
    done = _cli(command, "--state", str(tmp_path / "state.sqlite3"), "--out", str(notes), "--api-url", dead,
                "--ra-url", f"{dead}/ra", "--mailto", "tests@example.org")
    assert done.returncode == 2, done.stderr
    line = _one_line(done)
    assert line.startswith("crawler: error:") and f"--out {notes} is a file" in line, line
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("command", ["status", "backfill"])
def test_a_refused_garbage_state_file_leaves_no_lock_file(tmp_path, command):
    """Guards `store._unlock`: a state file of random bytes is refused (exit 2, one line,
    untouched), and the lock file the attempt created beside it is gone again."""
    state = tmp_path / "state.sqlite3"
    state.write_bytes(random.Random(12).randbytes(16384))
    before = state.read_bytes()
    dead = _dead_url()
    extra = ["--api-url", dead, "--ra-url", f"{dead}/ra", "--mailto", "tests@example.org"] if command == "backfill" else []
    done = _cli(command, "--state", str(state), *extra)
    assert done.returncode == 2, done.stderr
    line = _one_line(done)
    assert line.startswith(f"crawler: error: {state} ") and "not a usable state file" in line
    assert state.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [state.name], "something was left beside the state file"


# == A process that never aborts ===============================================================

# -- 13 ---------------------------------------------------------------------------------------
XML_FILES, XML_RECORDS = 20, 30


@pytest.fixture(scope="module")
def xml_deposits(tmp_path_factory):
    """20 deposit files of 30 records each, made from a generated corpus."""
    corpus = generate(XML_FILES * XML_RECORDS, seed=53)
    folder = tmp_path_factory.mktemp("deposits")
    for i in range(XML_FILES):
        works = corpus.works[i * XML_RECORDS: (i + 1) * XML_RECORDS]
        (folder / f"deposit-{i:02d}.xml").write_bytes(render_deposit(works, batch_id=f"batch-{i}"))
    return corpus, folder


async def test_each_xml_file_is_read_and_closed_on_one_thread(xml_deposits, tmp_path, monkeypatch):
    """Guards `sources.xmlfiles.ingest`'s one reader thread: lxml's iterparse advanced on one
    thread and closed (or freed) on another aborted the process now and then (SIGABRT). Each
    file's reader generator, read in several batches of 10 records, must be started, advanced
    and finished on one and the same thread, and be finished before the ingest returns."""
    corpus, folder = xml_deposits
    real = xmlfiles.read_works
    steps: dict[str, list[tuple[str, int]]] = {}

    def recording(path):  # type: ignore[no-untyped-def]
        record = steps.setdefault(str(path), [])
        inner = real(path)
        try:
            while True:
                record.append(("next", threading.get_ident()))
                try:
                    item = next(inner)
                except StopIteration:
                    return
                yield item
        finally:
            record.append(("end", threading.get_ident()))
            inner.close()

    monkeypatch.setattr(xmlfiles, "read_works", recording)
    async with Simulator(corpus, fast_sim_config()) as sim:
        outcome = await ingest_xml(crawler_config(sim.url, tmp_path, rows=10), asyncio.Event(), [folder])
    assert outcome.code == 0, outcome.message
    assert len(steps) == XML_FILES
    for path, record in steps.items():
        assert [kind for kind, _ in record].count("end") == 1, f"{path}: its reader was never finished"
        assert len(record) >= XML_RECORDS + 1
        threads = {thread for _, thread in record}
        assert len(threads) == 1, f"{path} was read or closed on {len(threads)} threads"
    assert outcome.figures["commits"] >= 3 * XML_FILES, "files were not read in several batches"
    assert "pages" not in _counters(tmp_path / "state.sqlite3"), "a batch of records from a file counted as a page of the API"
    _assert_exact(tmp_path / "events", corpus.expected)


def test_ingest_xml_always_exits_by_itself(xml_deposits, tmp_path):
    """Guards the same as above from outside: `crawler ingest-xml` on the 20 files (batches of
    10 records), ten times over, each into a fresh state file, two at a time, exits 0 every
    time, never killed by SIGABRT (without the one-thread reader about 45% of such runs
    aborted), each output exact."""
    corpus, folder = xml_deposits
    runs = 10
    sim = SimulatorThread(corpus, fast_sim_config())
    sim.start()
    try:
        results: list[tuple[int, str]] = []
        for first in range(0, runs, 2):
            procs = []
            for i in (first, first + 1):
                run = tmp_path / f"run-{i}"
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "crawler", "ingest-xml", str(folder), "--state", str(run / "state.sqlite3"),
                     "--out", str(run / "events"), "--ra-url", f"{sim.url}/ra",
                     "--batch", "10", "--parsers", "1", "--progress", "0", "--quiet"],
                    cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
            for proc in procs:
                try:
                    _, err = proc.communicate(timeout=120)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    _, err = proc.communicate()
                results.append((proc.returncode, err))
    finally:
        sim.stop()
    codes = [code for code, _ in results]
    assert codes == [0] * runs, f"exit codes {codes}; stderr of the first failure: " + next(
        (err for code, err in results if code), "")
    for i in range(runs):
        _assert_exact(tmp_path / f"run-{i}" / "events", corpus.expected)
