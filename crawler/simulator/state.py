"""What a simulator is told (`SimConfig`) and what it counts (`SimStats`)."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

from crawler.simulator.faults import Faults
from crawler.simulator.pools import POLITE_LIST, PoolLimits

HEADERS_KEPT = 1000  # request headers recorded per route (the latest ones)


@dataclass(frozen=True)
class SimConfig:
    pools: dict[str, PoolLimits] = field(default_factory=lambda: dict(POLITE_LIST))
    latency_s: float = 0.0  # per /works page
    latency_per_row_s: float = 0.0
    cursor_ttl_s: float = 300.0
    compress: bool = True
    plus_token: str | None = field(default=None, repr=False)
    faults: Faults = Faults()
    grace_s: float = 2.0  # lowered limits are enforced only after clients could have seen them
    advertise: dict[str, PoolLimits] | None = None  # headers show these; `pools` is enforced
    redirect_to: str | None = None  # every /works answers 307 to <redirect_to>/works?<same query>


@dataclass
class SimStats:
    requests: int = 0  # /works requests
    pages: int = 0  # scroll pages served
    first_request_at: float | None = None  # time.monotonic() of the first /works request
    last_answer_at: float | None = None  # ... and of the last /works answer
    requests_by_kind: Counter[str] = field(default_factory=Counter)  # page, empty-page, count, facet, other
    items_served: int = 0  # works in pages (a repeated one each time)
    first_page_at: float | None = None  # time.monotonic() of the first and last page served
    last_page_at: float | None = None
    scrolls: int = 0
    over_limit: Counter[str] = field(default_factory=Counter)  # by pool
    over_limit_why: Counter[str] = field(default_factory=Counter)  # "rate" or "concurrency"
    max_in_flight: Counter[str] = field(default_factory=Counter)
    pools: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    struck: int = 0  # /works requests that met at least one fault (outages included)
    first_fault_at: dict[str, int] = field(default_factory=dict)  # fault -> number of its first request
    ra_requests: int = 0
    ra_prefixes_asked: list[str] = field(default_factory=list)
    user_agents: set[str] = field(default_factory=set)
    mailtos: set[str] = field(default_factory=set)
    unauthorized: int = 0
    redirects: int = 0
    cursors_sent: Counter[str] = field(default_factory=Counter)  # continuation cursors received
    # Request headers as received (names lower-cased): the latest HEADERS_KEPT per route, and
    # every header name ever seen with its count, e.g. to assert a Plus token never reached /ra.
    works_headers: deque[dict[str, str]] = field(default_factory=lambda: deque(maxlen=HEADERS_KEPT))
    ra_headers: deque[dict[str, str]] = field(default_factory=lambda: deque(maxlen=HEADERS_KEPT))
    works_header_names: Counter[str] = field(default_factory=Counter)
    ra_header_names: Counter[str] = field(default_factory=Counter)
