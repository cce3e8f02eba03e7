"""One frozen Config, built once by the CLI from flags and environment, read by every stage."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

DEFAULT_API_URL = "https://api.crossref.org"
DEFAULT_RA_URL = "https://doi.org/ra"
DEFAULT_STATE = Path("state/crawler.sqlite3")
MAX_ROWS = 1000


def default_parsers(snapshot: bool = False) -> int:
    """One process per core but the main process's, whose commits are a large share of an API
    crawl's work; a snapshot's lanes select and render themselves, leaving the main process
    a fifth of the work: one lane per core."""
    cores = os.cpu_count() or 2
    return cores if snapshot else max(1, cores - 1)


@dataclass(frozen=True)
class Config:
    state: Path = DEFAULT_STATE
    out: Path | None = None  # None: the one the state file records, else <state>-events beside it
    api_url: str = DEFAULT_API_URL
    ra_url: str = DEFAULT_RA_URL
    mailto: str | None = None
    plus_token: str | None = field(default=None, repr=False)  # never printed
    date_from: date | None = None
    date_until: date | None = None
    concurrency: int | None = None  # None: what the API advertises
    rows: int = MAX_ROWS
    parsers: int = field(default_factory=default_parsers)
    window_pages: int = 20  # split windows until each is at most this many pages
    scope: str = ""  # the operator's --filter, added to every request (e.g. "type:journal-article")
    retry_initial_s: float = 1.0
    retry_max_s: float = 180.0  # backoff cap; failures that waiting can cure are retried forever
    give_up_after_s: float | None = None  # an outage longer than this ends the run (exit 6)
    timeout_s: float = 120.0
    max_body_bytes: int = 256 * 1024 * 1024  # a page past this is fetched again with fewer rows
    progress_s: float = 10.0  # seconds between progress lines; 0 turns them off
    live: bool = False  # a live progress panel instead of lines (stdout and stderr are terminals)
    rotate_bytes: int = 256 * 1024 * 1024
    # Let the rate-limit headers raise the pace above the pool's published figures too (as
    # with a Plus token). Off for the real API; the tests' fast simulators advertise more.
    trust_rate_headers: bool = False
