"""The Event's JSON Schema (docs/event.schema.json) against reality: Event Data's own events
(recorded, tests/data/crossref/event-data/), the README's example, and the reference validator
(jsonschema) agreeing with the fast one every other test uses through `read_events`."""

from __future__ import annotations

import copy
import json
import re

import fastjsonschema
import jsonschema
import pytest

from tests.conftest import EVENT_SCHEMA, ROOT, event_validator
from tests.samples import sample_bytes


def _schema() -> dict:
    return json.loads(EVENT_SCHEMA.read_text())


def _real_events() -> list[dict]:
    return [event for page in (1, 2) for event in
            json.loads(sample_bytes(f"event-data/crossref-source-events-page-{page}.json"))["message"]["events"]]


def _readme_event() -> dict:
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index("## Output"):]
    return json.loads(re.search(r"```json\n(.*?)\n```", block, re.S).group(1))


def _fast_accepts(event: dict) -> bool:
    try:
        event_validator()(event)
    except fastjsonschema.JsonSchemaException:
        return False
    return True


def test_the_schema_is_a_valid_json_schema_and_the_readme_links_it():
    schema = _schema()
    jsonschema.validators.validator_for(schema).check_schema(schema)
    assert "docs/event.schema.json" in (ROOT / "README.md").read_text()


def test_event_datas_own_events_have_the_shape_the_schema_describes():
    """50 real crossref-source events match the Event Data layer (`definitions/event`); none
    matches the crawler's stricter layer (they carry evidence records and milliseconds)."""
    schema = _schema()
    event_data = jsonschema.Draft7Validator({**schema["definitions"]["event"], "definitions": schema["definitions"]})
    crawler = jsonschema.Draft7Validator(schema)
    events = _real_events()
    assert len(events) == 50
    for event in events:
        event_data.validate(event)
        assert not crawler.is_valid(event)
        assert not _fast_accepts(event)


def test_the_readme_example_is_valid_and_each_defect_is_refused_by_both_validators():
    reference = jsonschema.Draft7Validator(_schema())
    good = _readme_event()
    reference.validate(good)
    assert _fast_accepts(good)
    defects = []
    for field in good:
        broken = copy.deepcopy(good)
        del broken[field]
        defects.append(broken)
    for path, value in [(("id",), "not-a-uuid"), (("obj_id",), "10.1234/no-url"), (("subj", "pid"), "https://example.org/x"),
                        (("source_token",), "00000000-0000-0000-0000-000000000000"), (("action",), "delete"),
                        (("occurred_at",), "2021-04-30 23:08:31"), (("timestamp",), "2021-04-30T23:08:31.120Z"),
                        (("evidence_record",), "https://evidence.eventdata.crossref.org/x"), (("obj", "method"), "landing-page-text"),
                        (("obj", "work_type_id"), "dataset"), (("relation_type_id",), "has preprint"), (("extra",), 1)]:
        broken = copy.deepcopy(good)
        target = broken
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        defects.append(broken)
    for broken in defects:
        assert not reference.is_valid(broken), broken
        assert not _fast_accepts(broken), broken


@pytest.mark.parametrize("page", [1, 2])
def test_both_validators_agree_on_real_events_made_into_the_crawlers(page):
    """The real events, reduced to what the crawler writes (null evidence, whole seconds, the
    DOI literal at its DOI URL), pass both validators: the stricter layer describes them."""
    reference = jsonschema.Draft7Validator(_schema())
    events = json.loads(sample_bytes(f"event-data/crossref-source-events-page-{page}.json"))["message"]["events"]
    for event in events:
        event = copy.deepcopy(event)
        event["evidence_record"] = None
        event["occurred_at"] = event["occurred_at"][:19] + "Z"
        obj = event["obj"]
        obj.pop("work_type_id")
        obj.update(url=obj["pid"], method="doi-literal", verification="literal")
        reference.validate(event)
        assert _fast_accepts(event)
