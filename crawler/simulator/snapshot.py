"""A generated corpus written as a Crossref snapshot, in each layout the snapshot reader meets.

- "tar-json-gz": `snapshot.tar` of `N.json.gz`, each `{"items": [...]}` (public data file 2020-2024);
- "tar-json-gz-pretty": the same, pretty-printed with `"items" :` on the second line (the 2023 file);
- "dir-jsonl-gz": `N.jsonl.gz` files, one work per line (public data file 2025 on);
- "tgz-json": `all.json.tar.gz`, a gzipped tar of `N.json` files `{"items": [...]}` (Metadata Plus);
- "json": `works.json`, one `{"items": [...]}` document; "jsonl": `works.jsonl`, one work per line.

Fast enough for 200,000 works: msgspec encodes, ISA-L gzips at level 1, nothing is pretty-printed
but the "-pretty" layout. The bytes depend only on the works (no timestamps).
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path

import msgspec
from isal import igzip

FORMATS = ("tar-json-gz", "tar-json-gz-pretty", "dir-jsonl-gz", "tgz-json", "json", "jsonl")
_ENCODER = msgspec.json.Encoder()
_LEVEL = 1


def write_snapshot(corpus_works: Iterable[dict], directory: Path, fmt: str, records_per_file: int = 3000) -> list[Path]:
    """Write the works under `directory` (created) in layout `fmt`; returns the paths written.
    A file's works at a time: `corpus_works` may be a stream (`corpus.stream_works`)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown snapshot format {fmt!r}; one of {', '.join(FORMATS)}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    chunks = _chunks(corpus_works, max(1, records_per_file))
    if fmt in ("tar-json-gz", "tar-json-gz-pretty"):
        path = directory / "snapshot.tar"
        pretty = fmt.endswith("-pretty")
        with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
            for n, works in enumerate(chunks):
                _add(tar, f"{n}.json.gz", _gzip(_document(works, pretty)))
        return [path]
    if fmt == "dir-jsonl-gz":
        paths = []
        for n, works in enumerate(chunks):
            path = directory / f"{n}.jsonl.gz"
            path.write_bytes(_gzip(_ENCODER.encode_lines(works)))
            paths.append(path)
        return paths
    if fmt == "tgz-json":
        path = directory / "all.json.tar.gz"
        with open(path, "wb") as raw, igzip.IGzipFile(fileobj=raw, mode="wb", compresslevel=_LEVEL, mtime=0) as packed, \
                tarfile.open(fileobj=packed, mode="w|") as tar:
            for n, works in enumerate(chunks):
                _add(tar, f"{n}.json", _document(works))
        return [path]
    if fmt == "json":
        path = directory / "works.json"
        with open(path, "wb") as handle:  # one document, written piece by piece
            handle.write(b'{"items":[')
            for n, work in enumerate(corpus_works):
                handle.write(b"," + _ENCODER.encode(work) if n else _ENCODER.encode(work))
            handle.write(b"]}\n")
        return [path]
    path = directory / "works.jsonl"
    with open(path, "wb") as handle:
        for works in chunks:
            handle.write(_ENCODER.encode_lines(works))
    return [path]


def _chunks(works: Iterable[dict], size: int) -> Iterator[list[dict]]:
    stream = iter(works)
    while chunk := list(islice(stream, size)):
        yield chunk


def _document(works: list[dict], pretty: bool = False) -> bytes:
    if not pretty:
        return _ENCODER.encode({"items": works})
    body = msgspec.json.format(_ENCODER.encode(works), indent=2)
    return b'{\n  "items" : ' + body.replace(b"\n", b"\n  ") + b"\n}\n"


def _gzip(data: bytes) -> bytes:
    return igzip.compress(data, _LEVEL, mtime=0)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)  # mtime 0, like the gzip headers: the same corpus gives the same bytes
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))
