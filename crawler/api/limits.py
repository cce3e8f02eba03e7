"""The one place that decides when a request may start: a rate and a concurrency cap.

It starts from the published polite-pool figures, follows the limits the API reports in its
response headers, slows down on 429 and recovers gradually. Callers only `async with
limiter.slot():` and report what they saw; they never sleep on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping

from asyncio_throttle import Throttler

# Published list-request figures (December 2025): polite 3/s with 3 concurrent, public 1/s with 1.
POLITE = (3, 1.0, 3)
PUBLIC = (1, 1.0, 1)
# Each rate period is stretched by this share (at least MARGIN_MIN_S): requests leave on time
# but reach the server late by whatever stalls and jitter they meet on the way, and a late
# arrival at the start of one period must not fall into the next one's count.
MARGIN_SHARE = 0.1
MARGIN_MIN_S = 0.05
_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$")


def parse_interval(text: str) -> float | None:
    match = _INTERVAL.match(text)
    if not match:
        return None
    value = float(match.group(1))
    unit = match.group(2) or "s"
    return value / 1000 if unit == "ms" else value * 60 if unit == "m" else value


def _header(headers: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        value = headers.get(name)
        if value:
            return value
    return None


class LiveSemaphore:
    """A semaphore whose size is read when it is needed (`size()`): for limits that change
    while a run goes on, as the API's advertised concurrency and our slow-down do."""

    def __init__(self, size: Callable[[], int]) -> None:
        self.size = size
        self.held = 0
        self._first = 0  # priority waiters
        self._changed = asyncio.Condition()
        self._wakers: set[asyncio.Task[None]] = set()

    async def acquire(self, priority: bool = False) -> None:
        """Wait for room; waiters with `priority` go before the others."""
        async with self._changed:
            if priority:
                self._first += 1
                try:
                    await self._changed.wait_for(lambda: self.held < self.size())
                finally:
                    self._first -= 1
            else:
                await self._changed.wait_for(lambda: self.held < self.size() and not self._first)
            self.held += 1

    def release(self, n: int = 1) -> None:
        """Plain code, so that a release in a `finally` cannot be cancelled half-way."""
        self.held -= n
        self.wake()

    def wake(self) -> None:
        """Let waiters look again: a slot was freed or the size may have grown."""

        async def notify() -> None:
            async with self._changed:
                self._changed.notify_all()

        try:
            task = asyncio.get_running_loop().create_task(notify())
        except RuntimeError:  # no loop: nobody can be waiting
            return
        self._wakers.add(task)
        task.add_done_callback(self._wakers.discard)


class Limiter:
    """Rate (asyncio-throttle) and concurrency (a `LiveSemaphore`), one object.

    `cap` is the operator's --concurrency: the limit in force is min(cap, advertised) scaled
    down by the current slow-down factor, which 429s halve and successes slowly restore.
    `ceiling` (rate per second, concurrency) is the pool's published figure: headers may lower
    the pace below it, never raise it above (a header may describe another route or pool);
    None (Metadata Plus, whose figure is unpublished) follows the headers.
    """

    def __init__(
        self,
        rate: int = POLITE[0],
        interval: float = POLITE[1],
        concurrency: int = POLITE[2],
        *,
        cap: int | None = None,
        name: str = "api",
        ceiling: tuple[float, int] | None = None,
    ) -> None:
        self.name = name
        self.ceiling = ceiling
        self.advertised_rate = rate
        self.advertised_interval = interval
        self.advertised_concurrency = concurrency
        self.cap = cap
        self.pool: str | None = None
        self.factor = 1.0
        self.throttled_count = 0
        self._throttler = Throttler(rate_limit=1, period=1.0, retry_interval=0.005)
        self._slots = LiveSemaphore(lambda: self.concurrency)
        self._resume_at = 0.0
        self._cut_at = float("-inf")  # when a 429 last cut the pace
        self._apply()

    # -- what is in force --------------------------------------------------------------
    @property
    def concurrency(self) -> int:
        advertised = self.advertised_concurrency
        if self.cap is not None:
            advertised = min(advertised, self.cap)
        return max(1, int(advertised * self.factor))

    @property
    def rate(self) -> float:
        """Requests per second in force."""
        return self.advertised_rate * self.factor / self.advertised_interval

    @property
    def in_flight(self) -> int:
        return self._slots.held

    def _apply(self) -> None:
        allowed = max(1, int(self.advertised_rate * self.factor))
        # `allowed` starts per period; the period stretches when the factor has cut the rate
        # below one request per interval.
        period = self.advertised_interval * allowed / (self.advertised_rate * self.factor)
        self._throttler.rate_limit = allowed
        self._throttler.period = period + max(MARGIN_MIN_S, period * MARGIN_SHARE)

    # -- use ---------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def slot(self, priority: bool = False) -> AsyncIterator[float]:
        """Wait for room; gives the moment the request may leave (for `throttled`).
        `priority`: before the waiting pages (the plan's counts, which windows wait on)."""
        await self._slots.acquire(priority)
        try:
            while (pause := self._resume_at - time.monotonic()) > 0:
                await asyncio.sleep(pause)
            await self._throttler.acquire()
            yield time.monotonic()
        finally:
            self._slots.release()

    # -- feedback ----------------------------------------------------------------------
    def observe(self, headers: Mapping[str, str]) -> None:
        """Follow the limits a response reports (both spellings the API has used)."""
        limit = _header(headers, "x-rate-limit-limit", "x-ratelimit-limit")
        interval = _header(headers, "x-rate-limit-interval", "x-ratelimit-interval")
        concurrency = _header(headers, "x-concurrency-limit")
        self.pool = headers.get("x-api-pool", self.pool)
        rate, period = self.advertised_rate, self.advertised_interval
        if limit and limit.strip().isdigit() and int(limit) > 0:
            rate = int(limit)
        if interval and (seconds := parse_interval(interval)) and seconds > 0:
            period = seconds
        slots = self.advertised_concurrency
        if concurrency and concurrency.strip().isdigit() and int(concurrency) > 0:
            slots = int(concurrency)
        if self.ceiling is not None:
            if rate / period > self.ceiling[0]:  # never faster than the published figure
                rate, period = self.ceiling[0] * period, period
                if rate < 1:
                    rate, period = 1, 1 / self.ceiling[0]
            slots = min(slots, self.ceiling[1])
        if (rate, period) != (self.advertised_rate, self.advertised_interval):
            self.advertised_rate, self.advertised_interval = rate, period
            self._apply()
        if slots != self.advertised_concurrency:
            self.advertised_concurrency = slots
            self._slots.wake()

    def throttled(self, retry_after: float | None = None, sent_at: float | None = None) -> None:
        """A 429: halve what we allow ourselves, and pause for Retry-After if given.

        Once per burst: the 429s of requests sent before the last cut (`sent_at`, from
        `slot`) answer the old pace, which that cut already halved; each halving them again
        would leave a crawl at an eighth of its pace after three 429s in flight together.
        """
        self.throttled_count += 1
        if sent_at is None or sent_at >= self._cut_at:
            self.factor = max(self.factor / 2, 0.05)
            self._cut_at = time.monotonic()
        pause = retry_after if retry_after is not None else self.advertised_interval * 2
        self._resume_at = max(self._resume_at, time.monotonic() + pause)
        self._apply()

    def succeeded(self) -> None:
        """Each success wins back a little of what 429s took (about 2% per request)."""
        if self.factor < 1.0:
            self.factor = min(1.0, self.factor * 1.02)
            self._apply()
            self._slots.wake()

    def describe(self) -> str:
        return (
            f"{self.pool or 'unknown'} pool, {self.rate:.2f} req/s, "
            f"{self.concurrency} concurrent"
        )
