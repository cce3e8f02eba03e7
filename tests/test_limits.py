"""The limiter: spacing of request starts over real time, concurrency, headers, 429s."""

from __future__ import annotations

import asyncio
import time

from crawler.api.limits import Limiter, parse_interval


def test_parse_interval():
    assert parse_interval("1s") == 1.0
    assert parse_interval("500ms") == 0.5
    assert parse_interval("2m") == 120.0
    assert parse_interval("soon") is None


async def _starts(limiter: Limiter, n: int, hold: float = 0.0) -> list[float]:
    starts: list[float] = []

    async def one() -> None:
        async with limiter.slot():
            starts.append(time.monotonic())
            await asyncio.sleep(hold)

    await asyncio.gather(*(one() for _ in range(n)))
    return sorted(starts)


def _max_in_window(starts: list[float], window: float) -> int:
    return max(sum(1 for t in starts if s <= t < s + window) for s in starts)


async def test_rate_is_never_exceeded_in_any_interval():
    limiter = Limiter(5, 0.2, 10)  # 5 per 0.2 s
    starts = await _starts(limiter, 16)
    assert _max_in_window(starts, 0.2) <= 5
    assert starts[-1] - starts[0] >= 3 * 0.2  # 16 starts need at least 3 full intervals


async def test_concurrency_cap_and_operator_cap():
    limiter = Limiter(1000, 1.0, 4, cap=2)
    running = peak = 0

    async def one() -> None:
        nonlocal running, peak
        async with limiter.slot():
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.02)
            running -= 1

    await asyncio.gather(*(one() for _ in range(10)))
    assert peak == 2
    assert limiter.concurrency == 2


async def test_follows_headers_including_old_spelling():
    limiter = Limiter(3, 1.0, 3)
    limiter.observe({"x-rate-limit-limit": "50", "x-rate-limit-interval": "1s", "x-concurrency-limit": "5", "x-api-pool": "plus"})
    assert (limiter.rate, limiter.concurrency, limiter.pool) == (50.0, 5, "plus")
    limiter.observe({"x-ratelimit-limit": "10", "x-ratelimit-interval": "2s"})
    assert limiter.rate == 5.0
    limiter.observe({"x-rate-limit-limit": "nonsense", "x-concurrency-limit": "0"})
    assert (limiter.rate, limiter.concurrency) == (5.0, 5)


async def test_429_slows_down_then_recovers_gradually():
    limiter = Limiter(4, 1.0, 4)
    limiter.throttled(retry_after=0)
    assert limiter.rate == 2.0 and limiter.concurrency == 2
    limiter.throttled(retry_after=0)
    assert limiter.rate == 1.0 and limiter.concurrency == 1
    for _ in range(10):
        limiter.succeeded()
    assert 1.0 < limiter.rate < 4.0  # some, not all, recovered
    for _ in range(200):
        limiter.succeeded()
    assert limiter.rate == 4.0 and limiter.concurrency == 4


async def test_429s_of_requests_sent_before_a_cut_do_not_cut_again():
    limiter = Limiter(8, 1.0, 8)
    async with limiter.slot() as first:
        pass
    async with limiter.slot() as second:
        pass
    limiter.throttled(retry_after=0, sent_at=first)
    limiter.throttled(retry_after=0, sent_at=second)  # in flight with the first: same burst
    assert limiter.rate == 4.0 and limiter.concurrency == 4 and limiter.throttled_count == 2
    async with limiter.slot() as after:
        pass
    limiter.throttled(retry_after=0, sent_at=after)  # sent at the halved pace: halves again
    assert limiter.rate == 2.0 and limiter.concurrency == 2


async def test_retry_after_pauses_everyone():
    limiter = Limiter(100, 1.0, 5)
    limiter.throttled(retry_after=0.3)
    begin = time.monotonic()
    starts = await _starts(limiter, 2)
    assert starts[0] - begin >= 0.29
