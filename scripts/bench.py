"""Benchmarks of issue "fast": every figure beside its target and its baseline, in one table.

    .venv/bin/python scripts/bench.py            # about 7 minutes on a 2-core machine
    .venv/bin/python scripts/bench.py --big      # adds the 100 M-key point of the seen store (about 6 more)

Only loopback addresses are contacted (the bundled simulator). Timings are medians of several
runs within this one process; decode and write run in turns with their baselines, and their
ratio is the median of each pair's. Machines here are shared, so compare ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import platform
import random
import re
import shutil
import statistics
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from hashlib import blake2b
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import msgspec  # noqa: E402

from crawler.decode import PAGE_DECODER, parse_page  # noqa: E402
from crawler.events import render  # noqa: E402
from crawler.model import SELECT_FIELDS  # noqa: E402
from tests.samples import sample_bytes  # noqa: E402

HEAVY = "rest-api/works-list-heavy-100.json"  # a recorded sample (tests/samples.py)
ROWS: list[tuple[str, str, str, str]] = []  # (figure, measured, target, baseline)


def row(figure: str, measured: str, target: str = "", baseline: str = "") -> None:
    ROWS.append((figure, measured, target, baseline))
    print(f"  {figure}: {measured}" + (f"  (target {target})" if target else "") + (f"  [baseline {baseline}]" if baseline else ""), flush=True)


def paired(ours, base, pairs: int = 7) -> tuple[float, float, float]:  # type: ignore[no-untyped-def]
    """Median seconds of `ours` and of `base`, and the median of their ratios, run in turns:
    this machine's speed swings within minutes, a pair shares its moment."""
    ours(), base()
    times = []
    for _ in range(pairs):
        start = time.perf_counter()
        ours()
        middle = time.perf_counter()
        base()
        times.append((middle - start, time.perf_counter() - middle))
    return (statistics.median(o for o, _ in times), statistics.median(b for _, b in times),
            statistics.median(b / o for o, b in times))


# -- heavy pages ---------------------------------------------------------------------------------
def heavy_items(n: int, trimmed: bool, salt: str = "") -> list[dict]:
    """n works shaped like the heavy sample (about 58 references each), with distinct DOIs."""
    items = json.loads(sample_bytes(HEAVY))["message"]["items"]
    keep = set(SELECT_FIELDS)
    out = []
    for i in range(n):
        item = items[i % len(items)]
        item = {k: v for k, v in item.items() if k in keep} if trimmed else dict(item)
        item["DOI"] = f"{item['DOI']}.{salt}{i}"
        out.append(item)
    return out


def page_body(items: list[dict]) -> bytes:
    return json.dumps({"status": "ok", "message-type": "work-list", "message": {
        "facets": {}, "next-cursor": "DnF1ZXJ5+/=", "total-results": 10**6, "items": items}}).encode()


_B_PREFIX = re.compile(r"^(?:https?://(?:dx\.)?doi\.org/|doi:)\s*", re.IGNORECASE)
_B_VALID = re.compile(r"10\.[0-9]{4,9}/\S+")
_B_TEXT = re.compile(r"10\.[0-9]{4,9}/\S+")


def baseline_links(body: bytes) -> list[tuple[str, str, str]]:
    """The obvious implementation: json.loads, walk the dicts, one regex and hash per link."""
    keys = []
    for item in json.loads(body)["message"]["items"]:
        subject = item["DOI"].lower()
        for ref in item.get("reference") or []:
            doi = _B_PREFIX.sub("", (ref.get("DOI") or "").strip()).strip()
            if _B_VALID.fullmatch(doi):
                obj = doi.lower()
            else:
                found = _B_TEXT.search(ref.get("unstructured") or "")
                if not found:
                    continue
                obj = found.group().rstrip(".,;:").lower()
            keys.append((subject, "references", obj))
        for name, entries in (item.get("relation") or {}).items():
            for entry in entries:
                if str(entry.get("id-type", "")).lower() == "doi":
                    keys.append((subject, name, _B_PREFIX.sub("", entry["id"]).lower()))
    for key in keys:
        blake2b("\n".join(key).encode(), digest_size=8).digest()
    return keys


def bench_decode() -> None:
    print("decode and extract (one core, body -> link keys, 1000-row heavy pages)")
    for trimmed in (True, False):
        body = page_body(heavy_items(1000, trimmed))
        links = sum(len(w.links) for w in parse_page(body).works)
        ours, base, ratio = paired(lambda: parse_page(body), lambda: baseline_links(body))
        what = "select-trimmed (what the crawler receives)" if trimmed else "full records"
        row(f"decode+extract, {what}, {len(body) / 1e6:.1f} MB/page, {links:,} links",
            f"{1000 / ours:,.0f} works/s", "30,000 works/s" if trimmed else "",
            f"json.loads + dict walk {1000 / base:,.0f} works/s; ratio {ratio:.1f}x")
        if not trimmed:
            continue
        # The floors under any extractor built on msgspec: scanning the JSON at all, and making
        # the Python objects of the fields the events need.
        floors = {
            "the same page's JSON scan alone (msgspec, every field skipped)":
                msgspec.json.Decoder(msgspec.defstruct("Nothing", [])).decode,
            "the same page decoded into the crawler's types alone (nothing extracted)": PAGE_DECODER.decode,
        }
        for figure, decode in floors.items():
            ours, floor, _ = paired(lambda: parse_page(body), lambda: decode(body))
            row(f"  {figure}", f"{1000 / floor:,.0f} works/s ({floor * 1e3:.0f} ms/page; decode+extract {ours * 1e3:.0f} ms)")


# -- write ---------------------------------------------------------------------------------------
def baseline_write(keys: list[tuple[str, str, str]]) -> bytes:
    ns = uuid.uuid5(uuid.NAMESPACE_URL, "x")
    lines = []
    for subject, relation, obj in keys:
        lines.append(json.dumps({
            "id": str(uuid.uuid5(ns, f"{subject}\n{relation}\n{obj}")), "subj_id": "https://doi.org/" + subject,
            "obj_id": "https://doi.org/" + obj, "relation_type_id": relation, "source_id": "crossref",
            "source_token": "36c35e23-8757-4a9d-aacf-345e9b7eb50d", "occurred_at": "2021-01-01T00:00:00Z",
            "timestamp": "2026-01-01T00:00:00Z", "action": "add", "license": "x", "terms": "y", "evidence_record": None,
            "subj": {"pid": subject, "url": subject, "work_type_id": "journal-article"},
            "obj": {"pid": obj, "url": obj, "method": "doi-literal", "verification": "literal"}}))
    return gzip.compress(("\n".join(lines) + "\n").encode(), compresslevel=6)


async def _write_pages(directory: Path, pages: list) -> tuple[float, int, int]:  # type: ignore[type-arg]
    """select_new + render + append + commit, one page after another, in this process."""
    from crawler.select import select_new
    from crawler.sink import Sink
    from crawler.store import Store

    store = await Store.open(directory / "state.sqlite3")
    (directory / "out").mkdir()
    sink = Sink(directory / "out", 1, 0, 1 << 40)
    agencies = {p: "Crossref" for page in pages for p in page.prefixes}
    events = 0
    start = time.perf_counter()
    for page in pages:
        seen = await store.seen_links([w.subject for w in page.works])
        groups, new, changed, counts = select_new(page.works, seen, agencies)
        data = render(groups, "2026-11-23T00:00:00Z")
        offset = sink.append(data)
        await store.commit_page(window_id=None, works=len(page.works), received=0, cursor=None, seen=changed,
                                events=new, sink_seq=sink.seq, sink_offset=offset, counters=counts)
        events += new
    elapsed = time.perf_counter() - start
    size = sink.offset
    await store.close()
    return elapsed, events, size


def bench_write() -> None:
    print("write (one core, link keys -> committed gzip output and state)")
    pages = [parse_page(page_body(heavy_items(1000, True, salt=f"p{i}-"))) for i in range(4)]
    events = sum(len(g.objs) for page in pages for w in page.works for g in w.groups)
    keys = [(w.doi, link.relation, link.obj) for page in pages for w in page.works for link in w.links]

    def ours() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            _, written, _ = asyncio.run(_write_pages(Path(tmp), pages))
            assert written == events

    ours_s, base_s, ratio = paired(ours, lambda: baseline_write(keys))
    row(f"write, {events:,} events in 4 pages", f"{events / ours_s:,.0f} events/s", "250,000 events/s",
        f"dict + uuid5 + json.dumps + gzip 6: {len(keys) / base_s:,.0f} events/s; ratio {ratio:.1f}x")
    groups = [(w.doi, "journal-article", None, g.relation, "t", g.objs) for w in pages[0].works for g in w.groups]
    n = sum(len(g[5]) for g in groups)
    sample = render(groups, "2026-11-23T00:00:00Z")
    zlib6 = gzip.compress(gzip.decompress(sample), compresslevel=6)
    row("output size per event", f"{len(sample) / n:.1f} B (ISA-L level 1)", "", f"{len(zlib6) / n:.1f} B at zlib level 6")


# -- the seen-key store --------------------------------------------------------------------------
async def _seen_curve(directory: Path, points: list[int], keys_per_subject: int = 13) -> list[tuple[int, float, float]]:
    """Grow the store to each point, then time pages of 1,000 new works as the crawler writes them.

    The growth uses the same commit in batches of 20,000 works (quicker, same file layout:
    random subjects into one B-tree); the timed probe is 1 M keys in crawler-sized pages,
    each a lookup of the page's subjects and then one commit.
    """
    from crawler.store import Store

    store = await Store.open(directory / "seen.sqlite3")
    rng = random.Random(7)
    held = 0
    results = []

    async def add(n_keys: int, per_commit: int) -> None:
        nonlocal held
        for _ in range(max(1, n_keys // (per_commit * keys_per_subject))):
            subjects = [rng.getrandbits(64) - (1 << 63) for _ in range(per_commit)]
            await store.seen_links(subjects)
            seen = {s: [rng.getrandbits(48) for _ in range(keys_per_subject)] for s in subjects}
            await store.commit_page(seen=seen, events=0, sink_seq=1, sink_offset=0, counters={})
            held += per_commit * keys_per_subject

    for point in points:
        while held < point:
            await add(min(point - held, 10_000_000), 20_000)
            print(f"    holding {held / 1e6:,.1f} M keys", flush=True)
        await store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size = (directory / "seen.sqlite3").stat().st_size
        per_key = size / held
        probe = 1_000_000
        start = time.perf_counter()
        await add(probe, 1000)
        results.append((point, probe / (time.perf_counter() - start), per_key))
    await store.close()
    return results


def bench_seen(big: bool) -> None:
    print("seen-key store (new keys/s while holding N keys; bytes per key on disk)")
    points = [1_000_000, 10_000_000] + ([100_000_000] if big else [])
    with tempfile.TemporaryDirectory(dir=ROOT / "state") as tmp:
        for held, rate, per_key in asyncio.run(_seen_curve(Path(tmp), points)):
            row(f"seen store, adding 1 M keys while holding {held / 1e6:,.0f} M", f"{rate:,.0f} keys/s, {per_key:.1f} B/key",
                "300,000 keys/s at 100 M, <= 10 B/key", "one row per key: ~15 B/key, ~120,000 keys/s by 5 M")


# -- against the simulator -----------------------------------------------------------------------
def start_simulator(*args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "crawler.simulator", "--port", "0", *args],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith("listening on "):
        proc.kill()
        raise SystemExit(f"the simulator did not start: {line!r}")
    return proc, line.split()[-1]


def sim_stats(url: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(f"{url}/_simulator/stats", timeout=10) as resp:
        return json.load(resp)


def crawler_cmd(url: str, directory: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "crawler", "backfill", "--api-url", url, "--ra-url", f"{url}/ra",
            "--mailto", "bench@example.org", "--state", str(directory / "state.sqlite3"),
            "--out", str(directory / "events"), "--progress", "0", "--quiet", *extra]


async def _sequential(url: str, pages: int, filter_: str) -> tuple[float, float]:
    """How habanero, crossrefapi and rcrossref page: one cursor, one request at a time.
    Returns (works/s, median seconds to receive a full page of 1,000 works): the latency in
    the bound is this one, measured on this machine, where the simulator shares the cores."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        cursor, start, works, latencies = "*", time.perf_counter(), 0, []
        for _ in range(pages):
            sent = time.perf_counter()
            async with session.get(f"{url}/works", params={"rows": "1000", "cursor": cursor, "filter": filter_,
                                                          "mailto": "bench@example.org",
                                                          "select": ",".join(SELECT_FIELDS)}) as resp:
                body = await resp.read()
            latencies.append(time.perf_counter() - sent)
            doc = json.loads(body)
            cursor, works = doc["message"]["next-cursor"], works + len(doc["message"]["items"])
        return works / (time.perf_counter() - start), statistics.median(latencies)


# (label, simulator corpus flags, crawler range flags, target share of the bound)
RATE_CASES = [
    ("30,000 works over ten years", ["--works", "60000"], ["--from", "2015-01-01", "--until", "2024-12-31"], 0.80),
    ("40,000 works, 60% created on one day", ["--works", "40000", "--day-share", "0.6"], [], 0.75),
    ("200,000 works", ["--works", "200000"], [], 0.93),
]
RATE_LATENCY = (0.6, 0.001)  # seconds per request, and per row served


def bench_rate() -> None:
    """Each case with the flags a user gets, against the polite pool's bound, beside one cursor."""
    latency, per_row = RATE_LATENCY
    print(f"rate budget (polite pool 3/s and 3 concurrent; simulated latency {latency} s + {per_row * 1000:g} ms/row; "
          "bound min(rate, concurrency / measured latency of a full page) x 1000 rows); default flags")
    for label, corpus, range_flags, target in RATE_CASES:
        proc, url = start_simulator(*corpus, "--seed", "19", "--refs-mean", "8", "--latency", str(latency),
                                    "--latency-per-row", str(per_row), "--rate", "3", "--concurrency", "3")
        try:
            with tempfile.TemporaryDirectory() as tmp:
                done = subprocess.run(crawler_cmd(url, Path(tmp), *range_flags), capture_output=True, text=True)
                if done.returncode:
                    raise SystemExit(done.stderr)
                con = sqlite3.connect(Path(tmp) / "state.sqlite3")
                works, windows = con.execute("SELECT sum(works), count(*) FROM windows").fetchone()
                con.close()
            stats = sim_stats(url)
            ours = works / stats["seconds"]
            kinds = stats["requests_by_kind"]
            pages = kinds.get("page", 0) - kinds.get("empty-page", 0)
            other = stats["requests"] - pages
            window_filter = "from-created-date:2015-01-01,until-created-date:2024-12-31" if range_flags else ""
            sequential, full_page = asyncio.run(_sequential(url, 6, window_filter))
            bound = min(3.0, 3 / full_page) * 1000
            over = sum(stats["over_limit"].values())
            row(f"rate, {label}: {works:,} works, {windows} windows, {stats['seconds']:.1f} s",
                f"{ours:,.0f} works/s = {ours / bound:.2f} of the bound ({bound:,.0f} works/s: full pages in "
                f"{full_page:.2f} s); {over} requests over the limits; "
                f"{other} of {stats['requests']} requests not pages of works ({other / stats['requests']:.1%}: "
                f"{kinds.get('count', 0)} counts, {kinds.get('facet', 0)} facets, {kinds.get('empty-page', 0)} empty pages)",
                f">= {target:.2f} of the bound, 0 over",
                f"one sequential cursor: {sequential:,.0f} works/s; ratio {ours / sequential:.1f}x")
        finally:
            proc.terminate()
            proc.wait()


def _tree_pids(pid: int) -> set[int]:
    """A process and all its descendants (forkserver, parser pool). Children are listed per
    thread that started them (the pool starts from a worker thread)."""
    pids, todo = {pid}, [pid]
    while todo:
        for children in Path(f"/proc/{todo.pop()}/task").glob("*/children"):
            try:
                kids = {int(c) for c in children.read_text().split()} - pids
            except OSError:
                continue
            pids |= kids
            todo += kids
    return pids


def _tree_rss(pid: int) -> tuple[int, int]:
    """Resident bytes of a process alone and with all its descendants."""
    own = total = 0
    for p in _tree_pids(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                    total += rss
                    own += rss if p == pid else 0
        except OSError:
            pass
    return own, total


def _peak_rss(works: int) -> tuple[int, int, int, int, int, int]:
    """Peak RSS of a backfill (the crawler and its parser processes): over the whole run, over
    its first half and over its second half; the peaks of the main process alone and of the
    others (the forkserver and the parsers); the pages fetched."""
    proc, url = start_simulator("--works", str(works), "--refs-mean", "58", "--rate", "100", "--concurrency", "8")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.monotonic()
            crawler = subprocess.Popen(crawler_cmd(url, Path(tmp), "--concurrency", "8", "--window-pages", "2"),
                                       stderr=subprocess.PIPE, text=True)
            samples = []
            while crawler.poll() is None:
                samples.append((time.monotonic() - start, *_tree_rss(crawler.pid)))
                time.sleep(0.1)
            if crawler.returncode:
                raise SystemExit(crawler.stderr.read() if crawler.stderr else "crawler failed")
            half = samples[-1][0] / 2
            first, second = [r for t, _, r in samples if t < half], [r for t, _, r in samples if t >= half]
            main, others = max(own for _, own, _ in samples), max(total - own for _, own, total in samples)
            return max(first + second), max(first), max(second), main, others, sim_stats(url)["pages"]
    finally:
        proc.terminate()
        proc.wait()


def bench_memory(small_works: int = 2000) -> None:
    print("memory (peak RSS of the crawler and its parser processes; concurrency 8, heavy 1000-row pages)")
    large_works = 20 * small_works
    small, _, _, main_small, others_small, pages_small = _peak_rss(small_works)
    large, first_half, second_half, main_large, others_large, pages_large = _peak_rss(large_works)
    row(f"peak RSS, {small_works:,} works ({pages_small} pages)", f"{small / 2**20:,.0f} MB", "<= 300 MB")
    row(f"peak RSS, {large_works:,} works ({pages_large} pages)", f"{large / 2**20:,.0f} MB ({large / small - 1:+.0%})",
        "within 10% of the small corpus")
    for whose, small_peak, large_peak in (("the main process alone", main_small, main_large),
                                          ("the other processes together (forkserver, parsers)", others_small, others_large)):
        row(f"  peaks of {whose}, small and large corpus",
            f"{small_peak / 2**20:,.0f} MB and {large_peak / 2**20:,.0f} MB ({(large_peak - small_peak) / 2**20:+,.0f} MB)")
    row(f"peak RSS of the {large_works:,}-work run, second half against first half",
        f"{second_half / 2**20:,.0f} MB against {first_half / 2**20:,.0f} MB ({second_half / first_half - 1:+.0%})",
        "", "growth once every window scrolls")


async def _stalls(url: str, directory: Path) -> list[tuple[float, float, float]]:
    """(lateness, CPU of the loop's thread, CPU of the whole process) of each 5-ms tick.

    The two CPU times tell a stall's cause: the loop running a long callback (loop CPU close
    to the stall), another thread of ours holding the GIL (process CPU close to it), or the
    process waiting for a core that the simulator and the parser are using (neither)."""
    from crawler.config import Config
    from crawler.jobs import backfill

    stalls: list[tuple[float, float, float]] = []

    async def watch() -> None:
        while True:
            start, loop_cpu, process_cpu = time.perf_counter(), time.thread_time(), time.process_time()
            await asyncio.sleep(0.005)
            stalls.append((time.perf_counter() - start - 0.005, time.thread_time() - loop_cpu,
                           time.process_time() - process_cpu))

    watcher = asyncio.create_task(watch())
    config = Config(state=directory / "state.sqlite3", out=directory / "events", api_url=url, ra_url=f"{url}/ra",
                    mailto="bench@example.org", concurrency=8, window_pages=2, progress_s=0)
    outcome = await backfill(config, asyncio.Event())
    watcher.cancel()
    if outcome.code:
        raise SystemExit(outcome.message)
    return stalls


def bench_stalls() -> None:
    print("responsiveness (event-loop stalls during a heavy backfill, concurrency 8)")
    proc, url = start_simulator("--works", "8000", "--refs-mean", "58", "--rate", "100", "--concurrency", "8")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            stalls = sorted(asyncio.run(_stalls(url, Path(tmp))))
    finally:
        proc.terminate()
        proc.wait()
    p99 = stalls[int(len(stalls) * 0.99)][0]
    worst, loop_cpu, process_cpu = stalls[-1]
    row("worst event-loop stall", f"{worst * 1e3:.0f} ms (p99 {p99 * 1e3:.1f} ms, {len(stalls):,} samples); "
        f"CPU during it: loop {loop_cpu * 1e3:.0f} ms, process {process_cpu * 1e3:.0f} ms", "< 50 ms")


def bench_arithmetic() -> None:
    print("full-corpus arithmetic")
    items = heavy_items(1000, True)
    body = page_body(items)
    links = sum(len(w.links) for w in parse_page(body).works)
    works = 180e6
    bound = min(3.0, 3 / (0.6 + 0.001 * 1000)) * 1000  # works/s in the polite pool
    row("polite-pool ceiling", f"{bound:,.0f} works/s -> {works / bound / 86400:.1f} days for 180 M works")
    row("bytes per work (heavy, trimmed)", f"{len(body) / 1000 / 1024:.1f} KiB decompressed; {links / 1000:.0f} candidate links")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--big", action="store_true", help="also measure the seen store at 100 M keys (slow)")
    parser.add_argument("--only", choices=("decode", "write", "seen", "rate", "memory", "stalls", "arithmetic"))
    parser.add_argument("--memory-works", type=int, default=2000, metavar="N",
                        help="works in the memory section's small corpus; the large one has 20 times as many "
                             "(default 2000; the simulator needs ~32 KB of memory per work)")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    steps = {"decode": bench_decode, "write": bench_write, "seen": lambda: bench_seen(args.big), "rate": bench_rate,
             "memory": lambda: bench_memory(args.memory_works), "stalls": bench_stalls, "arithmetic": bench_arithmetic}
    for name, step in steps.items():
        if args.only in (None, name):
            step()
    print_table()


def print_table() -> None:
    print()
    print("| figure | measured | target | baseline |")
    print("|---|---|---|---|")
    for figure, measured, target, baseline in ROWS:
        print(f"| {figure} | {measured} | {target} | {baseline} |")


if __name__ == "__main__":
    main()
