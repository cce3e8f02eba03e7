"""The simulator itself: the API behaviour the crawler's tests rely on, over real TCP."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from crawler.api.client import new_session
from crawler.simulator.app import Faults, PoolLimits, SimConfig, Simulator
from crawler.simulator.corpus import AGENCIES, generate
from tests.conftest import fast_sim_config

MAILTO = {"mailto": "tests@example.org"}


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
