"""Command line: parse flags (then CRAWLER_* / CROSSREF_PLUS_TOKEN), build one Config, run, exit.

Each command's parser has only the flags it uses, from shared groups (parent parsers). The
exit codes are `errors.EXIT_CODES`, listed in `crawler --help` and in the README.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import signal
import sys
import textwrap
from collections.abc import Awaitable, Callable
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from crawler import __version__
from crawler.config import DEFAULT_API_URL, DEFAULT_RA_URL, DEFAULT_STATE, MAX_ROWS, Config, default_parsers
from crawler.errors import EXIT_CODES, CrawlerError, Stopped, UsageError
from crawler.logs import print_outcome, setup_logging

log = logging.getLogger("crawler")

EXAMPLES = """\
examples:
  crawler backfill --mailto you@example.org                  # the whole corpus, resumable
  crawler backfill --mailto you@example.org --from 2024-01-01 --until 2024-01-31
  crawler backfill --snapshot crossref-2026/                 # from the public data file, then `update`
  crawler status                                             # where the backfill stands
  crawler status --json                                      # the same, for scripts
  crawler stats                                              # events by relation, agency, prefix
  crawler update --mailto you@example.org                    # new links since the last run
  crawler demo                                               # a real run against the bundled simulator
"""


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date as YYYY-MM-DD, got {text!r}") from None


def _state_file(text: str) -> Path:
    """A state file's path. `Path` drops a trailing slash, which made `--state newdir/` a file
    named newdir: a path that ends like a folder is refused while the slash is still there."""
    if text.endswith(("/", os.sep)):
        raise argparse.ArgumentTypeError(f"{text!r} names a folder; the state is a file: give e.g. "
                                         f"{os.path.join(text, 'state.sqlite3')}")
    return Path(text)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        seconds = -1
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"expected a duration such as 90s, 30m, 3h or 1d, got {text!r}")
    return seconds


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, got {text!r}")
    return value


def _seconds_or_zero(text: str) -> float:
    if text.strip() in ("0", "0.0"):
        return 0.0
    try:
        return _seconds(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, 0 or more, got {text!r}") from None


def _rows(text: str) -> int:
    value = _positive(text)
    if value > MAX_ROWS:
        raise argparse.ArgumentTypeError(f"the API serves at most {MAX_ROWS} rows per page, got {value}")
    return value


def _filter(text: str) -> str:
    """--filter: `name:value[,name:value…]`, the API's own syntax, outside the date windows."""
    parts = [part.strip() for part in text.split(",")]
    for part in parts:
        name, colon, value = part.partition(":")
        if not (colon and value.strip() and re.fullmatch(r"[a-z][a-z0-9.-]*", name)):
            raise argparse.ArgumentTypeError(
                f"expected name:value[,name:value…] such as type:journal-article,member:78, got {text!r}")
        if name in WINDOW_FILTERS:
            raise argparse.ArgumentTypeError(
                f"{name} is set by the crawl's own date windows (use --from/--until or --since), got {text!r}")
    return ",".join(parts)


# Filters the crawl's windows set themselves (created-date for a backfill, index-date for updates).
WINDOW_FILTERS = {f"{end}-{field}-date" for end in ("from", "until") for field in ("created", "index")}


def _group(title: str) -> tuple[argparse.ArgumentParser, argparse._ArgumentGroup]:
    """A parent parser holding one titled group of flags, shared by the commands that use them."""
    parent = argparse.ArgumentParser(add_help=False)
    return parent, parent.add_argument_group(title)


def _state_flags() -> argparse.ArgumentParser:
    parent, group = _group("state")
    group.add_argument("--state", type=_state_file, default=Path(os.environ.get("CRAWLER_STATE", DEFAULT_STATE)),
                       help=f"the state file (default: {DEFAULT_STATE}; env CRAWLER_STATE)")
    return parent


def _verbose_flag() -> argparse.ArgumentParser:
    parent, group = _group("logging")
    group.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks on errors")
    return parent


def _logging_flags() -> argparse.ArgumentParser:
    parent, group = _group("logging")
    group.add_argument("-q", "--quiet", action="store_true", help="only warnings, errors and the result; no progress")
    group.add_argument("--log-format", choices=("text", "json"), default=os.environ.get("CRAWLER_LOG_FORMAT", "text"),
                       help="log lines as text, or as one JSON object per line with the figures as fields, "
                       "for log collectors (default: text; env CRAWLER_LOG_FORMAT)")
    return parent


def _output_flags() -> argparse.ArgumentParser:
    """What writes events: the output directory, the parser processes, progress reports."""
    parent, group = _group("output")
    env = os.environ
    group.add_argument("--out", type=Path, default=env.get("CRAWLER_OUT") and Path(env["CRAWLER_OUT"]),
                       help="output directory for events-*.jsonl.gz (default: the one the state file "
                       "records, else STATE-events beside the state file; env CRAWLER_OUT)")
    group.add_argument("--parsers", type=_positive, default=None, metavar="N",
                       help=f"parser processes (default: cores - 1 = {default_parsers()}; reading a snapshot, "
                       f"cores = {default_parsers(snapshot=True)})")
    group.add_argument("--progress", type=_seconds_or_zero, default=10.0, metavar="SECONDS",
                       help="on a terminal a live panel shows progress; elsewhere (cron, nohup, CI) a "
                       "line is logged every SECONDS; 0 for none (default: 10)")
    group.add_argument("--rotate-mb", type=float, default=256.0, help=argparse.SUPPRESS)
    return parent


def _lookup_flags() -> argparse.ArgumentParser:
    """Every command that writes events looks up registration agencies, and waits out outages."""
    parent, group = _group("agency look-ups and outages")
    group.add_argument("--ra-url", default=os.environ.get("CRAWLER_RA_URL", DEFAULT_RA_URL), metavar="URL",
                       help=f"registration-agency service (default: {DEFAULT_RA_URL}; env CRAWLER_RA_URL)")
    group.add_argument("--timeout", type=_seconds, default=120.0, metavar="SECONDS",
                       help="a response that stalls this long is abandoned and asked again (default: 120)")
    group.add_argument("--give-up-after", type=_duration, default=None, metavar="DURATION",
                       help="end the run (exit 6) when a service has not answered for this long, e.g. 6h "
                       "(default: never; outages are waited out)")
    group.add_argument("--retry-initial", type=float, default=1.0, help=argparse.SUPPRESS)
    group.add_argument("--retry-max", type=float, default=180.0, help=argparse.SUPPRESS)
    return parent


def _api_flags() -> argparse.ArgumentParser:
    """The commands that crawl the REST API: who we are, how hard we ask, what we ask for."""
    parent, group = _group("the REST API")
    env = os.environ
    group.add_argument("--mailto", default=env.get("CRAWLER_MAILTO"), metavar="EMAIL",
                       help="your e-mail: puts the crawler in the faster polite pool (env CRAWLER_MAILTO)")
    group.add_argument("--api-url", default=env.get("CRAWLER_API_URL", DEFAULT_API_URL), metavar="URL",
                       help=f"Crossref REST API (default: {DEFAULT_API_URL}; env CRAWLER_API_URL)")
    group.add_argument("--plus-token", default=env.get("CROSSREF_PLUS_TOKEN"), metavar="TOKEN",
                       help="Metadata Plus token, sent as a header, never printed or stored "
                       "(env CROSSREF_PLUS_TOKEN, which keeps it out of your shell history)")
    group.add_argument("--filter", default=None, type=_filter, metavar="NAME:VALUE[,…]",
                       help="crawl only the works matching these API filters, e.g. type:journal-article, "
                       "member:78, prefix:10.1101; recorded in the state file like the range")
    group.add_argument("--concurrency", type=_positive, default=None, metavar="N",
                       help="most requests in flight; never more than the API advertises "
                       "(default: what the API advertises, 3 in the polite pool)")
    group.add_argument("--rows", type=_rows, default=MAX_ROWS, metavar="N",
                       help=f"works per page, at most {MAX_ROWS} (default: {MAX_ROWS})")
    group.add_argument("--window-pages", type=_positive, default=20, metavar="N",
                       help="cut the range into windows of about N pages at most (up to 15%% more starts as "
                       "it is; the plan makes them smaller to keep every scroll slot busy; default: 20)")
    group.add_argument("--max-body-mb", type=float, default=256.0, help=argparse.SUPPRESS)
    group.add_argument("--trust-rate-headers", action="store_true", help=argparse.SUPPRESS)
    return parent


class _Parser(argparse.ArgumentParser):
    """Errors in one line (the usage is one --help away), like every other error."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _CommandParser(_Parser):
    """A command's parser: a flag it does not know is its error (`crawler backfill: error: …`,
    pointing at `crawler backfill --help`), not the top-level parser's."""

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def, override]
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras


def exit_codes_text() -> str:
    """The exit codes, for `crawler --help` (the README has the same table)."""
    return "exit codes:\n" + "\n".join(f"  {code:<4} {meaning}" for code, meaning in EXIT_CODES.items())


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="crawler",
        description="Backfill the Crossref corpus into Crossref Event Data events "
        "(references and relations between DOIs), resumably and within the API's limits.",
        epilog=f"{EXAMPLES}\n{exit_codes_text()}\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"crawler {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_CommandParser)
    state, verbose, logging_, output, lookups, api = (
        _state_flags(), _verbose_flag(), _logging_flags(), _output_flags(), _lookup_flags(), _api_flags())
    crawling = [state, output, api, lookups, verbose, logging_]

    backfill = commands.add_parser(
        "backfill",
        help="every work created in a date range, or every record of snapshot files, to events (resumable)",
        description=textwrap.fill(
            "Walk every work whose created date lies in --from..--until through the API, or read every "
            "record of Crossref's public data file or a Plus snapshot (--snapshot: hours instead of days for "
            "the whole corpus), and write one event per link, exactly once. Run the same command again to "
            "resume after a crash or Ctrl-C; a finished backfill says so and exits 0. Keep the state current "
            "afterwards with `crawler update`.", 90),
        epilog="example:\n  crawler backfill --mailto you@example.org --from 2024-01-01 --until 2024-12-31\n"
        "  crawler backfill --mailto you@example.org --filter prefix:10.1101 --state biorxiv.sqlite3\n"
        "  crawler backfill --snapshot /data/crossref-2026/ --mailto you@example.org",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=crawling,
    )
    backfill.add_argument("--from", dest="date_from", type=_date, metavar="YYYY-MM-DD",
                          help="first created date (default: the earliest registered work)")
    backfill.add_argument("--until", dest="date_until", type=_date, metavar="YYYY-MM-DD",
                          help="last created date, inclusive (default: today; a later date is cut "
                          "back to today, with a warning)")
    backfill.add_argument("--plan-only", action="store_true",
                          help="size the windows (counts only), print how many works and pages and how long "
                          "the crawl should take, and exit; the state keeps the plan for the real run")
    backfill.add_argument("--snapshot", nargs="+", type=Path, metavar="PATH",
                          help="read works from Crossref snapshot files instead of the API: the public data "
                          "file (.tar of .json.gz, or a folder of .jsonl.gz), a Plus all.json.tar.gz, folders "
                          "or .json/.jsonl(.gz) files; no /works request is made. Then run `crawler update`")

    update = commands.add_parser(
        "update",
        help="pick up works re-indexed since the last backfill or update (new links only)",
        description="Fetch works re-indexed since the state's high-water mark (from-index-date), "
        "emit only links never emitted before, and advance the mark once everything is written. "
        "The first update after a backfill starts on the day that backfill started.",
        epilog="examples:\n  crawler update --mailto you@example.org\n"
        "  crawler update --mailto you@example.org --follow --interval 3h\n"
        "  crawler update --since 2026-01-01        # override the mark\n"
        "cron, daily at 04:10:\n  10 4 * * * cd /srv/crawler && .venv/bin/crawler update --mailto you@example.org --quiet",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=crawling,
    )
    update.add_argument("--since", type=_date, metavar="YYYY-MM-DD", help="start from this index date instead of the mark")
    update.add_argument("--follow", action="store_true", help="keep running: update, wait --interval, repeat until stopped")
    update.add_argument("--interval", type=_duration, default=3 * 3600.0, metavar="DURATION",
                        help="pause between updates with --follow, e.g. 30m, 3h, 1d (default: 3h)")

    ingest = commands.add_parser(
        "ingest-xml",
        help="turn Crossref XML files (deposits, UNIXREF, UNIXSD, OAI-PMH) into the same events",
        description="Read Crossref XML files or directories (recursively; .xml and .xml.gz): deposit "
        "XML (doi_batch 4.x/5.x), UNIXREF, UNIXSD and OAI-PMH ListRecords pages, and write their "
        "links as events into the same state file and output, each link once.",
        epilog="example:\n  crawler ingest-xml dumps/2026-11/ --ra-url https://doi.org/ra",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[state, output, lookups, verbose, logging_],
    )
    ingest.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="XML files or directories")
    ingest.add_argument("--batch", type=_rows, default=MAX_ROWS, metavar="N",
                        help=f"records per commit, at most {MAX_ROWS} (default: {MAX_ROWS})")

    status = commands.add_parser(
        "status",
        help="where a backfill stands",
        description="Print where a backfill stands: windows by status, works, events, retries, errors. "
        "Safe to run while a crawler is working on the same state file.",
        epilog="examples:\n  crawler status --state state/crawler.sqlite3\n  crawler status --windows --json | jq '.[0]'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[state, verbose],
    )
    status.add_argument("--json", action="store_true", help="print JSON for scripts instead of a table")
    status.add_argument("--windows", action="store_true",
                        help="every window instead: range, filter, status, works, attempts, last error "
                        "(short and failed ones first)")

    stats = commands.add_parser(
        "stats",
        help="events by relation type, object agency and subject prefix",
        description="Count the events written so far by relation type, by the object's registration "
        "agency and by subject DOI prefix, from the state file (fast: the output is not reread).",
        epilog="examples:\n  crawler stats\n  crawler stats --json --top 50 | jq .by_agency",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[state, verbose],
    )
    stats.add_argument("--json", action="store_true", help="print JSON for scripts instead of a table")
    stats.add_argument("--top", type=_positive, default=10, metavar="N", help="subject prefixes to list (default: 10)")

    demo = commands.add_parser(
        "demo",
        help="run a real backfill against the bundled Crossref simulator",
        description="Start the bundled Crossref-compatible simulator on a free loopback port with a "
        "generated corpus, backfill it for real, and print a summary.",
        epilog="examples:\n  crawler demo\n  crawler demo --works 200000 --dir /tmp/demo   # a longer run to watch",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[verbose, logging_],
    )
    demo.add_argument("--works", type=_positive, default=30000, help="works in the corpus (default: 30000)")
    demo.add_argument("--seed", type=int, default=7, help="corpus seed (default: 7)")
    demo.add_argument("--dir", type=Path, default=Path("state/demo"), help="state and output (default: state/demo)")
    return parser


# flag -> Config field, with its conversion; a command's parser has only the flags it uses.
_CONFIG_FIELDS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "state": ("state", lambda v: v), "out": ("out", lambda v: v), "api_url": ("api_url", lambda v: v),
    "ra_url": ("ra_url", lambda v: v), "mailto": ("mailto", lambda v: v or None),
    "plus_token": ("plus_token", lambda v: v or None), "filter": ("scope", lambda v: v or ""),
    "date_from": ("date_from", lambda v: v), "date_until": ("date_until", lambda v: v),
    "concurrency": ("concurrency", lambda v: v), "rows": ("rows", lambda v: v), "batch": ("rows", lambda v: v),
    "parsers": ("parsers", lambda v: v), "window_pages": ("window_pages", lambda v: v),
    "timeout": ("timeout_s", lambda v: v), "retry_initial": ("retry_initial_s", lambda v: v),
    "retry_max": ("retry_max_s", lambda v: v), "give_up_after": ("give_up_after_s", lambda v: v),
    "rotate_mb": ("rotate_bytes", lambda v: max(1, int(v * 1024 * 1024))),
    "max_body_mb": ("max_body_bytes", lambda v: max(1, int(v * 1024 * 1024))),
    "trust_rate_headers": ("trust_rate_headers", lambda v: v),
}
MAILTO = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def config_from(args: argparse.Namespace) -> Config:
    given = vars(args)
    settings = {name: convert(given[flag]) for flag, (name, convert) in _CONFIG_FIELDS.items() if flag in given}
    if settings.get("parsers", 0) is None:
        settings["parsers"] = default_parsers(snapshot=bool(given.get("snapshot")))
    date_from, date_until = settings.get("date_from"), settings.get("date_until")
    today = datetime.now(timezone.utc).date()
    if date_from and date_from > today:
        raise UsageError(f"--from {date_from} is in the future (today is {today})")
    if date_until and date_until > today:
        log.warning("--until %s is in the future: crawling up to today, %s", date_until, today)
        settings["date_until"] = date_until = today
    if date_from and date_until and date_from > date_until:
        raise UsageError(f"--from {date_from} is after --until {date_until}")
    if "progress" in given:
        settings["progress_s"] = 0 if args.quiet else args.progress
    out = given.get("out")
    if out is not None and out.exists() and not out.is_dir():  # before a state file is made for nothing
        raise UsageError(f"--out {out} is a file; give the folder the events go to (it is made if missing)")
    return Config(**settings, live=live_progress(args))


def live_progress(args: argparse.Namespace) -> bool:
    """A live panel only for a person at a terminal; logs and scripts get plain lines."""
    return (
        not getattr(args, "quiet", False) and getattr(args, "log_format", "text") == "text"
        and getattr(args, "progress", 10) > 0 and sys.stdout.isatty() and sys.stderr.isatty()
    )


def run_with_signals(job: Callable[[asyncio.Event], Awaitable["object"]]) -> tuple[object, int | None]:
    """Run a job; the first SIGINT/SIGTERM asks it to stop cleanly, a second one cancels it.

    From the first line on, not only once the event loop runs: a signal that came while the
    fork server and the loop started is recorded and stops the job as it begins (it used to
    raise KeyboardInterrupt wherever it landed, once inside an event loop's `__del__`, with a
    traceback)."""
    received: list[int] = []
    stops = (signal.SIGINT, signal.SIGTERM)

    def announce(signum: int) -> None:
        name = signal.Signals(signum).name
        if len(received) > 1:
            print(f"\ncrawler: {name} again: stopping at once, what is in flight abandoned (the next run "
                  "reads it again)", file=sys.stderr, flush=True)
        else:
            print(f"\ncrawler: {name}: stopping (committing what is in flight; send it again to abandon it)",
                  file=sys.stderr, flush=True)

    def early(signum: int, _frame: object) -> None:
        received.append(signum)
        announce(signum)

    async def main() -> object:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        current = asyncio.current_task()

        def on_signal(signum: int) -> None:
            if received and current is not None:
                current.cancel()
            received.append(signum)
            stop.set()
            announce(signum)

        for signum in stops:
            loop.add_signal_handler(signum, on_signal, signum)
        if received:
            stop.set()
        return await job(stop)

    from crawler.engine import start_fork_server

    previous = {signum: signal.signal(signum, early) for signum in stops}
    try:
        start_fork_server()  # before any thread: see there
        result = asyncio.run(main())
    except asyncio.CancelledError:
        result = None
    except Stopped as exc:  # the stop ended a wait on a failing service before the job could report
        if not received:
            raise
        from crawler.jobs import Outcome

        result = Outcome(exc.exit_code, f"stopped cleanly ({exc}); run the same command again to resume")
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
    return result, (128 + received[0]) if received else None


def main(argv: list[str] | None = None) -> int:
    # Past a file-size limit, writes should fail with EFBIG (a clear error), not kill us.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose, getattr(args, "quiet", False), getattr(args, "log_format", "text"),
                  live_progress(args))
    try:
        if args.command == "backfill":
            return _backfill(args)
        if args.command == "update":
            return _update(args)
        if args.command == "ingest-xml":
            from crawler.jobs import ingest_xml

            missing = [str(p) for p in args.paths if not p.exists()]
            if missing:
                raise UsageError(f"no such file or directory: {', '.join(missing)}")
            config = config_from(args)
            return _finish(*run_with_signals(lambda stop: ingest_xml(config, stop, args.paths)), args.log_format)
        if args.command == "status":
            from crawler.status import print_status

            _require_state(args.state)
            return asyncio.run(print_status(args.state, args.json, args.windows))
        if args.command == "stats":
            from crawler.status import print_stats

            _require_state(args.state)
            return asyncio.run(print_stats(args.state, args.top, args.json))
        if args.command == "demo":
            from crawler.demo import run_demo

            return run_demo(args.works, args.seed, args.dir, live=live_progress(args), quiet=args.quiet)
    except CrawlerError as exc:
        if args.verbose:
            log.exception("fatal error")
        advice = f" ({exc.advice})" if exc.advice else ""
        print_outcome(exc.exit_code, f"error: {exc}{advice}", {}, getattr(args, "log_format", "text"))
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug or an environment failure: still one line by default
        if args.verbose:
            log.exception("unexpected error")
        else:
            print(f"crawler: error: {type(exc).__name__}: {exc} (rerun with --verbose for the traceback)", file=sys.stderr)
        return 1
    parser.error(f"unknown command {args.command}")
    return 2


def _require_state(state: Path) -> None:
    from crawler.store import file_in_the_way

    blocker = file_in_the_way(state)
    if blocker is not None:
        raise UsageError(f"{state} cannot be a state file: {blocker} is a file, not a folder")
    if not state.exists():
        raise UsageError(f"no state file at {state}: give the one your backfill uses with --state FILE")


def _connected_config(args: argparse.Namespace) -> Config:
    config = config_from(args)
    if not config.mailto:
        log.warning(
            "no --mailto (or CRAWLER_MAILTO): using the public pool, which allows a third of the "
            "polite pool's requests. Give your e-mail to go faster."
        )
    elif not MAILTO.fullmatch(config.mailto):
        log.warning("--mailto %r does not look like an e-mail address: Crossref may not count the "
                    "crawler in the polite pool, and cannot reach you about it", config.mailto)
    return config


def _backfill(args: argparse.Namespace) -> int:
    from crawler.jobs import backfill, backfill_snapshot

    if args.snapshot:
        if args.plan_only:
            raise UsageError("--plan-only plans the API's windows; a snapshot is read whole")
        if args.date_from or args.date_until:
            raise UsageError("--from/--until choose the API's works by created date; a snapshot is read whole")
        if args.filter:
            raise UsageError("--filter chooses the API's works; a snapshot is read whole (every record in it)")
        missing = [str(p) for p in args.snapshot if not p.exists()]
        if missing:
            raise UsageError(f"no such file or directory: {', '.join(missing)}")
        config = config_from(args)
        return _finish(*run_with_signals(lambda stop: backfill_snapshot(config, stop, args.snapshot)), args.log_format)
    config = _connected_config(args)
    return _finish(*run_with_signals(lambda stop: backfill(config, stop, plan=args.plan_only)), args.log_format)


def _update(args: argparse.Namespace) -> int:
    from crawler.errors import Unreachable
    from crawler.jobs import Outcome, update

    config = _connected_config(args)
    if not args.follow:
        return _finish(*run_with_signals(lambda stop: update(config, stop, args.since)), args.log_format)

    async def follow(stop: asyncio.Event) -> object:
        since = args.since
        while True:
            failed = None
            try:
                outcome = await update(config, stop, since)
            except Unreachable as exc:  # the API stayed down past --give-up-after: try next round
                failed = outcome = Outcome(1, f"update failed: {exc}")
            since = None  # --since only overrides the first round
            if stop.is_set() or outcome.code not in (0, 1):
                return outcome
            if failed:
                log.warning("%s; everything so far is saved, trying again in %.0f s", failed.message, args.interval)
            else:
                print_outcome(0, outcome.message, outcome.figures, args.log_format)
            log.info("next update in %.0f s (Ctrl-C to stop)", args.interval)
            try:
                await asyncio.wait_for(stop.wait(), timeout=args.interval)
                return outcome
            except asyncio.TimeoutError:
                pass

    return _finish(*run_with_signals(follow), args.log_format)


def _finish(outcome: object, signalled: int | None, log_format: str = "text") -> int:
    """The run's last word (see `logs.print_outcome`) and its exit code."""
    figures = getattr(outcome, "figures", {})
    if signalled is not None:
        message = (outcome.message if outcome is not None  # type: ignore[attr-defined]
                   else "stopped at once; what was committed is kept: run the same command again to resume")
        print_outcome(signalled, message, figures, log_format)
        return signalled
    assert outcome is not None
    print_outcome(outcome.code, outcome.message, figures, log_format)  # type: ignore[attr-defined]
    return outcome.code  # type: ignore[attr-defined]
