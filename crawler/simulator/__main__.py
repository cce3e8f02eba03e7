"""`python -m crawler.simulator`: serve a generated corpus on 127.0.0.1 until interrupted.

The first line on stdout is `listening on URL`, for whoever started it (`crawler demo`,
benchmarks, your own experiments with `crawler backfill --api-url URL --ra-url URL/ra`).
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from crawler.simulator.app import POLITE_LIST, PoolLimits, SimConfig, Simulator
from crawler.simulator.corpus import generate


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m crawler.simulator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--works", type=int, default=5000, help="works in the corpus (default 5000)")
    parser.add_argument("--seed", type=int, default=1, help="corpus seed (default 1)")
    parser.add_argument("--refs-mean", type=float, default=27.0, help="mean references per citing work")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free one)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per /works page")
    parser.add_argument("--latency-per-row", type=float, default=0.0, help="extra seconds per row served")
    parser.add_argument("--rate", type=int, help="polite pool: requests per second (default 3)")
    parser.add_argument("--concurrency", type=int, help="polite pool: requests in flight (default 3)")
    parser.add_argument("--no-compress", action="store_true", help="never gzip responses")
    # -- snapshot files (crawler.simulator.snapshot): write the corpus and exit --
    from crawler.simulator.snapshot import FORMATS as SNAPSHOT_FORMATS, write_snapshot
    parser.add_argument("--write-snapshot", metavar="DIR", help="write the corpus as snapshot files in DIR, print their paths, exit")
    parser.add_argument("--snapshot-format", default="tar-json-gz", choices=SNAPSHOT_FORMATS, help="layout of --write-snapshot")
    args = parser.parse_args()

    pools = dict(POLITE_LIST)
    polite = pools["polite"]
    pools["polite"] = PoolLimits(args.rate or polite.rate, polite.interval_s, args.concurrency or polite.concurrency)
    config = SimConfig(pools=pools, latency_s=args.latency, latency_per_row_s=args.latency_per_row,
                       compress=not args.no_compress)
    corpus = generate(args.works, seed=args.seed, refs_mean=args.refs_mean)
    if args.write_snapshot:  # -- snapshot files: write and exit --
        for path in write_snapshot(corpus.works, args.write_snapshot, args.snapshot_format):
            print(path)
        return

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with Simulator(corpus, config, port=args.port) as sim:
            print(f"listening on {sim.url}", flush=True)
            await stop.wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
