"""Shared fixtures: a generated corpus, the simulator over real TCP, crawler runs, output readers."""

from __future__ import annotations

import asyncio
import gzip
import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from functools import cache
from pathlib import Path

import fastjsonschema

import pytest

from crawler.config import Config
from crawler.simulator.app import PoolLimits, SimConfig

ROOT = Path(__file__).resolve().parents[1]
DOI_URL = "https://doi.org/"
EVENT_SCHEMA = ROOT / "docs" / "event.schema.json"

# Fast limits for tests: the crawler must still follow them (and the simulator counts any excess).
FAST_POOLS = {
    "public": PoolLimits(rate=20, interval_s=1.0, concurrency=2),
    "polite": PoolLimits(rate=40, interval_s=1.0, concurrency=4),
    "plus": PoolLimits(rate=80, interval_s=1.0, concurrency=8),
}


def fast_sim_config(**overrides) -> SimConfig:
    return SimConfig(pools=dict(FAST_POOLS), **overrides)


def crawler_config(url: str, tmp: Path, **overrides) -> Config:
    """A Config for in-process runs against the simulator: small pages, quick retries."""
    settings = dict(
        state=tmp / "state.sqlite3",
        out=tmp / "events",
        api_url=url,
        ra_url=f"{url}/ra",
        mailto="tests@example.org",
        rows=100,
        window_pages=3,
        parsers=1,
        retry_initial_s=0.01,
        retry_max_s=0.2,
        progress_s=0,
        trust_rate_headers=True,  # the fast pools advertise more than the published figures
    )
    settings.update(overrides)
    return Config(**settings)


def crawler_args(url: str, tmp: Path, *extra: str) -> list[str]:
    """Command line of a `crawler backfill` subprocess against the simulator."""
    return [
        sys.executable, "-m", "crawler", "backfill",
        "--api-url", url, "--ra-url", f"{url}/ra",
        "--state", str(tmp / "state.sqlite3"), "--out", str(tmp / "events"),
        "--mailto", "tests@example.org", "--rows", "100", "--window-pages", "3",
        "--parsers", "1", "--progress", "0", "--retry-initial", "0.01", "--retry-max", "0.2",
        "--trust-rate-headers", *extra,
    ]


def run_crawler(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def stop_once_logged(args: list[str], sig: int, words: str, log: Path, timeout: float = 60,
                     within: float = 20) -> tuple[int, str]:
    """A crawler subprocess sent `sig` once its log says `words` (polled from its stderr file,
    no sleep to guess by); its exit code and log, once it ended within `within` seconds."""
    with log.open("w") as err:
        proc = subprocess.Popen(args, cwd=ROOT, stdout=err, stderr=err, text=True)
    try:
        deadline = time.monotonic() + timeout
        while words not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None and words in log.read_text(), f"never logged {words!r}: {log.read_text()}"
        proc.send_signal(sig)
        try:
            code = proc.wait(timeout=within)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running {within} s after {signal.Signals(sig).name}") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, log.read_text()


@cache
def event_validator():
    """The Event's JSON Schema (docs/event.schema.json), compiled: jsonschema takes ~0.5 ms an
    event, too slow for every line the tests read; test_event_schema checks that the two agree."""
    return fastjsonschema.compile(json.loads(EVENT_SCHEMA.read_text()))


def read_events(out: Path) -> list[dict]:
    """Every event in the finished output files (part files are not output), each one checked
    against the Event's JSON Schema: a line of another shape fails the test that reads it."""
    validate = event_validator()
    events = []
    for path in sorted(out.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                event = json.loads(line)
                try:
                    validate(event)
                except fastjsonschema.JsonSchemaException as exc:
                    raise AssertionError(f"{path.name}:{number} does not match {EVENT_SCHEMA.name}: {exc}: {line}") from None
                events.append(event)
    return events


def event_key(event: dict) -> tuple[str, str, str]:
    return (event["subj_id"].removeprefix(DOI_URL), event["relation_type_id"], event["obj_id"].removeprefix(DOI_URL))


def committed_pages(state: Path) -> int:
    """Pages the state has committed (0 before it exists), read beside a live run."""
    try:
        con = sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=1)
        try:
            row = con.execute("SELECT value FROM counters WHERE name='pages'").fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return 0
    return row[0] if row else 0


def child_pids(pid: int) -> list[int]:
    """A process's children (listed per thread that started them)."""
    return [int(c) for task in Path(f"/proc/{pid}/task").glob("*/children") for c in task.read_text().split()]


def output_keys(out: Path) -> tuple[set[tuple[str, str, str]], Counter]:
    """(key set, keys seen more than once) of an output directory."""
    counts = Counter(event_key(e) for e in read_events(out))
    return set(counts), Counter({k: n for k, n in counts.items() if n > 1})


@pytest.fixture(autouse=True)
def _show_pending_tasks_before_the_timeout(request):
    """pytest-timeout prints the threads' stacks, which for an async test show only the event
    loop. A few seconds before it fires, print where every pending asyncio task is waiting."""
    timeout = request.config.getini("timeout")
    if not timeout:
        yield
        return

    def show() -> None:
        print(f"\n--- {request.node.nodeid}: pending asyncio tasks ---", file=sys.stderr)
        for task in list(asyncio.tasks._all_tasks):  # read from another thread: best effort
            if not task.done():
                task.print_stack(limit=12, file=sys.stderr)

    timer = threading.Timer(max(1.0, float(timeout) - 5), show)
    timer.daemon = True
    timer.start()
    yield
    timer.cancel()


@pytest.fixture(scope="session")
def small_corpus():
    from crawler.simulator.corpus import generate

    return generate(1500, seed=11)
