"""Units -> batches of `Work`s: open the unit's bytes (a file, a byte range, a tar member, a
.tar.gz member after member), inflate what is gzipped, cut records out, decode them with msgspec."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from itertools import chain
from typing import IO, Any

import msgspec
from isal import igzip

from crawler.decode import salvage
from crawler.model import Problem, Work
from crawler.snapshot import base
from crawler.snapshot.base import (
    BOM, BROKEN, GZIP_MAGIC, MEMBER, PART, STREAM_ERRORS, TAR_STREAM,
    Bad, Batch, Context, Record, SnapshotProblem, Unit, wanted,
)
from crawler.snapshot.jsontext import WS, items, layout, lines

_EMPTY_DOI = f"{Problem.NO_DOI}: a record with an empty DOI"


class _Items(msgspec.Struct, gc=False):
    items: list[Work] | None = None


class _Whole(msgspec.Struct, gc=False):
    items: list[Work] | None = None
    message: _Items | None = None


_WORK = msgspec.json.Decoder(Work)
_WHOLE = msgspec.json.Decoder(_Whole)
_ARRAY = msgspec.json.Decoder(list[Work])
_ANY = msgspec.json.Decoder()


def read_unit(unit: Unit, skip: int = 0, batch: int = 1000) -> Iterator[Batch]:
    """The unit's records as `Batch`es of up to `batch` records, in order; the last has `end`.

    The first `skip` records are passed over without being decoded (a small document, decoded
    whole, excepted), and the problems met before them are not reported again: they were, with
    the batches that consumed those records. Bad input never raises; it is a problem.
    """
    batch = max(1, batch)
    works: list[Work] = []
    problems: list[SnapshotProblem] = []
    consumed = count = 0
    handles: list[IO[bytes]] = []  # the stored file as `_records` opens it: where the reading stands
    for item in _records(unit, handles):
        if type(item) is SnapshotProblem:
            if consumed >= skip:
                problems.append(item)
            continue
        consumed += 1
        if consumed <= skip:
            continue
        count += 1
        ctx, number, pos, span = item
        if type(span) is Work:  # decoded with its whole document
            if span.DOI.strip():
                works.append(span)
            else:
                problems.append(SnapshotProblem(ctx.path, ctx.where(number, pos), _EMPTY_DOI))
        elif type(span) is Bad:
            problems.append(SnapshotProblem(unit.path, ctx.where(number, pos), span.message))
        else:
            work = _decode(span, problems, ctx, number, pos)
            if work is not None:
                works.append(work)
        if count >= batch:
            yield Batch(works, problems, count, False, _position(handles, unit))
            works, problems, count = [], [], 0
    yield Batch(works, problems, count, True, unit.length)


def _position(handles: list[IO[bytes]], unit: Unit) -> int:
    """How far into the unit's stored bytes the reading stands (a .tar.gz: its compressed bytes)."""
    try:
        return min(max(handles[-1].tell() - unit.offset, 0), unit.length)
    except (IndexError, ValueError, OSError):
        return 0


def _decode(span: bytes, problems: list[SnapshotProblem], ctx: Context, number: int, pos: int) -> Work | None:
    try:
        try:
            work = _WORK.decode(span)
        except msgspec.ValidationError:  # the wrong shape, or not JSON past the offending value
            item = _ANY.decode(span)
            work = None
    except msgspec.DecodeError as exc:
        problems.append(SnapshotProblem(ctx.path, ctx.where(number, pos), f"not JSON, skipped: {exc}"))
        return None
    if work is None:
        found: list[tuple[str, str, str]] = []
        salvaged = salvage(item, found)
        where = ctx.where(number, pos)
        for kind, doi, detail in found:
            problems.append(SnapshotProblem(ctx.path, where, f"{kind}: {detail}" + (f" ({doi})" if doi != "?" else "")))
        return salvaged
    if not work.DOI.strip():
        problems.append(SnapshotProblem(ctx.path, ctx.where(number, pos), _EMPTY_DOI))
        return None
    return work


def _records(unit: Unit, handles: list[IO[bytes]]) -> Iterator[Record | SnapshotProblem]:
    if unit.kind == BROKEN:
        yield SnapshotProblem(unit.path, f"byte {unit.offset}", unit.note)
        return
    if unit.kind == TAR_STREAM:
        yield from _tar_stream(unit, handles)
        return
    ctx = Context(unit.path, unit.member, unit.part if unit.kind == PART else None)
    try:
        with open(unit.path, "rb") as handle:
            handles.append(handle)
            if unit.kind == PART:
                yield from _part(ctx, handle, unit.offset, unit.offset + unit.length)
            elif unit.kind == MEMBER:
                handle.seek(unit.offset)
                yield from _stream(ctx, io.BufferedReader(_Slice(handle, unit.length), base.CHUNK))
            else:
                yield from _stream(ctx, handle)
    except STREAM_ERRORS as exc:
        yield ctx.problem(ctx.last(), _unreadable(exc, "member" if unit.member else "file"))


def _unreadable(exc: BaseException, what: str) -> str:
    if isinstance(exc, EOFError):
        return f"the data ends early (truncated? {exc}); {what} not read further"
    return f"unreadable ({type(exc).__name__}: {exc}); {what} not read further"


class _Slice(io.RawIOBase):
    """`length` bytes of a file from where it stands: one member's data inside a plain tar."""

    def __init__(self, handle: IO[bytes], length: int) -> None:
        self.handle = handle
        self.left = length

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.left <= 0:
            return 0
        view = memoryview(buffer)[: min(len(buffer), self.left)]
        got = self.handle.readinto(view)
        self.left -= got or 0
        return got or 0


def _tar_stream(unit: Unit, handles: list[IO[bytes]]) -> Iterator[Record | SnapshotProblem]:
    """The members of a .tar.gz one after the other, inflated once, in one pass."""
    ctx = Context(unit.path)
    try:
        with open(unit.path, "rb") as handle:
            handles.append(handle)
            outer = _Guard(igzip.IGzipFile(fileobj=handle, mode="rb"))
            tar = tarfile.open(fileobj=outer, mode="r|")
            last = None
            while True:
                try:
                    info = tar.next()
                except STREAM_ERRORS as exc:
                    after = f"after member {last}" if last else ""
                    yield ctx.problem(after, _unreadable(exc, "archive"))
                    return
                tar.members = []
                if info is None:
                    return
                last = info.name
                if not wanted(info):
                    continue
                member = Context(unit.path, info.name)
                try:
                    yield from _stream(member, tar.extractfile(info))  # type: ignore[arg-type]
                except STREAM_ERRORS as exc:
                    if outer.error is not None:  # the archive itself is broken: nothing after it can be read
                        yield member.problem(member.last(), _unreadable(outer.error, "archive"))
                        return
                    yield member.problem(member.last(), _unreadable(exc, "member"))
    except STREAM_ERRORS as exc:
        yield ctx.problem("", _unreadable(exc, "archive"))


class _Guard(io.RawIOBase):
    """The archive's own inflated stream, remembering its failure (a member's is not fatal)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.error: BaseException | None = None

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        try:
            return self.stream.read(size)
        except STREAM_ERRORS as exc:
            self.error = exc
            raise


def _chunks(stream: IO[bytes]) -> Iterator[bytes]:
    """The stream in pieces of up to CHUNK bytes; one inflating read each, so that the data
    before a truncation or corruption still comes out before the error does."""
    read = getattr(stream, "read1", stream.read)
    while chunk := read(base.CHUNK):
        yield chunk


# Archives and compressions a snapshot may come in, once downloaded, that are read here only
# once unpacked: named, so that the problem says what to do rather than showing bytes.
_OTHER_FORMATS = [
    (b"PK\x03\x04", "a zip archive (unzip it and give the folder)"),
    (b"BZh", "a bzip2 file (bunzip2 it)"),
    (b"\xfd7zXZ\x00", "an xz file (unxz it)"),
    (b"\x28\xb5\x2f\xfd", "a zstd file (unzstd it)"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive (extract it and give the folder)"),
]


def _stream(ctx: Context, stream: IO[bytes]) -> Iterator[Record | SnapshotProblem]:
    """The records of one stored file or member: gunzipped when it says so, then split."""
    gzipped = stream.peek(2)[:2] == GZIP_MAGIC  # type: ignore[attr-defined]
    if gzipped:
        stream = igzip.IGzipFile(fileobj=stream, mode="rb")
    chunks = _chunks(stream)
    head = b""
    for chunk in chunks:
        head += chunk
        if len(head) >= base.SNIFF:
            break
    if head.startswith(BOM):
        head = head[3:]
    if not head:
        if not gzipped:
            yield ctx.problem("", "empty: no records")
        return
    form = layout(head, ctx.member or ctx.path)
    if form is None:
        known = next((what for magic, what in _OTHER_FORMATS if head.startswith(magic)), None)
        yield ctx.problem("", f"{known}, not a snapshot format; not read" if known else
                          f"neither JSON nor JSON Lines (starts with {head[:20]!r}); not read")
        return
    rest = chain([head], chunks)
    if form == "lines":
        yield from lines(ctx, rest)
        return
    pieces, size = [], 0
    for chunk in rest:
        pieces.append(chunk)
        size += len(chunk)
        if size > base.WHOLE_DOC:
            break
    else:  # a small document (a public data file member): all its items in one typed pass
        data = b"".join(pieces)
        del pieces, head, chunk
        works = _whole(data)
        if works is None:  # a record of the wrong shape, or broken JSON: find it the careful way
            yield from items(ctx, iter([data]))
            return
        del data
        for number, work in enumerate(works, 1):
            ctx.number = number
            yield ctx, number, -1, work
        return
    del head, chunk
    yield from items(ctx, chain(_handed_over(pieces), chunks))
    if gzipped:  # on to the gzip trailer: its CRC is checked there, and a corrupt stream names itself
        for _ in chunks:
            pass


def _handed_over(pieces: list[bytes]) -> Iterator[bytes]:
    """The pieces in order, each let go of as it is handed over."""
    pieces.reverse()
    while pieces:
        yield pieces.pop()


def _whole(data: bytes) -> list[Work] | None:
    """The items of a whole document decoded at once, or None when that fails."""
    try:
        if data[WS.match(data).end():][:1] == b"[":
            return _ARRAY.decode(data)
        doc = _WHOLE.decode(data)
    except msgspec.DecodeError:  # ValidationError included
        return None
    if doc.items is not None:
        return doc.items
    return doc.message.items if doc.message is not None else None


def _part(ctx: Context, handle: IO[bytes], start: int, stop: int) -> Iterator[Record | SnapshotProblem]:
    """The lines of a JSON Lines file that start in [start, stop)."""
    chunks = _chunks(handle)
    if start > 0:  # the line running across `start` belongs to the part before
        handle.seek(start - 1)
        for chunk in chunks:
            newline = chunk.find(b"\n")
            if newline >= 0:
                start += newline
                chunks = chain([chunk[newline + 1:]], chunks)
                break
            start += len(chunk)
        else:
            return
    yield from lines(ctx, chunks, start, stop)
