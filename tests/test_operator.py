"""The operator's view, driven as a user would: real `crawler` subprocesses against the simulator,
on a pseudo-terminal and on pipes, and the status/stats reports checked against known runs."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from crawler.cli import build_parser
from crawler.simulator.app import SimulatorThread
from crawler.simulator.corpus import generate
from tests.conftest import ROOT, crawler_args, fast_sim_config, run_crawler

ANSI = re.compile(r"\x1b\[")


@pytest.fixture(scope="module")
def sim():
    """A simulator slow enough that a backfill of 800 works takes a couple of seconds."""
    simulator = SimulatorThread(generate(800, seed=21), fast_sim_config(latency_s=0.1))
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture(scope="module")
def finished(sim, tmp_path_factory):
    """A completed backfill of the module's corpus: (its directory, the corpus)."""
    tmp = tmp_path_factory.mktemp("finished")
    done = run_crawler(crawler_args(sim.url, tmp))
    assert done.returncode == 0, done.stderr
    return tmp, sim.corpus


def _run_on_terminal(args: list[str], timeout: float = 60) -> tuple[int, str]:
    """Run with stdout and stderr on a pseudo-terminal; returns (exit code, everything shown)."""
    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "120", "LINES": "40", "TERM": "xterm-256color"}
    proc = subprocess.Popen(args, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    shown = bytearray()
    while True:
        ready, _, _ = select.select([master], [], [], timeout)
        if not ready:
            proc.kill()
            raise AssertionError("no output for too long")
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the terminal closed: the process has exited
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    return proc.wait(timeout=timeout), shown.decode("utf-8", "replace")


def test_a_terminal_gets_a_live_panel(sim, tmp_path):
    args = [a for a in crawler_args(sim.url, tmp_path) if a not in ("--progress", "0")]
    code, shown = _run_on_terminal(args)
    assert code == 0, shown
    assert ANSI.search(shown), "no terminal control sequences: the panel was not drawn live"
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown)
    works = len(sim.corpus.works)
    # The last frame stays on screen with the final figures.
    assert f"{works:,} of {works:,} planned" in text
    for label in ("windows", "events", "speed", "ETA", "API", "retries"):
        assert re.search(rf"^\s*{label}\s", text, re.MULTILINE), label
    assert "polite pool" in text


def test_without_a_terminal_progress_is_plain_lines(sim, tmp_path):
    args = [a for a in crawler_args(sim.url, tmp_path) if a not in ("--progress", "0")]
    done = run_crawler([*args, "--progress", "0.1"])
    assert done.returncode == 0, done.stderr
    assert not ANSI.search(done.stderr + done.stdout)
    lines = [line for line in done.stderr.splitlines() if "backfill: windows" in line]
    assert len(lines) >= 2, done.stderr
    pattern = re.compile(
        r"^\d\d:\d\d:\d\d backfill: windows \d+/\d+ done \(\d+ running\), [\d,]+ works, [\d,]+ events; "
        r"[\d.]+ pages/s, [\d,]+ works/s recent \([\d.]+, [\d,]+ average\); ETA .+; polite pool, .+; "
        r"retries \d+, 429s \d+$"
    )
    assert all(pattern.match(line) for line in lines), lines
    assert "complete" in done.stdout


def test_log_format_json_gives_one_object_per_line(sim, tmp_path):
    args = [a for a in crawler_args(sim.url, tmp_path) if a not in ("--progress", "0", "--mailto", "tests@example.org")]
    done = run_crawler([*args, "--progress", "0.1", "--log-format", "json"])
    assert done.returncode == 0, done.stderr
    entries = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    assert entries and all(set(e) >= {"time", "level", "logger", "message"} for e in entries)
    assert all(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", e["time"]) for e in entries)
    assert any("public pool" in e["message"] and e["level"] == "warning" for e in entries)  # no --mailto
    assert any("backfill: windows" in e["message"] for e in entries)


def test_quiet_prints_only_the_outcome(sim, tmp_path):
    args = [a for a in crawler_args(sim.url, tmp_path) if a not in ("--progress", "0")]
    done = run_crawler([*args, "--progress", "0.3", "--quiet"])
    assert done.returncode == 0
    assert done.stderr == ""
    assert done.stdout.startswith("crawler: backfill of ") and "complete" in done.stdout


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_crawler([sys.executable, "-m", "crawler", *args])


def test_status_as_json_and_as_a_table(finished):
    tmp, corpus = finished
    state = str(tmp / "state.sqlite3")
    report = json.loads(_cli("status", "--state", state, "--json").stdout)
    works, events = len(corpus.works), len(corpus.expected)
    backfill = report["backfill"]
    assert backfill["works"] == works == backfill["planned"] == report["totals"]["works"]
    assert report["totals"]["events"] == events == backfill["events"]
    assert backfill["windows"]["done"] > 1
    assert {s: n for s, n in backfill["windows"].items() if s != "done"} == dict.fromkeys(
        ("unsized", "pending", "running", "short", "failed"), 0)
    assert backfill["finished_at"] and report["short_windows"] == [] and report["last_errors"] == []
    assert report["update"]["high_water_mark"] == backfill["started_at"][:10]
    assert Path(report["out"]) == tmp / "events"

    table = _cli("status", "--state", state)
    assert table.returncode == 0
    text = table.stdout
    assert f"{works:,} of {works:,} planned" in text
    assert f"{events:,} written" in text
    assert f"{backfill['windows']['done']} done" in text
    assert "high-water mark" in text and backfill["started_at"][:10] in text


def test_stats_count_what_the_corpus_says(finished):
    tmp, corpus = finished
    report = json.loads(_cli("stats", "--state", str(tmp / "state.sqlite3"), "--json", "--top", "3").stdout)
    expected = corpus.expected
    assert report["events"] == len(expected)
    assert report["by_relation"] == dict(Counter(k[1] for k in expected))
    assert report["by_agency"] == dict(Counter(corpus.agencies[k[2].split("/")[0]] for k in expected))
    prefixes = Counter(k[0].split("/")[0] for k in expected)
    top = sorted(prefixes.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    assert list(report["top_subject_prefixes"].items()) == top
    assert report["subject_prefixes"] == len(prefixes)
    text = _cli("stats", "--state", str(tmp / "state.sqlite3")).stdout
    assert f"{len(expected):,} events" in text
    for name, count in Counter(k[1] for k in expected).items():
        assert re.search(rf"{re.escape(name)}\s+{count:,}\b", text)


def _documented_flags() -> list[str]:
    """Every flag the README's flag table documents."""
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| flag (backfill, update)"):]
    table = table[: table.index("\n\n")]
    return sorted(set(re.findall(r"`(--[a-z-]+|-[a-z])\b", table)))


def test_every_documented_flag_is_accepted():
    flags = _documented_flags()
    assert {"--mailto", "--plus-token", "--state", "--out", "--concurrency", "--log-format"} <= set(flags)
    values = {"--from": "2020-01-01", "--until": "2020-12-31", "--log-format": "json", "--mailto": "a@b.org",
              "--plus-token": "t", "--api-url": "http://127.0.0.1:9", "--ra-url": "http://127.0.0.1:9/ra",
              "--state": "s.sqlite3", "--out": "out", "--filter": "type:journal-article"}
    parser = build_parser()
    for command in ("backfill", "update"):
        for flag in flags:
            if flag in ("--from", "--until", "--plan-only") and command == "update":
                continue
            takes_value = flag not in ("-v", "--verbose", "-q", "--quiet", "--plan-only")
            argv = [command, flag] + ([values.get(flag, "2")] if takes_value else [])
            parser.parse_args(argv)  # SystemExit (a failure) if not accepted


@pytest.mark.parametrize("command", ["backfill", "update", "ingest-xml", "status", "stats", "demo"])
def test_every_command_has_help_with_an_example(command):
    done = _cli(command, "--help")
    assert done.returncode == 0
    assert "example" in done.stdout, done.stdout


def test_version():
    from crawler import __version__

    done = _cli("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"crawler {__version__}"


@pytest.mark.parametrize(
    "argv, code, words",
    [
        (["backfill", "--from", "2020-13-01"], 2, "expected a date as YYYY-MM-DD, got '2020-13-01'"),
        (["backfill", "--from", "2021-01-01", "--until", "2020-01-01"], 2, "--from 2021-01-01 is after --until 2020-01-01"),
        (["backfill", "--rows", "5000"], 2, "the API serves at most 1000 rows per page"),
        (["update", "--interval", "soon"], 2, "expected a duration such as 90s, 30m, 3h or 1d"),
        (["status", "--state", "no/such.sqlite3"], 2, "no state file at no/such.sqlite3"),
        (["stats", "--state", "no/such.sqlite3"], 2, "no state file at no/such.sqlite3"),
        (["ingest-xml", "no/such/dir"], 2, "no such file or directory: no/such/dir"),
        (["backfill", "--snapshot", ".", "--filter", "prefix:10.1016"], 2, "--filter chooses the API's works"),
        (["status", "--state", "no/such/dir/"], 2, "'no/such/dir/' names a folder; the state is a file: give e.g. "
                                                     "no/such/dir/state.sqlite3"),
    ],
)
def test_errors_are_one_clear_line_with_an_exit_code(argv, code, words):
    done = _cli(*argv)
    assert done.returncode == code
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert words in lines[-1]  # one line says what is wrong (after argparse's usage, if any)
    assert lines[-1].startswith("crawler")


def test_an_unreachable_api_is_one_line_that_says_what_to_do(tmp_path):
    import socket

    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    # By default an outage is waited out; --give-up-after bounds the wait, with its own code.
    done = run_crawler(crawler_args(url, tmp_path, "--quiet", "--give-up-after", "2s"), timeout=60)
    assert done.returncode == 6, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert "Traceback" not in done.stderr, done.stderr
    # --quiet keeps the warning that the outage began, then the one line that ends the run.
    assert len(lines) == 2 and "waiting for the API since" in lines[0], lines
    assert lines[-1].startswith("crawler: error: ") and f"cannot connect to 127.0.0.1:{port}" in lines[-1]
    assert "has not answered for more than 2 s" in lines[-1] and "run the same command again to resume" in lines[-1]
    verbose = run_crawler(crawler_args(url, tmp_path, "--verbose", "--give-up-after", "1s"), timeout=60)
    assert verbose.returncode == 6 and "Traceback" in verbose.stderr


def test_a_snapshot_folder_with_no_snapshot_file_is_refused_not_a_finished_snapshot(tmp_path):
    """An empty download folder (or one of notes only) used to end as a 'complete' backfill of
    0 records, exit 0, after which `update` said no backfill had run."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "README.txt").write_text("downloaded from the torrent\n")
    for folder in ("empty", "notes"):
        done = _cli("backfill", "--snapshot", str(tmp_path / folder), "--state", str(tmp_path / "s.sqlite3"),
                    "--ra-url", "http://127.0.0.1:9/ra")
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr and f"no snapshot files in {tmp_path / folder}" in lines[-1]
