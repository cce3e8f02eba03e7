"""Seeded faults: what the real API and its load balancers do at their worst, on demand.

Every decision is a draw fixed by the seed and by the request's identity (its query, or its
scroll's query, number and page, and its attempt), never by the time it arrives: a run that
sends the same requests meets the same faults. Two things depend on time or order and are
meant to: outages last `duration_s` seconds of wall time, and `early_kinds` spends each kind
on the first request where it can apply.
"""

from __future__ import annotations

import base64
import hashlib
import time
from dataclasses import dataclass
from http import HTTPStatus

import msgspec
from aiohttp import web

from crawler.simulator.pools import LimitChange

# -- bodies, as recorded from the live API and the load balancers in front of it ----------------
PAGE_429 = (
    b"<html><body><h1>429 Too Many Requests</h1>\n"
    b"You have sent too many requests in a given amount of time.\n</body></html>\n"
)
PAGE_408 = (  # the same balancer's page for a request it gave up waiting for
    b"<html><body><h1>408 Request Time-out</h1>\n"
    b"Your browser didn't send a complete request in time.\n</body></html>\n"
)
PAGE_5XX = {
    502: b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n",
    503: b"<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n<body>\r\n<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n</body>\r\n</html>\r\n",
    504: b"<html>\r\n<head><title>504 Gateway Time-out</title></head>\r\n<body>\r\n<center><h1>504 Gateway Time-out</h1></center>\r\n</body>\r\n</html>\r\n",
}
PAGE_NGINX = {  # a firewall's or balancer's own refusals: HTML, not the API's JSON
    403: b"<html>\r\n<head><title>403 Forbidden</title></head>\r\n<body>\r\n<center><h1>403 Forbidden</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n",
    404: b"<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n<center><h1>404 Not Found</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n",
}
BODY_500 = msgspec.json.encode({
    "status": "error", "message-type": "exception", "message-version": "1.0.0",
    "message": {
        "name": "class clojure.lang.ExceptionInfo",
        "description": "clojure.lang.ExceptionInfo: Response Exception qbits.spandex.Response@40533e24",
        "message": "Response Exception",
        "stack": ["clojure.core$ex_info.invokeStatic(core.clj:4617)", "qbits.spandex$response_ex__GT_ex_info.invoke(spandex.clj:215)"],
    },
})
BODY_NOT_JSON = b"<html><body>Service starting up</body></html>"
_WHOLE_PAGE = msgspec.json.encode({
    "status": "ok", "message-type": "work-list", "message-version": "1.0.0",
    "message": {
        "facets": {}, "next-cursor": "DnF1ZXJ5VGhlbkZldGNo+/cut", "total-results": 1234,
        "items": [{"DOI": "10.1016/j.cell.2019.05.014", "type": "journal-article",
                   "reference": [{"key": "ref1", "DOI": "10.1038/nature12373", "doi-asserted-by": "crossref"},
                                 {"key": "ref2", "unstructured": "Smith A. (2001) Soil carbon dynamics. Nature 12:1-1000"}]}],
        "items-per-page": 20, "query": {"start-index": 0, "search-terms": None},
    },
})
BODY_BROKEN_JSON = _WHOLE_PAGE[: len(_WHOLE_PAGE) // 2]  # a 200 whose JSON stops mid-string


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes
    content_type: str
    counter: str  # its name in SimStats.faults
    headers: tuple[tuple[str, str], ...] = ()

    def response(self) -> web.Response:
        return web.Response(status=self.status, body=self.body, content_type=self.content_type,
                            headers=dict(self.headers))


ERROR_KINDS: dict[str, _Answer] = {  # answers given before the scroll moves
    "500": _Answer(500, BODY_500, "application/json", "error-500"),
    "502": _Answer(502, PAGE_5XX[502], "text/html", "error-502"),
    "503": _Answer(503, PAGE_5XX[503], "text/html", "error-503"),
    "504": _Answer(504, PAGE_5XX[504], "text/html", "error-504"),
    "429": _Answer(429, PAGE_429, "text/html", "error-429"),
    "429-retry-after": _Answer(429, PAGE_429, "text/html", "error-429-retry-after", (("Retry-After", "1"),)),
    "408": _Answer(408, PAGE_408, "text/html", "error-408"),
    "403-html": _Answer(403, PAGE_NGINX[403], "text/html", "error-403"),
    "404-html": _Answer(404, PAGE_NGINX[404], "text/html", "error-404"),
    "not-json": _Answer(200, BODY_NOT_JSON, "text/html", "error-200"),
    "broken-json": _Answer(200, BODY_BROKEN_JSON, "application/json", "error-broken-json"),
}
RA_ERROR_KINDS = ("503", "garbage", "stall", "reset")
LOST_MODES = ("reset", "truncate", "stall")


def status_page(status: int) -> web.Response:
    """What a balancer answers with `status` (an outage): its recorded page where there is one."""
    for answer in ERROR_KINDS.values():
        if answer.status == status and not answer.headers:
            return answer.response()
    body = f"<html><body><h1>{status} {HTTPStatus(status).phrase}</h1></body></html>\n"
    return web.Response(status=status, body=body.encode(), content_type="text/html")


@dataclass(frozen=True)
class Outage:
    """From the moment the target's request count (/works, or /ra for target "ra") reaches
    `after_requests`, every request to it answers `status` for `duration_s` seconds of wall
    time. Cursors keep ageing meanwhile: an outage longer than `cursor_ttl_s` expires them."""

    after_requests: int
    duration_s: float
    target: str = "works"  # "works" or "ra"
    status: int = 503
    trigger: str | None = None  # whose request count starts the clock: the target's by default

    def __post_init__(self) -> None:
        for route in (self.target, self.trigger or self.target):
            if route not in ("works", "ra"):
                raise ValueError(f"an outage targets 'works' or 'ra', not {route!r}")


@dataclass(frozen=True)
class Faults:
    """Which faults strike, how often, and for how long.

    A fault that could break a window strikes only the first `fault_scrolls` scrolls of a
    query, and a failing request only its first `fault_attempts` attempts; `None` for either
    means every scroll, every attempt: faults that persist deep into long scrolls and after any
    number of retries (each draw is still a fresh one, so a retry may get through).

    `error_kinds` answers (before the scroll moves), counted in SimStats.faults as: "500"
    (the JSON exception, error-500), "502"/"503"/"504" (balancer HTML, error-5xx), "429"
    (HTML, no Retry-After, error-429), "429-retry-after" (the same with `Retry-After: 1`,
    error-429-retry-after), "408" (HTML, error-408), "403-html"/"404-html" (nginx HTML pages,
    error-403/error-404), "not-json" (a 200 HTML page, error-200), "broken-json" (a 200
    application/json page cut mid-string, error-broken-json). Pages lost after the scroll
    moved: lost-reset, lost-truncate, lost-stall. Then duplicates (a page repeats items of the
    page before), repeat-within-page, short (a scroll ends early), cursor-expired,
    ra-<kind>, outage-works, outage-ra.
    """

    seed: int = 0
    fault_scrolls: int | None = 2  # scroll faults strike only the first scrolls of each query
    fault_attempts: int | None = 2  # request faults strike only the first attempts of each request
    lost_page_rate: float = 0.0  # the scroll advances, then the response is lost
    lost_pages: frozenset[int] = frozenset()  # these pages (0 = first) of a scroll are lost
    lost_modes: tuple[str, ...] = LOST_MODES
    stall_s: float = 3.0  # a "stall" answers after this long (set the crawler's timeout below it)
    duplicate_rate: float = 0.0  # a page repeats items of earlier pages
    short_rate: float = 0.0  # a scroll ends early
    hidden_dois: frozenset[str] = frozenset()  # counted in total-results, never served by a scroll
    expire_rate: float = 0.0  # a cursor is forgotten before its next use
    error_rate: float = 0.0  # a request fails before reaching the scroll
    error_kinds: tuple[str, ...] = ("500", "502", "503", "504", "429", "not-json")
    ra_error_rate: float = 0.0
    ra_error_kinds: tuple[str, ...] = RA_ERROR_KINDS
    limit_changes: tuple[LimitChange, ...] = ()
    repeat_within_page_rate: float = 0.0  # a page serves one of its own items twice
    long_cursor: bool = False  # ~6 KB scroll ids (many shards), still with `+ / =`
    outages: tuple[Outage, ...] = ()
    early_kinds: bool = False  # spend every kind switched on once, at the first request it fits

    def __post_init__(self) -> None:
        unknown = [k for k in self.error_kinds if k not in ERROR_KINDS]
        unknown += [k for k in self.ra_error_kinds if k not in RA_ERROR_KINDS]
        unknown += [m for m in self.lost_modes if m not in LOST_MODES]
        if unknown:
            raise ValueError(f"unknown fault kind(s): {', '.join(unknown)}")

    @classmethod
    def mix(cls, rate: float = 0.25, seed: int = 0, stall_s: float = 35.0) -> Faults:
        """Every kind at once, persistent: about `rate` of the /works requests fail.

        Half of the rate is error answers (every kind in ERROR_KINDS), which any request may
        get; scroll starts and continuations with items draw their own kinds on top (short at
        a start; expired cursor, lost page in each mode, duplicates from the page before, a
        repeat within the page at a continuation) so that each of them fails at about `rate`.
        Counts and the final empty pages, which only errors (and expiry) can strike, fail
        less often. /ra requests fail at `rate` too. Every kind is injected once early on
        (`early_kinds`): at the first request where it can apply, one per request, error
        kinds only on a request's first attempt; a crawl meets them all within about its first
        30 /works requests (a sequential one-window-at-a-time walker, at its 32nd). After that the seeded rates take over, with no end
        (fault_scrolls=None, fault_attempts=None). The exact requests struck depend on the
        order the requests arrive in; the kinds met and their rates do not.
        `stall_s` (a stalled answer's delay) should exceed the client's timeout.
        """
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"a fault rate is a share of requests, between 0 and 1, not {rate}")
        errors = rate / 2
        rest = 1 - (1 - rate) / (1 - errors)  # what the scroll kinds add at a scroll page

        def share(weight: float) -> float:  # shares whose survivals multiply to 1 - rest
            return 1 - (1 - rest) ** weight

        return cls(
            seed=seed, fault_scrolls=None, fault_attempts=None,
            error_rate=errors, error_kinds=tuple(ERROR_KINDS),
            short_rate=rest, expire_rate=share(0.2), lost_page_rate=share(0.5), lost_modes=LOST_MODES,
            duplicate_rate=share(0.2), repeat_within_page_rate=share(0.1), stall_s=stall_s,
            ra_error_rate=rate, ra_error_kinds=RA_ERROR_KINDS, early_kinds=True,
        )


def draw(seed: int, *key: object) -> float:
    """A uniform number in [0, 1) fixed by the key: faults do not depend on request timing."""
    digest = hashlib.blake2b(repr((seed, *key)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


CONTINUATION_KINDS = ("expire", "duplicate", "repeat", "lost:")  # in the order they are spent


class Injector:
    """The draws for one `Faults`, and the state they keep: outage clocks, kinds owed early."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self.outage_started: dict[int, float] = {}
        self.owed: list[str] = []
        if faults.early_kinds:
            self.owed = list(dict.fromkeys(self._kinds(faults)))

    @staticmethod
    def _kinds(f: Faults) -> list[str]:
        kinds = [f"error:{k}" for k in f.error_kinds] if f.error_rate > 0 else []
        kinds += ["short"] * (f.short_rate > 0) + ["expire"] * (f.expire_rate > 0)
        kinds += ["duplicate"] * (f.duplicate_rate > 0) + ["repeat"] * (f.repeat_within_page_rate > 0)
        kinds += [f"lost:{m}" for m in f.lost_modes] if f.lost_page_rate > 0 else []
        kinds += [f"ra:{k}" for k in f.ra_error_kinds] if f.ra_error_rate > 0 else []
        return kinds

    # -- reach --------------------------------------------------------------------------
    def scroll_in_reach(self, number: int) -> bool:
        return self.faults.fault_scrolls is None or number < self.faults.fault_scrolls

    def attempt_in_reach(self, attempt: int) -> bool:
        return self.faults.fault_attempts is None or attempt < self.faults.fault_attempts

    # -- early kinds --------------------------------------------------------------------
    def owes(self, *kinds: str) -> bool:
        return any(owed.startswith(kinds) for owed in self.owed)

    def take(self, *kinds: str) -> str | None:
        """The first kind still owed among `kinds` (prefixes), now spent; or None."""
        for kind in kinds:
            for owed in self.owed:
                if owed.startswith(kind):
                    self.owed.remove(owed)
                    return owed
        return None

    # -- draws --------------------------------------------------------------------------
    def outage(self, target: str, counts: dict[str, int]) -> Outage | None:
        """The outage under way for `target` now, given each route's requests so far."""
        now = time.monotonic()
        for i, outage in enumerate(self.faults.outages):
            started = self.outage_started.get(i)
            if started is None and counts[outage.trigger or outage.target] >= outage.after_requests:
                started = self.outage_started[i] = now
            if outage.target == target and started is not None and now < started + outage.duration_s:
                return outage
        return None

    def error(self, request_key: tuple, attempt: int, scroll_number: int | None, scroll_kind_owed: bool) -> str | None:
        """The error kind answering this request (before the scroll moves), or None."""
        faults = self.faults
        if scroll_number is not None and not self.scroll_in_reach(scroll_number):
            return None
        if not self.attempt_in_reach(attempt):
            return None
        if attempt == 0 and not scroll_kind_owed:
            early = self.take("error:")
            if early:
                return early.removeprefix("error:")
        if faults.error_rate <= 0 or draw(faults.seed, "error", request_key, attempt) >= faults.error_rate:
            return None
        return faults.error_kinds[int(draw(faults.seed, "kind", request_key, attempt) * len(faults.error_kinds))]

    def strikes(self, kind: str, query: str, number: int, page: int, rate: float) -> bool:
        if rate <= 0 or not self.scroll_in_reach(number):
            return False
        return draw(self.faults.seed, kind, query, number, page) < rate

    def lost_mode(self, query: str, number: int, page: int) -> str:
        modes = self.faults.lost_modes
        return modes[int(draw(self.faults.seed, "mode", query, number, page) * len(modes))]

    def ra_error(self, ids: str, attempt: int) -> str | None:
        faults = self.faults
        if not self.attempt_in_reach(attempt):
            return None
        if attempt == 0:
            early = self.take("ra:")
            if early:
                return early.removeprefix("ra:")
        if faults.ra_error_rate <= 0 or draw(faults.seed, "ra", ids, attempt) >= faults.ra_error_rate:
            return None
        return faults.ra_error_kinds[int(draw(faults.seed, "ra-kind", ids, attempt) * len(faults.ra_error_kinds))]


def new_cursor(serial: int, long: bool = False) -> str:
    """A scroll id: opaque, with `+ / =`; ~6 KB when `long` (a scroll id grows with the shards)."""
    digest = hashlib.sha256(f"{serial}:{time.monotonic_ns()}".encode()).digest()
    if not long:
        return "DnF1ZXJ5VGhlbkZldGNo+/" + base64.b64encode(digest[:20]).decode() + "=="
    shards = b"".join(hashlib.sha256(digest + bytes([i])).digest() for i in range(142))
    return "DnF1ZXJ5VGhlbkZldGNo+/" + base64.b64encode(shards[:4540]).decode() + "=="
