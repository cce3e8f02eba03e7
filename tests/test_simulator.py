"""The simulator itself: the API behaviour the crawler's tests rely on, over real TCP."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import replace
from datetime import date

import aiohttp
import pytest
import yarl

from crawler.api.client import new_session
from crawler.simulator.__main__ import faults_from, parser
from crawler.simulator.app import Faults, Outage, PoolLimits, SimConfig, Simulator
from crawler.simulator.corpus import AGENCIES, generate
from crawler.simulator.faults import ERROR_KINDS
from tests.conftest import FAST_POOLS, fast_sim_config

MAILTO = {"mailto": "tests@example.org"}
UNLIMITED = {pool: PoolLimits(10**6, 1.0, 100) for pool in ("public", "polite", "plus")}  # for quick walks


@pytest.fixture(scope="module")
def corpus():
    return generate(400, seed=3)


async def _get(session, url, **params):
    async with session.get(url, params=params) as resp:
        return resp.status, resp.headers, await resp.read()


async def _json(session, url, **params):
    async with session.get(url, params=params) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


def test_corpus_is_seeded_and_its_truth_is_consistent():
    a, b = generate(300, seed=9), generate(300, seed=9)
    assert a.works == b.works and a.expected == b.expected
    assert generate(300, seed=10).works != a.works
    dois = {w["DOI"] for w in a.works}
    assert len(dois) == 300
    for subject, relation, obj in a.expected:
        assert subject in dois and subject != obj
        assert obj == obj.lower() and AGENCIES[obj.split("/")[0]] is not None
    relations = {k[1] for k in a.expected}
    assert "references" in relations and len(relations) > 5
    agencies = {AGENCIES[k[2].split("/")[0]] for k in a.expected}
    assert {"Crossref", "DataCite"} <= agencies


def test_mutation_reports_exactly_the_added_keys():
    corpus = generate(300, seed=4)
    before = corpus.expected
    added = corpus.mutate(seed=1, new_works=10, changed_works=20)
    assert added and not added & before
    assert added <= corpus.expected
    assert len(corpus.works) == 310 and len(corpus.changed) == 30
    assert corpus.version == 1


async def test_scroll_keeps_one_cursor_and_ends_with_an_empty_page(corpus):
    async with Simulator(corpus, fast_sim_config()) as sim, aiohttp.ClientSession() as session:
        url = f"{sim.url}/works"
        params = {**MAILTO, "rows": "50", "select": "DOI,created", "filter": "from-created-date:2005,until-created-date:2024-12-31"}
        first = await _json(session, url, cursor="*", **params)
        cursor = first["message"]["next-cursor"]
        assert set("+/=") <= set(cursor)
        seen = [w["DOI"] for w in first["message"]["items"]]
        assert set(first["message"]["items"][0]) == {"DOI", "created"}
        while True:
            page = await _json(session, url, cursor=cursor, **params)
            assert page["message"]["next-cursor"] == cursor
            if not page["message"]["items"]:
                break
            seen += [w["DOI"] for w in page["message"]["items"]]
        assert sorted(seen) == sorted(w["DOI"] for w in corpus.works)
        assert first["message"]["total-results"] == len(corpus.works)


async def test_date_filters_are_inclusive_at_every_grain(corpus):
    async with Simulator(corpus, fast_sim_config()) as sim, aiohttp.ClientSession() as session:
        for lo, hi, first, last in [
            ("2010", "2011", "2010-01-01", "2011-12-31"),
            ("2012-02", "2012-02", "2012-02-01", "2012-02-29"),
            ("2015-03-04", "2016-07-08", "2015-03-04", "2016-07-08"),
        ]:
            doc = await _json(session, f"{sim.url}/works", rows="0", filter=f"from-created-date:{lo},until-created-date:{hi}", **MAILTO)
            expected = sum(first <= w["created"]["date-time"][:10] <= last for w in corpus.works)
            assert doc["message"]["total-results"] == expected


async def test_unknown_cursor_and_bad_requests_answer_like_the_api(corpus):
    async with Simulator(corpus, fast_sim_config()) as sim, aiohttp.ClientSession() as session:
        status, _, body = await _get(session, f"{sim.url}/works", cursor="nonsense", rows="5", **MAILTO)
        assert status == 404 and b'"cursor-invalid"' in body
        status, _, body = await _get(session, f"{sim.url}/works", rows="5000", **MAILTO)
        assert status == 400 and b'"integer-not-valid"' in body
        status, _, body = await _get(session, f"{sim.url}/works", filter="has-full-text:true", **MAILTO)
        assert status == 400 and b'"filter-not-available"' in body


async def test_cursors_expire_when_unused(corpus):
    config = fast_sim_config(cursor_ttl_s=0.2)
    async with Simulator(corpus, config) as sim, aiohttp.ClientSession() as session:
        first = await _json(session, f"{sim.url}/works", cursor="*", rows="10", **MAILTO)
        await asyncio.sleep(0.3)
        status, _, body = await _get(session, f"{sim.url}/works", cursor=first["message"]["next-cursor"], rows="10", **MAILTO)
        assert status == 404 and b"cursor-invalid" in body


async def test_abandoned_scrolls_are_forgotten_and_their_cursors_still_count_as_expired(corpus):
    async with Simulator(corpus, fast_sim_config(cursor_ttl_s=0.2)) as sim, aiohttp.ClientSession() as session:
        first = await _json(session, f"{sim.url}/works", cursor="*", rows="10", **MAILTO)
        await asyncio.sleep(0.3)
        await _json(session, f"{sim.url}/works", cursor="*", rows="10", **MAILTO)
        assert len(sim.app.scrolls) == 1, "the abandoned scroll was kept"
        status, _, body = await _get(session, f"{sim.url}/works", cursor=first["message"]["next-cursor"], rows="10", **MAILTO)
    assert status == 404 and b"cursor-invalid" in body and sim.stats.faults["cursor-expired"] == 1


async def test_pools_limits_headers_and_over_limit_counting(corpus):
    pools = {"public": PoolLimits(2, 1.0, 1), "polite": PoolLimits(3, 1.0, 3), "plus": PoolLimits(9, 1.0, 9)}
    config = SimConfig(pools=pools, latency_s=0.2, plus_token="s3cret")
    async with Simulator(corpus, config) as sim, aiohttp.ClientSession() as session:
        status, headers, _ = await _get(session, f"{sim.url}/works", rows="0", **MAILTO)
        assert status == 200 and headers["x-api-pool"] == "polite"
        assert (headers["x-rate-limit-limit"], headers["x-rate-limit-interval"], headers["x-concurrency-limit"]) == ("3", "1s", "3")
        # Two anonymous requests at once: the public pool allows one in flight.
        results = await asyncio.gather(*(_get(session, f"{sim.url}/works", rows="0") for _ in range(2)))
        assert sorted(r[0] for r in results) == [200, 429]
        assert sim.stats.over_limit == {"public": 1}
        async with session.get(f"{sim.url}/works", params={"rows": "0"}, headers={"Crossref-Plus-API-Token": "Bearer wrong"}) as resp:
            assert resp.status == 401 and "wrong" not in await resp.text()
        async with session.get(f"{sim.url}/works", params={"rows": "0"}, headers={"Crossref-Plus-API-Token": "Bearer s3cret"}) as resp:
            assert resp.status == 200 and resp.headers["x-api-pool"] == "plus"


async def test_registration_agency_answers(corpus):
    async with Simulator(corpus, fast_sim_config()) as sim, aiohttp.ClientSession() as session:
        answers = await _json(session, f"{sim.url}/ra/10.5061,10.1016,10.99999,10.12")
    assert answers == [
        {"DOI": "10.5061", "RA": "DataCite"},
        {"DOI": "10.1016", "RA": "Crossref"},
        {"DOI": "10.99999", "status": "DOI does not exist"},
        {"DOI": "10.12", "status": "DOI does not exist"},
    ]
    assert sim.stats.ra_prefixes_asked == ["10.5061", "10.1016", "10.99999", "10.12"]


async def test_a_lost_page_has_still_advanced_the_scroll(corpus):
    faults = Faults(seed=1, lost_pages=frozenset({1}), lost_modes=("reset",))
    # The crawler's session: aiohttp's own silent resend would hide the loss (see new_session).
    async with Simulator(corpus, fast_sim_config(faults=faults)) as sim, new_session(5) as session:
        url = f"{sim.url}/works"
        first = await _json(session, url, cursor="*", rows="10", **MAILTO)
        cursor = first["message"]["next-cursor"]
        with pytest.raises(aiohttp.ClientError):
            await _get(session, url, cursor=cursor, rows="10", **MAILTO)
        third = await _json(session, url, cursor=cursor, rows="10", **MAILTO)
    served = [w["DOI"] for w in first["message"]["items"] + third["message"]["items"]]
    in_order = [w["DOI"] for w in sorted(corpus.works, key=lambda w: (w["created"]["date-time"], w["DOI"]))]
    assert served == in_order[:10] + in_order[20:30], "the lost page was skipped, as on the live API"


# -- persistent faults and the error kinds ----------------------------------------------------
async def test_persistent_faults_strike_every_attempt_and_every_scroll(corpus):
    """None means no end: the 5th attempt of a request and the 5th scroll of a query are struck
    as the first were (with the default limits, the third of each gets through)."""
    persistent = Faults(error_rate=1.0, error_kinds=("503",), short_rate=1.0, fault_attempts=None, fault_scrolls=None)
    bounded = Faults(error_rate=1.0, error_kinds=("503",), short_rate=1.0)
    for faults, struck in ((persistent, True), (bounded, False)):
        async with Simulator(corpus, fast_sim_config(faults=faults)) as sim, aiohttp.ClientSession() as session:
            statuses = [(await _get(session, f"{sim.url}/works", rows="0", **MAILTO))[0] for _ in range(5)]
            assert (statuses[-1] == 503) is struck, statuses
            sim.app.faults = replace(faults, error_rate=0.0)
            for _ in range(5):  # one query, five scrolls of it: one page holds all of a whole one
                page = await _json(session, f"{sim.url}/works", cursor="*", rows="1000", select="DOI", **MAILTO)
            served, total = len(page["message"]["items"]), page["message"]["total-results"]
            assert (served < total) is struck, (served, total)
            assert sim.stats.faults["short"] == (5 if struck else 2)


@pytest.mark.parametrize("kind, status, content_type, counter, marker", [
    ("500", 500, "application/json", "error-500", b'"message-type":"exception"'),
    ("429-retry-after", 429, "text/html", "error-429-retry-after", b"429 Too Many Requests"),
    ("408", 408, "text/html", "error-408", b"408 Request Time-out"),
    ("403-html", 403, "text/html", "error-403", b"<title>403 Forbidden</title>"),
    ("404-html", 404, "text/html", "error-404", b"<title>404 Not Found</title>"),
    ("not-json", 200, "text/html", "error-200", b"<html>"),
    ("broken-json", 200, "application/json", "error-broken-json", b'{"status":"ok"'),
])
async def test_each_error_kind_answers_as_the_api_or_its_balancer_does(corpus, kind, status, content_type, counter, marker):
    faults = Faults(error_rate=1.0, error_kinds=(kind,), fault_attempts=None)
    async with Simulator(corpus, fast_sim_config(faults=faults)) as sim, aiohttp.ClientSession() as session:
        got, headers, body = await _get(session, f"{sim.url}/works", cursor="*", rows="5", **MAILTO)
        assert sim.stats.faults == {counter: 1} and sim.stats.struck == 1
    assert (got, headers["Content-Type"].split(";")[0]) == (status, content_type)
    assert marker in body
    assert headers.get("Retry-After") == ("1" if kind == "429-retry-after" else None)
    if kind.endswith("-html"):
        assert b"nginx" in body and b"{" not in body, "a balancer's page, not the API's JSON"
    if kind != "500":
        with pytest.raises(ValueError):
            json.loads(body)


# -- the mix -----------------------------------------------------------------------------------
class _Walker:
    """A plain crawler: a count then a scroll per window, each request retried (a continuation
    by restarting its window), and a /ra look-up per window; it never checks what it got."""

    def __init__(self, session, url):
        self.session, self.url = session, url

    async def get(self, path, **params):
        try:
            async with self.session.get(f"{self.url}{path}", params=params) as resp:
                body = await resp.read()
                return json.loads(body) if resp.status == 200 else None
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            return None

    async def window(self, year):
        base = {**MAILTO, "filter": f"from-created-date:{year},until-created-date:{year}"}
        while await self.get("/works", rows="0", **base) is None:
            pass
        while await self.get(f"/ra/10.{5061 + year}") is None:
            pass
        for _ in range(50):  # scrolls of the window
            page = await self.get("/works", cursor="*", rows="5", **base)
            while page is not None and page["message"]["items"]:
                page = await self.get("/works", cursor=page["message"]["next-cursor"], rows="5", **base)
            if page is not None:
                return


async def test_the_mix_injects_every_kind_early_then_keeps_to_its_rate(corpus):
    faults = Faults.mix(rate=0.25, seed=4, stall_s=1.0)
    assert (faults.fault_scrolls, faults.fault_attempts, faults.early_kinds) == (None, None, True)
    timeout = aiohttp.ClientTimeout(total=0.1)
    async with Simulator(corpus, SimConfig(pools=UNLIMITED, faults=faults)) as sim, aiohttp.ClientSession(timeout=timeout) as session:
        walker = _Walker(session, sim.url)
        for year in range(2005, 2025):
            await walker.window(year)
        stats = sim.stats
    works_kinds = {answer.counter for answer in ERROR_KINDS.values()} | {
        "short", "cursor-expired", "duplicates", "repeat-within-page", "lost-reset", "lost-truncate", "lost-stall"}
    first = {kind: stats.first_fault_at.get(kind) for kind in works_kinds}
    assert None not in first.values(), first
    assert max(first.values()) <= 40, sorted(first.items(), key=lambda item: item[1])
    ra_first = {kind: stats.first_fault_at.get(f"ra-{kind}") for kind in ("503", "garbage", "stall", "reset")}
    assert None not in ra_first.values() and max(ra_first.values()) <= 8, ra_first
    assert stats.requests > 250
    assert 0.18 <= stats.struck / stats.requests <= 0.36, (stats.struck, stats.requests)
    assert sum(stats.faults.values()) > 3 * len(stats.faults), stats.faults  # the rates took over


# -- outages, repeats, long cursors --------------------------------------------------------------
async def test_an_outage_answers_503_for_its_duration_then_service_resumes(corpus):
    """A /works and an /ra outage at once; the scroll's cursor ages through it and expires."""
    faults = Faults(outages=(Outage(after_requests=3, duration_s=0.5), Outage(after_requests=1, duration_s=0.5, target="ra")))
    async with Simulator(corpus, fast_sim_config(faults=faults, cursor_ttl_s=0.3)) as sim, aiohttp.ClientSession() as session:
        url = f"{sim.url}/works"
        first = await _json(session, url, cursor="*", rows="5", **MAILTO)
        cursor = first["message"]["next-cursor"]
        await _json(session, url, cursor=cursor, rows="5", **MAILTO)
        began = asyncio.get_running_loop().time()
        status, headers, body = await _get(session, url, cursor=cursor, rows="5", **MAILTO)
        assert (status, headers["Content-Type"].split(";")[0]) == (503, "text/html")
        assert b"503 Service Temporarily Unavailable" in body
        assert (await _get(session, f"{sim.url}/ra/10.5061"))[0] == 503, "the /ra outage overlaps"
        while (await _get(session, url, rows="0", **MAILTO))[0] == 503:
            await asyncio.sleep(0.05)
        lasted = asyncio.get_running_loop().time() - began
        assert (await _get(session, f"{sim.url}/ra/10.5061"))[0] == 200
        status, _, body = await _get(session, url, cursor=cursor, rows="5", **MAILTO)
    assert 0.4 <= lasted <= 1.5, lasted
    assert status == 404 and b"cursor-invalid" in body, "the cursor outlived its TTL during the outage"
    assert sim.stats.faults["outage-works"] >= 2 and sim.stats.faults["outage-ra"] == 1


async def test_a_page_may_repeat_its_own_item_and_hide_a_work_behind_it(corpus):
    in_order = sorted(corpus.works, key=lambda w: (w["created"]["date-time"], w["DOI"]))
    faults = Faults(repeat_within_page_rate=1.0, fault_scrolls=None)
    async with Simulator(corpus, SimConfig(pools=UNLIMITED, faults=faults)) as sim, aiohttp.ClientSession() as session:
        pages, cursor = [], "*"
        while True:  # every full page keeps its size and repeats one of its items
            page = await _json(session, f"{sim.url}/works", cursor=cursor, rows="10", **MAILTO)
            cursor, items = page["message"]["next-cursor"], [w["DOI"] for w in page["message"]["items"]]
            if not items:
                break
            pages.append(items)
        assert all(len(p) <= 10 and len(set(p)) == len(p) - 1 for p in pages)
        assert sorted({d for p in pages for d in p}) == sorted(w["DOI"] for w in in_order), "nothing skipped"
        # With a hidden work, the repeat makes up the count: as many items as total-results.
        sim.app.faults = replace(faults, hidden_dois=frozenset({in_order[7]["DOI"]}))
        whole = await _json(session, f"{sim.url}/works", cursor="*", rows="1000", **MAILTO)
    dois = [w["DOI"] for w in whole["message"]["items"]]
    assert len(dois) == whole["message"]["total-results"] == len(corpus.works)
    assert len(set(dois)) == len(dois) - 1 and in_order[7]["DOI"] not in dois
    assert sim.stats.faults["repeat-within-page"] == len(pages) + 1


async def test_long_cursors_fill_the_first_4_kb_of_a_page(corpus):
    async with Simulator(corpus, fast_sim_config(faults=Faults(long_cursor=True))) as sim, aiohttp.ClientSession() as session:
        status, _, body = await _get(session, f"{sim.url}/works", cursor="*", rows="5", **MAILTO)
        cursor = json.loads(body)["message"]["next-cursor"]
        again = await _json(session, f"{sim.url}/works", cursor=cursor, rows="5", **MAILTO)
    assert status == 200 and 5500 <= len(cursor) <= 7000 and set("+/=") <= set(cursor)
    assert body.index(b'"items"') > 4096
    assert again["message"]["next-cursor"] == cursor and len(again["message"]["items"]) == 5


# -- filters and facets ----------------------------------------------------------------------------
LABELS = {  # the production API's type-name labels, written out here independently of the simulator
    "journal-article": "Journal Article", "book-chapter": "Chapter", "proceedings-article": "Conference Paper",
    "posted-content": "Posted Content", "peer-review": "Peer Review", "dataset": "Dataset", "report": "Report",
    "dissertation": "Dissertation", "standard": "Standard", "component": "Component", "book": "Book",
}


def _day(work, field):
    return work[field]["date-time"][:10] if field in work else None


FILTER_CASES = [
    ("type:dataset,type:report,type:book,from-created-date:2010",
     lambda w: w["type"] in ("dataset", "report", "book") and w["created"]["date-time"] >= "2010"),
    ("has-abstract:1,has-orcid:true", lambda w: "abstract" in w and any("ORCID" in a for a in w.get("author", []))),
    ("has-references:0,has-relation:false", lambda w: not w.get("reference") and not any((w.get("relation") or {}).values())),
    ("has-relation:1", lambda w: any((w.get("relation") or {}).values())),
    ("member:78,member:297,prefix:10.1016,prefix:10.1038",
     lambda w: w["member"] in ("78", "297") and w["prefix"] in ("10.1016", "10.1038")),
    ("type-name:Journal Article,type-name:Chapter,has-funder:0,has-license:1",
     lambda w: w["type"] in ("journal-article", "book-chapter") and not w.get("funder") and bool(w.get("license"))),
    ("from-deposit-date:2012,until-deposit-date:2016-06,until-index-date:2016-12-31",
     lambda w: "2012-01-01" <= (_day(w, "deposited") or "") <= "2016-06-30" and _day(w, "indexed") <= "2016-12-31"),
    ("has-license:1,has-license:0,from-index-date:2015-03,until-created-date:2015",
     lambda w: _day(w, "indexed") >= "2015-03-01" and _day(w, "created") <= "2015-12-31"),
]


async def test_filters_combine_with_and_across_names_and_or_within_one(corpus):
    async with Simulator(corpus, fast_sim_config()) as sim, aiohttp.ClientSession() as session:
        for expression, wanted in FILTER_CASES:
            expected = sorted(w["DOI"] for w in corpus.works if wanted(w))
            assert 0 < len(expected) < len(corpus.works), expression  # a case that shows something
            doc = await _json(session, f"{sim.url}/works", filter=expression, rows="1000", select="DOI", **MAILTO)
            assert doc["message"]["total-results"] == len(expected), expression
            assert sorted(w["DOI"] for w in doc["message"]["items"]) == expected, expression
        status, _, body = await _get(session, f"{sim.url}/works", filter="has-orcid:yes", **MAILTO)
        assert status == 400 and b'"validation-failure"' in body


async def test_facets_count_the_matching_works_by_label(corpus):
    async with Simulator(corpus, fast_sim_config()) as sim, aiohttp.ClientSession() as session:
        doc = await _json(session, f"{sim.url}/works", rows="0", filter="from-created-date:2008",
                          facet="type-name:*,publisher-name:3", **MAILTO)
        status, _, body = await _get(session, f"{sim.url}/works", rows="0", facet="funder-colour:*", **MAILTO)
    matching = [w for w in corpus.works if w["created"]["date-time"] >= "2008"]
    types = Counter(LABELS[w["type"]] for w in matching)
    publishers = Counter(w["publisher"] for w in matching)
    facets = doc["message"]["facets"]
    assert facets["type-name"] == {"value-count": len(types), "values": dict(types)}
    assert list(facets["type-name"]["values"].values()) == sorted(types.values(), reverse=True)
    assert "Journal Article" in types and "Chapter" in types and len(publishers) > 3
    top = sorted(publishers.items(), key=lambda item: (-item[1], item[0]))[:3]
    assert facets["publisher-name"] == {"value-count": 3, "values": dict(top)}
    assert doc["message"]["total-results"] == len(matching) and doc["message"]["items"] == []
    problem = json.loads(body)
    assert status == 400 and problem["message-type"] == "validation-failure"
    assert problem["message"][0]["type"] == "facet-not-available" and problem["message"][0]["value"] == "funder-colour"


# -- headers, pools, redirects ---------------------------------------------------------------------
async def test_advertised_limits_differ_from_the_enforced_ones(corpus):
    pools = {**FAST_POOLS, "polite": PoolLimits(rate=2, interval_s=1.0, concurrency=2)}
    config = SimConfig(pools=pools, advertise={"polite": PoolLimits(rate=50, interval_s=1.0, concurrency=10)})
    async with Simulator(corpus, config) as sim, aiohttp.ClientSession() as session:
        answers = [await _get(session, f"{sim.url}/works", rows="0", **MAILTO) for _ in range(3)]
    assert [a[0] for a in answers] == [200, 200, 429]
    assert (answers[0][1]["x-rate-limit-limit"], answers[0][1]["x-concurrency-limit"]) == ("50", "10")
    assert sim.stats.over_limit == {"polite": 1}


async def test_request_headers_are_recorded_per_route(corpus):
    async with Simulator(corpus, fast_sim_config(plus_token="s3cret")) as sim, aiohttp.ClientSession() as session:
        async with session.get(f"{sim.url}/works", params={"rows": "0"}, headers={"Crossref-Plus-API-Token": "Bearer s3cret"}) as resp:
            assert resp.status == 200
        await _json(session, f"{sim.url}/ra/10.5061", **{})
    assert sim.stats.works_headers[-1]["crossref-plus-api-token"] == "Bearer s3cret"
    assert sim.stats.works_header_names["crossref-plus-api-token"] == 1
    assert "crossref-plus-api-token" not in sim.stats.ra_header_names
    assert sim.stats.ra_headers[-1]["host"].startswith("127.0.0.1:")


async def test_a_redirect_names_another_host_with_the_same_query(corpus):
    async with Simulator(corpus, fast_sim_config()) as other, \
            Simulator(corpus, fast_sim_config(redirect_to=other.url)) as sim, aiohttp.ClientSession() as session:
        params = {"rows": "0", "filter": "from-created-date:2010,until-created-date:2010", **MAILTO}
        async with session.get(f"{sim.url}/works", params=params, allow_redirects=False) as resp:
            status, location = resp.status, resp.headers["Location"]
        # A client that follows it blindly carries its headers to the other host.
        async with session.get(f"{sim.url}/works", params=params, headers={"Crossref-Plus-API-Token": "Bearer x"}) as resp:
            assert resp.url.port == int(other.url.rsplit(":", 1)[1])
    assert status == 307 and location.startswith(f"{other.url}/works?")
    assert dict(yarl.URL(location).query) == params
    assert sim.stats.redirects == 2 and sim.stats.pages == 0
    assert other.stats.works_header_names["crossref-plus-api-token"] == 1


# -- the corpus and the command line -----------------------------------------------------------------
def test_works_carry_the_fields_the_filters_read_and_a_big_day_keeps_the_links():
    plain, bulky = generate(600, seed=12), generate(600, seed=12, day_share=0.3, big_day=date(2020, 2, 3))
    assert bulky.expected == plain.expected
    on_day = [w for w in bulky.works if all(_day(w, f) == "2020-02-03" for f in ("created", "deposited", "indexed"))]
    assert 0.25 <= len(on_day) / 600 <= 0.35
    share = lambda test: sum(map(test, plain.works)) / len(plain.works)  # noqa: E731
    assert 0.33 <= share(lambda w: "abstract" in w) <= 0.47
    assert 0.24 <= share(lambda w: any("ORCID" in a for a in w.get("author", []))) <= 0.36
    assert 0.53 <= share(lambda w: bool(w.get("license"))) <= 0.67
    assert 0.15 <= share(lambda w: bool(w.get("funder"))) <= 0.25


def test_the_command_line_builds_the_faults():
    args = parser().parse_args(["--fault-rate", "0.2", "--stall", "4", "--outage", "50:60", "--outage", "9:5:ra",
                                "--cursor-ttl", "5", "--day-share", "0.1"])
    faults = faults_from(args)
    assert faults == replace(Faults.mix(0.2, seed=1, stall_s=4.0), outages=(Outage(50, 60.0), Outage(9, 5.0, "ra")))
    assert (args.cursor_ttl, args.day_share) == (5.0, 0.1)
    with pytest.raises(SystemExit):
        parser().parse_args(["--outage", "50"])
