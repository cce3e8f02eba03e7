"""What the operator watches during a days-long run.

On a terminal: a live panel (rich) redrawn every second. Elsewhere (cron, CI, nohup): one plain
log line per `--progress` interval, its figures also as JSON fields under --log-format json.
Both show the same `Snapshot`: windows, works and events from the state file (totals across
runs), speeds of this run (recent and average), an ETA from the planned totals, the pool and
limits in force, retries and 429s; the panel adds the run's elapsed time and its paths.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rich.console import Console
from rich.live import Live
from rich.table import Table

from crawler.figures import duration
from crawler.logs import FIGURES

if TYPE_CHECKING:
    from crawler.engine import Crawl

log = logging.getLogger(__name__)

RECENT_S = 60.0  # "recent" speeds are over this span
ETA_FLOOR_S = 1.0  # while works remain, the ETA is never below this


@dataclass
class Progress:
    """Figures of this run (the state holds the totals across runs).

    Each commit is remembered for RECENT_S seconds: the recent speed is what those commits
    brought over that span (or over the run, when it is younger), so it reads above zero
    whenever something was committed lately, however the reports and commits interleave.
    """

    started: float = field(default_factory=time.monotonic)
    pages: int = 0  # pages of the API (a batch of records from files is not one)
    commits: int = 0  # pages and batches committed
    works: int = 0
    events: int = 0
    problems: Counter[str] = field(default_factory=Counter)
    _commits: deque[tuple[float, int, int]] = field(default_factory=deque)  # (when, pages, works)

    def committed(self, pages: int, works: int, events: int) -> None:
        now = time.monotonic()
        self.commits += 1
        self.pages += pages
        self.works += works
        self.events += events
        self._commits.append((now, pages, works))
        self._forget(now)

    def _forget(self, now: float) -> None:
        while self._commits and now - self._commits[0][0] > RECENT_S:
            self._commits.popleft()

    @property
    def elapsed(self) -> float:
        return max(time.monotonic() - self.started, 1e-9)

    def recent(self) -> tuple[float, float]:
        """Pages/s and works/s over the last RECENT_S seconds (the run, if it is younger)."""
        now = time.monotonic()
        self._forget(now)
        span = max(min(RECENT_S, now - self.started), 1e-9)
        return sum(c[1] for c in self._commits) / span, sum(c[2] for c in self._commits) / span

    def figures(self) -> dict[str, int | float]:
        """This run's figures as fields (a JSON log line, the run's outcome)."""
        elapsed = self.elapsed
        return {"elapsed_s": round(elapsed, 1), "commits": self.commits, "pages": self.pages, "works": self.works,
                "events": self.events,
                "pages_per_s": round(self.pages / elapsed, 3), "works_per_s": round(self.works / elapsed, 1)}


def eta(remaining: int, unfinished: bool, works_s: float) -> float | None:
    """Seconds left: 0 when all is done; None (unknown) without a speed or while the plan
    cannot say what remains; else remaining works at `works_s`, never below ETA_FLOOR_S."""
    if not unfinished:
        return 0.0
    if remaining <= 0 or works_s <= 0:
        return None
    return max(ETA_FLOOR_S, remaining / works_s)


@dataclass(frozen=True)
class Snapshot:
    job: str
    windows: dict[str, int]  # by status
    works: int  # in the state, all runs
    planned: int
    events: int
    pages_s: float  # this run, average
    works_s: float
    recent_pages_s: float
    recent_works_s: float
    eta_s: float | None
    limits: str
    retries: int
    throttled: int
    waiting: str | None = None  # an outage: "waiting for the API since 14:02 (…); next try in 40 s"
    elapsed_s: float = 0.0  # this run
    state: str = ""
    out: str = ""

    @property
    def windows_total(self) -> int:
        return sum(self.windows.values())

    def fields(self) -> dict[str, object]:
        """The figures of a progress line, as JSON fields."""
        w = self.windows
        return {
            "job": self.job, "windows_done": w["done"], "windows_total": self.windows_total,
            "windows_running": w["running"], "windows_short": w["short"], "windows_failed": w["failed"],
            "works": self.works, "planned": self.planned, "events": self.events,
            "pages_per_s": round(self.recent_pages_s, 3), "works_per_s": round(self.recent_works_s, 1),
            "avg_pages_per_s": round(self.pages_s, 3), "avg_works_per_s": round(self.works_s, 1),
            "eta_s": None if self.eta_s is None else round(self.eta_s), "elapsed_s": round(self.elapsed_s, 1),
            "retries": self.retries, "throttled": self.throttled, "limits": self.limits, "waiting": self.waiting,
        }


async def snapshot(crawl: Crawl, job: str) -> Snapshot:
    summary = (await crawl.store.window_summary()).get(job, {})
    windows = {s: summary.get(s, 0) for s in ("unsized", "pending", "running", "done", "short", "failed")}
    p = crawl.progress
    recent_pages, recent_works = p.recent()
    elapsed = p.elapsed
    remaining = max(summary.get("planned", 0) - summary.get("works", 0), 0)
    unfinished = any(windows[s] for s in ("unsized", "pending", "running"))
    left = eta(remaining if not windows["unsized"] else 0, unfinished, recent_works or p.works / elapsed)
    stats = crawl.client.stats
    return Snapshot(
        job=job, windows=windows, works=summary.get("works", 0), planned=summary.get("planned", 0),
        events=summary.get("events", 0), pages_s=p.pages / elapsed, works_s=p.works / elapsed,
        recent_pages_s=recent_pages, recent_works_s=recent_works, eta_s=left,
        limits=crawl.client.limiter.describe(), retries=stats.retries, throttled=stats.throttled,
        waiting="; ".join(filter(None, (h.describe() for h in (crawl.client.health, crawl.client.ra_health)))) or None,
        elapsed_s=elapsed, state=str(crawl.config.state), out=str(crawl.sink.out_dir),
    )


def plain_line(s: Snapshot) -> str:
    w = s.windows
    return (
        (f"{s.job}: {s.waiting}; " if s.waiting else "")
        + f"{s.job}: windows {w['done']}/{s.windows_total} done ({w['running']} running"
        + (f", {w['short']} short" if w["short"] else "") + (f", {w['failed']} failed" if w["failed"] else "")
        + f"), {s.works:,} works, {s.events:,} events; "
        f"{s.recent_pages_s:.2f} pages/s, {s.recent_works_s:,.0f} works/s recent "
        f"({s.pages_s:.2f}, {s.works_s:,.0f} average); ETA {duration(s.eta_s)}; "
        f"{s.limits}; retries {s.retries}, 429s {s.throttled}"
    )


def panel(s: Snapshot) -> Table:
    """The live view: a small two-column table."""
    table = Table(title=f"crawler {s.job}", show_header=False, box=None, title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    w = s.windows
    share = f" ({w['done'] / s.windows_total:.0%})" if s.windows_total else ""
    table.add_row("windows", f"{w['done']:,}/{s.windows_total:,} done{share}, {w['running']} running, "
                  f"{w['pending'] + w['unsized']:,} to go" + (f", [red]{w['short']} short[/]" if w["short"] else "")
                  + (f", [red]{w['failed']} failed[/]" if w["failed"] else ""))
    table.add_row("works", f"{s.works:,} of {s.planned:,} planned")
    table.add_row("events", f"{s.events:,}")
    table.add_row("speed", f"{s.recent_pages_s:.2f} pages/s, {s.recent_works_s:,.0f} works/s (last minute); "
                  f"{s.pages_s:.2f} pages/s, {s.works_s:,.0f} works/s (this run)")
    table.add_row("elapsed", duration(s.elapsed_s))
    table.add_row("ETA", duration(s.eta_s))
    table.add_row("API", f"[yellow]{s.waiting}[/]" if s.waiting else s.limits)
    table.add_row("retries", f"{s.retries:,} (429s: {s.throttled:,})")
    table.add_row("state", s.state)
    table.add_row("output", s.out)
    return table


# One console for the live panel and the log lines printed above it.
console = Console(stderr=True)


async def report_progress(crawl: Crawl, job: str, every_s: float, live: bool) -> None:
    """Until cancelled: redraw the live panel on `console`, or log a plain line every `every_s`."""
    if live:
        with Live(console=console, refresh_per_second=2, transient=False) as live:
            try:
                while True:
                    live.update(panel(await snapshot(crawl, job)))
                    await asyncio.sleep(1.0)
            except asyncio.CancelledError:
                live.update(panel(await snapshot(crawl, job)))  # the final figures stay on screen
                raise
    if every_s <= 0:
        return
    while True:
        await asyncio.sleep(every_s)
        now = await snapshot(crawl, job)
        log.info("%s", plain_line(now), extra={FIGURES: now.fields()})
