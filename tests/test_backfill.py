"""End to end: real backfills against the simulator over TCP, checked against the corpus's
independently generated ground truth."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from crawler.events import CROSSREF_TOKEN, OTHER_AGENCY_TOKEN
from crawler.jobs import backfill
from crawler.output import MARKER
from crawler.simulator.app import Simulator
from tests.samples import sample_bytes
from tests.conftest import crawler_config, fast_sim_config, output_keys, read_events


async def _run(config):
    return await backfill(config, asyncio.Event())


async def test_backfill_output_equals_ground_truth(small_corpus, tmp_path):
    async with Simulator(small_corpus, fast_sim_config()) as sim:
        outcome = await _run(crawler_config(sim.url, tmp_path))
        assert outcome.code == 0, outcome.message
        keys, repeated = output_keys(tmp_path / "events")
        assert not repeated
        assert keys == small_corpus.expected
        assert sum(sim.stats.over_limit.values()) == 0
    assert not list((tmp_path / "events").glob("*.part"))
    # Completed event files and the directory's owner marker, nothing else.
    assert not [p for p in (tmp_path / "events").iterdir() if not p.name.endswith(".jsonl.gz") and p.name != MARKER]


async def test_events_have_the_event_data_shape(small_corpus, tmp_path):
    async with Simulator(small_corpus, fast_sim_config()) as sim:
        assert (await _run(crawler_config(sim.url, tmp_path))).code == 0
    events = read_events(tmp_path / "events")
    real = json.loads(sample_bytes("event-data/crossref-source-events-page-1.json"))
    real_event = real["message"]["events"][0] if "message" in real else real["data"][0]
    expected_fields = {
        "id", "subj_id", "obj_id", "relation_type_id", "source_id", "source_token", "occurred_at",
        "timestamp", "action", "license", "terms", "evidence_record", "subj", "obj",
    }
    by_doi = {w["DOI"].lower(): w for w in small_corpus.works}
    ids = set()
    for event in events:
        assert set(event) == expected_fields
        assert event["source_id"] == "crossref" and event["action"] == "add"
        assert event["license"] == "https://creativecommons.org/publicdomain/zero/1.0/"
        assert event["terms"] == "https://doi.org/10.13003/CED-terms-of-use"
        assert event["evidence_record"] is None
        assert event["timestamp"].endswith("Z")
        subj_doi = event["subj_id"].removeprefix("https://doi.org/")
        obj_doi = event["obj_id"].removeprefix("https://doi.org/")
        assert subj_doi == subj_doi.lower() and obj_doi == obj_doi.lower()
        assert event["subj"] == {"pid": event["subj_id"], "url": event["subj_id"], "work_type_id": by_doi[subj_doi]["type"]}
        assert event["obj"] == {"pid": event["obj_id"], "url": event["obj_id"], "method": "doi-literal", "verification": "literal"}
        work = by_doi[subj_doi]
        assert event["occurred_at"] == (work.get("deposited") or work["created"])["date-time"]
        agency = small_corpus.agencies[obj_doi.split("/")[0]]
        assert event["source_token"] == (CROSSREF_TOKEN if agency == "Crossref" else OTHER_AGENCY_TOKEN)
        uuid.UUID(event["id"])
        ids.add(event["id"])
    assert len(ids) == len(events)
    # The shape matches what Event Data published for this source.
    assert expected_fields <= set(real_event) | {"evidence_record"}
    assert real_event["source_id"] == "crossref"


async def test_same_link_same_id_across_state_files(small_corpus, tmp_path):
    async with Simulator(small_corpus, fast_sim_config()) as sim:
        for name in ("a", "b"):
            assert (await _run(crawler_config(sim.url, tmp_path / name))).code == 0
    ids = [{(e["subj_id"], e["relation_type_id"], e["obj_id"]): e["id"] for e in read_events(tmp_path / n / "events")} for n in "ab"]
    assert ids[0] == ids[1]


async def test_rerun_after_completion_fetches_nothing(small_corpus, tmp_path):
    async with Simulator(small_corpus, fast_sim_config()) as sim:
        config = crawler_config(sim.url, tmp_path)
        assert (await _run(config)).code == 0
        before = sim.stats.requests
        outcome = await _run(config)
        assert outcome.code == 0 and "already complete" in outcome.message
        assert sim.stats.requests == before


async def test_each_prefix_is_asked_once(small_corpus, tmp_path):
    async with Simulator(small_corpus, fast_sim_config()) as sim:
        assert (await _run(crawler_config(sim.url, tmp_path))).code == 0
        asked = sim.stats.ra_prefixes_asked
    assert len(asked) == len(set(asked)), "a prefix was looked up twice"


async def test_a_state_file_belongs_to_one_range_and_output(small_corpus, tmp_path):
    from datetime import date

    from crawler.errors import StateError

    async with Simulator(small_corpus, fast_sim_config()) as sim:
        config = crawler_config(sim.url, tmp_path, date_from=date(2010, 1, 1), date_until=date(2010, 12, 31))
        assert (await _run(config)).code == 0
        with pytest.raises(StateError, match="belongs to the backfill of 2010-01-01..2010-12-31"):
            await _run(crawler_config(sim.url, tmp_path, date_from=date(2011, 1, 1), date_until=date(2011, 12, 31)))
        with pytest.raises(StateError, match="writes its events to"):
            await _run(crawler_config(sim.url, tmp_path, out=tmp_path / "elsewhere"))


async def test_date_range_limits_the_subjects(small_corpus, tmp_path):
    from datetime import date

    async with Simulator(small_corpus, fast_sim_config()) as sim:
        config = crawler_config(sim.url, tmp_path, date_from=date(2015, 1, 1), date_until=date(2018, 6, 30))
        assert (await _run(config)).code == 0
    inside = {
        w["DOI"].lower() for w in small_corpus.works
        if "2015-01-01" <= w["created"]["date-time"][:10] <= "2018-06-30"
    }
    expected = {k for k in small_corpus.expected if k[0] in inside}
    keys, repeated = output_keys(tmp_path / "events")
    assert expected and keys == expected and not repeated


async def test_pages_in_memory_are_bounded_by_the_parsers_not_the_windows(tmp_path):
    """Eight windows scroll at once into one parser: pages must not pile up in the main process.
    Before the bounds, each window kept a parsed page waiting for the commit lock, and two
    bodies (one parsing, one arriving): 16 bodies were seen here, twice the concurrency.
    Counted on the loop while the backfill runs."""
    import gc

    from crawler.api.body import Body
    from crawler.decode import ParsedPage
    from crawler.simulator.corpus import generate

    most = {"pages": 0, "bodies": 0}
    samples = 0

    async def count() -> None:
        nonlocal samples
        while True:
            objects = gc.get_objects()
            most["pages"] = max(most["pages"], sum(1 for o in objects if type(o) is ParsedPage))
            # Bodies of pages with works: the planner's counts and each scroll's empty last
            # page are a few hundred bytes, these tens of KB.
            most["bodies"] = max(most["bodies"], sum(1 for o in objects if type(o) is Body and len(o.data) > 4096))
            samples += 1
            del objects
            await asyncio.sleep(0.002)

    parsers, concurrency = 1, 8  # the Plus pool allows 8
    heavy = generate(4000, seed=12, refs_mean=58)  # pages that take the parser longer than a fetch
    async with Simulator(heavy, fast_sim_config(plus_token="plus")) as sim:
        counter = asyncio.create_task(count())
        try:
            config = crawler_config(sim.url, tmp_path, concurrency=concurrency, rows=200, window_pages=2,
                                    parsers=parsers, plus_token="plus")
            outcome = await _run(config)
        finally:
            counter.cancel()
        assert outcome.code == 0, outcome.message
    assert samples > 20 and most["bodies"] > 0 and most["pages"] > 0  # it saw pages go by
    assert most["pages"] <= parsers + 1
    assert most["bodies"] <= concurrency + parsers + 1  # in flight, parsing, waiting for a parser
