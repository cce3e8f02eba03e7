"""Requests to the Crossref REST API and the DOI registration-agency service.

Every request goes through a `Limiter` and the service's `Health` gate, and ends either as
bytes or as one exception from `crawler.errors` carrying the API's own words. Whatever a later
try can cure (5xx, 429, 408, timeouts, resets, truncated or malformed bodies, a load
balancer's HTML 403/404) is retried with capped exponential backoff, with no attempt budget:
a days-long crawl waits out bad hours. Only what waiting cannot fix ends the run: a request
the API rejects as invalid (its JSON 400), refused credentials (401), a wrong route.

A scroll continuation is retried in place too: when the lost answer had already moved the
scroll, a page is missing, and the window's count of distinct works shows it at the end
(`on_retry` tells the window so). The Plus token goes to the API's host only, never to the
registration-agency service and never across a redirect to another host.

A stop (the run's first SIGINT/SIGTERM) ends the waiting on a failing service: the call is not
tried again and raises `Stopped` (see `_unless_stopped`). A request to a service that answers
is let finish, so a healthy run's stop still commits its pages in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
import msgspec
from selectolax.lexbor import LexborHTMLParser
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, stop_never
from tenacity.wait import wait_exponential, wait_random

from crawler import PROJECT_URL, __version__
from crawler.api.body import Body
from crawler.api.health import Health
from crawler.api.limits import Limiter
from crawler.errors import (
    ApiError,
    CrawlerError,
    CredentialsRefused,
    CursorInvalid,
    FatalApiError,
    PageTooLarge,
    RateLimited,
    RetryableError,
    Stopped,
    Unreachable,
)

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 256 * 1024 * 1024
MAX_REDIRECTS = 5
_SPACES = re.compile(r"\s+")
_REDIRECTS = {301, 302, 303, 307, 308}


@dataclass
class RequestStats:
    """Counters the operator sees in progress lines and `crawler status`."""

    requests: int = 0
    retries: int = 0
    throttled: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)  # requests by kind: page, count, facet, agency
    last_error: str = ""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int | None = None  # None: until it succeeds (the product); tests may bound it
    initial_s: float = 1.0
    max_s: float = 180.0


def new_session(timeout_s: float) -> aiohttp.ClientSession:
    """An HTTP session whose only retries are ours.

    aiohttp resends an idempotent request once, silently, when a reused keep-alive connection
    drops. On a scroll that resend gets the page *after* the one the server already advanced
    past, without our knowing a retry happened; so that resend is switched off (aiohttp has
    no public option for it) and a dropped connection surfaces as an error our policy handles.
    """
    timeout = aiohttp.ClientTimeout(total=None, connect=30, sock_connect=30, sock_read=timeout_s)
    session = aiohttp.ClientSession(timeout=timeout, raise_for_status=False)
    if hasattr(session, "_retry_connection"):
        session._retry_connection = False
    return session


def user_agent(mailto: str | None) -> str:
    contact = f"; mailto:{mailto}" if mailto else ""
    return f"crawler/{__version__} ({PROJECT_URL}{contact})"


def readable_error(body: bytes, content_type: str) -> str:
    """The API's own words from an error body: JSON messages, plain text, or HTML's text."""
    text = body.decode("utf-8", "replace")
    if "json" in content_type or text.lstrip().startswith("{"):
        try:
            doc = msgspec.json.decode(body)
        except msgspec.DecodeError:
            doc = None
        if isinstance(doc, dict):
            message = doc.get("message")
            if isinstance(message, list):  # validation-failure: a list of problems
                parts = [m.get("message") or m.get("type") for m in message if isinstance(m, dict)]
                return "; ".join(str(p).strip() for p in parts if p) or text[:300]
            if isinstance(message, dict):  # exception: name and description, not the stack
                return str(message.get("description") or message.get("name") or "")[:300]
            if isinstance(message, str):
                return message[:300]
    if "<" in text and ("html" in content_type or "<html" in text.lower()):
        tree = LexborHTMLParser(text)
        title = tree.css_first("title")
        if title is not None and title.text().strip():
            text = title.text()
        else:
            text = tree.body.text(separator=" ") if tree.body is not None else tree.text()
    return _SPACES.sub(" ", text).strip()[:300]


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After")
    if value and value.strip().isdigit():
        return float(value)
    return None


def _is_api_json(body: bytes, content_type: str) -> bool:
    """Is this an answer of the API itself (its JSON envelope), not a proxy's page?"""
    if "json" not in content_type and not body.lstrip().startswith(b"{"):
        return False
    try:
        doc = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return False
    return isinstance(doc, dict) and "status" in doc and "message" in doc


class ApiClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        api_url: str,
        ra_url: str,
        mailto: str | None,
        plus_token: str | None,
        limiter: Limiter,
        ra_limiter: Limiter,
        retry: RetryPolicy = RetryPolicy(),
        stats: RequestStats | None = None,
        max_body: int = MAX_BODY_BYTES,
        health: Health | None = None,
        ra_health: Health | None = None,
        stop: asyncio.Event | None = None,
    ) -> None:
        self.session = session
        self.api_url = api_url.rstrip("/")
        self.ra_url = ra_url.rstrip("/")
        self.mailto = mailto
        self.limiter = limiter
        self.ra_limiter = ra_limiter
        self.retry = retry
        self.stats = stats or RequestStats()
        self.max_body = max_body
        self.health = health or Health("the API", max_wait_s=retry.max_s)
        self.ra_health = ra_health or Health("the registration-agency service", max_wait_s=retry.max_s)
        self.stop = stop  # the run's stop: set, a call to a failing service is abandoned
        self._api_origin = urlsplit(self.api_url)[:2]
        self._headers = {"User-Agent": user_agent(mailto), "Accept": "application/json"}
        # Only for requests to the API's own host (scheme and host:port); see `_headers_for`.
        self._secret = {"Crossref-Plus-API-Token": f"Bearer {plus_token}"} if plus_token else {}

    # -- public calls ------------------------------------------------------------------
    async def works(
        self, params: dict[str, str], *, on_retry: Callable[[RetryableError], None] | None = None
    ) -> Body:
        """One /works page, still compressed (see `Body`); `on_retry` hears of each failure."""
        query = dict(params)
        if self.mailto:
            query["mailto"] = self.mailto
        url = f"{self.api_url}/works"
        return await self._with_retries(
            lambda: self._get(url, query, self.limiter, self.health, packed=True, kind="page"),
            self.health, on_retry=on_retry,
        )

    async def count(self, filter_: str) -> int:
        """`total-results` for a filter (rows=0 is cheap)."""

        async def attempt() -> int:
            return _decode_count(await self.works_once({"filter": filter_, "rows": "0"}, kind="count", priority=True))

        return await self._with_retries(attempt, self.health)

    async def facet(self, filter_: str, name: str) -> tuple[int, dict[str, int]]:
        """(total-results, {value: count}) of one facet with every value, for a filter."""

        async def attempt() -> tuple[int, dict[str, int]]:
            body = await self.works_once({"filter": filter_, "rows": "0", "facet": f"{name}:*"}, kind="facet",
                                         priority=True)
            return _decode_facet(body, name)

        return await self._with_retries(attempt, self.health)

    async def earliest_created(self, filter_: str = "", until: date | None = None) -> tuple[date | None, int]:
        """The created date of the oldest registered work (None for an empty corpus), and how
        many works were created up to `until`: the whole range's count, from the same answer."""

        async def attempt() -> tuple[date | None, int]:
            scope = ",".join(f for f in (f"until-created-date:{until}" if until else "", filter_) if f)
            params = {"sort": "created", "order": "asc", "rows": "1", "select": "DOI,created"}
            if scope:
                params["filter"] = scope
            return _decode_first_created(await self.works_once(params, kind="count"))

        return await self._with_retries(attempt, self.health)

    async def works_once(self, params: dict[str, str], *, kind: str = "page", priority: bool = False) -> bytes:
        query = dict(params)
        if self.mailto:
            query["mailto"] = self.mailto
        return await self._get(f"{self.api_url}/works", query, self.limiter, self.health, kind=kind, priority=priority)

    async def agencies(self, prefixes: list[str]) -> dict[str, str | None]:
        """Registration agency per prefix: a name, or None when no agency knows it."""

        async def attempt() -> dict[str, str | None]:
            url = f"{self.ra_url}/{','.join(prefixes)}"
            body = await self._get(url, None, self.ra_limiter, self.ra_health, observe=False, kind="agency",
                                   secret=False)
            return _decode_agencies(body, prefixes)

        return await self._with_retries(attempt, self.ra_health)

    # -- machinery ---------------------------------------------------------------------
    async def _with_retries(
        self, call: Any, health: Health, *, on_retry: Callable[[RetryableError], None] | None = None
    ) -> Any:
        # Exponential with jitter, capped: initial, 2x, 4x, ... up to max_s, plus up to `initial` at random.
        backoff = wait_exponential(multiplier=self.retry.initial_s, max=self.retry.max_s) + wait_random(
            0, self.retry.initial_s
        )

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            delay = backoff(state)
            if isinstance(exc, RetryableError) and exc.retry_after:
                delay = max(delay, exc.retry_after)
            if health.down:  # the health gate spaces the probes out; do not add to it
                delay = min(delay, self.retry.initial_s)
            return delay

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            if self.stop is not None and self.stop.is_set():
                raise self._stopped(health) from exc
            self.stats.retries += 1
            if health.gave_up():
                raise Unreachable(
                    f"{health.label} has not answered for more than {health.give_up_after_s:.0f} s "
                    f"(last: {health.last_error})"
                )
            if on_retry is not None and isinstance(exc, RetryableError):
                on_retry(exc)
            log.info("retrying after: %s (attempt %d)", exc, state.attempt_number)

        async def pause(seconds: float) -> None:
            if self.stop is None:
                return await asyncio.sleep(seconds)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stop.wait(), seconds)
            if self.stop.is_set():
                raise self._stopped(health)

        retrying = AsyncRetrying(
            retry=retry_if_exception(lambda exc: isinstance(exc, RetryableError)),
            stop=stop_never if self.retry.attempts is None else stop_after_attempt(self.retry.attempts),
            wait=wait,
            sleep=pause,
            before_sleep=before_sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._unless_stopped(call, health, retried=attempt.retry_state.attempt_number > 1)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _unless_stopped(self, call: Any, health: Health, *, retried: bool) -> Any:
        """One attempt, abandoned (`Stopped`) if the stop comes while its service is failing:
        this call failed already, or the service's last request did, or it is down (the
        attempt waits behind its probe). Waiting on it could last until the service is back.
        An attempt at a service that answers is let finish (its timeouts bound it)."""
        if self.stop is None:
            return await call()
        attempt = asyncio.ensure_future(call())
        stopped = asyncio.ensure_future(self.stop.wait())
        try:
            await asyncio.wait({attempt, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not attempt.done() and (retried or health.failures or health.down):
                raise self._stopped(health)
            return await attempt
        finally:
            stopped.cancel()
            if not attempt.done():
                attempt.cancel()  # abandoned, or its caller was cancelled
            elif not attempt.cancelled():
                attempt.exception()  # retrieved, even when its caller was cancelled as it ended

    @staticmethod
    def _stopped(health: Health) -> Stopped:
        why = f" ({health.last_error})" if health.last_error else ""
        return Stopped(f"abandoned what waited for {health.label}{why}")

    def _headers_for(self, url: str, packed: bool, secret: bool = True) -> dict[str, str]:
        headers = dict(self._headers)
        if packed:
            headers["Accept-Encoding"] = "gzip, deflate"
        if secret and self._secret and urlsplit(url)[:2] == self._api_origin:
            headers.update(self._secret)
        return headers

    async def _get(
        self,
        url: str,
        params: dict[str, str] | None,
        limiter: Limiter,
        health: Health,
        *,
        observe: bool = True,
        packed: bool = False,
        kind: str = "page",
        priority: bool = False,
        secret: bool = True,
    ) -> Any:
        """The body of a GET (a `Body` left compressed when `packed`), or the error it earned.
        Redirects are followed here, not by aiohttp, so the token never leaves the API's host."""
        async with health.admit() as sent_at:
            try:
                result = await self._get_once(url, params, limiter, observe=observe, packed=packed, kind=kind,
                                              priority=priority, secret=secret)
            except RetryableError as exc:
                self.stats.last_error = str(exc)
                if exc.outage:
                    health.failed(_short(exc))
                raise
            health.ok(sent_at)
            return result

    async def _get_once(self, url, params, limiter, *, observe, packed, kind, priority=False,  # type: ignore[no-untyped-def]
                        secret=True):
        for _ in range(MAX_REDIRECTS + 1):
            async with limiter.slot(priority) as sent_at:
                self.stats.requests += 1
                self.stats.kinds[kind] += 1
                try:
                    async with self.session.get(url, params=params, headers=self._headers_for(url, packed, secret),
                                                auto_decompress=not packed, allow_redirects=False) as resp:
                        if observe:
                            limiter.observe(resp.headers)
                        data = await self._read(resp)
                        status, content_type, headers = resp.status, resp.content_type, resp.headers
                        location = resp.headers.get("Location")
                        here = str(resp.url)
                except asyncio.TimeoutError:
                    raise self._failed("timeout", "the request timed out") from None
                except aiohttp.ClientConnectorError as exc:
                    # Never reached the server: nothing can have advanced.
                    raise self._failed(
                        "connect", f"cannot connect to {exc.host}:{exc.port}", maybe_advanced=False
                    ) from None
                except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
                    raise self._failed("truncated", f"the response was cut short ({exc})") from None
                except aiohttp.ClientError as exc:
                    raise self._failed("connection", f"connection error ({type(exc).__name__})") from None
            if status in _REDIRECTS and location:
                url, params = urljoin(here, location), None  # the Location carries the query
                continue
            return self._answer(url, status, content_type, headers, data, packed, limiter, sent_at)
        raise RetryableError(f"more than {MAX_REDIRECTS} redirects from {url.split('?', 1)[0]}")

    def _answer(self, url, status, content_type, headers, data, packed, limiter, sent_at):  # type: ignore[no-untyped-def]
        packed_body = Body(data, headers.get("Content-Encoding", ""), self.max_body) if packed else None
        if status == 200:
            limiter.succeeded()
            return packed_body if packed_body is not None else data
        body = data
        if packed_body is not None:
            with contextlib.suppress(CrawlerError):
                body = packed_body.inflate()
        message = readable_error(body, content_type)
        where = url.split("?", 1)[0]
        if status == 429:
            self.stats.throttled += 1
            self.stats.errors["429"] += 1
            retry_after = _retry_after(headers)
            limiter.throttled(retry_after, sent_at)
            raise RateLimited(f"429 Too Many Requests from {where}: {message}", retry_after=retry_after)
        self.stats.errors[str(status)] += 1
        if status == 401:
            raise CredentialsRefused(
                "the API refused our credentials (401 Unauthorized): check the Plus token "
                "given by --plus-token or CROSSREF_PLUS_TOKEN",
                status=401,
            )
        if status == 404 and b"cursor-invalid" in body:
            raise CursorInvalid(f"the scroll cursor expired or is unknown: {message}", status=404)
        if status >= 500 or status == 408:
            raise RetryableError(f"{status} from {where}: {message}", status=status)
        if status in (403, 404) and not _is_api_json(body, content_type) and "html" in content_type:
            # A load balancer's or firewall's page, not the API's answer: it passes.
            raise RetryableError(f"{status} from {where} (not the API's answer): {message}", status=status)
        raise FatalApiError(f"the API rejected our request ({status} from {where}): {message}", status=status)

    def _failed(self, kind: str, message: str, *, maybe_advanced: bool = True) -> RetryableError:
        self.stats.errors[kind] += 1
        return RetryableError(message, maybe_advanced=maybe_advanced)

    async def _read(self, resp: aiohttp.ClientResponse) -> bytes:
        """The whole body (as the session delivers it), refusing more than `max_body` bytes."""
        body = bytearray()
        async for chunk in resp.content.iter_chunked(1 << 16):
            body += chunk
            if len(body) > self.max_body:
                raise PageTooLarge(
                    f"a response exceeded {self.max_body / (1024 * 1024):g} MiB; "
                    "its window is fetched again with fewer rows per page"
                )
        return bytes(body)


def _short(exc: RetryableError) -> str:
    """'503 Service Temporarily Unavailable' from '503 from http://…/works: 503 Service …'."""
    text = str(exc)
    if exc.status is not None and ": " in text:
        words = text.split(": ", 1)[1]
        return words if words.startswith(str(exc.status)) else f"{exc.status} {words}"
    return text


class _Count(msgspec.Struct):
    total_results: int = msgspec.field(name="total-results")


class _CountEnvelope(msgspec.Struct):
    message: _Count


class _Created(msgspec.Struct):
    created: dict[str, Any] | None = None


class _FirstMessage(msgspec.Struct):
    items: list[_Created]
    total_results: int = msgspec.field(name="total-results")


class _FirstEnvelope(msgspec.Struct):
    message: _FirstMessage


class _Agency(msgspec.Struct):
    DOI: str
    RA: str | None = None
    status: str | None = None


def _bad_body(what: str) -> RetryableError:
    return RetryableError(f"the API sent an undecodable {what}")


class _FacetValues(msgspec.Struct):
    values: dict[str, int] = {}


class _Faceted(msgspec.Struct):
    total_results: int = msgspec.field(name="total-results")
    facets: dict[str, _FacetValues] = {}


class _FacetEnvelope(msgspec.Struct):
    message: _Faceted


def _decode_facet(body: bytes, name: str) -> tuple[int, dict[str, int]]:
    try:
        message = msgspec.json.decode(body, type=_FacetEnvelope).message
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise _bad_body("facet count") from None
    facet = message.facets.get(name)
    return message.total_results, dict(facet.values) if facet is not None else {}


def _decode_count(body: bytes) -> int:
    try:
        return msgspec.json.decode(body, type=_CountEnvelope).message.total_results
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise _bad_body("count") from None


def _decode_first_created(body: bytes) -> tuple[date | None, int]:
    try:
        message = msgspec.json.decode(body, type=_FirstEnvelope).message
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise _bad_body("work list") from None
    items = message.items
    if not items or not items[0].created:
        return None, message.total_results
    created = items[0].created
    try:
        if isinstance(created.get("date-time"), str):
            return date.fromisoformat(created["date-time"][:10]), message.total_results
        return date(*created["date-parts"][0][:3]), message.total_results
    except (TypeError, ValueError, KeyError, IndexError):
        raise _bad_body("created date") from None


def _decode_agencies(body: bytes, asked: list[str]) -> dict[str, str | None]:
    try:
        answers = msgspec.json.decode(body, type=list[_Agency])
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise RetryableError("the registration-agency service sent an undecodable answer") from None
    wanted = {p.lower(): p for p in asked}
    found: dict[str, str | None] = {}
    for answer in answers:
        prefix = wanted.get(answer.DOI.lower())
        if prefix is not None:
            found[prefix] = answer.RA or None
    missing = [p for p in asked if p not in found]
    if missing:
        raise RetryableError(f"the registration-agency service did not answer for {missing[:5]}")
    return found
