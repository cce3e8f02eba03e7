"""Pools and their limits: which figures a pool advertises in its headers and which it enforces.

The published list-request figures are `POLITE_LIST` (notes: "Rate limits"). `Limits` counts
each pool's arrivals and requests in flight and refuses (never delays) whoever exceeds them; a
lowering (`LimitChange`) is enforced only after clients could have read it in the headers.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class PoolLimits:
    rate: int  # requests per interval
    interval_s: float
    concurrency: int


POLITE_LIST = {  # the published list-request figures (notes: "Rate limits")
    "public": PoolLimits(rate=1, interval_s=1.0, concurrency=1),
    "polite": PoolLimits(rate=3, interval_s=1.0, concurrency=3),
    "plus": PoolLimits(rate=150, interval_s=1.0, concurrency=150),
}


@dataclass(frozen=True)
class LimitChange:
    """From the `after_requests`-th /works request on, `pool` advertises and enforces `limits`."""

    after_requests: int
    pool: str
    limits: PoolLimits


class _Counters(Protocol):
    over_limit: Counter[str]
    over_limit_why: Counter[str]
    max_in_flight: Counter[str]


class Limits:
    """Per-pool request rate and concurrency as enforced: counts, never waits.

    `advertise`, when given, replaces a pool's figures in the `x-rate-limit-*` headers only:
    a server that advertises more (or less) than it enforces.
    """

    def __init__(self, pools: Mapping[str, PoolLimits], stats: _Counters, grace_s: float,
                 advertise: Mapping[str, PoolLimits] | None = None) -> None:
        self.current = dict(pools)
        self.previous: dict[str, tuple[PoolLimits, float]] = {}  # pool -> (old limits, until)
        self.grace_s = grace_s
        self.advertise = dict(advertise or {})
        self.stats = stats
        self.arrivals: dict[str, deque[float]] = {p: deque() for p in self.current}
        self.in_flight: Counter[str] = Counter()

    def change(self, pool: str, limits: PoolLimits) -> None:
        old = self.current[pool]
        self.previous[pool] = (old, time.monotonic() + self.grace_s + old.interval_s)
        self.current[pool] = limits

    def enforced(self, pool: str) -> PoolLimits:
        """The current limits, or while a lowering is fresh, the more permissive old ones."""
        limits = self.current[pool]
        old = self.previous.get(pool)
        if old is None or time.monotonic() >= old[1]:
            return limits
        before = old[0]
        faster = before if before.rate / before.interval_s >= limits.rate / limits.interval_s else limits
        return PoolLimits(faster.rate, faster.interval_s, max(limits.concurrency, before.concurrency))

    def admit(self, pool: str) -> bool:
        limits = self.enforced(pool)
        now = time.monotonic()
        arrivals = self.arrivals[pool]
        while arrivals and arrivals[0] <= now - limits.interval_s:
            arrivals.popleft()
        if len(arrivals) >= limits.rate or self.in_flight[pool] >= limits.concurrency:
            self.stats.over_limit[pool] += 1
            self.stats.over_limit_why["rate" if len(arrivals) >= limits.rate else "concurrency"] += 1
            return False
        arrivals.append(now)
        self.in_flight[pool] += 1
        self.stats.max_in_flight[pool] = max(self.stats.max_in_flight[pool], self.in_flight[pool])
        return True

    def release(self, pool: str) -> None:
        self.in_flight[pool] -= 1

    def headers(self, pool: str) -> dict[str, str]:
        limits = self.advertise.get(pool) or self.current[pool]
        return {
            "x-rate-limit-limit": str(limits.rate),
            "x-rate-limit-interval": f"{limits.interval_s:g}s",
            "x-concurrency-limit": str(limits.concurrency),
            "x-api-pool": pool,
        }
