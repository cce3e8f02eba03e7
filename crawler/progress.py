"""What the operator watches during a days-long run.

On a terminal: a live panel (rich) redrawn every second. Elsewhere (cron, CI, nohup): one plain
log line per `--progress` interval. Both show the same `Snapshot`: windows, works and events
from the state file (totals across runs), speeds of this run (recent and average), an ETA from
the planned totals, the pool and limits in force, retries and 429s.
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

if TYPE_CHECKING:
    from crawler.engine import Crawl

log = logging.getLogger(__name__)

RECENT_S = 60.0  # "recent" speeds are over this span


@dataclass
class Progress:
    """Figures of this run (the state holds the totals across runs)."""

    started: float = field(default_factory=time.monotonic)
    pages: int = 0
    works: int = 0
    events: int = 0
    problems: Counter[str] = field(default_factory=Counter)
    _samples: deque[tuple[float, int, int]] = field(default_factory=lambda: deque(maxlen=600))

    def sample(self) -> tuple[float, float]:
        """Record the counts now; pages/s and works/s over the last RECENT_S seconds."""
        now = time.monotonic()
        self._samples.append((now, self.pages, self.works))
        while len(self._samples) > 2 and now - self._samples[1][0] >= RECENT_S:
            self._samples.popleft()
        then, pages, works = self._samples[0]
        span = now - then
        if span <= 0:
            return 0.0, 0.0
        return (self.pages - pages) / span, (self.works - works) / span


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

    @property
    def windows_total(self) -> int:
        return sum(self.windows.values())


async def snapshot(crawl: Crawl, job: str) -> Snapshot:
    summary = (await crawl.store.window_summary()).get(job, {})
    windows = {s: summary.get(s, 0) for s in ("unsized", "pending", "running", "done", "short", "failed")}
    p = crawl.progress
    recent_pages, recent_works = p.sample()
    elapsed = max(time.monotonic() - p.started, 1e-9)
    remaining = max(summary.get("planned", 0) - summary.get("works", 0), 0)
    speed = recent_works or p.works / elapsed
    eta = remaining / speed if speed > 0 and not windows["unsized"] else None
    stats = crawl.client.stats
    return Snapshot(
        job=job, windows=windows, works=summary.get("works", 0), planned=summary.get("planned", 0),
        events=summary.get("events", 0), pages_s=p.pages / elapsed, works_s=p.works / elapsed,
        recent_pages_s=recent_pages, recent_works_s=recent_works, eta_s=eta,
        limits=crawl.client.limiter.describe(), retries=stats.retries, throttled=stats.throttled,
        waiting="; ".join(filter(None, (h.describe() for h in (crawl.client.health, crawl.client.ra_health)))) or None,
    )


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min" if minutes else f"{int(seconds)} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    return f"{hours // 24} d {hours % 24} h"


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
    table.add_column(style="bold")
    table.add_column()
    w = s.windows
    share = f" ({w['done'] / s.windows_total:.0%})" if s.windows_total else ""
    table.add_row("windows", f"{w['done']:,}/{s.windows_total:,} done{share}, {w['running']} running, "
                  f"{w['pending'] + w['unsized']:,} to go" + (f", [red]{w['short']} short[/]" if w["short"] else "")
                  + (f", [red]{w['failed']} failed[/]" if w["failed"] else ""))
    table.add_row("works", f"{s.works:,} of {s.planned:,} planned")
    table.add_row("events", f"{s.events:,}")
    table.add_row("speed", f"{s.recent_pages_s:.2f} pages/s, {s.recent_works_s:,.0f} works/s (last minute); "
                  f"{s.pages_s:.2f} pages/s, {s.works_s:,.0f} works/s (this run)")
    table.add_row("ETA", duration(s.eta_s))
    table.add_row("API", f"[yellow]{s.waiting}[/]" if s.waiting else s.limits)
    table.add_row("retries", f"{s.retries:,} (429s: {s.throttled:,})")
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
        log.info("%s", plain_line(await snapshot(crawl, job)))
