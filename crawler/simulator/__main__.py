"""`python -m crawler.simulator`: serve a generated corpus on 127.0.0.1 until interrupted.

The first line on stdout is `listening on URL`, for whoever started it (`crawler demo`,
benchmarks, your own experiments with `crawler backfill --api-url URL --ra-url URL/ra`).

Faults, for a crawl at the API's worst (all seeded by --seed):
  --fault-rate 0.25           about a quarter of /works requests fail, persistently, spread over
                              every kind (5xx/429/408/403/404 pages, non-JSON and cut JSON 200s,
                              lost pages, duplicates, short scrolls, expired cursors) and /ra
                              errors at the same rate; each kind once within the first requests
  --stall 35                  a stalled answer comes after this many seconds
  --outage 500:60             from the 500th /works request on, 60 s of 503 pages
  --outage 20:30:ra           the same for /ra, from its 20th request (repeatable; may overlap)
  --cursor-ttl 5              cursors unused for 5 s expire (a 60 s outage then expires them)
  --day-share 0.3             30% of the works created, deposited and indexed on 2019-05-14
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from dataclasses import replace

from crawler.simulator.app import POLITE_LIST, Faults, Outage, PoolLimits, SimConfig, Simulator
from crawler.simulator.corpus import REFERENCE_MIXES, generate, stream_works
from crawler.simulator.snapshot import FORMATS as SNAPSHOT_FORMATS, write_snapshot


def _outage(text: str) -> Outage:
    """AFTER:SECONDS[:ra] -> Outage."""
    parts = text.split(":")
    try:
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ra", "works")):
            raise ValueError
        return Outage(after_requests=int(parts[0]), duration_s=float(parts[1]),
                      target=parts[2] if len(parts) == 3 else "works")
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected AFTER:SECONDS or AFTER:SECONDS:ra, not {text!r}") from None


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a share between 0 and 1, not {text}")
    return value


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m crawler.simulator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--works", type=int, default=5000, help="works in the corpus (default 5000)")
    parser.add_argument("--seed", type=int, default=1, help="corpus and fault seed (default 1)")
    parser.add_argument("--refs-mean", type=float, default=27.0, help="mean references per citing work")
    parser.add_argument("--refs", choices=REFERENCE_MIXES, default="fuzz",
                        help="the references' mix: every hard case often (fuzz), or the proportions of real "
                             "records (real: mostly bare DOI fields; for speed figures)")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free one)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per /works page")
    parser.add_argument("--latency-per-row", type=float, default=0.0, help="extra seconds per row served")
    parser.add_argument("--rate", type=int, help="polite pool: requests per second (default 3)")
    parser.add_argument("--concurrency", type=int, help="polite pool: requests in flight (default 3)")
    parser.add_argument("--no-compress", action="store_true", help="never gzip responses")
    parser.add_argument("--fault-rate", type=_share, default=0.0, metavar="R",
                        help="Faults.mix(R): about R of /works requests fail, every kind, with no end "
                             "(default 0: no faults)")
    parser.add_argument("--stall", type=float, metavar="S",
                        help="seconds a stalled answer (lost page or /ra) takes (default 35 with "
                             "--fault-rate, else 3); make it longer than the client's timeout")
    parser.add_argument("--outage", type=_outage, action="append", default=[], metavar="AFTER:SECONDS[:ra]",
                        help="from the AFTER-th /works (or /ra) request on, answer 503 pages for "
                             "SECONDS of wall time, then serve again; repeatable, outages may overlap")
    parser.add_argument("--day-share", type=_share, default=0.0, metavar="F",
                        help="share of the works created, deposited and indexed on one bulk-deposit "
                             "day, 2019-05-14 (default 0)")
    parser.add_argument("--cursor-ttl", type=float, default=300.0, metavar="S",
                        help="seconds an unused cursor lives (default 300, as the API's 5 minutes)")
    parser.add_argument("--write-snapshot", metavar="DIR",
                        help="write the corpus as snapshot files in DIR (see --snapshot-format), print their paths, exit")
    parser.add_argument("--snapshot-format", default="tar-json-gz", choices=SNAPSHOT_FORMATS,
                        help="layout of --write-snapshot: the public data file's tar of .json.gz (2020-2024), its "
                             "directory of .jsonl.gz (2025 on), a Plus .tar.gz, or single files (default tar-json-gz)")
    return parser


def faults_from(args: argparse.Namespace) -> Faults:
    if args.fault_rate > 0:
        faults = Faults.mix(args.fault_rate, seed=args.seed, stall_s=35.0 if args.stall is None else args.stall)
    else:
        faults = Faults(seed=args.seed) if args.stall is None else Faults(seed=args.seed, stall_s=args.stall)
    return replace(faults, outages=tuple(args.outage))


def main() -> None:
    args = parser().parse_args()
    pools = dict(POLITE_LIST)
    polite = pools["polite"]
    pools["polite"] = PoolLimits(args.rate or polite.rate, polite.interval_s, args.concurrency or polite.concurrency)
    config = SimConfig(pools=pools, latency_s=args.latency, latency_per_row_s=args.latency_per_row,
                       compress=not args.no_compress, cursor_ttl_s=args.cursor_ttl, faults=faults_from(args))
    drawn = {"seed": args.seed, "refs_mean": args.refs_mean, "day_share": args.day_share, "refs": args.refs}
    if args.write_snapshot:  # the works as they are drawn, none kept: any size in little memory
        for path in write_snapshot(stream_works(args.works, **drawn), args.write_snapshot, args.snapshot_format):
            print(path)
        return
    corpus = generate(args.works, **drawn)

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
