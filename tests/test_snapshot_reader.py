"""Snapshot files (public data file, Metadata Plus) -> Works: every layout round-trips a generated
corpus, the format is told by content, resumes read exactly the unread tail, bad input is reported
with file and record and the rest is still read, and a unit's memory stays bounded."""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import tracemalloc
from pathlib import Path

import msgspec
import pytest
from isal import igzip

from crawler.snapshot import base, jsontext
from crawler.errors import UsageError
from crawler.extract import unique_links
from crawler.model import Work
from crawler.simulator.corpus import generate
from crawler.simulator.snapshot import FORMATS, write_snapshot
from crawler.snapshot import BROKEN, MEMBER, PART, TAR_STREAM, Batch, SnapshotProblem, list_units, read_unit
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def corpus():
    return generate(300, seed=23)


@pytest.fixture(scope="module")
def works(corpus) -> list[dict]:
    return corpus.works


def gz(data: bytes) -> bytes:
    return igzip.compress(data, 1)


def document(works: list[dict]) -> bytes:
    return msgspec.json.encode({"items": works})


def jsonl(works: list[dict]) -> bytes:
    return msgspec.json.Encoder().encode_lines(works)


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_tar(path: Path, members: list[tuple[str, bytes]], compress: bool = False) -> Path:
    if compress:
        with igzip.open(path, "wb", compresslevel=1) as packed, tarfile.open(fileobj=packed, mode="w|") as tar:
            for name, data in members:
                add(tar, name, data)
    else:
        with tarfile.open(path, "w") as tar:
            for name, data in members:
                add(tar, name, data)
    return path


def read_all(paths, skip: int = 0, batch: int = 1000, **listing) -> tuple[list[Work], list[SnapshotProblem], int]:
    works, problems, records = [], [], 0
    for unit in list_units([Path(p) for p in paths], **listing):
        for item in read_unit(unit, skip=skip, batch=batch):
            assert len(item.works) <= item.records <= batch
            works += item.works
            problems += item.problems
            records += item.records
    return works, problems, records


def dois(works: list[Work]) -> list[str]:
    return [w.DOI for w in works]


def links(works: list[Work]) -> set[tuple[str, str, str, bool]]:
    return {(w.DOI.lower(), link.relation, link.obj, link.mined) for w in works for link in unique_links(w)}


def direct(works: list[dict]) -> list[Work]:
    """The corpus dicts decoded straight into Works, without any snapshot file."""
    return [msgspec.convert(w, Work) for w in works]


# -- every layout round-trips ------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_round_trips_the_corpus(tmp_path, works, fmt):
    paths = write_snapshot(works, tmp_path / fmt, fmt, records_per_file=70)
    units = list(list_units([tmp_path / fmt]))
    expected_kind = {"tar-json-gz": MEMBER, "tar-json-gz-pretty": MEMBER, "tgz-json": TAR_STREAM}.get(fmt, "file")
    assert {u.kind for u in units} == {expected_kind}
    assert len(units) == (1 if fmt in ("tgz-json", "json", "jsonl") else 5)
    got, problems, records = read_all([tmp_path / fmt], batch=64)
    assert problems == []
    assert records == len(works)
    assert dois(got) == [w["DOI"] for w in works]
    assert links(got) == links(direct(works))
    assert len(links(got)) > 1000  # the corpus does carry links
    assert list(list_units(paths)) == units  # the files named one by one: the same units


def test_units_are_small_picklable_and_keyed_stably(tmp_path, works, monkeypatch):
    write_snapshot(works, tmp_path / "t", "tar-json-gz", records_per_file=100)
    write_snapshot(works, tmp_path / "z", "tgz-json", records_per_file=100)
    units = list(list_units([tmp_path / "t", tmp_path / "z"]))
    tar = str(tmp_path / "t" / "snapshot.tar")
    packed = str(tmp_path / "z" / "all.json.tar.gz")
    assert [u.key for u in units] == [f"{tar}::{n}.json.gz" for n in range(3)] + [packed]
    for unit in units:
        assert pickle.loads(pickle.dumps(unit)) == unit
        assert len(pickle.dumps(unit)) < 400
    batch = next(read_unit(units[0], batch=5))  # what a parser process sends back
    assert isinstance(batch, Batch) and pickle.loads(pickle.dumps(batch)) == batch
    members = [u for u in units if u.kind == MEMBER]
    with open(tar, "rb") as handle:  # offset/length locate each member's stored bytes
        for unit in members:
            handle.seek(unit.offset)
            assert igzip.decompress(handle.read(unit.length)).startswith(b'{"items":[')
    assert units[-1].sequential and units[-1].offset == 0
    # relative and absolute spellings give the same keys (the state file names units by key)
    monkeypatch.chdir(tmp_path)
    assert [u.key for u in list_units([Path("t")])] == [u.key for u in members]


def test_pretty_printed_items_with_whitespace(tmp_path, works):
    part = works[:40]
    body = json.dumps(part, indent=4, ensure_ascii=False).replace("\n", "\r\n")
    text = '{\r\n  "total" : 40,\t"items" :\r\n ' + body + ' ,\n\n "next" : null }\n'
    (tmp_path / "pretty.json").write_text(text, encoding="utf-8")
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + document(part))
    (tmp_path / "array.json").write_bytes(b"  [" + b" ,\n".join(msgspec.json.encode(w) for w in part) + b"]")
    for name in ("pretty.json", "bom.json", "array.json"):
        got, problems, records = read_all([tmp_path / name], batch=7)
        assert (problems, records) == ([], 40), name
        assert dois(got) == [w["DOI"] for w in part]
        assert links(got) == links(direct(part))


def test_the_api_envelope_is_read(tmp_path, works):
    envelope = {
        "status": "ok", "message-type": "work-list", "message-version": "1.0.0",
        "message": {"facets": {"x": [1, {"y": "]}"}]}, "total-results": 300, "items": works,
                    "items-per-page": 300, "query": {"start-index": 0, "search-terms": None}},
    }
    (tmp_path / "page.json").write_bytes(msgspec.json.encode(envelope))
    (tmp_path / "page2.json.gz").write_bytes(gz(json.dumps(envelope, indent=1).encode()))
    for name in ("page.json", "page2.json.gz"):
        got, problems, _ = read_all([tmp_path / name])
        assert problems == []
        assert dois(got) == [w["DOI"] for w in works]


def test_the_format_is_told_by_content_when_names_lie(tmp_path, works):
    third = len(works) // 3
    a, b, c = works[:third], works[third:2 * third], works[2 * third:]
    (tmp_path / "lines.json").write_bytes(gz(jsonl(a)))  # a ".json" that is gzipped JSON Lines
    write_tar(tmp_path / "noext", [("0.json", document(b))], compress=True)  # a .tar.gz without a name
    (tmp_path / "doc.jsonl").write_bytes(document(c))  # a ".jsonl" that holds one document
    got, problems, _ = read_all([tmp_path / "lines.json", tmp_path / "noext", tmp_path / "doc.jsonl"])
    assert problems == []
    assert dois(got) == [w["DOI"] for w in works]
    # in a directory, files without a telling name are taken when their content says so
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "part-a").write_bytes(jsonl(a))
    (folder / "part-b").write_bytes(gz(document(b)))
    write_tar(folder / "part-c", [("x/0.jsonl.gz", gz(jsonl(c)))])
    (folder / "README.txt").write_text("Crossref public data file\n")
    (folder / "checksums.md5").write_text("d41d8cd98f00b204e9800998ecf8427e  0.jsonl.gz\n")
    (folder / ".hidden.json").write_bytes(document(a))
    units = list(list_units([folder]))
    assert [os.path.basename(u.path) for u in units] == ["part-a", "part-b", "part-c"]
    got, problems, _ = read_all([folder])
    assert problems == []
    assert dois(got) == [w["DOI"] for w in works]


def test_mixed_paths_in_one_call(tmp_path, works):
    write_snapshot(works[:100], tmp_path / "tar", "tar-json-gz", records_per_file=30)
    write_snapshot(works[100:200], tmp_path / "dir", "dir-jsonl-gz", records_per_file=30)
    (tmp_path / "dir" / "nested").mkdir()
    write_snapshot(works[200:250], tmp_path / "dir" / "nested", "json")
    single = write_snapshot(works[250:], tmp_path / "one", "jsonl")[0]
    paths = [tmp_path / "tar" / "snapshot.tar", tmp_path / "dir", single, tmp_path / "dir" / "0.jsonl.gz"]
    units = list(list_units(paths))
    assert len({u.key for u in units}) == len(units) == 4 + 4 + 1 + 1  # a file named twice is read once
    got, problems, records = read_all(paths)
    assert problems == [] and records == len(works)
    # the directory is walked in sorted order: 0..3.jsonl.gz, then nested/works.json
    assert dois(got) == [w["DOI"] for w in works]
    assert links(got) == links(direct(works))


def test_a_crawlers_output_folder_is_no_snapshot(tmp_path, works):
    """Event files are JSON Lines too: a folder holding a crawler's output marker (any state's) is
    not walked into, and named on its own it is refused."""
    from crawler.output import MARKER

    (tmp_path / "snap").mkdir()
    (tmp_path / "snap" / "works.jsonl").write_bytes(jsonl(works[:5]))
    events = tmp_path / "snap" / "old-events"
    events.mkdir()
    (events / MARKER).write_text("{}")
    (events / "events-000001.jsonl").write_bytes(jsonl(works[5:9]))
    assert [u.path for u in list_units([tmp_path / "snap"])] == [str(tmp_path / "snap" / "works.jsonl")]
    with pytest.raises(UsageError, match="old-events is a crawler's output folder"):
        list(list_units([events]))


def test_a_missing_path_is_a_usage_error(tmp_path, works):
    write_snapshot(works[:10], tmp_path, "jsonl")
    units = list_units([tmp_path, tmp_path / "nope.tar"])
    with pytest.raises(UsageError, match="nope.tar"):
        next(units)  # before any unit


# -- resume ------------------------------------------------------------------------------------

def _bad_lines(works: list[dict]) -> bytes:
    lines = jsonl(works).split(b"\n")
    lines[5] = b'{"DOI": "10.1/broken", "reference": '  # not JSON
    lines[9] = b""  # a blank line is no record
    return b"\n".join(lines)


@pytest.mark.parametrize("fmt", ["tar-json-gz", "dir-jsonl-gz", "tgz-json", "json", "json-streamed", "jsonl",
                                 "jsonl-parts", "bad-lines"])
def test_skip_reads_exactly_the_unread_tail(tmp_path, works, fmt, monkeypatch):
    listing = {}
    if fmt == "json-streamed":
        monkeypatch.setattr(base, "WHOLE_DOC", 100_000)
        write_snapshot(works, tmp_path, "json")
    elif fmt == "jsonl-parts":
        write_snapshot(works, tmp_path, "jsonl")
        listing = {"part_bytes": 64 << 10}
    elif fmt == "bad-lines":
        (tmp_path / "bad.jsonl.gz").write_bytes(gz(_bad_lines(works[:120])))
    else:
        write_snapshot(works, tmp_path, fmt, records_per_file=70)
    for unit in list_units([tmp_path], **listing):
        full = list(read_unit(unit, batch=1000))
        whole = [w for b in full for w in b.works]
        total = sum(b.records for b in full)
        for skip in (0, 1, 5, 6, 37, total - 1, total, total + 5):
            tail = [b for b in read_unit(unit, skip=skip, batch=10)]
            assert tail[-1].end and not any(b.end for b in tail[:-1])
            assert sum(b.records for b in tail) == max(0, total - skip)
            got = [w for b in tail for w in b.works]
            if fmt != "bad-lines":
                assert dois(got) == dois(whole[skip:])
        # an engine committing batch after batch, then stopped and resumed, reads each record once
        committed, seen = 0, []
        for batch in read_unit(unit, batch=7):
            seen += batch.works
            committed += batch.records
            if committed >= total // 2:
                break
        for batch in read_unit(unit, skip=committed, batch=7):
            seen += batch.works
        assert dois(seen) == dois(whole)


def test_problems_before_the_resume_point_are_not_reported_again(tmp_path, works):
    path = tmp_path / "bad.jsonl.gz"
    path.write_bytes(gz(_bad_lines(works[:30])))
    unit = next(list_units([path]))
    assert [p.where for b in read_unit(unit) for p in b.problems] == ["line 6"]
    assert [p.where for b in read_unit(unit, skip=5) for p in b.problems] == ["line 6"]
    assert [p.where for b in read_unit(unit, skip=6) for p in b.problems] == []


def test_a_big_jsonl_is_read_in_parts_each_line_once(tmp_path, works):
    path = write_snapshot(works, tmp_path, "jsonl")[0]
    size = path.stat().st_size
    units = list(list_units([path], part_bytes=50_000))
    assert [u.kind for u in units] == [PART] * len(units) and len(units) == -(-size // 50_000)
    assert [u.key for u in units] == [f"{path}#{n}" for n in range(len(units))]
    assert sum(u.length for u in units) == size and not any(u.sequential for u in units)
    got, problems, records = read_all([path], part_bytes=50_000)
    assert problems == [] and records == len(works)
    assert dois(got) == [w["DOI"] for w in works]
    # a part boundary exactly at a line start, and a line longer than a part
    lines = jsonl(works[:5]).split(b"\n")
    data = b"\n".join(lines)
    cut = len(lines[0]) + 1
    (tmp_path / "exact.jsonl").write_bytes(data)
    got, _, _ = read_all([tmp_path / "exact.jsonl"], part_bytes=cut)
    assert dois(got) == [w["DOI"] for w in works[:5]]


def test_a_gzip_file_too_big_for_one_part_is_one_sequential_unit(tmp_path, works):
    write_snapshot(works, tmp_path, "dir-jsonl-gz", records_per_file=1000)
    (unit,) = list_units([tmp_path], part_bytes=10_000)
    assert unit.sequential and unit.kind == "file" and unit.key == str(tmp_path / "0.jsonl.gz")


# -- bad input ---------------------------------------------------------------------------------

def test_bad_lines_are_reported_and_the_rest_is_read(tmp_path, works):
    part = [dict(w) for w in works[:12]]
    part[3]["reference"] = "not a list"  # the wrong shape: salvaged
    part[4]["DOI"] = 10.5  # no usable DOI
    part[5]["DOI"] = "  "
    lines = jsonl(part).split(b"\n")
    lines[7] = b"this is not json"
    lines[8] = b"[1, 2]"
    path = tmp_path / "works.jsonl"
    path.write_bytes(b"\n".join(lines[:10]) + b"\n\n   \n" + b"\n".join(lines[10:]))
    got, problems, records = read_all([path], batch=4)
    assert records == 12  # blank lines are no records; bad ones are
    assert dois(got) == [part[i]["DOI"] for i in (0, 1, 2, 3, 6, 9, 10, 11)]
    assert got[3].reference == []  # salvaged: the rest of the work is kept
    by_line = {p.where: p.message for p in problems}
    assert set(by_line) == {"line 4", "line 5", "line 6", "line 8", "line 9"}
    assert all(p.path == str(path) for p in problems)
    assert "field-of-wrong-type" in by_line["line 4"] and "reference" in by_line["line 4"]
    assert "work-without-doi" in by_line["line 5"] and "work-without-doi" in by_line["line 6"]
    assert "not JSON" in by_line["line 8"]
    assert "work-without-doi" in by_line["line 9"]


def test_a_record_of_the_wrong_shape_in_a_document_is_salvaged(tmp_path, works):
    part = [dict(w) for w in works[:10]]
    part[2]["relation"] = ["not", "a", "dict"]
    part[6]["created"] = 2020
    (tmp_path / "0.json.gz").write_bytes(gz(document(part)))
    write_tar(tmp_path / "s.tar", [("0.json.gz", (tmp_path / "0.json.gz").read_bytes())])
    got, problems, _ = read_all([tmp_path / "s.tar"])
    assert dois(got) == [w["DOI"] for w in part]
    assert [(p.where, p.message.split(":")[0]) for p in problems] == [
        ("member 0.json.gz, record 3", "field-of-wrong-type"),
        ("member 0.json.gz, record 7", "field-of-wrong-type"),
    ]


def _corrupt(data: bytes) -> bytes:
    """Gzip data with bytes in the middle of its deflate stream overwritten."""
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0x5A for b in data[middle:middle + 64]) + data[middle + 64:]


def test_a_corrupt_gzip_member_is_reported_and_the_next_members_read(tmp_path, works):
    chunks = [works[i:i + 60] for i in range(0, 300, 60)]
    members = [(f"{n}.json.gz", gz(document(c))) for n, c in enumerate(chunks)]
    members[2] = (members[2][0], _corrupt(members[2][1]))
    path = write_tar(tmp_path / "data.tar", members)
    got, problems, _ = read_all([path])
    # inflating garbage may first give JSON that breaks, then the gzip error: both name the member
    assert {(p.path, p.where.split(",")[0]) for p in problems} == {(str(path), "member 2.json.gz")}
    assert "unreadable" in problems[-1].message and "not read further" in problems[-1].message
    read = set(dois(got))
    for n, chunk in enumerate(chunks):
        if n != 2:
            assert {w["DOI"] for w in chunk} <= read
    # the same in a .tar.gz of .json.gz members (one sequential unit)
    packed = write_tar(tmp_path / "all.json.tar.gz", members, compress=True)
    got2, problems2, _ = read_all([packed])
    assert dois(got2) == dois(got)
    assert [p.where.split(",")[0] for p in problems2] == [p.where.split(",")[0] for p in problems]


def test_a_truncated_tar_is_reported_and_what_is_whole_is_read(tmp_path, works):
    chunks = [works[i:i + 100] for i in range(0, 300, 100)]
    members = [(f"{n}.json.gz", gz(document(c))) for n, c in enumerate(chunks)]
    path = write_tar(tmp_path / "data.tar", members)
    units = list(list_units([path]))
    data = path.read_bytes()
    # cut in the middle of the last member's data
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: units[2].offset + units[2].length // 2])
    got, problems, _ = read_all([cut])
    assert {w["DOI"] for w in works[:200]} <= set(dois(got))
    wheres = [p.where for p in problems]
    assert any(w.startswith("member 2.json.gz") for w in wheres)  # the member's data ends early
    assert any("truncated" in p.message for p in problems)
    assert all(p.path == str(cut) for p in problems)
    # the listing names where the file ends, not where the next header would have been
    assert f"byte {cut.stat().st_size}" in wheres, wheres
    assert "the tar ends inside member 2.json.gz" in problems[wheres.index(f"byte {cut.stat().st_size}")].message
    # cut right after a whole member (no end-of-archive blocks): listing reports it
    end = units[1].offset + -(-units[1].length // 512) * 512
    cut.write_bytes(data[:end])
    cut_units = list(list_units([cut]))
    assert [u.kind for u in cut_units] == [MEMBER, MEMBER, BROKEN]
    got, problems, _ = read_all([cut])
    assert dois(got) == [w["DOI"] for w in works[:200]]
    assert len(problems) == 1 and "truncated" in problems[0].message and "after member 1.json.gz" in problems[0].message
    # cut inside a header
    cut.write_bytes(data[: end + 100])
    got, problems, _ = read_all([cut])
    assert dois(got) == [w["DOI"] for w in works[:200]] and len(problems) == 1


def test_a_truncated_tgz_is_reported_and_its_first_members_read(tmp_path, works):
    path = write_snapshot(works, tmp_path / "s", "tgz-json", records_per_file=50)[0]
    data = path.read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(data[: len(data) * 2 // 3])
    got, problems, records = read_all([cut])
    assert 100 <= len(got) < 300 and dois(got) == [w["DOI"] for w in works[: len(got)]]
    assert len(problems) == 1 and "truncated" in problems[0].message and problems[0].path == str(cut)
    assert problems[0].where.startswith("member ")


def test_a_truncated_gzip_file_and_document_keep_their_first_records(tmp_path, works):
    data = gz(jsonl(works))
    (tmp_path / "cut.jsonl.gz").write_bytes(data[: len(data) // 2])
    got, problems, _ = read_all([tmp_path / "cut.jsonl.gz"])
    assert 0 < len(got) < 300 and dois(got) == [w["DOI"] for w in works[: len(got)]]
    assert len(problems) == 1 and "truncated" in problems[0].message and problems[0].where.startswith("after line")
    doc = document(works)
    (tmp_path / "cut.json").write_bytes(doc[: len(doc) // 2])
    got, problems, _ = read_all([tmp_path / "cut.json"])
    assert 0 < len(got) < 300 and dois(got) == [w["DOI"] for w in works[: len(got)]]
    assert [p.where for p in problems] == [f"after record {len(got)}"] and "truncated" in problems[0].message


def test_malformed_json_inside_a_document_stops_that_file_only(tmp_path, works):
    doc = document(works[:50])
    at = doc.index(works[20]["DOI"].encode())
    (tmp_path / "a.json").write_bytes(doc[:at] + b"\x00garbage" + doc[at:])
    (tmp_path / "b.json").write_bytes(document(works[50:60]))
    got, problems, records = read_all([tmp_path])
    assert dois(got) == [w["DOI"] for w in works[:20] + works[50:60]]
    assert [(os.path.basename(p.path), p.where) for p in problems] == [("a.json", "record 21")]
    assert "malformed JSON" in problems[0].message
    assert records == 21 + 10  # the bad record counts, so a resume position still counts records


def test_files_that_are_not_snapshots_are_reported_not_raised(tmp_path):
    (tmp_path / "empty.json").write_bytes(b"")
    (tmp_path / "text.json").write_bytes(b"hello")
    (tmp_path / "bad.json.gz").write_bytes(b"\x1f\x8b" + b"\x00" * 40)
    (tmp_path / "nolist.json").write_bytes(b'{"status": "ok", "message": {"total-results": 0}}')
    (tmp_path / "garbage.tar").write_bytes(b"x" * 3000)
    got, problems, records = read_all(sorted(tmp_path.iterdir()))
    assert got == [] and records == 0
    assert sorted(os.path.basename(p.path) for p in problems) == [
        "bad.json.gz", "empty.json", "garbage.tar", "nolist.json", "text.json"]
    assert all(p.where in ("file", "byte 0") for p in problems)


def test_an_overlong_line_is_skipped(tmp_path, works, monkeypatch):
    monkeypatch.setattr(base, "MAX_RECORD", 2000)
    monkeypatch.setattr(base, "CHUNK", 512)
    small = [{"DOI": f"10.1234/x{n}"} for n in range(3)]
    big = dict(works[0], title=["x" * 5000])
    (tmp_path / "w.jsonl").write_bytes(jsonl([small[0], big, small[1]]) + msgspec.json.encode(small[2]))
    got, problems, records = read_all([tmp_path / "w.jsonl"])
    assert dois(got) == [w["DOI"] for w in small] and records == 4
    assert [p.where for p in problems] == ["line 2"] and "longer than" in problems[0].message


TRICKY = [
    {"DOI": "10.1234/a", "score": 1.0, "x": -12.5e-3, "t": True, "f": False, "n": None, "big": 12345678901234567890,
     "title": ['a "quoted" ]} title', "caf\u00e9 \\ \n"],
     "reference": [{"DOI": "10.5555/B"}, {"unstructured": "x, doi:10.5555/c"}]},
    {"DOI": "10.1234/b", "relation": {"cites": [{"id-type": "doi", "id": "10.5555/D"}]}, "score": 0.5, "deep": [[[[{}]]]]},
    {"DOI": "10.1234/c", "e": 1e9, "empty": {}, "list": [], "s": ""},
]


@pytest.mark.parametrize("chunk", [7, 13, 61, 97, 256])
def test_documents_split_right_wherever_the_chunks_end(tmp_path, monkeypatch, chunk):
    """Every cut of the window: inside strings, escapes, numbers (`1.` looks malformed), literals."""
    monkeypatch.setattr(base, "CHUNK", chunk)
    monkeypatch.setattr(base, "SNIFF", 16)
    monkeypatch.setattr(base, "WHOLE_DOC", 0)  # no document decoded whole: every item cut out of the window
    items = TRICKY * 5
    plain = json.dumps({"items": items}, ensure_ascii=False).encode()
    pretty = json.dumps({"message": {"total-results": 15, "items": items}}, indent=3).encode()
    spaced = jsonl(items).replace(b"\n", b"\r\n\n  \t \r\n", 4)  # CRLF, blank and blank-looking lines
    for name, data in (("a.json", plain), ("b.json.gz", gz(pretty)), ("c.jsonl", jsonl(items)), ("d.jsonl", spaced)):
        (tmp_path / name).write_bytes(data)
        got, problems, records = read_all([tmp_path / name])
        assert (problems, records) == ([], 15), name
        assert links(got) == links(direct(items)) and dois(got) == [w["DOI"] for w in items]


def test_msgspec_names_the_end_of_a_value(tmp_path):
    """The item splitter relies on msgspec's `trailing characters (byte N)`: pin it."""
    buf = b'  {"a": [1, "]}", {"b": 2}]} ,\n {"c": 3}'
    assert buf[jsontext.value_end(buf, 0)] == ord(",")
    assert jsontext.value_end(buf, 0) == buf.index(b",\n")
    assert jsontext.value_end(b'{"a": [1, 2', 0) == -1
    assert jsontext.value_end(b'{"a": 1}  ', 0) == 10
    with pytest.raises(jsontext._Malformed):
        jsontext.value_end(b'{"a": x}', 0)


# -- memory ------------------------------------------------------------------------------------

def test_a_units_memory_stays_bounded_on_a_large_file(tmp_path, works, monkeypatch):
    monkeypatch.setattr(base, "WHOLE_DOC", 1 << 20)  # documents above it are streamed (the real one is 32 MiB)
    many = [dict(w, DOI=f"{w['DOI']}.{n}") for n in range(20) for w in works]  # 6,000 works
    doc = tmp_path / "big.json.gz"
    lines = tmp_path / "big.jsonl.gz"
    inflated = 0
    with igzip.open(doc, "wb", compresslevel=1) as out:
        out.write(b'{"items":[')
        for n, work in enumerate(many):
            data = (b"," if n else b"") + msgspec.json.encode(work)
            inflated += len(data)
            out.write(data)
        out.write(b"]}")
    with igzip.open(lines, "wb", compresslevel=1) as out:
        out.write(jsonl(many))
    assert inflated > 20_000_000
    for path in (doc, lines):
        (unit,) = list_units([path])
        tracemalloc.start()
        try:
            count = 0
            for batch in read_unit(unit, batch=100):
                assert batch.records <= 100
                count += len(batch.works)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert count == len(many)
        assert peak < inflated / 5, f"{path.name}: peak {peak:,} bytes for {inflated:,} inflated"


# -- the simulator's command line --------------------------------------------------------------

def test_the_simulator_writes_a_snapshot_and_exits(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "crawler.simulator", "--works", "120", "--seed", "4",
         "--write-snapshot", str(tmp_path), "--snapshot-format", "dir-jsonl-gz"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=True,
    )
    paths = out.stdout.split()
    assert paths == [str(tmp_path / "0.jsonl.gz")]
    got, problems, _ = read_all([tmp_path])
    # the corpus's records, whole, in the order drawn (streamed: none kept while writing)
    assert problems == [] and sorted(dois(got)) == sorted(w["DOI"] for w in generate(120, seed=4).works)
    written = [json.loads(line) for line in igzip.decompress((tmp_path / "0.jsonl.gz").read_bytes()).splitlines()]
    assert sorted(written, key=lambda w: w["DOI"]) == sorted(generate(120, seed=4).works, key=lambda w: w["DOI"])


def test_a_zip_or_other_packed_file_is_named_with_what_to_do(tmp_path, works):
    """A download still packed in a format read only once unpacked says so, not its bytes."""
    import bz2
    import zipfile

    with zipfile.ZipFile(tmp_path / "snapshot.zip", "w") as packed:
        packed.writestr("0.jsonl", jsonl(works[:3]))
    (tmp_path / "works.jsonl.bz2").write_bytes(bz2.compress(jsonl(works[:3])))
    got, problems, _ = read_all([tmp_path / "snapshot.zip", tmp_path / "works.jsonl.bz2"])
    assert got == []
    messages = {Path(p.path).name: p.message for p in problems}
    assert messages == {"snapshot.zip": "a zip archive (unzip it and give the folder), not a snapshot format; not read",
                        "works.jsonl.bz2": "a bzip2 file (bunzip2 it), not a snapshot format; not read"}


@pytest.mark.parametrize("fmt", ["tgz-json", "jsonl", "dir-jsonl-gz"])
def test_batches_say_how_far_into_their_unit_the_reading_stands(tmp_path, fmt):
    """What the progress line's bytes and ETA move by within a unit (a Plus snapshot's .tar.gz is
    one unit of hundreds of GB, of files of a few thousand records): positions grow, stay inside
    the unit and end at its length. (Files big enough to outgrow the inflating reader's 512 KB
    reads; a JSON document's records come once it is read whole.)"""
    per_file = 500 if fmt == "tgz-json" else 3000
    write_snapshot(generate(3000, seed=24).works, tmp_path / "snap", fmt, records_per_file=per_file)
    for unit in list_units([tmp_path / "snap"]):
        positions = [b.position for b in read_unit(unit, batch=100)]
        assert len(positions) > 2, "too few batches to see the reading move"
        assert positions == sorted(positions) and positions[-1] == unit.length
        assert 0 < positions[len(positions) // 2] < unit.length, positions
