"""The API client against a scripted aiohttp server on 127.0.0.1, answering with the real
recorded error bodies: classification, retries, identification, secrecy, body caps."""

from __future__ import annotations

import asyncio
import gzip
import inspect
import json
import logging
import zlib

import aiohttp
import pytest
from aiohttp import web

from crawler.api.body import Body
from crawler.api.client import ApiClient, RetryPolicy, user_agent
from crawler.api.limits import Limiter
from crawler.errors import ApiError, CursorInvalid, FatalApiError, RateLimited, RetryableError
from tests.samples import sample_bytes

TOKEN = "sekrit-plus-token-123"
OK_COUNT = json.dumps({"status": "ok", "message-type": "work-list", "message": {"total-results": 42, "items": []}})


def sample(name: str) -> bytes:
    return sample_bytes(f"rest-api/{name}")


class Script:
    """Answers /works with the next scripted response; remembers every request."""

    def __init__(self, responses):
        self.responses = list(responses)
        self.requests: list[web.Request] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        make = self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]
        response = make()
        return await response if inspect.isawaitable(response) else response


@pytest.fixture
async def serve():
    runners = []

    async def start(*responses):
        script = Script(responses)
        app = web.Application()
        app.router.add_get("/works", script.handle)
        app.router.add_get("/ra/{ids}", script.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = site._server.sockets[0].getsockname()[1]
        return script, f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def client_for():
    sessions = []

    def make(url: str, **kw) -> ApiClient:
        session = aiohttp.ClientSession()
        sessions.append(session)
        return ApiClient(
            session, api_url=url, ra_url=f"{url}/ra", mailto=kw.pop("mailto", "me@example.org"),
            plus_token=kw.pop("plus_token", None), limiter=Limiter(100, 1.0, 4), ra_limiter=Limiter(100, 1.0, 2),
            retry=kw.pop("retry", RetryPolicy(attempts=3, initial_s=0.01, max_s=0.05)), **kw,
        )

    yield make
    for session in sessions:
        await session.close()


def ok(body: str = OK_COUNT, **headers):
    return lambda: web.Response(text=body, content_type="application/json", headers=headers)


def status(code: int, name: str, content_type: str, **headers):
    return lambda: web.Response(body=sample(name), status=code, content_type=content_type, headers=headers)


async def test_identifies_itself_politely_and_sends_the_token(serve, client_for):
    script, url = await serve(ok())
    client = client_for(url, plus_token=TOKEN)
    assert await client.count("from-created-date:2020-01-01") == 42
    request = script.requests[0]
    assert request.query["mailto"] == "me@example.org"
    assert request.headers["User-Agent"] == user_agent("me@example.org")
    assert "mailto:me@example.org" in request.headers["User-Agent"] and request.headers["User-Agent"].startswith("crawler/")
    assert request.headers["Crossref-Plus-API-Token"] == f"Bearer {TOKEN}"
    assert request.query["rows"] == "0"


async def test_400_validation_failure_fails_fast_with_the_apis_words(serve, client_for):
    script, url = await serve(status(400, "error-400-filter-not-available.json", "application/json"))
    with pytest.raises(FatalApiError) as caught:
        await client_for(url).count("has-full-text:true")
    assert "Filter 'has-full-text' specified but there is no such filter" in str(caught.value)
    assert len(script.requests) == 1  # never retried


async def test_404_plain_text_and_cursor_invalid(serve, client_for):
    script, url = await serve(status(404, "error-404-not-found.txt", "text/plain"))
    with pytest.raises(FatalApiError, match="Resource not found."):
        await client_for(url).count("x:y")
    script, url = await serve(status(404, "error-404-cursor-invalid.json", "application/json"))
    with pytest.raises(CursorInvalid, match="Cursor specified but it is invalid"):
        await client_for(url).works({"cursor": "abc"})


async def test_500_is_retried_and_reported_without_the_stack(serve, client_for):
    script, url = await serve(status(500, "error-500-exception.json", "application/json"))
    with pytest.raises(RetryableError) as caught:
        await client_for(url).count("x:y")
    assert len(script.requests) == 3
    assert "Response Exception" in str(caught.value) and "clojure.core" not in str(caught.value)


async def test_504_html_becomes_readable_text_and_recovers(serve, client_for):
    script, url = await serve(status(504, "error-504-gateway.html", "text/html"), ok())
    client = client_for(url)
    assert await client.count("x:y") == 42
    assert client.stats.retries == 1 and client.stats.errors["504"] == 1
    script, url = await serve(status(504, "error-504-gateway.html", "text/html"))
    with pytest.raises(RetryableError) as caught:
        await client_for(url).count("x:y")
    assert "504 Gateway Time-out" in str(caught.value) and "<" not in str(caught.value)


async def test_429_without_retry_after_slows_down_and_is_retried(serve, client_for):
    script, url = await serve(status(429, "error-429-too-many-requests.html", "text/html"), ok())
    client = client_for(url)
    assert await client.count("x:y") == 42
    assert client.stats.throttled == 1
    assert client.limiter.rate < 100  # halved, recovering


async def test_429s_to_requests_in_flight_together_halve_the_pace_once(serve, client_for):
    # Four requests leave together and all four meet a 429: one over-limit moment, one cut.
    arrived, together = 0, asyncio.Event()

    async def throttle_four():
        nonlocal arrived
        arrived += 1
        if arrived > 4:
            return ok()()
        if arrived == 4:
            together.set()
        await together.wait()
        return status(429, "error-429-too-many-requests.html", "text/html", **{"Retry-After": "0"})()

    script, url = await serve(throttle_four)
    client = client_for(url)
    assert await asyncio.gather(*(client.count("x:y") for _ in range(4))) == [42] * 4
    assert client.stats.throttled == 4 and len(script.requests) == 8
    # Halved once, then four successes win back 2% each; four halvings would leave 1/16.
    assert 0.5 <= client.limiter.factor < 0.6


async def test_a_continuation_is_retried_in_place_and_the_window_hears_a_page_may_be_gone(serve, client_for):
    """A 504 after the scroll may have moved: asked again with the same cursor (the window's
    count of distinct works shows a lost page at its end), and the window is told so."""
    script, url = await serve(status(504, "error-504-gateway.html", "text/html"), ok())
    heard = []
    body = await client_for(url).works({"cursor": "abc"}, on_retry=heard.append)
    assert body.inflate() == OK_COUNT.encode()
    assert [r.query["cursor"] for r in script.requests] == ["abc", "abc"]
    assert [(e.status, e.maybe_advanced) for e in heard] == [(504, True)]
    # A 429 never reached the backend: retried in place, and nothing may be missing.
    script, url = await serve(status(429, "error-429-too-many-requests.html", "text/html"), ok())
    heard.clear()
    assert (await client_for(url).works({"cursor": "abc"}, on_retry=heard.append)).inflate() == OK_COUNT.encode()
    assert [r.query["cursor"] for r in script.requests] == ["abc", "abc"]
    assert [(e.status, e.maybe_advanced) for e in heard] == [(429, False)]


async def test_transient_failures_are_retried_without_an_attempt_budget(serve, client_for):
    """The product's policy (attempts=None): twelve failures of every transient kind in a row,
    then an answer; a load balancer's HTML 403/404 and a 408 are transient, the API's own
    JSON 400 is not."""
    kinds = [status(500, "error-500-exception.json", "application/json"),
             status(504, "error-504-gateway.html", "text/html"),
             lambda: web.Response(status=503, text="<html><title>503 Service Temporarily Unavailable</title></html>",
                                  content_type="text/html"),
             lambda: web.Response(status=408, text="<html><title>408 Request Time-out</title></html>", content_type="text/html"),
             lambda: web.Response(status=403, text="<html><title>403 Forbidden</title></html>", content_type="text/html"),
             lambda: web.Response(status=404, text="<html><title>404 Not Found</title></html>", content_type="text/html"),
             lambda: web.Response(status=200, text='{"status": "ok", "message": {"tot', content_type="application/json")]
    script, url = await serve(*(kinds * 2)[:12], ok())
    client = client_for(url, retry=RetryPolicy(attempts=None, initial_s=0.001, max_s=0.002))
    client.health.threshold = 100  # this test is about the retries, not the outage gate
    assert await client.count("x:y") == 42
    assert len(script.requests) == 13 and client.stats.retries == 12
    script, url = await serve(status(400, "error-400-integer-not-valid.json", "application/json"))
    with pytest.raises(FatalApiError, match="less than or equal to 1000"):
        await client_for(url, retry=RetryPolicy(attempts=None, initial_s=0.001, max_s=0.002)).count("x:y")
    assert len(script.requests) == 1


async def test_200_that_is_not_json_is_retried(serve, client_for):
    script, url = await serve(lambda: web.Response(text="<html>oops</html>", content_type="text/html"), ok())
    assert await client_for(url).count("x:y") == 42
    assert len(script.requests) == 2


async def test_401_stops_with_a_message_free_of_the_token(serve, client_for, caplog):
    script, url = await serve(lambda: web.Response(status=401, text=f"bad token {TOKEN}"))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(FatalApiError) as caught:
        await client_for(url, plus_token=TOKEN).count("x:y")
    assert "401" in str(caught.value) and TOKEN not in str(caught.value)
    assert TOKEN not in caplog.text
    assert len(script.requests) == 1


async def test_decompression_bomb_is_an_error_not_out_of_memory(serve, client_for):
    bomb = gzip.compress(b"0" * (64 * 1024 * 1024), compresslevel=9)  # 64 MiB in ~64 KiB
    script, url = await serve(lambda: web.Response(body=bomb, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"}))
    body = await client_for(url, max_body=8 * 1024 * 1024).works({"cursor": "*"})
    assert body.data == bomb  # pages travel to the parsers compressed
    assert body.inflate(head=4096) == b"0" * 4096  # the cursor scan inflates only the start
    with pytest.raises(ApiError, match="exceeded 8 MiB once decompressed"):
        body.inflate()


@pytest.mark.parametrize("encoding", ["gzip", "deflate", ""])
async def test_pages_arrive_compressed_and_inflate_to_the_page(serve, client_for, encoding):
    page = sample("works-list-heavy-100.json")
    packed = {"gzip": gzip.compress, "deflate": zlib.compress, "": bytes}[encoding](page)
    script, url = await serve(lambda: web.Response(body=packed, headers={"Content-Encoding": encoding} if encoding else {},
                                                   content_type="application/json"))
    body = await client_for(url).works({"cursor": "*"})
    assert script.requests[0].headers["Accept-Encoding"] == "gzip, deflate"
    assert body.data == packed and body.encoding == encoding
    assert body.inflate() == page and body.inflate(head=100) == page[:100]


async def test_a_compressed_error_body_is_still_read(serve, client_for):
    answer = sample("error-404-cursor-invalid.json")
    script, url = await serve(lambda: web.Response(status=404, body=gzip.compress(answer), content_type="application/json",
                                                   headers={"Content-Encoding": "gzip"}))
    with pytest.raises(CursorInvalid, match="Cursor specified but it is invalid"):
        await client_for(url).works({"cursor": "abc"})


def test_a_corrupt_or_cut_stream_is_retryable_and_an_unknown_encoding_is_not():
    packed = gzip.compress(b'{"message": {"items": []}}' * 1000)
    with pytest.raises(RetryableError, match="cut short or corrupt"):
        Body(packed[: len(packed) // 2], "gzip", 1 << 20).inflate()
    with pytest.raises(RetryableError, match="corrupt"):
        Body(packed[:10] + b"\xff" * 40, "gzip", 1 << 20).inflate()
    with pytest.raises(ApiError, match="Content-Encoding we did not ask for: 'br'"):
        Body(packed, "br", 1 << 20).inflate()


async def test_agency_answers(serve, client_for):
    answer = json.dumps([{"DOI": "10.5061", "RA": "DataCite"}, {"DOI": "10.99999", "status": "DOI does not exist"}])
    script, url = await serve(ok(answer))
    assert await client_for(url).agencies(["10.5061", "10.99999"]) == {"10.5061": "DataCite", "10.99999": None}
    assert script.requests[0].path == "/ra/10.5061,10.99999"
    script, url = await serve(ok("[]"), ok(answer))  # a garbage (incomplete) answer is retried
    assert await client_for(url).agencies(["10.5061", "10.99999"]) == {"10.5061": "DataCite", "10.99999": None}


async def test_rate_limited_error_type(serve, client_for):
    script, url = await serve(status(429, "error-429-too-many-requests.html", "text/html", **{"Retry-After": "0"}))
    with pytest.raises(RateLimited, match="You have sent too many requests"):
        await client_for(url).count("x:y")
