"""Benchmark of `crawler backfill --snapshot` (issue 20): records/s end to end beside the floor and
the obvious implementation, on a snapshot the simulator writes (full records; 30% of works without
references, ~27 on average for the others, drawn by default in the proportions of the recorded
samples: ~78% with a DOI field, ~8% with unstructured text, a DOI in the text 0.2%; `--refs fuzz`
draws the tests' mix, a third of references mined from text with markup).

    .venv/bin/python scripts/bench_snapshot.py                      # 30,000 works, about 3 minutes
    .venv/bin/python scripts/bench_snapshot.py --works 100000 --format dir-jsonl-gz --seen

Figures, all on the same bytes:
- floor: inflate + a msgspec scan of every record (every field skipped): what no reader can beat;
- baseline: inflate + `json.loads` per document or line + the same extraction (`parse_works` of
  the dicts converted to works), in one process;
- reader: `read_unit` alone, `read_unit` + `parse_works`, and a lane's whole work on a fresh
  state (+ `select_and_render`), in one process: the last is the most records per CPU-second any
  number of lanes can reach with no cost of moving batches and none of the writer's;
- end to end: `crawler backfill --snapshot` as a subprocess (file bytes -> committed events and
  seen keys), --parsers 1 and with the default flags (a lane per core), with its peak RSS (all its
  processes) and the CPU seconds its processes used; "per core" is records / CPU-second;
- with --seen: the seen store's rate of new keys (crawler-sized commits) at 1 M and 10 M keys.
Only 127.0.0.1 is contacted (the simulator answers the agency look-ups).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import msgspec  # noqa: E402
from isal import igzip  # noqa: E402

from crawler.config import default_parsers  # noqa: E402
from crawler.decode import parse_works  # noqa: E402
from crawler.model import Work  # noqa: E402
from crawler.select import select_and_render  # noqa: E402
from crawler.simulator.corpus import AGENCIES, REFERENCE_MIXES, generate  # noqa: E402
from crawler.simulator.snapshot import FORMATS, write_snapshot  # noqa: E402
from crawler.snapshot import list_units, read_unit  # noqa: E402
from scripts.bench import _tree_pids, _tree_rss, bench_seen, print_table, row, start_simulator  # noqa: E402

TARGET = "15,000 records/s per core"


class _Nothing(msgspec.Struct):
    pass


class _Doc(msgspec.Struct):
    items: list[_Nothing] = []


def _documents(path: Path) -> list[tuple[bytes, bool]]:
    """The snapshot's pieces, gzipped where they are stored so: (bytes, JSON Lines?). (A .tar.gz is
    inflated by tarfile here, outside the timings.)"""
    if tarfile.is_tarfile(path):
        with tarfile.open(path) as tar:
            return [(tar.extractfile(m).read(), ".jsonl" in m.name) for m in tar if m.isreg()]  # type: ignore[union-attr]
    if path.is_dir():
        return [p for f in sorted(path.iterdir()) for p in _documents(f)]
    return [(path.read_bytes(), ".jsonl" in path.name)]


def _inflated(data: bytes) -> bytes:
    return igzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def floor(pieces: list[tuple[bytes, bool]]) -> int:
    lines, doc = msgspec.json.Decoder(_Nothing), msgspec.json.Decoder(_Doc)
    n = 0
    for data, is_lines in pieces:
        raw = _inflated(data)
        if is_lines:
            n += len(lines.decode_lines(raw))
        else:
            n += len(doc.decode(raw).items)
    return n


def baseline(pieces: list[tuple[bytes, bool]]) -> int:
    n = 0
    for data, is_lines in pieces:
        raw = _inflated(data)
        items = [json.loads(line) for line in raw.splitlines() if line.strip()] if is_lines else json.loads(raw)["items"]
        works = [msgspec.convert(item, Work) for item in items]
        for i in range(0, len(works), 1000):
            parse_works(works[i:i + 1000])
        n += len(works)
    return n


def reader(units: list, parse: bool, select: bool = False) -> int:  # type: ignore[type-arg]
    """`read_unit` of every unit, with `parse_works` and (`select`) what a lane then does on a fresh
    state: `select_and_render` (nothing seen, the simulator's agencies); no batch crosses a process,
    no writer."""
    n = 0
    for unit in units:
        for batch in read_unit(unit, batch=1000):
            n += batch.records
            if parse and batch.works:
                works, prefixes = parse_works(batch.works)
                if select:
                    select_and_render(works, {}, {p: AGENCIES.get(p) for p in prefixes}, (), "2026-12-02T00:00:00Z")
    return n


def timed(fn, *args) -> tuple[int, float]:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    n = fn(*args)
    return n, time.perf_counter() - start


def _cpu_seconds(pids: set[int], seen: dict[int, float]) -> None:
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            seen[pid] = (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError):
            pass


def end_to_end(snapshot: Path, parsers: int | None, ra_url: str) -> tuple[float, int, float, float, int]:
    """(seconds, records, CPU seconds of all the run's processes, of the main process alone (the
    one commit path: what caps the speed on many cores), peak RSS of them all together)."""
    with tempfile.TemporaryDirectory(dir=ROOT / "state") as tmp:
        cmd = [sys.executable, "-m", "crawler", "backfill", "--snapshot", str(snapshot), "--state",
               f"{tmp}/state.sqlite3", "--out", f"{tmp}/events", "--api-url", "http://127.0.0.1:9",
               "--ra-url", ra_url, "--progress", "0", *(["--parsers", str(parsers)] if parsers else [])]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        peak, cpu = 0, {}  # type: ignore[var-annotated]
        while proc.poll() is None:
            _cpu_seconds(_tree_pids(proc.pid), cpu)
            peak = max(peak, _tree_rss(proc.pid)[1])
            time.sleep(0.05)
        seconds = time.perf_counter() - start
        out, err = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"the backfill failed: {err}")
        records = int(re.search(r"([\d,]+) records? this run", out).group(1).replace(",", ""))  # type: ignore[union-attr]
        return seconds, records, sum(cpu.values()), cpu.get(proc.pid, 0.0), peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--works", type=int, default=30000)
    parser.add_argument("--format", choices=FORMATS, default="tar-json-gz")
    parser.add_argument("--refs", choices=REFERENCE_MIXES, default="real",
                        help="the references' mix: real (the recorded samples' proportions, the default) or fuzz "
                             "(the tests' mix: every hard case often, a third of references mined from markup)")
    parser.add_argument("--parsers", default="1,default",
                        help="comma-separated counts, `default` for none given (default: 1,default)")
    parser.add_argument("--seen", action="store_true", help="also the seen store at 1 M and 10 M keys")
    parser.add_argument("--big", action="store_true", help="with --seen: also at 100 M keys (slow)")
    args = parser.parse_args()
    (ROOT / "state").mkdir(exist_ok=True)
    print(f"{os.cpu_count()} cores; generating {args.works:,} works ...", flush=True)
    corpus = generate(args.works, seed=20, refs=args.refs)
    links = len(corpus.expected)
    with tempfile.TemporaryDirectory(dir=ROOT / "state") as tmp:
        snapshot = Path(tmp) / "snapshot"
        write_snapshot(corpus.works, snapshot, args.format)
        del corpus
        size = sum(f.stat().st_size for f in snapshot.rglob("*") if f.is_file())
        row("snapshot", f"{args.works:,} records ({args.refs} references), {args.format}, {size / 1e6:,.1f} MB "
                        f"stored, {links:,} links to emit")
        pieces = _documents(snapshot if args.format == "dir-jsonl-gz" else next(snapshot.iterdir()))
        units = list(list_units([snapshot]))
        n, s = timed(floor, pieces)
        row("floor: inflate + msgspec scan", f"{n / s:,.0f} records/s (one core)")
        n, s = timed(baseline, pieces)
        baseline_figure = f"json.loads + the same extraction: {n / s:,.0f} records/s per core"
        row("baseline: inflate + json.loads + the same extraction", f"{n / s:,.0f} records/s (one core)")
        n, s = timed(reader, units, False)
        row("reader alone (read_unit)", f"{n / s:,.0f} records/s (one core)")
        n, s = timed(reader, units, True)
        row("a lane's reading: read_unit + parse_works", f"{n / s:,.0f} records/s (one core)")
        n, s = timed(reader, units, True, True)
        row("a lane's whole work, one process: + select and render (the ceiling without a writer)",
            f"{n / s:,.0f} records/s (one core)")
        del pieces
        sim, url = start_simulator("--works", "10")
        try:
            for given in args.parsers.split(","):
                parsers = None if given == "default" else int(given)
                seconds, records, cpu, main_cpu, peak = end_to_end(snapshot, parsers, f"{url}/ra")
                assert records == args.works, records
                name = f"--parsers {parsers}" if parsers else f"default flags (--parsers {default_parsers(True)})"
                row(f"end to end, {name}",
                    f"{records / seconds:,.0f} records/s ({seconds:.1f} s with start-up); {records / cpu:,.0f} "
                    f"records per CPU-second ({cpu:.1f} CPU-s, of which the main process {main_cpu:.1f}: "
                    f"{main_cpu / records * 1e6:.0f} us/record); {links / seconds:,.0f} links/s; peak RSS "
                    f"{peak / 1e6:,.0f} MB", TARGET, baseline_figure)
        finally:
            sim.terminate()
            sim.wait()
    if args.seen:
        bench_seen(args.big)
    print_table()


if __name__ == "__main__":
    main()
