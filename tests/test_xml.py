"""Crossref XML: the real samples (figures counted by hand from the files), malformed files and
records without a DOI, `ingest-xml` end to end, the XML and JSON paths agreeing on a generated
corpus, and memory staying flat on a file of more than 200 MB."""

from __future__ import annotations

import asyncio
import gzip
import html
import json
import logging
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crawler.errors import UsageError
from crawler.extract import unique_links
from crawler.model import Work
from crawler.jobs import backfill, ingest_xml
from crawler.simulator.app import Simulator
from crawler.simulator.corpus import RELATION_NAMES, generate
from crawler.simulator.xmlrender import camel, render_deposit
from crawler.xmlreader import XmlProblem, iso_time, iter_paths, kebab, read_works
from tests.conftest import ROOT, crawler_config, fast_sim_config, output_keys, read_events

from tests.samples import sample_bytes, sample_names, sample_path  # noqa: E402


def xml_sample(name: str) -> Path:
    return sample_path(f"xml/{name}")


def _read(path: Path) -> tuple[list[Work], list[XmlProblem]]:
    items = list(read_works(path))
    return [i for i in items if isinstance(i, Work)], [i for i in items if isinstance(i, XmlProblem)]


def _keys(works: list[Work]) -> set[tuple[str, str, str]]:
    return {(w.DOI.lower(), link.relation, link.obj) for w in works for link in unique_links(w)}


# Counted by hand from each file (grep and a throwaway lxml script, never this reader):
# records, their DOIs in order (None: see the test), citations, citations with a <doi>, of those
# with provider="crossref", citations with <unstructured_citation>, distinct links, the first
# record's type, deposited and created, and some links that must come out.
SAMPLE_FACTS = {
    "deposit-5.5-has-preprint-55-citations.xml": dict(
        dois=["10.7554/eLife.102451"], refs=55, ref_dois=53, unstructured=2, links=54,
        type="journal-article", deposited="2017-07-17T07:17:07Z", created=None,  # <head><timestamp>
        some=[
            ("10.7554/elife.102451", "has-preprint", "10.1101/2024.09.18.24313787"),  # rel: prefix, intra
            ("10.7554/elife.102451", "references", "10.1016/s2213-2600(17)30180-7"),  # first citation
            ("10.7554/elife.102451", "references", "10.1186/s12931-019-0977-2"),  # last citation
        ],
    ),
    "deposit-5.5-peer-review.xml": dict(
        dois=["10.7554/eLife.00666.sa0", "10.7554/eLife.00666.029", "10.7554/eLife.00666.030", "10.7554/eLife.00666.sa3"],
        refs=0, ref_dois=0, unstructured=0, links=4,
        type="peer-review", deposited="2017-07-17T07:17:07Z", created=None,
        some=[(f"10.7554/elife.00666.{s}", "is-review-of", "10.7554/elife.00666") for s in ("sa0", "029", "030", "sa3")],
    ),
    "oai-pmh-unixsd-200-records.xml": dict(
        dois=None, refs=5433, ref_dois=0, unstructured=700, links=0,
        type="journal-article", deposited="2011-04-17T18:30:15Z", created=None,  # last-update "2011-04-17 18:30:15.0"
        some=[],
    ),
    "unixref-31-citations.xml": dict(
        dois=["10.5555/12345678"], refs=31, ref_dois=24, unstructured=31,
        links=24,  # citation -23 mines 10.1534/genetics.107.070805, which citation -22 already has as <doi>
        type="journal-article", deposited="2012-12-04T08:42:23Z", created=None,  # doi_record timestamp
        some=[
            ("10.5555/12345678", "references", "10.1016/s0022-5193(87)80029-2"),
            ("10.5555/12345678", "references", "10.1534/genetics.107.070805"),
            ("10.5555/12345678", "references", "10.1038/nature02601"),
        ],
    ),
    "unixref-work-76-citations.xml": dict(
        dois=["10.1126/science.169.3946.635"], refs=76, ref_dois=42, unstructured=71, links=42,
        type="journal-article", deposited="2021-10-23T11:24:14Z", created=None,
        some=[
            ("10.1126/science.169.3946.635", "references", "10.1063/1.1749327"),
            ("10.1126/science.169.3946.635", "references", "10.1002/anie.196601061"),
        ],
    ),
    "unixsd-feed-740-citations.xml": dict(
        dois=["10.1093/ijnp/pyw100"], refs=740, ref_dois=646, unstructured=42, links=646,
        type="journal-article", deposited="2017-08-24T09:57:32Z", created="2016-11-04T04:05:35Z",
        some=[
            ("10.1093/ijnp/pyw100", "references", "10.4088/jcp.v69n1014"),
            ("10.1093/ijnp/pyw100", "references", "10.1016/s0165-1781(01)00242-6"),
        ],
    ),
    "unixsd-peer-review-is-review-of.xml": dict(
        dois=["10.7287/peerj.1078v0.2/reviews/1"], refs=0, ref_dois=0, unstructured=0, links=1,
        type="peer-review", deposited="2018-01-10T17:22:19Z", created="2018-01-10T17:22:19Z",
        some=[("10.7287/peerj.1078v0.2/reviews/1", "is-review-of", "10.7717/peerj.1078")],  # default namespace
    ),
    "unixsd-posted-content-is-preprint-of.xml": dict(
        dois=["10.1101/026963"], refs=0, ref_dois=0, unstructured=0, links=1,
        type="posted-content", deposited="2018-03-30T21:35:55Z", created="2015-09-17T05:01:45Z",
        some=[("10.1101/026963", "is-preprint-of", "10.1093/gigascience/gix134")],  # default namespace, intra
    ),
    "unixsd-work-56-citations.xml": dict(
        dois=["10.1175//2572.1"], refs=56, ref_dois=47, unstructured=0, links=47,
        type="journal-article", deposited="2020-12-07T22:15:42Z", created="2003-07-25T16:26:33Z",
        some=[
            ("10.1175//2572.1", "references", "10.1175/1520-0469(1998)055<2137:tuocrs>2.0.co;2"),
            ("10.1175//2572.1", "references", "10.1175/1520-0493(1994)122<2222:coocpi>2.0.co;2"),
        ],
    ),
}


def test_every_sample_file_is_covered():
    assert [n.removeprefix("xml/") for n in sample_names("xml", ".xml")] == sorted(SAMPLE_FACTS)


@pytest.mark.parametrize("name", sorted(SAMPLE_FACTS))
def test_sample(name):
    facts = SAMPLE_FACTS[name]
    works, problems = _read(xml_sample(name))
    assert problems == []
    dois = facts["dois"]
    if dois is None:  # the OAI-PMH page: the records named in its headers, in order
        text = sample_bytes(f"xml/{name}").decode("utf-8")
        dois = [html.unescape(d) for d in re.findall(r"<identifier>info:doi/(.*?)</identifier>", text)]
        assert len(dois) == 200
    assert [w.DOI for w in works] == dois
    refs = [r for w in works for r in w.reference or ()]
    assert len(refs) == facts["refs"]
    assert sum(r.DOI is not None for r in refs) == facts["ref_dois"]
    assert sum(r.unstructured is not None for r in refs) == facts["unstructured"]
    keys = _keys(works)
    assert len(keys) == facts["links"]
    assert set(facts["some"]) <= keys
    first = works[0]
    assert first.type == facts["type"]
    assert first.deposited is not None and first.deposited.date_time == facts["deposited"]
    assert (first.created.date_time if first.created else None) == facts["created"]
    assert first.occurred_at == facts["deposited"]


def test_sample_details():
    """Values that the counts alone would not catch."""
    works, _ = _read(xml_sample("deposit-5.5-has-preprint-55-citations.xml"))
    relation = works[0].relation
    # camelCase names become the API's kebab-case; accession ids are kept but yield no link.
    assert {k: [(i.id_type, i.id) for i in v] for k, v in relation.items()} == {
        "is-supplemented-by": [("accession", "GSE269794")],
        "references": [("accession", "GSE190889")],
        "has-preprint": [("doi", "10.1101/2024.09.18.24313787")],
    }
    works, _ = _read(xml_sample("deposit-5.5-peer-review.xml"))
    assert works[0].relation["has-related-material"][0].id_type == "uri"
    works, _ = _read(xml_sample("unixsd-work-56-citations.xml"))
    # SICI DOIs arrive unescaped, as the JSON carries them.
    assert works[0].reference[0].DOI == "10.1175/1520-0469(1998)055<2137:TUOCRS>2.0.CO;2"
    works, _ = _read(xml_sample("oai-pmh-unixsd-200-records.xml"))
    assert {w.type for w in works} == {"journal-article"}
    assert all(w.deposited is not None for w in works)


@pytest.mark.parametrize("value, expected", [
    ("20170717071707", "2017-07-17T07:17:07Z"),
    ("2016122218201361000", "2016-12-22T18:20:13Z"),  # with fraction digits
    ("20110425", "2011-04-25T00:00:00Z"),
    ("1515604387", "2018-01-10T17:13:07Z"),  # Unix seconds
    ("1515604387000", "2018-01-10T17:13:07Z"),
    ("2011-04-17 18:30:15.0", "2011-04-17T18:30:15Z"),
    ("2017-08-24T09:57:32Z", "2017-08-24T09:57:32Z"),
    ("", None), ("soon", None), ("123", None), ("99999999999999", None),
])
def test_timestamps(value, expected):
    assert iso_time(value) == expected


def test_relation_names_round_trip():
    assert kebab("isPreprintOf") == "is-preprint-of"
    assert kebab("isSupplementedBy") == "is-supplemented-by"
    assert kebab("hasRelatedMaterial") == "has-related-material"
    assert kebab("basedOnData") == "based-on-data"
    assert kebab("references") == "references"
    for name in RELATION_NAMES:
        assert kebab(camel(name)) == name
    assert camel("is-preprint-of") == "isPreprintOf"


# -- problems ----------------------------------------------------------------------------------

def _line_of(data: bytes, needle: bytes, start: int = 0) -> int:
    return data[: data.index(needle, start)].count(b"\n") + 1


def test_truncated_file_keeps_what_came_before(tmp_path):
    corpus = generate(6, seed=3)
    data = render_deposit(corpus.works)
    cut = data.index(b"<doi_data>", data.index(b"</doi_data>", data.index(b"</doi_data>") + 1) + 1)
    path = tmp_path / "cut.xml"
    path.write_bytes(data[:cut])  # two records complete, the third cut inside
    works, problems = _read(path)
    assert [w.DOI for w in works] == [w["DOI"] for w in corpus.works[:2]]
    assert len(problems) == 1
    assert problems[0].path == path
    assert problems[0].line == data[:cut].count(b"\n") + 1
    assert "malformed XML" in problems[0].message


def test_truncated_gzip_and_garbage(tmp_path):
    corpus = generate(40, seed=4)
    packed = gzip.compress(render_deposit(corpus.works))
    cut = tmp_path / "cut.xml.gz"
    cut.write_bytes(packed[: len(packed) // 2])
    works, problems = _read(cut)
    assert 0 < len(works) < 40 and [w.DOI for w in works] == [w["DOI"] for w in corpus.works[: len(works)]]
    assert len(problems) == 1 and problems[0].line and "unreadable" in problems[0].message
    garbage = tmp_path / "garbage.xml"
    garbage.write_bytes(b"this is not XML\n")
    works, problems = _read(garbage)
    assert works == [] and problems[0].line == 1
    empty = tmp_path / "empty.xml"
    empty.write_bytes(b"")
    assert [type(i) for i in read_works(empty)] == [XmlProblem]


def test_records_without_a_doi_are_reported_and_skipped(tmp_path):
    corpus = generate(8, seed=5)
    victim = next(i for i, w in enumerate(corpus.works) if i and w["type"] == "journal-article" and w.get("reference"))
    data = render_deposit(corpus.works)
    own = re.search(rb"<doi>%s</doi>\s*<timestamp>" % re.escape(corpus.works[victim]["DOI"].encode()), data)
    start = data.rindex(b"<doi_data>", 0, own.start())
    end = data.index(b"</doi_data>", start) + len(b"</doi_data>")
    broken = data[:start] + data[end:]
    path = tmp_path / "nodoi.xml"
    path.write_bytes(broken)
    works, problems = _read(path)
    assert [w.DOI for w in works] == [w["DOI"] for i, w in enumerate(corpus.works) if i != victim]
    assert len(problems) == 1 and problems[0].path == path
    # The line of the article's start tag, the last one before the removed DOI.
    assert problems[0].line == _line_of(broken, b"<journal_article", broken.rindex(b"<journal_article", 0, start))
    assert "a journal_article without a DOI" in problems[0].message

    unixref = tmp_path / "unixref.xml"
    unixref.write_text(
        '<?xml version="1.0"?>\n<doi_records>\n'
        '  <doi_record owner="10.5555" timestamp="2012-12-04 08:42:23"><crossref><error>not found</error></crossref></doi_record>\n'
        '  <doi_record owner="10.5555" timestamp="2012-12-04 08:42:23"><crossref><journal><journal_article>\n'
        '    <doi_data><doi>10.5555/ok</doi></doi_data>\n'
        '    <citation_list><citation key="a"><doi>10.5555/cited</doi></citation></citation_list>\n'
        '  </journal_article></journal></crossref></doi_record>\n</doi_records>\n'
    )
    works, problems = _read(unixref)
    assert [(w.DOI, [r.DOI for r in w.reference]) for w in works] == [("10.5555/ok", ["10.5555/cited"])]
    assert [(p.line, "without a DOI" in p.message) for p in problems] == [(3, True)]


def test_namespaces_not_prefixes(tmp_path):
    """Any prefix, or none, for the relations namespace; a foreign namespace is not Crossref's."""
    body = (
        '<doi_batch xmlns="http://www.crossref.org/schema/4.4.2" xmlns:x="http://www.crossref.org/relations.xsd"'
        ' xmlns:y="urn:other"><head><timestamp>2019010203040599</timestamp></head><body>'
        '<posted_content><x:program><x:related_item>'
        '<x:intra_work_relation relationship-type="isPreprintOf" identifier-type="doi">10.1234/a</x:intra_work_relation>'
        '<y:inter_work_relation relationship-type="cites" identifier-type="doi">10.1234/not-this</y:inter_work_relation>'
        '</x:related_item></x:program>'
        '<program xmlns="http://www.crossref.org/relations.xsd"><related_item>'
        '<inter_work_relation relationship-type="isReviewedBy" identifier-type="doi">10.1234/b</inter_work_relation>'
        '</related_item></program>'
        '<y:doi_data><y:doi>10.1234/wrong</y:doi></y:doi_data>'
        '<doi_data><doi>10.1234/subject</doi></doi_data></posted_content></body></doi_batch>'
    )
    path = tmp_path / "ns.xml"
    path.write_text(body)
    works, problems = _read(path)
    assert problems == []
    assert [w.DOI for w in works] == ["10.1234/subject"]
    assert _keys(works) == {("10.1234/subject", "is-preprint-of", "10.1234/a"), ("10.1234/subject", "is-reviewed-by", "10.1234/b")}
    assert works[0].occurred_at == "2019-01-02T03:04:05Z"


_NESTED = (
    '<journal><journal_metadata><full_title>J</full_title><doi_data><doi>10.5555/journal</doi></doi_data></journal_metadata>'
    '<journal_issue><publication_date><year>2020</year></publication_date><doi_data><doi>10.5555/issue</doi></doi_data></journal_issue>'
    '<journal_article><titles><title>T</title></titles>'
    '<rel:program><rel:related_item><rel:inter_work_relation relationship-type="isReviewOf" identifier-type="doi">'
    '10.5555/reviewed</rel:inter_work_relation></rel:related_item></rel:program>'
    '<doi_data><doi>10.5555/article</doi></doi_data>'
    '<citation_list><citation key="1"><doi>10.5555/cited</doi></citation></citation_list>'
    '<component_list><component parent_relation="isPartOf"><titles><title>Fig 1</title></titles>'
    '<rel:program><rel:related_item><rel:inter_work_relation relationship-type="isSupplementTo" identifier-type="doi">'
    '10.5555/supplemented</rel:inter_work_relation></rel:related_item></rel:program>'
    '<doi_data><doi>10.5555/figure</doi></doi_data></component></component_list>'
    '</journal_article></journal>'
)
_REL = 'xmlns:rel="http://www.crossref.org/relations.xsd"'


def test_nested_works_keep_their_own_links(tmp_path):
    """A deposit registers every DOI in it; an output record is the article, with its context."""
    deposit = tmp_path / "deposit.xml"
    deposit.write_text(
        f'<doi_batch xmlns="http://www.crossref.org/schema/5.3.0" {_REL}><head><timestamp>20200101000000</timestamp>'
        f'</head><body>{_NESTED}</body></doi_batch>'
    )
    book = tmp_path / "book.xml"
    book.write_text(
        '<doi_batch xmlns="http://www.crossref.org/schema/4.4.2"><body><book book_type="monograph">'
        '<book_metadata><doi_data><doi>10.5555/book</doi></doi_data></book_metadata>'
        '<content_item component_type="chapter"><doi_data><doi>10.5555/chapter</doi></doi_data>'
        '<citation_list><citation key="1"><unstructured_citation>See doi:10.5555/mined.</unstructured_citation>'
        '</citation></citation_list></content_item></book></body></doi_batch>'
    )
    unixref = tmp_path / "unixref.xml"
    unixref.write_text(f'<doi_records {_REL}><doi_record timestamp="2020-02-03 04:05:06"><crossref>{_NESTED}'
                       '</crossref></doi_record></doi_records>')
    works, problems = _read(deposit)
    assert problems == []
    assert [(w.DOI, w.type) for w in works] == [
        ("10.5555/journal", "journal"), ("10.5555/issue", "journal-issue"),
        ("10.5555/figure", "component"), ("10.5555/article", "journal-article"),
    ]
    assert _keys(works) == {
        ("10.5555/article", "is-review-of", "10.5555/reviewed"),
        ("10.5555/article", "references", "10.5555/cited"),
        ("10.5555/figure", "is-supplement-to", "10.5555/supplemented"),
    }
    works, problems = _read(book)
    assert problems == [] and [(w.DOI, w.type, w.occurred_at) for w in works] == [
        ("10.5555/book", "monograph", None), ("10.5555/chapter", "book-chapter", None)]
    assert _keys(works) == {("10.5555/chapter", "references", "10.5555/mined")}
    works, problems = _read(unixref)
    assert problems == [] and [(w.DOI, w.occurred_at) for w in works] == [("10.5555/article", "2020-02-03T04:05:06Z")]
    assert _keys(works) == {("10.5555/article", "is-review-of", "10.5555/reviewed"),
                            ("10.5555/article", "references", "10.5555/cited")}


def test_iter_paths(tmp_path):
    (tmp_path / "b" / "c").mkdir(parents=True)
    for name in ("b/c/z.xml", "b/a.xml.gz", "b/notes.txt", "a.XML", "b/c/data.json"):
        (tmp_path / name).write_bytes(b"<x/>")
    single = tmp_path / "b" / "notes.txt"
    found = list(iter_paths([tmp_path, single, tmp_path / "b"]))
    assert found == [tmp_path / "a.XML", tmp_path / "b/a.xml.gz", tmp_path / "b/c/z.xml", single]
    with pytest.raises(UsageError, match="no such file or directory: .*missing"):
        list(iter_paths([tmp_path / "missing"]))


# -- end to end --------------------------------------------------------------------------------

async def test_ingest_directory_with_a_bad_file(tmp_path, caplog):
    corpus = generate(120, seed=8)
    works = corpus.works
    dumps = tmp_path / "dumps"
    (dumps / "more").mkdir(parents=True)
    (dumps / "a.xml").write_bytes(render_deposit(works[:50]))
    (dumps / "more" / "b.xml.gz").write_bytes(gzip.compress(render_deposit(works[50:100])))
    bad = render_deposit(works[100:])
    second_end = bad.index(b"</doi_data>", bad.index(b"</doi_data>") + 1)
    cut = bad.index(b"<doi_data>", second_end)
    (dumps / "c-bad.xml").write_bytes(bad[:cut])  # 100 and 101 complete, 102 cut off
    (dumps / "ignored.json").write_text("{}")
    included = {w["DOI"] for w in works[:102]}
    expected = {k for k in corpus.expected if k[0] in included}
    caplog.set_level(logging.INFO, logger="crawler")
    async with Simulator(corpus, fast_sim_config()) as sim:
        outcome = await ingest_xml(crawler_config(sim.url, tmp_path), asyncio.Event(), [dumps])
    assert outcome.code == 1, outcome.message
    assert "3 files, 102 records" in outcome.message and "1 problem reported" in outcome.message
    line = bad[:cut].count(b"\n") + 1
    assert f"c-bad.xml:{line}: malformed XML" in caplog.text
    keys, repeated = output_keys(tmp_path / "events")
    assert not repeated
    assert keys == expected and len(expected) > 500


async def test_an_xml_file_copied_over_one_read_before_is_read_again(tmp_path, caplog):
    """A file is known by its path and its size and modification time: a new deposit copied over
    an ingested one's path used to be skipped as done (its works lost, exit 0)."""
    corpus = generate(200, seed=18)
    deposit = tmp_path / "deposit.xml"
    caplog.set_level(logging.WARNING, logger="crawler")
    async with Simulator(corpus, fast_sim_config()) as sim:
        config = crawler_config(sim.url, tmp_path)
        deposit.write_bytes(render_deposit(corpus.works[:80]))
        first = await ingest_xml(config, asyncio.Event(), [deposit])
        deposit.write_bytes(render_deposit(corpus.works[40:]))  # overlapping: nothing may come twice
        second = await ingest_xml(config, asyncio.Event(), [deposit])
    assert (first.code, second.code) == (0, 0), (first.message, second.message)
    assert f"{deposit} changed since it was read" in caplog.text
    keys, repeated = output_keys(tmp_path / "events")
    assert not repeated, f"{len(repeated)} link(s) written twice"
    assert keys == corpus.expected


async def test_xml_and_json_paths_give_the_same_events(tmp_path):
    corpus = generate(300, seed=17)
    assert {w["type"] for w in corpus.works} >= {"journal-article", "book-chapter", "component", "standard"}
    deposit = tmp_path / "deposit.xml"
    deposit.write_bytes(render_deposit(corpus.works))
    async with Simulator(corpus, fast_sim_config()) as sim:
        from_xml = await ingest_xml(crawler_config(sim.url, tmp_path / "xml"), asyncio.Event(), [deposit])
        from_json = await backfill(crawler_config(sim.url, tmp_path / "json"), asyncio.Event())
    assert (from_xml.code, from_json.code) == (0, 0), (from_xml.message, from_json.message)
    xml_keys, xml_repeated = output_keys(tmp_path / "xml" / "events")
    json_keys, json_repeated = output_keys(tmp_path / "json" / "events")
    assert not xml_repeated and not json_repeated
    assert xml_keys == json_keys == corpus.expected

    def essentials(out: Path) -> dict[str, tuple]:
        return {e["id"]: (e["occurred_at"], e["subj"], e["obj"], e["source_token"]) for e in read_events(out)}

    # Same ids, dates, subject types and agents: nothing but the collection time differs.
    assert essentials(tmp_path / "xml" / "events") == essentials(tmp_path / "json" / "events")


# -- streaming ---------------------------------------------------------------------------------

_MEASURE = """
import json, resource, sys, time
from pathlib import Path
from crawler.xmlreader import read_works

def peak_kb():
    # ru_maxrss also counts the peak of the process we were spawned from (Linux keeps it across
    # exec), so it would hide growth below pytest's own size; VmHWM is this program's alone.
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

path, total = Path(sys.argv[1]), int(sys.argv[2])
early, count, problems, refs = None, 0, 0, 0
started = time.monotonic()
for item in read_works(path):
    if not hasattr(item, "DOI"):
        problems += 1
        continue
    count += 1
    refs += len(item.reference or ())
    if count == total // 20:
        early = peak_kb()
print(json.dumps({"count": count, "refs": refs, "problems": problems, "early_kb": early, "end_kb": peak_kb(),
                  "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "seconds": time.monotonic() - started}))
"""


def _stream_record() -> bytes:
    """One journal article as the renderer writes it, with a placeholder DOI serial."""
    work = {
        "DOI": "10.5555/stream.SERIAL00",
        "type": "journal-article",
        "title": ["A long title about streaming " * 6],
        "container-title": ["Journal of Streams"],
        "created": {"date-parts": [[2020, 1, 2]], "date-time": "2020-01-02T03:04:05Z"},
        "reference": [
            {"key": f"r{n}", "DOI": f"10.1016/j.stream.{n:04d}", "doi-asserted-by": "crossref",
             "unstructured": f"Author {n} &amp; Other (2001) <i>A rather long citation text</i> " * 4}
            for n in range(8)
        ],
        "relation": {"has-preprint": [{"id-type": "doi", "id": "10.1101/stream"}]},
    }
    document = render_deposit([work])
    return document[document.index(b"<journal>"): document.index(b"</body>")]


def test_memory_stays_flat_on_a_large_file(tmp_path):
    record = _stream_record()
    assert record.count(b"SERIAL00") == 2  # the DOI and the resource URL
    head, _, tail = render_deposit([]).partition(b"<body/>")
    path = tmp_path / "large.xml"
    total = 0
    with open(path, "wb") as out:
        out.write(head + b"<body>\n")
        while out.tell() < 205 * 2**20:
            out.write(b"".join(record.replace(b"SERIAL00", b"%08d" % (total + i)) for i in range(1000)))
            total += 1000
        out.write(b"</body>" + tail)
    size = path.stat().st_size
    assert size >= 200 * 2**20
    started = time.monotonic()
    try:
        run = subprocess.run([sys.executable, "-c", _MEASURE, str(path), str(total)],
                             capture_output=True, text=True, timeout=300, cwd=ROOT)
    finally:
        path.unlink()  # pytest keeps recent tmp directories: leave no 200 MB behind
    assert run.returncode == 0, run.stderr
    figures = json.loads(run.stdout)
    print(f"streaming: {size / 2**20:.0f} MiB, {total:,} records, RSS {figures['early_kb'] / 1024:.1f} MiB "
          f"after 5%, {figures['end_kb'] / 1024:.1f} MiB at the end, {figures['seconds']:.1f} s "
          f"(subprocess {time.monotonic() - started:.1f} s; ru_maxrss {figures['maxrss_kb'] / 1024:.1f} MiB)")
    assert figures["count"] == total and figures["problems"] == 0
    assert figures["refs"] == 8 * total
    # Flat means flat: a reader that clears records but keeps their empty shells grows ~20 MB here.
    assert figures["end_kb"] - figures["early_kb"] < 10 * 1024
    assert figures["end_kb"] < 150 * 1024  # a tree of the whole file would take gigabytes
