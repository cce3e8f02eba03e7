"""Real `crawler backfill` subprocesses killed with SIGKILL (and stopped with SIGINT/SIGTERM)
at seeded random moments, resumed, and checked against the ground truth."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from crawler.simulator.app import Faults, Outage, SimulatorThread
from tests.conftest import (ROOT, committed_pages, crawler_args, fast_sim_config, output_keys, run_crawler,
                            stop_once_logged)


@pytest.fixture(scope="module")
def slow_sim(request):
    """A simulator slow enough that a run lasts a few seconds and kills land mid-run."""
    from crawler.simulator.corpus import generate

    corpus = generate(3000, seed=5)
    sim = SimulatorThread(corpus, fast_sim_config(latency_s=0.4, latency_per_row_s=0.001))
    sim.start()
    yield sim
    sim.stop()


def _wait_for_pages(state, n: int, timeout: float = 30.0) -> None:
    """Block until the crawler has committed n pages (polling the state file read-only)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if committed_pages(state) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"the crawler did not commit {n} pages within {timeout} s")


def _kill_after(args, delay: float, sig: int) -> int:
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(sig)
    proc.wait(timeout=40)
    return proc.returncode


def test_sigkill_repeatedly_then_resume_gives_exact_output(slow_sim, tmp_path):
    rng = random.Random(20261123)
    args = crawler_args(slow_sim.url, tmp_path)
    kills = 0
    for _ in range(4):
        if _kill_after(args, rng.uniform(0.8, 3.0), signal.SIGKILL) == -signal.SIGKILL:
            kills += 1
    assert kills >= 2, "the runs ended before the kills: make the simulator slower"
    done = run_crawler(args)
    assert done.returncode == 0, done.stderr
    keys, repeated = output_keys(tmp_path / "events")
    assert not repeated
    assert keys == slow_sim.corpus.expected
    assert not list((tmp_path / "events").glob("*.part"))


def _descendants(pid: int) -> set[int]:
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        for children in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                kids = {int(c) for c in children.read_text().split()}
            except OSError:
                continue
            todo += kids - found
            found |= kids
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_parser_processes_do_not_outlive_a_killed_crawler(slow_sim, tmp_path):
    """SIGKILL (or the OOM killer) gives the main process no chance to stop its parsers:
    they must notice and go, not linger for ever holding memory."""
    proc = subprocess.Popen(crawler_args(slow_sim.url, tmp_path), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        _wait_for_pages(tmp_path / "state.sqlite3", 1)
        helpers = _descendants(proc.pid)
        assert helpers, "the crawler has no parser processes to watch"
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 15
    while any(_alive(pid) for pid in helpers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in helpers if _alive(pid)]


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_cleanly_and_resumes(slow_sim, tmp_path, sig, code):
    args = crawler_args(slow_sim.url, tmp_path)
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_pages(tmp_path / "state.sqlite3", 2)
    began = time.monotonic()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - began < 30
    assert proc.returncode == code, err
    assert "run the same command again to resume" in err
    assert not list((tmp_path / "events").glob("*.part")), "a clean stop leaves no partial file"
    done = run_crawler(args)
    assert done.returncode == 0, done.stderr
    keys, repeated = output_keys(tmp_path / "events")
    assert not repeated and keys == slow_sim.corpus.expected


def test_a_second_ctrl_c_stops_at_once_and_says_how_to_resume(slow_sim, tmp_path):
    """The second signal abandons the pages in flight (a clean stop waits ~0.4 s for them here):
    it says so, the run ends with how to resume, and the rerun loses and repeats nothing."""
    args = crawler_args(slow_sim.url, tmp_path)
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_pages(tmp_path / "state.sqlite3", 2)
    proc.send_signal(signal.SIGINT)
    first = ""
    while "stopping (committing" not in first:  # the first one handled (two at once are one signal)
        line = proc.stderr.readline()  # type: ignore[union-attr]
        assert line, f"the run ended before it announced the stop: {first}"
        first += line
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=30)
    err = first + rest
    assert proc.returncode == 130, err
    assert err.count("SIGINT: stopping (committing what is in flight") == 1, err
    assert "SIGINT again: stopping at once, what is in flight abandoned" in err, err
    assert "Traceback" not in err and err.rstrip().endswith("run the same command again to resume"), err
    done = run_crawler(args)
    assert done.returncode == 0, done.stderr
    keys, repeated = output_keys(tmp_path / "events")
    assert not repeated and keys == slow_sim.corpus.expected


@pytest.mark.parametrize("sig, code, after", [(signal.SIGINT, 130, 1), (signal.SIGTERM, 143, 1),
                                              (signal.SIGINT, 130, 12)])
def test_a_stop_while_the_api_fails_ends_the_run_at_once(small_corpus, tmp_path, sig, code, after):
    """Every /works request answers 503 from the first (the backfill's first look-up) or from
    the 12th (windows scrolling): retried until the first signal, which ends the run within
    seconds as a clean stop; a rerun with the API back is exact."""
    failing = SimulatorThread(small_corpus, fast_sim_config(faults=Faults(outages=(Outage(after, 3600),))))
    healthy = SimulatorThread(small_corpus, fast_sim_config())
    urls = failing.start(), healthy.start()
    try:
        got, err = stop_once_logged(crawler_args(urls[0], tmp_path), sig, "retrying after:", tmp_path / "stopped.log")
        assert got == code and "stopped cleanly" in err and "run the same command again to resume" in err, err
        assert "Traceback" not in err and "503" in err, err
        done = run_crawler(crawler_args(urls[1], tmp_path))
        assert done.returncode == 0, done.stderr
    finally:
        failing.stop()
        healthy.stop()
    keys, repeated = output_keys(tmp_path / "events")
    assert not repeated and keys == small_corpus.expected


def test_second_crawler_on_same_state_is_refused(slow_sim, tmp_path):
    args = crawler_args(slow_sim.url, tmp_path)
    first = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_pages(tmp_path / "state.sqlite3", 1)
        second = run_crawler(args, timeout=30)
        assert second.returncode == 2
        assert "another crawler is using" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        first.kill()
        first.wait()


def _fork_server_of(pid: int) -> int | None:
    for child in _descendants(pid):
        try:
            if b"forkserver" in Path(f"/proc/{child}/cmdline").read_bytes():
                return child
        except OSError:
            pass
    return None


@pytest.mark.parametrize("source", ["api", "snapshot"])
def test_ctrl_c_while_the_parser_processes_start_stops_cleanly(slow_sim, tmp_path, source):
    """A terminal's Ctrl-C goes to the whole process group. Sent as soon as the fork server
    exists (it then imports the parser modules for ~0.3 s), it used to kill the server with a
    traceback and end a snapshot's run with `EOFError`, exit 1, instead of a clean stop (exit
    130, the message too if the job had begun)."""
    from crawler.simulator.snapshot import write_snapshot

    extra: list[str] = []
    if source == "snapshot":
        write_snapshot(slow_sim.corpus.works[:500], tmp_path / "snap", "jsonl")
        extra = ["--snapshot", str(tmp_path / "snap")]
    args = crawler_args(slow_sim.url, tmp_path, *extra)
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while _fork_server_of(proc.pid) is None and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert proc.poll() is None, "the crawler ended before its parser processes started"
        server = _fork_server_of(proc.pid)
        ignored = next(int(line.split()[1], 16) for line in Path(f"/proc/{server}/status").read_text().splitlines()
                       if line.startswith("SigIgn:"))
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # From its first moment, not once its imports are done (read from the kernel).
    assert ignored & (1 << (signal.SIGINT - 1)) and ignored & (1 << (signal.SIGTERM - 1)), hex(ignored)
    assert "Traceback" not in err and "EOFError" not in err, err
    assert proc.returncode == 130, err
