"""`crawler backfill --snapshot`: snapshot files written by the simulator from its corpus, read into
events, checked against the links the corpus generator recorded (never the crawler's extraction):
every format and a mix of them exactly once, a SIGKILL then a rerun, a snapshot then an update that
asks only for what changed since the snapshot's currency, bad input reported and read around, and
never a /works request."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import logging
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tarfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from isal import igzip

from crawler.errors import StateError, UsageError
from crawler.jobs import backfill, backfill_snapshot, update
from crawler.simulator.app import Faults, Outage, Simulator, SimulatorThread
from crawler.simulator.corpus import Corpus, generate
from crawler.simulator.snapshot import FORMATS, write_snapshot
from crawler.sources.snapshots import PROBLEMS_SHOWN
from crawler.status import status_report
from tests.conftest import ROOT, child_pids, crawler_config, fast_sim_config, output_keys, stop_once_logged


def _currency(works: list[dict]) -> str:
    """The latest `indexed` date-time of the corpus' works, from the dicts themselves."""
    return max(w["indexed"]["date-time"] for w in works)


def _expected_of(corpus: Corpus, dois: set[str]) -> set[tuple[str, str, str]]:
    """The links the generator recorded for these subjects."""
    return {e.key for doi in dois for e in corpus.entries[doi] if e.emits and e.key}


def _units(state: Path) -> dict[str, tuple[int, int, int, int]]:
    if not state.exists():
        return {}
    con = sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=5)
    try:
        return {k: (r, p, d, f) for k, r, p, d, f in con.execute("SELECT key, records, problems, done, failed FROM units")}
    except sqlite3.DatabaseError:  # not created yet
        return {}
    finally:
        con.close()


def _table_text(report: dict) -> str:
    from rich.console import Console

    from crawler.status import status_table

    console = Console(width=200, record=True, file=io.StringIO())
    console.print(status_table(report))
    return console.export_text()


def _meta(state: Path) -> dict[str, str]:
    con = sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=5)
    try:
        return dict(con.execute("SELECT key, value FROM meta"))
    finally:
        con.close()


def _args(url: str, tmp: Path, *paths: Path, rows: int = 50, parsers: int = 2) -> list[str]:
    """A `crawler backfill --snapshot` subprocess; the API URL is a closed port: it must not be asked."""
    return [sys.executable, "-m", "crawler", "backfill", "--snapshot", *map(str, paths),
            "--state", str(tmp / "state.sqlite3"), "--out", str(tmp / "events"),
            "--api-url", "http://127.0.0.1:9", "--ra-url", f"{url}/ra",
            "--rows", str(rows), "--parsers", str(parsers), "--progress", "0"]


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=ROOT)


async def _stopped_after(config, paths: list[Path], records: int):  # type: ignore[no-untyped-def]
    """`backfill_snapshot` of `paths` stopped (as by Ctrl-C) once `records` are committed."""
    stop = asyncio.Event()
    run = asyncio.create_task(backfill_snapshot(config, stop, paths))
    while not run.done() and sum(r for r, *_ in _units(config.state).values()) < records:
        await asyncio.sleep(0.01)
    stop.set()
    return await run


def _records_this_run(message: str) -> int:
    return int(re.search(r"([\d,]+) records? this run", message).group(1).replace(",", ""))


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return generate(700, seed=61)


# -- each format, and a mix, exactly once, without /works ---------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
async def test_each_format_gives_exactly_the_corpus_links(tmp_path, corpus, fmt):
    paths = write_snapshot(corpus.works, tmp_path / "snap", fmt, records_per_file=150)
    async with Simulator(corpus, fast_sim_config()) as sim:
        config = crawler_config("http://127.0.0.1:9", tmp_path, ra_url=f"{sim.url}/ra", rows=40, parsers=2)
        outcome = await backfill_snapshot(config, asyncio.Event(), [tmp_path / "snap"])
        assert outcome.code == 0, outcome.message
        assert sim.stats.requests == 0, "a snapshot backfill asked /works"
        assert sim.stats.ra_requests > 0
    keys, repeated = output_keys(config.out)
    assert not repeated
    assert keys == corpus.expected
    meta = _meta(config.state)
    assert meta["snapshot_currency"] == _currency(corpus.works)
    assert int(meta["snapshot_records"]) == len(corpus.works)
    report = await status_report(config.state)
    snap = report["snapshot"]
    assert snap["paths"] == [str((tmp_path / "snap").resolve())]
    assert (snap["records"], snap["units_failed"], snap["problems"]) == (len(corpus.works), 0, 0)
    assert snap["units_done"] == (len(paths) if fmt == "dir-jsonl-gz" else 5 if fmt.startswith("tar-json") else 1)
    assert snap["currency"] == _currency(corpus.works) and snap["finished_at"]
    expected_mark = (date.fromisoformat(_currency(corpus.works)[:10]) - timedelta(days=1)).isoformat()
    assert report["update"]["high_water_mark"] == expected_mark
    # The snapshot's units are its own rows, not XML files'; no API figures for a run of files.
    assert report["files"] is None
    shown = _table_text(report)
    assert "snapshot read" in shown and "files " not in shown and "pages/s" not in shown and "retries" not in shown
    # A second run reads nothing again and emits nothing.
    async with Simulator(corpus, fast_sim_config()) as sim:
        config = crawler_config("http://127.0.0.1:9", tmp_path, ra_url=f"{sim.url}/ra", rows=40, parsers=2)
        again = await backfill_snapshot(config, asyncio.Event(), [tmp_path / "snap"])
    assert again.code == 0 and _records_this_run(again.message) == 0
    assert output_keys(config.out) == (keys, repeated)


async def test_records_with_the_real_reference_mix_give_exactly_the_corpus_links(tmp_path):
    """The benchmark's records (`refs="real"`): drawn in the recorded samples' proportions, and
    read into exactly the links the generator recorded."""
    from crawler.simulator.corpus import REAL_MIX

    real = generate(600, seed=65, refs="real")
    refs = [ref for work in real.works for ref in work.get("reference", ())]
    with_doi = sum("DOI" in ref for ref in refs) / len(refs)
    text_only = sum("unstructured" in ref and "DOI" not in ref for ref in refs) / len(refs)
    assert abs(with_doi - (REAL_MIX["doi"] + REAL_MIX["doi+text"])) < 0.02, with_doi
    assert abs(text_only - (REAL_MIX["text"] + REAL_MIX["text with a DOI"])) < 0.01, text_only
    write_snapshot(real.works, tmp_path / "snap", "dir-jsonl-gz", records_per_file=200)
    async with Simulator(real, fast_sim_config()) as sim:
        config = crawler_config("http://127.0.0.1:9", tmp_path, ra_url=f"{sim.url}/ra", rows=50, parsers=2)
        outcome = await backfill_snapshot(config, asyncio.Event(), [tmp_path / "snap"])
        assert outcome.code == 0, outcome.message
    keys, repeated = output_keys(config.out)
    assert not repeated and keys == real.expected


async def test_formats_mixed_in_one_command_and_a_record_twice(tmp_path, corpus):
    works = corpus.works
    thirds = [works[:250], works[250:500], works[500:]]
    a = write_snapshot(thirds[0], tmp_path / "a", "tar-json-gz-pretty", records_per_file=100)[0]
    write_snapshot(thirds[1], tmp_path / "b", "dir-jsonl-gz", records_per_file=100)
    c = write_snapshot(thirds[2], tmp_path / "c", "tgz-json", records_per_file=100)[0]
    # works 200..299 once more, in a single JSON Lines file: read twice, emitted once
    twice = write_snapshot(works[200:300], tmp_path / "d", "jsonl")[0]
    async with Simulator(corpus, fast_sim_config()) as sim:
        config = crawler_config("http://127.0.0.1:9", tmp_path, ra_url=f"{sim.url}/ra", rows=30, parsers=2)
        outcome = await backfill_snapshot(config, asyncio.Event(), [a, tmp_path / "b", c, twice])
        assert outcome.code == 0, outcome.message
        assert sim.stats.requests == 0
    keys, repeated = output_keys(config.out)
    assert not repeated and keys == corpus.expected
    assert _records_this_run(outcome.message) == len(works) + 100
    assert _meta(config.state)["snapshot_currency"] == _currency(works)


async def test_the_same_records_read_side_by_side_are_emitted_once(tmp_path, corpus):
    """Two copies of the snapshot under other names: the two lanes select the same works at the
    same moments, each from the seen sets as committed; a work in flight in one lane must wait
    for its commit before the other lane reads its seen set."""
    first = write_snapshot(corpus.works, tmp_path / "a", "jsonl")[0]
    second = tmp_path / "b" / "copy.jsonl"
    second.parent.mkdir()
    second.write_bytes(first.read_bytes())
    async with Simulator(corpus, fast_sim_config()) as sim:
        config = crawler_config("http://127.0.0.1:9", tmp_path, ra_url=f"{sim.url}/ra", rows=10, parsers=2)
        outcome = await backfill_snapshot(config, asyncio.Event(), [first, second])
        assert outcome.code == 0, outcome.message
    keys, repeated = output_keys(config.out)
    assert not repeated, f"{len(repeated)} link(s) written twice"
    assert keys == corpus.expected
    assert _records_this_run(outcome.message) == 2 * len(corpus.works)


def _lanes() -> list[int]:
    """The lanes' processes: the forkserver's children (the forkserver is ours)."""
    return [lane for server in child_pids(os.getpid()) for lane in child_pids(server)]


async def test_a_lane_process_that_dies_is_replaced_and_nothing_is_lost_or_repeated(tmp_path, caplog):
    """SIGKILL a lane's process (as the OOM killer would) while it holds batches read but not yet
    selected: the new process reads them again."""
    caplog.set_level(logging.WARNING)
    corpus = generate(2000, seed=64)
    write_snapshot(corpus.works, tmp_path / "snap", "dir-jsonl-gz", records_per_file=1000)
    async with Simulator(corpus, fast_sim_config()) as sim:
        config = crawler_config("http://127.0.0.1:9", tmp_path, ra_url=f"{sim.url}/ra", rows=10, parsers=2)
        run = asyncio.create_task(backfill_snapshot(config, asyncio.Event(), [tmp_path / "snap"]))
        killed = 0
        while not run.done() and killed < 3:
            await asyncio.sleep(0.02)
            if sum(r for r, *_ in _units(config.state).values()) < 300 * (killed + 1):
                continue
            if lanes := _lanes():
                os.kill(lanes[killed % len(lanes)], signal.SIGKILL)
                killed += 1
        outcome = await run
    assert killed == 3, "the run ended before the kills"
    assert outcome.code == 0, outcome.message
    assert "a parser process died" in caplog.text
    keys, repeated = output_keys(config.out)
    assert not repeated, f"{len(repeated)} link(s) written twice"
    assert keys == corpus.expected


async def test_parser_processes_start_with_what_they_run_already_imported():
    """The fork server imports the parser modules once; each process it forks (a lane, a parser,
    a replacement) starts with them instead of importing them again. `eval` is a builtin: asking
    the question imports nothing of ours in the child."""
    from crawler.engine import PARSER_MODULES, ParserPool

    pool = ParserPool(1)
    try:
        loaded = await pool.run(eval, "sorted(m for m in __import__('sys').modules if m.startswith('crawler'))")
    finally:
        pool.shutdown()
    assert "crawler.sources.snapshots" in PARSER_MODULES
    assert set(PARSER_MODULES) <= set(loaded), set(PARSER_MODULES) - set(loaded)


def test_a_batch_held_by_a_process_that_died_is_read_again_the_same(tmp_path, corpus):
    """What a replacing process does: the ticket it never saw is read again from where it was."""
    from crawler.snapshot import list_units
    from crawler.sources import snapshots

    write_snapshot(corpus.works, tmp_path / "snap", "jsonl")
    unit = next(iter(list_units([tmp_path / "snap"])))
    now = "2030-01-01T00:00:00Z"
    agencies = dict(corpus.agencies)
    snapshots.read_batch(unit, 0, 100, now, 1)
    held = snapshots.select_batch(1, {}, agencies, now, (unit, 0, 100, now))
    snapshots.read_batch(unit, 100, 100, now, 2)
    snapshots._held.clear()  # as a new process: nothing held, no reader open
    snapshots._open = None
    again = snapshots.select_batch(2, {}, agencies, now, (unit, 100, 100, now))
    expected = {k for w in corpus.works[100:200] for e in corpus.entries[w["DOI"]] if e.emits and (k := e.key)}
    assert again.events == len(expected) and held.events == len(
        {k for w in corpus.works[:100] for e in corpus.entries[w["DOI"]] if e.emits and (k := e.key)})
    assert set(_keys_of(again.data)) == expected


def _keys_of(data: bytes) -> list[tuple[str, str, str]]:
    from tests.conftest import event_key
    return [event_key(msgspec.json.decode(line)) for line in gzip.decompress(data).splitlines()]


# -- SIGKILL or SIGINT mid-snapshot, then the same command ----------------------------------------------

def _signalled_mid_run(args: list[str], state: Path, sig: int, records: int = 300) -> tuple[int, str]:
    """A backfill subprocess sent `sig` once its state holds `records` committed records;
    (its exit code, its stderr)."""
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if sum(r for r, *_ in _units(state).values()) >= records:
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"the run ended before it could be signalled: {proc.stderr.read()}"
        proc.send_signal(sig)
        code = proc.wait(timeout=60)
        return code, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


@pytest.mark.parametrize("fmt,sig", [("dir-jsonl-gz", signal.SIGKILL), ("tar-json-gz", signal.SIGKILL),
                                     ("tgz-json", signal.SIGKILL), ("dir-jsonl-gz", signal.SIGINT)])
def test_a_stop_then_rerun_is_exact(tmp_path, fmt, sig):
    corpus = generate(2400, seed=62)
    write_snapshot(corpus.works, tmp_path / "snap", fmt, records_per_file=800)
    sim = SimulatorThread(corpus, fast_sim_config())
    url = sim.start()
    try:
        args = _args(url, tmp_path, tmp_path / "snap", rows=20, parsers=2)
        state = tmp_path / "state.sqlite3"
        code, err = _signalled_mid_run(args, state, sig)
        if sig == signal.SIGINT:  # a clean stop: what is in flight is committed, the part file kept
            assert code == 130 and "stopped cleanly" in err and "Traceback" not in err, err
        committed = sum(r for r, *_ in _units(state).values())
        assert 300 <= committed < len(corpus.works), "killed before the end, after several commits"
        rerun = _run(args)
        assert rerun.returncode == 0, rerun.stderr
        assert "Traceback" not in rerun.stderr
        # the rerun read only what was not committed (what a unit's resume re-reads is not counted)
        assert _records_this_run(rerun.stdout) == len(corpus.works) - committed
        assert sim.stats.requests == 0
    finally:
        sim.stop()
    keys, repeated = output_keys(tmp_path / "events")
    assert not repeated, f"{len(repeated)} link(s) written twice"
    assert keys == corpus.expected
    assert _meta(state)["snapshot_currency"] == _currency(corpus.works)


@pytest.mark.parametrize("sig,code,ra", [(signal.SIGINT, 130, "closed"), (signal.SIGTERM, 143, "503")])
def test_a_stop_while_the_agency_service_fails_ends_the_run_at_once(tmp_path, corpus, sig, code, ra):
    """The agency service unreachable (a closed port) or answering 503: the look-ups are retried
    until the first SIGINT/SIGTERM, which ends the run within seconds as a clean stop; the
    batches that waited are not committed, and a rerun with the service back gives each link once."""
    write_snapshot(corpus.works, tmp_path / "snap", "dir-jsonl-gz", records_per_file=200)
    sims = [SimulatorThread(corpus, fast_sim_config())]  # the healthy one, for the rerun
    if ra == "503":
        sims.append(SimulatorThread(corpus, fast_sim_config(faults=Faults(outages=(Outage(1, 3600, target="ra"),)))))
    urls = [sim.start() for sim in sims]
    try:
        ra_url = "http://127.0.0.1:9" if ra == "closed" else urls[1]
        args = [*_args(ra_url, tmp_path, tmp_path / "snap", rows=50, parsers=2),
                "--retry-initial", "0.05", "--retry-max", "0.5"]
        got, err = stop_once_logged(args, sig, "retrying after:", tmp_path / "stopped.log")
        assert got == code and "stopped cleanly" in err and "run the same command again to resume" in err, err
        assert "Traceback" not in err, err
        assert "cannot connect to 127.0.0.1:9" in err if ra == "closed" else "503" in err
        assert not list((tmp_path / "events").glob("*.part")), "a clean stop leaves no partial file"
        rerun = _run(_args(urls[0], tmp_path, tmp_path / "snap", rows=50, parsers=2))
        assert rerun.returncode == 0, rerun.stderr
    finally:
        for sim in sims:
            sim.stop()
    keys, repeated = output_keys(tmp_path / "events")
    assert not repeated, f"{len(repeated)} link(s) written twice"
    assert keys == corpus.expected


# -- snapshot, then the corpus changes, then update -------------------------------------------

async def test_snapshot_then_update_emits_only_the_new_links(tmp_path):
    corpus = generate(900, seed=63)
    write_snapshot(corpus.works, tmp_path / "snap", "tar-json-gz", records_per_file=200)
    currency = _currency(corpus.works)
    scroll_filters: list[dict[str, str]] = []
    async with Simulator(corpus, fast_sim_config()) as sim:
        config = crawler_config(sim.url, tmp_path, rows=50, parsers=1)
        outcome = await backfill_snapshot(config, asyncio.Event(), [tmp_path / "snap"])
        assert outcome.code == 0, outcome.message
        assert sim.stats.requests == 0
        old = corpus.expected
        assert output_keys(config.out) == (old, output_keys(config.out)[1]) and not output_keys(config.out)[1]
        before = {p.name: p.read_bytes() for p in config.out.glob("*.jsonl.gz")}

        added = corpus.mutate(seed=3, new_works=40, changed_works=70, at=datetime.now(UTC).replace(microsecond=0))
        assert len(added) > 100 and not added & old
        sim.app.on_page = lambda filters, page: scroll_filters.append(dict(filters))
        result = await update(config, asyncio.Event())
        assert result.code == 0, result.message
        assert sim.stats.requests > 0
    after = {p.name: p.read_bytes() for p in config.out.glob("*.jsonl.gz")}
    assert all(after[name] == data for name, data in before.items()), "completed files are never rewritten"
    new_keys = set()
    for name in sorted(set(after) - set(before)):
        for line in gzip.decompress(after[name]).decode().splitlines():
            event = msgspec.json.decode(line)
            key = (event["subj_id"].removeprefix("https://doi.org/"), event["relation_type_id"],
                   event["obj_id"].removeprefix("https://doi.org/"))
            assert key not in new_keys, "a link emitted twice by the update"
            new_keys.add(key)
    assert new_keys == added, "the update emits exactly the links the change added"
    keys, repeated = output_keys(config.out)
    assert keys == old | added and not repeated
    # The update asked only for what was indexed since the snapshot's currency, less a day at most.
    floor = date.fromisoformat(currency[:10]) - timedelta(days=1)
    assert scroll_filters and all("from-index-date" in f for f in scroll_filters)
    assert all(date.fromisoformat(f["from-index-date"]) >= floor for f in scroll_filters)
    assert min(date.fromisoformat(f["from-index-date"]) for f in scroll_filters) <= date.fromisoformat(currency[:10])


# -- bad input --------------------------------------------------------------------------------

def _corrupt(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0x5A for b in data[middle:middle + 64]) + data[middle + 64:]


def _jsonl(works: list[dict]) -> bytes:
    return msgspec.json.Encoder().encode_lines(works)


def _tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    import io

    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _bad_snapshot(root: Path, works: list[dict], fixed: bool) -> dict[str, set[str]]:
    """A snapshot folder with four bad spots (or, `fixed`, the same files whole); returns the
    DOIs of each file whose records cannot all be trusted to be read."""
    root.mkdir(exist_ok=True)
    chunks = [works[i:i + 100] for i in range(0, 700, 100)]
    # 1. a tar whose member 1 is a corrupt gzip member
    members = [(f"{n}.json.gz", igzip.compress(msgspec.json.encode({"items": c}), 1)) for n, c in enumerate(chunks[:3])]
    if not fixed:
        members[1] = (members[1][0], _corrupt(members[1][1]))
    _tar(root / "a.tar", members)
    # 2. a tar cut inside its last member
    tail = [(f"{n}.json.gz", igzip.compress(msgspec.json.encode({"items": c}), 1)) for n, c in enumerate(chunks[3:5])]
    _tar(root / "b.tar", tail)
    if not fixed:
        data = (root / "b.tar").read_bytes()
        with tarfile.open(root / "b.tar") as tar:
            last = tar.getmembers()[-1]
        (root / "b.tar").write_bytes(data[: last.offset_data + last.size // 2])
    # 3. a JSON Lines file with a line that is not JSON
    lines = _jsonl(chunks[5]).split(b"\n")
    if not fixed:
        lines.insert(40, b"{this is not json")
    (root / "c.jsonl").write_bytes(b"\n".join(lines))
    # 4. a document holding a record of the wrong shape (its reference list is a number)
    items = [dict(w) for w in chunks[6]]
    if not fixed:
        items[7]["reference"] = 17
    (root / "d.json").write_bytes(msgspec.json.encode({"items": items}))
    return {"a.tar": {w["DOI"] for w in chunks[1]}, "b.tar": {w["DOI"] for w in chunks[4]},
            "c.jsonl": set(), "d.json": {chunks[6][7]["DOI"]}}


def test_bad_input_is_reported_read_around_and_retried_alone(tmp_path):
    corpus = generate(700, seed=64)
    shaky = _bad_snapshot(tmp_path / "snap", corpus.works, fixed=False)
    sim = SimulatorThread(corpus, fast_sim_config())
    url = sim.start()
    try:
        args = _args(url, tmp_path, tmp_path / "snap", rows=30)
        first = _run(args)
        assert first.returncode == 1, first.stderr
        assert "Traceback" not in first.stderr and "Traceback" not in first.stdout
        err = first.stderr
        snap = tmp_path / "snap"
        assert re.search(rf"{re.escape(str(snap / 'a.tar'))}: member 1\.json\.gz", err), err
        assert re.search(rf"{re.escape(str(snap / 'b.tar'))}: .*member 1\.json\.gz.*truncated", err), err
        assert re.search(rf"{re.escape(str(snap / 'c.jsonl'))}: line 41: not JSON", err), err
        assert re.search(rf"{re.escape(str(snap / 'd.json'))}: record 8: ", err), err
        assert re.search(r"5 problems in 5 units", err), err  # b.tar: its cut member, and its listing's end
        # the rest was read: every link of the records outside the bad spots, nothing else, once
        keys, repeated = output_keys(tmp_path / "events")
        assert not repeated
        unsure = set().union(*shaky.values())
        trusted = {w["DOI"] for w in corpus.works} - unsure
        assert _expected_of(corpus, trusted) <= keys <= corpus.expected
        report_units = _units(tmp_path / "state.sqlite3")
        failed = {k for k, (_, _, done, bad) in report_units.items() if bad}
        files = {Path(re.sub(r"::.*", "", k.removeprefix("snapshot:"))).name for k in failed}
        assert files == set(shaky) and len(failed) == 5
        assert all(report_units[k][2] for k in report_units), "every unit read to its end"
        good_rows = {k: v for k, v in report_units.items() if k not in failed}

        # A rerun reads the failed units again, and only them; still bad, still exit 1, no repeats.
        second = _run(args)
        assert second.returncode == 1 and "Traceback" not in second.stderr
        failed_records = sum(report_units[k][0] for k in failed)
        assert _records_this_run(second.stderr) == failed_records
        assert {k: v for k, v in _units(tmp_path / "state.sqlite3").items() if k not in failed} == good_rows
        keys2, repeated2 = output_keys(tmp_path / "events")
        assert not repeated2 and keys2 == keys
        # `status` says what went wrong where, not only how often (the run's log is not at hand).
        told = {f["unit"]: f["problem"] for f in asyncio.run(status_report(tmp_path / "state.sqlite3"))["snapshot"]
                ["failed_units"]}
        assert set(told) == {k.removeprefix("snapshot:") for k in failed}
        assert told[str(snap / "c.jsonl")].startswith("line 41: not JSON"), told
        assert told[str(snap / "d.json")].startswith("record 8: "), told

        # The files mended: each is another file now (its size or time), read again whole; ends exact.
        _bad_snapshot(tmp_path / "snap", corpus.works, fixed=True)
        third = _run(args)
        assert third.returncode == 0, third.stderr
        assert all(f"{snap / name} changed since an earlier run listed it" in third.stderr for name in shaky), third.stderr
        assert _records_this_run(third.stdout) == 700  # b.tar's listing unit is gone
        assert sim.stats.requests == 0
    finally:
        sim.stop()
    keys, repeated = output_keys(tmp_path / "events")
    assert not repeated and keys == corpus.expected
    snap = asyncio.run(status_report(tmp_path / "state.sqlite3"))["snapshot"]
    assert (snap["records"], snap["units_failed"], snap["problems"], snap["units_unfinished"]) == (700, 0, 0, 0)


def test_the_first_update_starts_at_the_earlier_mark():
    """A snapshot's mark is the day before its currency, once it was read to its end; beside an
    API backfill, the earlier wins."""
    from crawler.jobs import first_mark

    snapshot = {"snapshot_currency": "2026-03-01T00:00:05Z", "snapshot_finished_at": "2026-03-02T00:00:00Z"}
    assert first_mark({}) == ""
    assert first_mark(snapshot) == "2026-02-28"
    assert first_mark({"snapshot_currency": "2026-03-01T00:00:05Z"}) == "", "a snapshot not read to its end"
    assert first_mark({"backfill_started_at": "2026-05-02T10:00:00Z"}) == "2026-05-02"
    both = {**snapshot, "backfill_started_at": "2026-05-02T10:00:00Z"}
    assert first_mark(both) == "2026-02-28"
    assert first_mark({**both, "backfill_started_at": "2026-01-10T00:00:00Z"}) == "2026-01-10"


async def test_a_snapshot_over_an_api_backfill_emits_nothing_twice(tmp_path):
    """Mixing is allowed: the seen store keeps each link once whichever source read it first."""
    corpus = generate(500, seed=65)
    write_snapshot(corpus.works[:300] + generate(200, seed=66).works, tmp_path / "snap", "dir-jsonl-gz",
                   records_per_file=100)
    async with Simulator(corpus, fast_sim_config()) as sim:
        config = crawler_config(sim.url, tmp_path, rows=50, parsers=1)
        assert (await backfill(config, asyncio.Event())).code == 0
        assert output_keys(config.out) == (corpus.expected, output_keys(config.out)[1])
        requests = sim.stats.requests
        outcome = await backfill_snapshot(config, asyncio.Event(), [tmp_path / "snap"])
        assert outcome.code == 0, outcome.message
        assert sim.stats.requests == requests
    other = generate(200, seed=66)
    keys, repeated = output_keys(config.out)
    assert not repeated
    # the API backfill's links, and those of the 200 works only the snapshot holds
    assert keys == corpus.expected | _expected_of(other, {w["DOI"] for w in other.works})
    meta = _meta(config.state)
    assert meta["backfill_started_at"] and meta["snapshot_currency"] == _currency(corpus.works[:300] + other.works)


# -- a file changed under the same path, and paths left out of a rerun ----------------------------

@pytest.mark.parametrize("stopped", [False, True], ids=["read-whole", "stopped-mid-way"])
async def test_a_snapshot_copied_over_the_same_path_is_read_again_whole(tmp_path, caplog, stopped):
    """Another snapshot copied over the path of one read before (or half read): its members have
    the same names, but their rows were written from the other file; it is read from its start."""
    caplog.set_level(logging.WARNING)
    first, second = generate(1000, seed=71), generate(1600, seed=72)
    path = write_snapshot(first.works, tmp_path / "snap", "tar-json-gz", records_per_file=200)[0]
    bigger = write_snapshot(second.works, tmp_path / "b", "tar-json-gz", records_per_file=200)[0]
    async with Simulator(first, fast_sim_config()) as sim:
        config = crawler_config("http://127.0.0.1:9", tmp_path, ra_url=f"{sim.url}/ra", rows=10, parsers=2)
        outcome = await (_stopped_after(config, [path], 300) if stopped
                         else backfill_snapshot(config, asyncio.Event(), [path]))
        assert outcome.code == (130 if stopped else 0), outcome.message
        rows = _units(config.state)
        if stopped:
            assert any(not done for _, _, done, _ in rows.values()), "stopped with a member half read"
        else:
            assert len(rows) == 5 and all(done for _, _, done, _ in rows.values())
        shutil.copyfile(bigger, path)  # members 0..7.json.gz: 0..4 have the names of the first's
        caplog.clear()
        again = await backfill_snapshot(config, asyncio.Event(), [path])
        assert again.code == 0, again.message
    assert _records_this_run(again.message) == len(second.works)
    assert f"{path} changed since an earlier run listed it" in caplog.text
    keys, repeated = output_keys(config.out)
    assert not repeated, f"{len(repeated)} link(s) written twice"
    if stopped:  # the first file was half read: of it, only its own links
        assert second.expected <= keys <= first.expected | second.expected
    else:
        assert keys == first.expected | second.expected
    # the rows are the new file's alone: none of the old one's is counted
    rows = _units(config.state)
    assert len(rows) == 8 and sum(r for r, *_ in rows.values()) == len(second.works)
    assert int(_meta(config.state)["snapshot_records"]) == len(second.works)


async def test_a_rerun_without_a_path_an_earlier_run_never_reached_is_not_finished(tmp_path):
    """`--snapshot big small` stopped before small was reached, then `--snapshot big` alone: small
    has no row at all, but it was given: its records are unread, so the snapshot is not finished
    (its currency would hand over to an update that never asks for small's older works)."""
    corpus = generate(1000, seed=74)
    big = write_snapshot(corpus.works[:800], tmp_path / "big", "tar-json-gz", records_per_file=200)[0]
    small = write_snapshot(corpus.works[800:], tmp_path / "small", "jsonl")[0]
    async with Simulator(corpus, fast_sim_config()) as sim:
        config = crawler_config("http://127.0.0.1:9", tmp_path, ra_url=f"{sim.url}/ra", rows=20, parsers=1)
        stopped = await _stopped_after(config, [big, small], 100)
        assert stopped.code == 130 and "; currency so far " in stopped.message, stopped.message
        assert not any(str(small) in key and records for key, (records, *_) in _units(config.state).items()), \
            "small was reached"

        alone = await backfill_snapshot(config, asyncio.Event(), [big])
        assert alone.code == 1, alone.message
        assert f"units of {small} from an earlier run are not finished" in alone.message
        meta = _meta(config.state)
        assert "snapshot_finished_at" not in meta and json.loads(meta["snapshot_unfinished"]) == [str(small)]
        with pytest.raises(StateError, match=f"units of {re.escape(str(small))} are not finished"):
            await update(config, asyncio.Event())
        # a folder holding a path given before covers it; nothing left then
        both = await backfill_snapshot(config, asyncio.Event(), [tmp_path])
        assert both.code == 0, both.message
        assert f"; currency {_currency(corpus.works)}" in both.message, both.message
        assert sim.stats.requests == 0
    keys, repeated = output_keys(config.out)
    assert not repeated and keys == corpus.expected
    assert _meta(config.state)["snapshot_finished_at"]


async def test_a_rerun_given_part_of_a_folder_half_reached_is_not_finished(tmp_path):
    """`--snapshot dir` stopped early, then a rerun given one of dir's files beside another path:
    the files of dir never reached (no record of theirs read) keep the snapshot unfinished."""
    corpus = generate(1200, seed=76)
    files = write_snapshot(corpus.works[:1000], tmp_path / "dir", "dir-jsonl-gz", records_per_file=100)
    other = write_snapshot(corpus.works[1000:], tmp_path / "other", "jsonl")[0]
    async with Simulator(corpus, fast_sim_config()) as sim:
        config = crawler_config("http://127.0.0.1:9", tmp_path, ra_url=f"{sim.url}/ra", rows=20, parsers=1)
        assert (await _stopped_after(config, [tmp_path / "dir"], 60)).code == 130
        read = {key for key, (records, *_) in _units(config.state).items() if records}
        assert read and not any(str(files[-1]) in key for key in read), "the last file was reached"

        part = await backfill_snapshot(config, asyncio.Event(), [other, files[0]])
        assert part.code == 1, part.message
        assert "from an earlier run are not finished" in part.message and str(files[-1].parent) in part.message
        assert "snapshot_finished_at" not in _meta(config.state)
        left = json.loads(_meta(config.state)["snapshot_unfinished"])
        assert left == [str(f) for f in files[1:]] or left == [str(f) for f in files[2:]], left
        report = await status_report(config.state)
        assert report["snapshot"]["units_unfinished"] == len(left)

        whole = await backfill_snapshot(config, asyncio.Event(), [tmp_path / "dir", other])
        assert whole.code == 0, whole.message
    keys, repeated = output_keys(config.out)
    assert not repeated and keys == corpus.expected


async def test_a_unit_that_failed_in_an_earlier_run_keeps_the_snapshot_unfinished(tmp_path):
    """A corrupt file read (and failed) by one run, then a run given only another path: the
    corrupt file's records are still unread, so no currency hands over and update refuses."""
    corpus = generate(600, seed=77)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "1.jsonl.gz").write_bytes(_corrupt(igzip.compress(_jsonl(corpus.works[:400]))))
    good = write_snapshot(corpus.works[400:], tmp_path / "good", "jsonl")[0]
    async with Simulator(corpus, fast_sim_config()) as sim:
        config = crawler_config("http://127.0.0.1:9", tmp_path, ra_url=f"{sim.url}/ra", rows=50, parsers=1)
        first = await backfill_snapshot(config, asyncio.Event(), [tmp_path / "bad"])
        assert first.code == 1 and "replace or download again the files named" in first.message, first.message
        other = await backfill_snapshot(config, asyncio.Event(), [good])
    assert other.code == 1, other.message
    assert f"units of {tmp_path / 'bad' / '1.jsonl.gz'} from an earlier run are not finished or had problems" \
        in other.message
    assert "snapshot_finished_at" not in _meta(config.state)
    with pytest.raises(StateError, match="are not finished"):
        await update(crawler_config("http://127.0.0.1:9", tmp_path), asyncio.Event())


async def test_a_snapshot_folder_moved_between_runs_is_read_on_where_it_is(tmp_path):
    """Stopped, then the folder renamed (`mv` keeps names, sizes and modification times): the
    rerun given the new path resumes each file's rows there; nothing is left or read twice. A file
    deleted instead is named as no longer there."""
    corpus = generate(1000, seed=78)
    write_snapshot(corpus.works, tmp_path / "snap", "dir-jsonl-gz", records_per_file=100)
    async with Simulator(corpus, fast_sim_config()) as sim:
        config = crawler_config("http://127.0.0.1:9", tmp_path, ra_url=f"{sim.url}/ra", rows=20, parsers=1)
        assert (await _stopped_after(config, [tmp_path / "snap"], 250)).code == 130
        before = sum(r for r, *_ in _units(config.state).values())
        (tmp_path / "snap").rename(tmp_path / "moved")
        again = await backfill_snapshot(config, asyncio.Event(), [tmp_path / "moved"])
        assert again.code == 0, again.message
        assert _records_this_run(again.message) == len(corpus.works) - before
    keys, repeated = output_keys(config.out)
    assert not repeated and keys == corpus.expected
    rows = _units(config.state)
    assert len(rows) == 10 and all(str(tmp_path / "moved") in key for key in rows)
    assert sum(r for r, *_ in rows.values()) == int(_meta(config.state)["snapshot_records"]) == len(corpus.works)


def test_a_moved_file_is_followed_only_when_nothing_else_is_alike(tmp_path):
    """Rows follow a file gone to one listed now with its name, member and stamp; two gone
    copies alike would both claim it (a key taken twice): neither is followed."""
    from crawler.snapshot import Unit
    from crawler.sources.snapshots import _moved

    new = str(tmp_path / "new" / "s.tar")
    units = [Unit(f"{new}::0.json.gz", new, "0.json.gz", 512, 10, "member", stamp="99:1"),
             Unit(f"{new}::1.json.gz", new, "1.json.gz", 1024, 10, "member", stamp="99:1")]
    listed = {unit.key for unit in units}
    gone = {str(tmp_path / d / "s.tar") + "::0.json.gz": (5, 0, False, False) for d in ("a", "b")}
    stamps = dict.fromkeys(gone, "99:1")
    one = dict(list(gone.items())[:1])
    assert _moved(one, stamps, units, listed) == {next(iter(one)): f"{new}::0.json.gz"}
    assert _moved(gone, stamps, units, listed) == {}
    assert _moved(one, dict.fromkeys(one, "99:2"), units, listed) == {}, "another size or mtime: another file"
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "s.tar").write_bytes(b"")
    assert _moved(one, stamps, units, listed) == {}, "a file still there is not gone"


async def test_a_file_of_an_unfinished_snapshot_deleted_is_named_as_gone(tmp_path):
    corpus = generate(400, seed=79)
    big = write_snapshot(corpus.works[:300], tmp_path / "big", "tar-json-gz", records_per_file=100)[0]
    small = write_snapshot(corpus.works[300:], tmp_path / "small", "jsonl")[0]
    async with Simulator(corpus, fast_sim_config()) as sim:
        config = crawler_config("http://127.0.0.1:9", tmp_path, ra_url=f"{sim.url}/ra", rows=20, parsers=1)
        assert (await _stopped_after(config, [big, small], 40)).code == 130
        # `--snapshot` left out of the rerun: no API backfill of everything starts instead
        with pytest.raises(StateError, match=f"has not finished: give `--snapshot {re.escape(str(big))} "):
            await backfill(config, asyncio.Event())
        assert "backfill_from" not in _meta(config.state)
        big.unlink()
        alone = await backfill_snapshot(config, asyncio.Event(), [small])
    assert alone.code == 1
    assert f"{big} is no longer there" in alone.message and "update --since" in alone.message, alone.message


async def test_a_damaged_stretch_is_counted_whole_but_logged_in_part(tmp_path, caplog):
    """A damaged stretch of a file is a problem per line: the first ones are logged, then one
    line says how many more; every one is counted."""
    caplog.set_level(logging.WARNING)
    corpus = generate(200, seed=80)
    lines = _jsonl(corpus.works).split(b"\n")
    damaged = b"\n".join(lines[:50] + [b"{garbage %d" % i for i in range(45)] + lines[50:])
    (tmp_path / "snap").mkdir()
    (tmp_path / "snap" / "works.jsonl").write_bytes(damaged)
    async with Simulator(corpus, fast_sim_config()) as sim:
        config = crawler_config("http://127.0.0.1:9", tmp_path, ra_url=f"{sim.url}/ra", rows=10, parsers=1)
        outcome = await backfill_snapshot(config, asyncio.Event(), [tmp_path / "snap"])
    assert outcome.code == 1 and "45 problems in 1 unit" in outcome.message, outcome.message
    shown = [r.getMessage() for r in caplog.records if "not JSON" in r.getMessage()]
    assert len(shown) == PROBLEMS_SHOWN
    summary = f"{tmp_path / 'snap' / 'works.jsonl'}: {45 - PROBLEMS_SHOWN} more problems not shown"
    assert any(summary in r.getMessage() for r in caplog.records)
    assert (await status_report(config.state))["snapshot"]["problems"] == 45
    keys, repeated = output_keys(config.out)
    assert not repeated and keys == corpus.expected


async def test_a_path_with_nothing_to_read_changes_nothing(tmp_path):
    """A typo'd folder beside a finished snapshot: refused before anything is recorded (the
    snapshot stays finished, the typo is no path of it)."""
    corpus = generate(100, seed=75)
    snap = write_snapshot(corpus.works, tmp_path / "snap", "jsonl")[0]
    (tmp_path / "empty").mkdir()
    async with Simulator(corpus, fast_sim_config()) as sim:
        config = crawler_config("http://127.0.0.1:9", tmp_path, ra_url=f"{sim.url}/ra", rows=20, parsers=1)
        with pytest.raises(UsageError, match="no snapshot files in"):  # a fresh state: nothing made
            await backfill_snapshot(config, asyncio.Event(), [tmp_path / "empty"])
        assert not config.state.exists() and not config.out.exists()
        assert (await backfill_snapshot(config, asyncio.Event(), [snap])).code == 0
        before = _meta(config.state)
        with pytest.raises(UsageError, match="no snapshot files in"):
            await backfill_snapshot(config, asyncio.Event(), [tmp_path / "empty"])
    assert _meta(config.state) == before


def test_a_rerun_without_a_path_left_half_read_is_not_finished(tmp_path):
    """`backfill --snapshot big small`, stopped while big is half read, then `--snapshot small`
    alone: big's unread records keep the snapshot unfinished, its currency is no update's mark."""
    corpus = generate(2700, seed=73)
    big = write_snapshot(corpus.works[:2400], tmp_path / "big", "tar-json-gz", records_per_file=800)[0]
    small = write_snapshot(corpus.works[2400:], tmp_path / "small", "jsonl")[0]
    state = tmp_path / "state.sqlite3"
    sim = SimulatorThread(corpus, fast_sim_config())
    url = sim.start()
    try:
        code, err = _signalled_mid_run(_args(url, tmp_path, big, small, rows=20), state, signal.SIGINT)
        assert code == 130, err
        half = {k for k, (records, _, done, _) in _units(state).items() if records and not done}
        assert half and all(k.startswith(f"snapshot:{big}::") for k in half), half
        # Stopped part-way: its currency is no update's mark either (an update went 17 years back).
        assert asyncio.run(status_report(state))["update"]["high_water_mark"] is None
        with pytest.raises(StateError, match="the snapshot backfill has not finished"):
            asyncio.run(update(crawler_config("http://127.0.0.1:9", tmp_path), asyncio.Event()))

        alone = _run(_args(url, tmp_path, small, rows=20))
        assert alone.returncode == 1, alone.stdout + alone.stderr
        assert "Traceback" not in alone.stderr
        assert f"units of {big} from an earlier run are not finished" in alone.stderr, alone.stderr
        assert "give that path to --snapshot again" in alone.stderr
        meta = _meta(state)
        assert "snapshot_finished_at" not in meta and meta["snapshot_currency"]
        report = asyncio.run(status_report(state))
        assert report["snapshot"]["unfinished"] == [str(big)] and not report["snapshot"]["finished_at"]
        assert report["update"]["high_water_mark"] is None, "a half-read snapshot's currency handed over"
        config = crawler_config("http://127.0.0.1:9", tmp_path)
        with pytest.raises(StateError, match=f"units of {re.escape(str(big))} are not finished"):
            asyncio.run(update(config, asyncio.Event()))

        both = _run(_args(url, tmp_path, big, small, rows=20))
        assert both.returncode == 0, both.stderr
        assert sim.stats.requests == 0
    finally:
        sim.stop()
    keys, repeated = output_keys(tmp_path / "events")
    assert not repeated and keys == corpus.expected
    meta = _meta(state)
    assert meta["snapshot_finished_at"] and "snapshot_unfinished" not in meta
    assert meta["snapshot_currency"] == _currency(corpus.works)
    assert asyncio.run(status_report(state))["update"]["high_water_mark"]


def test_progress_moves_within_a_unit_and_a_resume_point_is_not_read_speed():
    """`Tally.read`: bytes done count the units in progress; the rate behind the ETA counts only
    what this run read (a resumed unit's first position is where it stood, skipped over)."""
    from crawler.snapshot import Unit
    from crawler.snapshot.base import TAR_STREAM
    from crawler.sources.snapshots import Tally

    plus = Unit("all.json.tar.gz", "all.json.tar.gz", None, 0, 10_000, TAR_STREAM, sequential=True)
    resumed = Unit("b.jsonl", "b.jsonl", None, 0, 4_000, "file")
    tally = Tally(units=2, total_bytes=14_000)
    assert tally.line().endswith("ETA unknown")
    tally.read(plus, 2_500, resumed=False)
    tally.read(resumed, 3_000, resumed=True)  # resumed after records committed by an earlier run
    assert tally.read_bytes == 2_500 and sum(tally.reading.values()) == 5_500
    tally.read(resumed, 4_000, resumed=True)  # its end
    tally.read(plus, 6_000, resumed=False)
    assert tally.read_bytes == 2_500 + 1_000 + 3_500 and tally.reading == {"all.json.tar.gz": 6_000}
    assert not tally.line().endswith("ETA unknown")
