"""Does zstd earn a place beside gzip for the output? Size and time per event, measured in turns.

    make demo                                          # writes state/demo/events/ (real events)
    .venv/bin/pip install zstandard                    # only for this script; not a dependency
    .venv/bin/python scripts/bench_compression.py [EVENTS.jsonl.gz]

Compresses the file's events the way the sink does, one member per page (13,000 events, the
demo's page), with ISA-L gzip (what the crawler writes) and zstd at a few levels.
"""

from __future__ import annotations

import gzip
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from isal import igzip

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ROOT / "state" / "demo" / "events" / "events-000001.jsonl.gz"
EVENTS_PER_PAGE = 13_000
ROUNDS = 5


def main() -> int:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT
    if not path.exists():
        print(f"no events at {path}: run `make demo` first, or name an events file", file=sys.stderr)
        return 2
    try:
        import zstandard
    except ImportError:
        print("zstandard is not installed: .venv/bin/pip install zstandard", file=sys.stderr)
        return 2
    lines = gzip.decompress(path.read_bytes()).splitlines(keepends=True)
    pages = [b"".join(lines[i:i + EVENTS_PER_PAGE]) for i in range(0, len(lines), EVENTS_PER_PAGE)]
    codecs: dict[str, Callable[[bytes], bytes]] = {
        "gzip, ISA-L level 1 (the crawler's)": lambda page: igzip.compress(page, 1),
        **{f"zstd level {level}": zstandard.ZstdCompressor(level=level).compress for level in (1, 3, 6)},
    }
    times: dict[str, list[float]] = {name: [] for name in codecs}
    sizes: dict[str, int] = {}
    for _ in range(ROUNDS):  # in turns, so a slow moment of the machine hits every codec
        for name, compress in codecs.items():
            start = time.perf_counter()
            sizes[name] = sum(len(compress(page)) for page in pages)
            times[name].append(time.perf_counter() - start)
    raw = sum(map(len, pages))
    print(f"{len(lines):,} events, {raw / len(lines):.0f} B each uncompressed, {len(pages)} page-sized members")
    for name in codecs:
        per_event = statistics.median(times[name]) / len(lines)
        print(f"  {name:36s} {sizes[name] / len(lines):5.1f} B/event  {per_event * 1e6:5.2f} µs/event")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
