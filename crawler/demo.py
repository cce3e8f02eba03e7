"""`crawler demo`: the bundled simulator on a free loopback port, a real backfill, a summary.

It ends with the commands to look further, as they can be typed where the demo ran: after
`make demo` the `crawler` script is in `.venv/bin`, not on the PATH.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

from crawler.config import Config
from crawler.errors import CrawlerError, UsageError
from crawler.output import MARKER
from crawler.events import CROSSREF_TOKEN


def start_simulator(works: int, seed: int, *extra: str) -> tuple[subprocess.Popen[str], str]:
    """`python -m crawler.simulator` in its own process; returns it and its base URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "crawler.simulator", "--works", str(works), "--seed", str(seed), "--port", "0", *extra],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        raise CrawlerError(f"the simulator did not start (it said {line!r})")
    return proc, line.split("listening on ", 1)[1].strip()


def simulator_stats(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/_simulator/stats", timeout=10) as resp:
        return json.load(resp)


def summarize(out: Path) -> tuple[int, Counter[str], Counter[str]]:
    """Events, by relation type and by object agency, read back from the output files."""
    by_relation: Counter[str] = Counter()
    by_agent: Counter[str] = Counter()
    total = 0
    for path in sorted(out.glob("*.jsonl.gz")):
        with gzip.open(path, "rt") as handle:
            for line in handle:
                event = json.loads(line)
                total += 1
                by_relation[event["relation_type_id"]] += 1
                by_agent["Crossref" if event["source_token"] == CROSSREF_TOKEN else "other agencies"] += 1
    return total, by_relation, by_agent


DEMO_MARK = ".crawler-demo"  # in a folder the demo made: a later demo may empty it
_STATE = "crawler.sqlite3"


def prepare_dir(directory: Path) -> None:
    """An empty folder for the demo: a new one, an empty one, or one an earlier demo made, of
    which only the demo's own files are removed. A non-empty folder it did not make is refused."""
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"--dir {directory} is a file, not a folder")
    if directory.exists() and any(directory.iterdir()) and not (directory / DEMO_MARK).exists():
        raise UsageError(
            f"--dir {directory} is not empty and was not made by `crawler demo`; "
            "give a new or empty folder (the demo replaces what it writes there)"
        )
    for name in (_STATE, f"{_STATE}-wal", f"{_STATE}-shm", f"{_STATE}.lock"):
        (directory / name).unlink(missing_ok=True)
    events = directory / "events"
    if events.is_dir():
        for path in events.iterdir():
            if path.name.startswith("events-") or path.name == MARKER:
                path.unlink()
        if not any(events.iterdir()):
            events.rmdir()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / DEMO_MARK).write_text("made by `crawler demo`: a later demo empties it of its own files\n")


def crawler_command() -> str:
    """How to run this crawler from the current folder: `crawler` when the PATH finds this
    one, else the script beside this Python (`.venv/bin/crawler`), else `python -m crawler`."""
    here = Path(sys.executable).parent / "crawler"
    found = shutil.which("crawler")
    if found and (not here.exists() or Path(found).resolve() == here.resolve()):
        return "crawler"
    if here.exists():
        relative = os.path.relpath(here)
        return relative if not relative.startswith("..") else str(here)
    return f"{sys.executable} -m crawler"


def run_demo(works: int, seed: int, directory: Path, live: bool = False, quiet: bool = False) -> int:
    """The demo's own lines are for a person watching; `quiet` keeps only its result line
    (errors still go to stderr)."""
    from crawler.cli import run_with_signals
    from crawler.jobs import backfill

    def say(line: str) -> None:
        if not quiet:
            print(f"demo: {line}", flush=True)

    prepare_dir(directory)
    say(f"generating {works:,} works (seed {seed}) and starting the simulator ...")
    proc, url = start_simulator(works, seed)
    try:
        config = Config(
            state=directory / _STATE,
            out=directory / "events",
            api_url=url,
            ra_url=f"{url}/ra",
            mailto="demo@example.org",
            window_pages=4,  # a small corpus still gets enough windows to fill the pool
            progress_s=0 if quiet else 2.0,
            live=live,
        )
        say(f"simulator at {url} (polite pool: 3 requests/s, 3 concurrent); backfilling ...")
        started = time.monotonic()
        outcome, signalled = run_with_signals(lambda stop: backfill(config, stop))
        elapsed = time.monotonic() - started
        served = simulator_stats(url)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    if signalled is not None:
        return signalled
    assert outcome is not None
    print(f"demo: {outcome.message}", file=sys.stderr if outcome.code else sys.stdout)  # type: ignore[attr-defined]
    total, by_relation, by_agent = summarize(directory / "events")
    say(f"{total:,} events in {elapsed:.1f} s; the simulator answered {served['requests']:,} "
        f"requests and counted {sum(served['over_limit'].values())} over its limits"
        + (f" ({served['over_limit_why']})" if served["over_limit_why"] else ""))
    say("by relation type: " + ", ".join(f"{k} {v:,}" for k, v in by_relation.most_common()))
    say("by object agency: " + ", ".join(f"{k} {v:,}" for k, v in by_agent.most_common()))
    state, command = directory / _STATE, crawler_command()
    say(f"output in {directory / 'events'}; state in {state}. Look further with:")
    for follow_up in (f"status --state {state}", f"status --windows --state {state}", f"stats --state {state}"):
        say(f"  {command} {follow_up}")
    return outcome.code  # type: ignore[attr-defined]


