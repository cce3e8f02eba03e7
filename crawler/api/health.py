"""Is a service answering? Outages pause the crawl, not each window.

One `Health` per service (the API, the registration-agency service). Every request passes
through `admit()` and reports how it went. After `threshold` failures in a row (5xx,
timeouts, resets: a service not answering, not an answer we could not use) the service is
*down*: from then on one request at a time goes through, a probe, at growing intervals capped
at `max_wait_s`; the others wait behind it. The first success ends the outage and everyone
goes on at full pace. Windows keep their place; a scroll that sat idle past its cursor's five
minutes restarts from `*` (its window does that on `CursorInvalid`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from datetime import datetime

log = logging.getLogger(__name__)


class Health:
    def __init__(
        self,
        label: str,
        *,
        threshold: int = 5,
        first_wait_s: float = 2.0,
        max_wait_s: float = 180.0,
        give_up_after_s: float | None = None,
    ) -> None:
        self.label = label  # "the API", "the registration-agency service"
        self.threshold = threshold
        self.first_wait_s = first_wait_s
        self.max_wait_s = max_wait_s
        self.give_up_after_s = give_up_after_s
        self.failures = 0  # in a row
        self.down_since: float | None = None  # time.time() when the outage began
        self.down_since_mono = 0.0
        self.last_error = ""
        self.next_try_at = 0.0  # time.monotonic()
        self._wait = first_wait_s
        self._probe = asyncio.Lock()

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def describe(self) -> str | None:
        """'waiting for the API since 14:02 (503 …); next try in 40 s', or None when up."""
        if self.down_since is None:
            return None
        since = datetime.fromtimestamp(self.down_since).strftime("%H:%M")
        wait = max(0.0, self.next_try_at - time.monotonic())
        return f"waiting for {self.label} since {since} ({self.last_error}); next try in {wait:.0f} s"

    def state(self) -> dict[str, object] | None:
        """The outage as plain data (for the state file and `crawler status`), or None."""
        if self.down_since is None:
            return None
        return {"service": self.label, "since": self.down_since, "error": self.last_error,
                "next_try": time.time() + max(0.0, self.next_try_at - time.monotonic())}

    def gave_up(self) -> bool:
        return (self.down and self.give_up_after_s is not None
                and time.monotonic() - self.down_since_mono > self.give_up_after_s)

    @contextlib.asynccontextmanager
    async def admit(self) -> AsyncIterator[float]:
        """Let a request go: at once while the service is up; one at a time, spaced out,
        while it is down (the request is then a probe). Gives the moment it was let go."""
        if self.down:
            await self._probe.acquire()
            try:
                while self.down and (pause := self.next_try_at - time.monotonic()) > 0:
                    await asyncio.sleep(min(pause, 1.0))
                if self.down:  # this request is the probe: others wait until it is answered
                    yield time.monotonic()
                    return
            finally:
                self._probe.release()
        yield time.monotonic()

    def ok(self, sent_at: float | None = None) -> None:
        """A request let go at `sent_at` was answered. One sent before the outage began says
        nothing of now: it does not end the outage."""
        if self.down_since is not None and sent_at is not None and sent_at < self.down_since_mono:
            return
        if self.down_since is not None:
            minutes = (time.time() - self.down_since) / 60
            log.warning("%s answers again, after %.1f min; resuming at full pace", self.label, minutes)
        self.failures = 0
        self.down_since = None
        self._wait = self.first_wait_s

    def failed(self, message: str) -> None:
        self.failures += 1
        self.last_error = message
        if self.down_since is None and self.failures >= self.threshold:
            self.down_since = time.time()
            self.down_since_mono = time.monotonic()
            self.next_try_at = time.monotonic() + self._wait
            log.warning("%s", self.describe())
        elif self.down_since is not None:
            self._wait = min(self._wait * 2, self.max_wait_s)
            self.next_try_at = time.monotonic() + self._wait
            log.info("%s", self.describe())
