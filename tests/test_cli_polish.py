"""Issue 21, driven as a user would: what a newcomer tripped over and what the operator of a
days-long crawl expects. Real `crawler` subprocesses against the simulator over TCP, read
through pipes (plain and JSON logs) and a pseudo-terminal (the live panel)."""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from crawler.errors import EXIT_CODES
from crawler.simulator.app import SimulatorThread
from crawler.simulator.corpus import generate
from crawler.simulator.faults import Faults
from crawler.simulator.xmlrender import render_deposit
from tests.conftest import ROOT, crawler_args, fast_sim_config, output_keys, run_crawler
from tests.test_operator import _run_on_terminal

DOI = "https://doi.org/"
FROM = ["--from", "2000-01-01"]


@pytest.fixture(scope="module")
def sim():
    """A simulator slow enough (0.15 s a request) that a backfill of 800 works gives several
    progress lines at --progress 0.1."""
    simulator = SimulatorThread(generate(800, seed=21), fast_sim_config(latency_s=0.15))
    simulator.start()
    yield simulator
    simulator.stop()


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return run_crawler([sys.executable, "-m", "crawler", *args], timeout=timeout)


def _status(state: Path, *extra: str):  # type: ignore[no-untyped-def]
    done = _cli("status", "--state", str(state), "--json", *extra)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _flags(help_text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", help_text))


# -- 1. each command shows the flags it uses --------------------------------------------------
def test_each_command_lists_only_the_flags_it_uses():
    api_only = {"--mailto", "--api-url", "--plus-token", "--rows", "--concurrency", "--window-pages", "--filter"}
    helps = {c: _cli(c, "--help") for c in ("backfill", "update", "ingest-xml", "status", "stats", "demo")}
    assert all(done.returncode == 0 for done in helps.values())
    flags = {c: _flags(done.stdout) for c, done in helps.items()}
    assert api_only <= flags["backfill"] and api_only <= flags["update"]
    assert not api_only & flags["ingest-xml"], api_only & flags["ingest-xml"]
    assert {"--state", "--out", "--ra-url", "--parsers", "--batch", "-q", "--log-format"} <= flags["ingest-xml"]
    for command in ("status", "stats"):
        assert {"-q", "--quiet", "--progress", "--log-format", "--out", "--mailto"}.isdisjoint(flags[command]), command
        assert "--state" in flags[command]
    assert "--windows" in flags["status"]
    assert {"--mailto", "--state", "--api-url"}.isdisjoint(flags["demo"]) and {"-q", "--works"} <= flags["demo"]


def test_parsers_default_to_a_process_per_core_but_the_main_ones_and_for_a_snapshot_one_per_core(tmp_path):
    from crawler.cli import build_parser, config_from

    cores = os.cpu_count() or 2
    parse = build_parser().parse_args
    assert config_from(parse(["backfill"])).parsers == max(1, cores - 1)
    assert config_from(parse(["update"])).parsers == max(1, cores - 1)
    assert config_from(parse(["backfill", "--snapshot", str(tmp_path)])).parsers == cores
    assert config_from(parse(["backfill", "--snapshot", str(tmp_path), "--parsers", "3"])).parsers == 3
    assert config_from(parse(["backfill", "--parsers", "5"])).parsers == 5


@pytest.mark.parametrize("argv, command", [
    (["backfill", "--bogus"], "backfill"),
    (["status", "--json", "--bogus"], "status"),
    (["ingest-xml", "some.xml", "--mailto", "a@b.org"], "ingest-xml"),
    (["status", "--quiet"], "status"),
])
def test_an_unknown_flag_is_its_commands_one_line_error(argv, command):
    done = _cli(*argv)
    assert done.returncode == 2
    assert done.stdout == ""
    (line,) = _lines(done.stderr)
    assert line.startswith(f"crawler {command}: error: unrecognized arguments: {argv[-1 if argv[-1].startswith('-') else -2]}")
    assert f"crawler {command} --help" in line


# -- 2. the demo: commands as they can be typed, -q ----------------------------------------
def _follow_ups(stdout: str) -> list[str]:
    return [line.removeprefix("demo:").strip() for line in stdout.splitlines() if re.match(r"demo:\s{2,}\S", line)]


@pytest.mark.parametrize("on_path", [False, True], ids=["crawler-not-on-PATH", "crawler-on-PATH"])
def test_the_demo_ends_with_commands_that_work_as_printed(tmp_path, on_path):
    bin_dir = str(Path(sys.executable).parent)
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != bin_dir and not Path(p, "crawler").exists()]
    if on_path:
        path.insert(0, bin_dir)
    # PYTHONPATH: the printed script runs this tree's crawler even where the installed one is another's.
    env = {**os.environ, "PATH": os.pathsep.join(path), "PYTHONPATH": str(ROOT)}
    folder = tmp_path / "demo"
    done = subprocess.run([sys.executable, "-m", "crawler", "demo", "--works", "300", "--dir", str(folder)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    commands = _follow_ups(done.stdout)
    assert len(commands) == 3 and all(str(folder / "crawler.sqlite3") in c for c in commands), done.stdout
    if on_path and (Path(bin_dir) / "crawler").exists():
        assert all(c.startswith("crawler ") for c in commands), commands
    else:
        assert not any(c.startswith("crawler ") for c in commands), "`crawler` is not on this PATH"
    for command in commands:  # each, typed in the folder the demo ran in, works
        ran = subprocess.run(shlex.split(command), cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert ran.returncode == 0, (command, ran.stderr)
    assert "300 of 300 planned" in subprocess.run(shlex.split(commands[0]), cwd=ROOT, env=env, capture_output=True,
                                                  text=True, timeout=60).stdout


def test_the_demo_quiet_prints_only_its_result(tmp_path):
    done = _cli("demo", "--works", "300", "--dir", str(tmp_path / "demo"), "-q", timeout=180)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    (line,) = _lines(done.stdout)
    assert line.startswith("demo: backfill of ") and "complete" in line


# -- 3 and 4. progress figures: plain lines, JSON fields, the live panel ------------------------
def _progress_args(sim, tmp: Path, *extra: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [a for a in crawler_args(sim.url, tmp, *FROM, *extra) if a not in ("--progress", "0")]


def test_json_progress_carries_figures_that_make_sense(sim, tmp_path):
    done = run_crawler([*_progress_args(sim, tmp_path), "--progress", "0.1", "--log-format", "json"])
    assert done.returncode == 0, done.stderr
    entries = [json.loads(line) for line in _lines(done.stderr)]
    progress = [e for e in entries if "works_per_s" in e]
    assert len(progress) >= 3, entries
    fields = {"job", "windows_done", "windows_total", "works", "planned", "events", "pages_per_s", "works_per_s",
              "avg_pages_per_s", "avg_works_per_s", "eta_s", "elapsed_s", "retries", "throttled", "limits"}
    for entry in progress:
        assert fields <= set(entry), fields - set(entry)
        assert f"{entry['works']:,} works, {entry['events']:,} events" in entry["message"]  # the same figures
        if entry["works"]:  # something was committed within the last minute: the recent speed shows it
            assert entry["pages_per_s"] > 0 and entry["works_per_s"] > 0, entry
        if entry["windows_done"] < entry["windows_total"]:  # not done: never "0 s"
            assert entry["eta_s"] is None or entry["eta_s"] >= 1, entry
            assert "ETA 0 s" not in entry["message"]
    assert any(e["works"] and e["windows_done"] < e["windows_total"] for e in progress), "no line mid-run"
    # The last word: one JSON object, with this run's figures.
    (summary,) = [json.loads(line) for line in _lines(done.stdout)]
    works, events = len(sim.corpus.works), len(sim.corpus.expected)
    assert summary["outcome"] == 0 and summary["level"] == "info" and "complete" in summary["message"]
    assert summary["works"] == works and summary["events"] == events == summary["events_in_state"]
    assert summary["pages"] >= math.ceil(works / 100) and summary["elapsed_s"] > 0
    # elapsed_s is rounded to 0.1 s: for a run of a second or so that alone moves the ratio by 5%.
    elapsed = summary["elapsed_s"]
    assert works / (elapsed + 0.05) * 0.95 <= summary["works_per_s"] <= works / max(elapsed - 0.05, 0.01) * 1.05


def test_plain_progress_never_reads_zero_speed_after_work_or_eta_zero_before_the_end(sim, tmp_path):
    done = run_crawler([*_progress_args(sim, tmp_path), "--progress", "0.1"])
    assert done.returncode == 0, done.stderr
    pattern = re.compile(r"windows (\d+)/(\d+) done .*?, ([\d,]+) works, [\d,]+ events; ([\d.]+) pages/s, ([\d,]+) works/s "
                         r"recent .*; ETA ([^;]+);")
    lines = [m for m in map(pattern.search, done.stderr.splitlines()) if m]
    assert len(lines) >= 3, done.stderr
    for m in lines:
        done_windows, total, works = int(m[1]), int(m[2]), int(m[3].replace(",", ""))
        if works:
            assert float(m[4]) > 0 and int(m[5].replace(",", "")) > 0, m[0]
        if done_windows < total:
            assert m[6] != "0 s", m[0]


def test_the_live_panel_shows_elapsed_time_state_and_output(sim, tmp_path):
    code, shown = _run_on_terminal(_progress_args(sim, tmp_path))
    assert code == 0, shown
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown)
    assert re.search(r"^\s*elapsed\s+\d+ (s|min)\b", text, re.M), text[-2000:]
    assert re.search(rf"^\s*state\s+{re.escape(str(tmp_path / 'state.sqlite3'))}\s*$", text, re.M), text[-2000:]
    assert re.search(rf"^\s*output\s+{re.escape(str(tmp_path / 'events'))}\s*$", text, re.M), text[-2000:]


# -- 5. figures after update and ingest-xml ---------------------------------------------------
def test_update_ends_with_this_runs_figures_and_the_states_total(sim, tmp_path):
    assert run_crawler(crawler_args(sim.url, tmp_path, *FROM)).returncode == 0
    args = [a if a != "backfill" else "update" for a in crawler_args(sim.url, tmp_path)]
    done = run_crawler(args)
    assert done.returncode == 0, done.stderr
    in_state = len(sim.corpus.expected)
    (line,) = _lines(done.stdout)
    assert re.search(rf"\b0 works and 0 new events this run; {in_state:,} events in the state in all\b", line), line
    summary = json.loads(_lines(run_crawler([*args, "--log-format", "json"]).stdout)[0])
    assert summary["events_in_state"] == in_state and summary["works"] == 0 and summary["outcome"] == 0


@pytest.mark.parametrize("files", [1, 3])
def test_status_after_ingest_xml_counts_files_and_records(sim, tmp_path, files):
    folder = tmp_path / "xml"
    folder.mkdir()
    works = sim.corpus.works[: files * 10]
    for i in range(files):
        (folder / f"deposit-{i}.xml").write_bytes(render_deposit(works[i * 10: (i + 1) * 10], batch_id=f"b{i}"))
    state = tmp_path / "state.sqlite3"
    done = _cli("ingest-xml", str(folder), "--state", str(state), "--ra-url", f"{sim.url}/ra", "--parsers", "1",
                "--progress", "0", "--batch", "4")
    assert done.returncode == 0, done.stderr
    noun = "file" if files == 1 else "files"
    assert f"ingested {files} {noun}, {files * 10} records, " in done.stdout, done.stdout
    report = _status(state)
    assert report["files"] == {"units": files, "done": files, "failed": 0, "records": files * 10, "problems": 0}
    assert report["totals"]["pages"] == 0
    table = _cli("status", "--state", str(state)).stdout
    assert re.search(rf"^\s*files\s+{files} {noun} read \({files} done\), {files * 10} records\s*$", table, re.M), table
    assert not re.search(r"^\s*requests\s", table, re.M), "no page of the API was asked for"
    assert not re.search(r"\b1 (records|files|works|events|pages)\b", table), table


# -- 6. exit codes ---------------------------------------------------------------------------
def test_every_exit_code_is_documented_in_the_readme_and_in_help():
    readme = (ROOT / "README.md").read_text()
    table = dict(re.findall(r"^\| (\d+) \| (.+?) \|$", readme, re.M))
    assert {int(code): meaning for code, meaning in table.items()} == EXIT_CODES
    shown = _cli("--help").stdout
    for code, meaning in EXIT_CODES.items():
        assert re.search(rf"^\s+{code}\s+{re.escape(meaning[:40])}", shown, re.M), code
    assert EXIT_CODES[6] != EXIT_CODES[1] and "reached" in EXIT_CODES[6]  # the unreachable API has its own code


# -- 7. doubtful flags -----------------------------------------------------------------------
def test_a_doubtful_mailto_is_warned_and_a_future_until_is_cut_to_today(sim, tmp_path):
    args = [a if a != "tests@example.org" else "not-an-email" for a in crawler_args(sim.url, tmp_path, *FROM)]
    done = run_crawler([*args, "--until", "2999-12-31"])
    today = datetime.now(timezone.utc).date().isoformat()
    assert done.returncode == 0, done.stderr
    assert re.search(r"--mailto 'not-an-email' does not look like an e-mail address", done.stderr), done.stderr
    assert re.search(rf"--until 2999-12-31 is in the future: crawling up to today, {today}", done.stderr), done.stderr
    assert _status(tmp_path / "state.sqlite3")["backfill"]["until"] == today
    refused = _cli("backfill", "--state", str(tmp_path / "other.sqlite3"), "--api-url", sim.url, "--from", "2999-01-01")
    assert refused.returncode == 2 and "--from 2999-01-01 is in the future" in _lines(refused.stderr)[-1]
    assert not (tmp_path / "other.sqlite3").exists()


# -- 8. --filter -------------------------------------------------------------------------------
def test_a_filtered_backfill_emits_only_the_matching_works_links_and_keeps_its_filter(sim, tmp_path):
    articles = {w["DOI"].lower() for w in sim.corpus.works if w.get("type") == "journal-article"}
    expected = {key for key in sim.corpus.expected if key[0] in articles}
    assert 0 < len(expected) < len(sim.corpus.expected)
    done = run_crawler(crawler_args(sim.url, tmp_path, *FROM, "--filter", "type:journal-article"))
    assert done.returncode == 0, done.stderr
    keys, repeated = output_keys(tmp_path / "events")
    assert keys == expected and not repeated
    report = _status(tmp_path / "state.sqlite3")
    assert report["backfill"]["filter"] == "type:journal-article"
    assert all(w["filter"].startswith("type:journal-article") for w in _status(tmp_path / "state.sqlite3", "--windows"))
    assert "filter type:journal-article" in _cli("status", "--state", str(tmp_path / "state.sqlite3")).stdout
    other = run_crawler(crawler_args(sim.url, tmp_path, *FROM, "--filter", "prefix:10.1101"))
    assert other.returncode == 2
    line = _lines(other.stderr)[-1]
    assert "type:journal-article" in line and "prefix:10.1101" in line and "another --state" in line, line
    unscoped = run_crawler(crawler_args(sim.url, tmp_path, *FROM))
    assert unscoped.returncode == 2 and "type:journal-article" in _lines(unscoped.stderr)[-1]


@pytest.mark.parametrize("value", ["type", "type:", ":x", "Type:x", "type:a,,member:1", "from-index-date:2020"])
def test_a_filter_of_the_wrong_shape_is_refused(tmp_path, value):
    done = _cli("backfill", "--state", str(tmp_path / "s.sqlite3"), "--filter", value)
    assert done.returncode == 2
    (line,) = _lines(done.stderr)
    assert line.startswith("crawler backfill: error: argument --filter:") and repr(value) in line
    assert list(tmp_path.iterdir()) == []


# -- 9 and 11. status --windows, and where the time went -------------------------------------
def test_status_windows_lists_the_short_one_first(tmp_path):
    corpus = generate(600, seed=23)
    with_links = sorted({subject for subject, _, _ in corpus.expected})
    hidden = with_links[len(with_links) // 2]
    work = next(w for w in corpus.works if w["DOI"].lower() == hidden)
    day = work["created"]["date-time"][:10]
    sim = SimulatorThread(corpus, fast_sim_config(faults=Faults(hidden_dois=frozenset({work["DOI"]}))))
    sim.start()
    try:
        done = run_crawler(crawler_args(sim.url, tmp_path, *FROM))
    finally:
        sim.stop()
    assert done.returncode == 1, done.stderr
    state = tmp_path / "state.sqlite3"
    windows = _status(state, "--windows")
    first, rest = windows[0], windows[1:]
    assert first["status"] == "short" and first["start"] <= day <= first["end"], first
    assert first["attempts"] >= 1 and first["works"] == first["total"] - 1
    assert rest and {w["status"] for w in rest} == {"done"}
    assert sum(w["works"] for w in windows) == len(corpus.works) - 1
    table = _cli("status", "--state", str(state), "--windows").stdout
    rows = [line for line in table.splitlines() if re.search(r"\d{4}-\d\d-\d\d\.\.", line)]
    assert len(rows) == len(windows) and "short" in rows[0] and all("done" in row for row in rows[1:])


def test_status_says_where_the_time_went(tmp_path):
    """429s on a share of requests: status gives the run's elapsed time, speeds, and retries and
    429s per hour, consistent with the counts and with the wall time the test measured."""
    corpus = generate(600, seed=29)
    sim = SimulatorThread(corpus, fast_sim_config(faults=Faults(seed=3, error_rate=0.2, error_kinds=("429", "500"))))
    sim.start()
    try:
        began = time.monotonic()
        done = run_crawler(crawler_args(sim.url, tmp_path, *FROM))
        wall = time.monotonic() - began
    finally:
        sim.stop()
    assert done.returncode == 0, done.stderr
    run = _status(tmp_path / "state.sqlite3")["last_run"]
    assert run["works"] == len(corpus.works) and run["events"] == len(corpus.expected) and not run["running"]
    assert 0 < run["elapsed_s"] <= wall
    assert run["pages_per_s"] >= run["pages"] / wall and run["works_per_s"] >= len(corpus.works) / wall
    assert run["429s"] > 0 and run["retries"] >= run["429s"]
    assert run["429s_per_h"] == pytest.approx(run["429s"] * 3600 / run["elapsed_s"], rel=0.02)
    assert run["retries_per_h"] == pytest.approx(run["retries"] * 3600 / run["elapsed_s"], rel=0.02)
    table = _cli("status", "--state", str(tmp_path / "state.sqlite3")).stdout
    assert re.search(r"^\s*last run\s+started \S+, \d+ (s|min): 600 works, [\d,]+ new events, \d+ pages", table, re.M), table
    assert re.search(r"^\s*speed\s+[\d.]+ pages/s, [\d,]+ works/s over the run; [\d,.]+ retries/h, [\d,.]+ 429s/h", table, re.M)
