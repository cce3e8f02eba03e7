"""Crossref snapshot files -> `Work`s, streamed in units that parser processes read on their own.

What is read (the format is decided by content; names only pick files out of directories):
- the public data file 2020-2024: a `.tar` of `N.json.gz`, each `{"items": [work, ...]}` (2023
  pretty-printed, `"items" :` on the second line); read in place, one unit per member;
- the public data file 2025 on: `*.jsonl.gz`, one work per line, in a directory (one unit per
  file) or in a tar;
- a Metadata Plus snapshot: `all.json.tar.gz`, a gzipped tar of `{"items": [...]}` files;
- single `.json` / `.jsonl` files, gzipped or not, and the API's envelope
  `{"message": {"items": [...]}}`; a bare JSON array of works is read too.

A unit is a piece that one process reads from its start: a member of a plain tar, a file, a
byte range ("part") of a big uncompressed JSON Lines file, or a whole `.tar.gz` (not seekable).
`read_unit` yields `Batch`es of up to `batch` records in order; `records` counts every record
consumed, good or bad, so the engine's resume position is a record count, and `skip` passes that
many records over without decoding them (they are only split: lines cut, or JSON values skipped
by msgspec at C speed).

What a resume (a rerun with `skip`) costs, per format:
- plain `.tar` (public data 2020-2024): finished members are skipped by key; the interrupted
  member is sought to and inflated again from its start (a few MB);
- a directory of files (public data 2025+): finished files are skipped by key; the interrupted
  file is inflated again from its start and `skip` records are passed over undecoded;
- `.tar.gz` / `.tgz` (Plus snapshots): one `sequential` unit, inflated again from the start of
  the archive up to the resume point, the skipped records split but not decoded;
- a single gzip file (`.json.gz`, `.jsonl.gz`): one unit, `sequential` when bigger than
  `part_bytes`, same cost as a `.tar.gz`: inflate from the start, split, skip;
- an uncompressed `.jsonl` bigger than `part_bytes`: parts of `part_bytes`, each sought to
  directly, so a resume re-reads at most one part; an uncompressed `.json` document cannot be
  split (no safe place to cut a JSON array) and is one unit, scanned again up to the resume point.

Memory stays bounded: data is inflated and scanned in chunks of CHUNK bytes, a batch holds at
most `batch` works, and a single record larger than MAX_RECORD is reported, not buffered.

Bad input never raises out of `read_unit`: a line that is not JSON, a record of the wrong shape
(salvaged field by field with `crawler.decode.salvage`), a corrupt gzip member, a truncated file,
tar or record come back as `SnapshotProblem`s with the file and the record, line or member, and
reading goes on wherever the format allows: the next line of JSON Lines, the next member of a tar.
A JSON document broken inside its items list cannot be resynchronised: it is read up to there.
Problems a plain tar shows while being listed come back as a unit of kind BROKEN whose reading
yields just that problem.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import IO, Any, NamedTuple

import msgspec
from isal import igzip, isal_zlib

from crawler.decode import salvage
from crawler.errors import UsageError
from crawler.model import Problem, Work

CHUNK = 64 << 10  # bytes inflated / read at a time (what a truncation can cost of the data before it)
MAX_RECORD = 64 << 20  # one record (a line or an item) larger than this is reported and skipped
PART_BYTES = 256 << 20  # an uncompressed JSON Lines file is cut into parts of this size
SNIFF = 64 << 10  # bytes looked at to tell a document from JSON Lines

# Unit kinds
FILE = "file"  # a whole file on disk (offset 0, length its size)
PART = "part"  # bytes [offset, offset + length) of an uncompressed JSON Lines file: the lines starting there
MEMBER = "member"  # a member of a plain tar: its data at [offset, offset + length)
TAR_STREAM = "tar-stream"  # a whole .tar.gz, read member after member
BROKEN = "broken"  # what listing a file found wrong; reading it reports `note`

_SUFFIXES = (".json", ".json.gz", ".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")
_ARCHIVES = (".tar", ".tar.gz", ".tgz")
_LINES_NAMES = (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")
_GZIP = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"
# Top-level keys that make a `{` a document of items rather than the first work of JSON Lines.
_DOC_KEYS = {b"items", b"message", b"status", b"message-type", b"message-version"}
# Errors of bad data from the file, gzip and tar layers; anything else is a bug and is raised.
_STREAM_ERRORS = (OSError, EOFError, isal_zlib.error, zlib.error, tarfile.TarError)

_WORK = msgspec.json.Decoder(Work)
_ANY = msgspec.json.Decoder()
_RAW = msgspec.json.Decoder(msgspec.Raw)
_WS = re.compile(rb"[ \t\r\n]*")
_KEY = re.compile(rb'"((?:[^"\\]|\\.)*)"[ \t\r\n]*:[ \t\r\n]*')
_TRAILING = re.compile(r"trailing characters \(byte (\d+)\)")
_AT = re.compile(r"\(byte (\d+)\)")


@dataclass(frozen=True)
class Unit:
    """A piece of a snapshot that one process reads from its start; small and picklable.

    `key` is stable across runs (the engine's state names units by it): the file's absolute path,
    `path::member` for a tar member, `path#N` for part N of a split file. `offset` and `length`
    locate the unit's stored bytes in `path` (compressed size where compressed), for progress.
    `sequential`: one stream too big to split (a .tar.gz, a gzip file over `part_bytes`, a big
    JSON document): read by one process in one go, its batches streamed; a resume re-reads it
    from its start up to the resume point.
    """

    key: str
    path: str
    member: str | None
    offset: int
    length: int
    kind: str = FILE
    sequential: bool = False
    part: int = 0  # kind PART: the part's number
    note: str = ""  # kind BROKEN: the problem


class SnapshotProblem(NamedTuple):
    path: str  # the file on disk
    where: str  # "record 17", "line 17", "member 0007.json.gz, record 17", "member x.json.gz", ...
    message: str


class Batch(NamedTuple):
    works: list[Work]
    problems: list[SnapshotProblem]
    records: int  # records consumed by this batch, good or bad (not the skipped ones)
    end: bool  # the unit is finished


# -- listing -----------------------------------------------------------------------------------

def list_units(paths: Iterable[Path], *, part_bytes: int = PART_BYTES) -> Iterator[Unit]:
    """The units of the files and directories named, in a deterministic order.

    Paths in the order given, directories walked recursively in sorted order (hidden entries left
    out), tar members in archive order, each file once. A directory contributes its files named
    *.json, *.jsonl (also .gz), *.tar, *.tar.gz, *.tgz and any other file whose content is one of
    those; a file named explicitly is always read. A plain tar is listed from its headers alone.
    A missing path raises UsageError before any unit is given.
    """
    paths = [Path(p) for p in paths]
    for path in paths:
        if not path.exists():
            raise UsageError(f"no such file or directory: {path} (give snapshot files or directories)")
    seen: set[str] = set()
    for path in paths:
        root = os.path.abspath(path)
        if os.path.isdir(root):
            files = ((f, False) for f in _walk(root))
        else:
            files = iter([(root, True)])
        for file, explicit in files:
            if file not in seen:
                seen.add(file)
                yield from _file_units(file, explicit, part_bytes)


def _walk(root: str) -> Iterator[str]:
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield os.path.join(directory, name)


def _file_units(path: str, explicit: bool, part_bytes: int) -> Iterator[Unit]:
    size = os.path.getsize(path)
    lower = path.lower()
    kind = _sniff(path)
    if kind == "tar" or (kind is None and lower.endswith(".tar")):
        yield from _tar_units(path, size)
    elif kind == "tgz":
        yield Unit(path, path, None, 0, size, TAR_STREAM, sequential=True)
    elif kind == "lines" and size > part_bytes:
        for part, offset in enumerate(range(0, size, part_bytes)):
            yield Unit(f"{path}#{part}", path, None, offset, min(part_bytes, size - offset), PART, part=part)
    elif kind is not None or explicit or lower.endswith(_SUFFIXES + _ARCHIVES):
        yield Unit(path, path, None, 0, size, FILE, sequential=size > part_bytes)


def _sniff(path: str) -> str | None:
    """'tar', 'tgz', 'gzip' (JSON inside), 'lines', 'doc' (uncompressed JSON), or None."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(SNIFF)
    except OSError:
        return None
    if head[257:262] == b"ustar":
        return "tar"
    if head[:2] == _GZIP:
        try:
            inflated = isal_zlib.decompressobj(31).decompress(head, 1024)
        except (isal_zlib.error, zlib.error):
            return "gzip"  # corrupt from its start: reading reports it
        if inflated[257:262] == b"ustar":
            return "tgz"
        return "gzip" if inflated.lstrip(_BOM + b" \t\r\n")[:1] in (b"{", b"[") else None
    return _layout(head, path)


def _layout(head: bytes, name: str) -> str | None:
    """'doc' ({"items": [...]}, an envelope or an array), 'lines' (JSON Lines) or None, by content."""
    data = head[3:] if head.startswith(_BOM) else head
    start = _WS.match(data).end()
    first = data[start:start + 1]
    if first == b"[":
        return "doc"
    if first == b"{":
        key = _KEY.match(data, _WS.match(data, start + 1).end())
        if key is not None and key.group(1) in _DOC_KEYS:
            return "doc"
        if name.lower().endswith(_LINES_NAMES):
            return "lines"
        newline = data.find(b"\n", start)  # a first line that is not a whole value: pretty-printed
        return "doc" if newline >= 0 and _value_end(data[:newline], start) == -1 else "lines"
    return "lines" if name.lower().endswith(_LINES_NAMES) else None


def _tar_units(path: str, size: int) -> Iterator[Unit]:
    """A unit per member of a plain tar whose name says JSON, from the headers (data never read)."""
    names: set[str] = set()
    end, last = 0, None
    try:
        with tarfile.open(path, "r:") as tar:
            while True:
                info = tar.next()
                tar.members = []  # the listing of a 37,000-member tar need not stay in memory
                if info is None:
                    break
                end = info.offset_data + (info.size + 511) // 512 * 512
                last = info.name
                if not _wanted(info):
                    continue
                key = f"{path}::{info.name}"
                if info.name in names:  # a member appended again: both are read
                    key = f"{key}@{info.offset_data}"
                names.add(info.name)
                yield Unit(key, path, info.name, info.offset_data, info.size, MEMBER)
    except _STREAM_ERRORS as exc:
        if last is None:
            yield _broken(path, 0, f"not a readable tar ({exc})")
        else:
            yield _broken(path, end, f"the tar is unreadable after member {last} ({exc}): truncated? "
                                     "members after it are not read")
        return
    # A tar ends with zero blocks; tarfile silently stops at a cut or unreadable header instead.
    with open(path, "rb") as handle:
        handle.seek(end)
        block = handle.read(512)
    if len(block) < 512:
        after = f" after member {last}" if last else ""
        yield _broken(path, end, f"the tar ends without its end-of-archive blocks{after}: truncated? "
                                 "members after it are missing")
    elif block.strip(b"\0"):
        yield _broken(path, end, f"unreadable tar header at byte {end}: members from there on are not read")


def _broken(path: str, offset: int, message: str) -> Unit:
    return Unit(f"{path}::#listing", path, None, offset, 0, BROKEN, note=message)


def _wanted(info: tarfile.TarInfo) -> bool:
    base = info.name.rsplit("/", 1)[-1]
    return info.isreg() and not base.startswith(".") and base.lower().endswith(_SUFFIXES)


# -- reading -----------------------------------------------------------------------------------

def read_unit(unit: Unit, skip: int = 0, batch: int = 1000) -> Iterator[Batch]:
    """The unit's records as `Batch`es of up to `batch` records, in order; the last has `end`.

    The first `skip` records are passed over undecoded, and problems met before them are not
    reported again (they were, with the batches that consumed them).
    """
    batch = max(1, batch)
    works: list[Work] = []
    problems: list[SnapshotProblem] = []
    consumed = count = 0
    for item in _records(unit):
        if type(item) is SnapshotProblem:
            if consumed >= skip:
                problems.append(item)
            continue
        consumed += 1
        if consumed <= skip:
            continue
        count += 1
        ctx, number, pos, span = item
        if type(span) is _Bad:
            problems.append(SnapshotProblem(unit.path, ctx.where(number, pos), span.message))
        else:
            work = _decode(span, problems, ctx, number, pos)
            if work is not None:
                works.append(work)
        if count >= batch:
            yield Batch(works, problems, count, False)
            works, problems, count = [], [], 0
    yield Batch(works, problems, count, True)


def _decode(span: bytes, problems: list[SnapshotProblem], ctx: _Context, number: int, pos: int) -> Work | None:
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
        problems.append(SnapshotProblem(ctx.path, ctx.where(number, pos), f"{Problem.NO_DOI}: a record with an empty DOI"))
        return None
    return work


class _Bad(NamedTuple):
    """A record that could not even be cut out of the data (counted, reported, never decoded)."""

    message: str


class _Context:
    """Where records come from, to name them in problems."""

    def __init__(self, path: str, member: str | None = None, part: int | None = None) -> None:
        self.path = path
        self.member = member
        self.part = part
        self.noun = "record"
        self.number = 0  # of the last record cut out

    def where(self, number: int, pos: int) -> str:
        if self.part is not None:
            return f"part {self.part}, {self.noun} {number} of the part (byte {pos})"
        return f"{self.prefix}{self.noun} {number}"

    @property
    def prefix(self) -> str:
        return f"member {self.member}, " if self.member else ""

    @property
    def rest(self) -> str:
        return f"the rest of the {'member' if self.member else 'file'} is not read"

    def last(self) -> str:
        return f"after {self.noun} {self.number}" if self.number else ""

    def problem(self, where: str, message: str) -> SnapshotProblem:
        where = f"{self.prefix}{where}" if where else (f"member {self.member}" if self.member else "file")
        return SnapshotProblem(self.path, where, message)


Record = tuple[_Context, int, int, "bytes | _Bad"]


def _records(unit: Unit) -> Iterator[Record | SnapshotProblem]:
    if unit.kind == BROKEN:
        yield SnapshotProblem(unit.path, f"byte {unit.offset}", unit.note)
        return
    if unit.kind == TAR_STREAM:
        yield from _tar_stream(unit)
        return
    ctx = _Context(unit.path, unit.member, unit.part if unit.kind == PART else None)
    try:
        with open(unit.path, "rb") as handle:
            if unit.kind == PART:
                yield from _part(ctx, handle, unit.offset, unit.offset + unit.length)
            elif unit.kind == MEMBER:
                handle.seek(unit.offset)
                yield from _stream(ctx, io.BufferedReader(_Slice(handle, unit.length), CHUNK))
            else:
                yield from _stream(ctx, handle)
    except _STREAM_ERRORS as exc:
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


def _tar_stream(unit: Unit) -> Iterator[Record | SnapshotProblem]:
    """The members of a .tar.gz one after the other, inflated once, in one pass."""
    ctx = _Context(unit.path)
    try:
        with open(unit.path, "rb") as handle:
            outer = _Guard(igzip.IGzipFile(fileobj=handle, mode="rb"))
            tar = tarfile.open(fileobj=outer, mode="r|")
            last = None
            while True:
                try:
                    info = tar.next()
                except _STREAM_ERRORS as exc:
                    after = f"after member {last}" if last else ""
                    yield ctx.problem(after, _unreadable(exc, "archive"))
                    return
                tar.members = []
                if info is None:
                    return
                last = info.name
                if not _wanted(info):
                    continue
                member = _Context(unit.path, info.name)
                try:
                    yield from _stream(member, tar.extractfile(info))  # type: ignore[arg-type]
                except _STREAM_ERRORS as exc:
                    if outer.error is not None:  # the archive itself is broken: nothing after it can be read
                        yield member.problem(member.last(), _unreadable(outer.error, "archive"))
                        return
                    yield member.problem(member.last(), _unreadable(exc, "member"))
    except _STREAM_ERRORS as exc:
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
        except _STREAM_ERRORS as exc:
            self.error = exc
            raise


def _chunks(stream: IO[bytes]) -> Iterator[bytes]:
    """The stream in pieces of up to CHUNK bytes; one inflating read each, so that the data
    before a truncation or corruption still comes out before the error does."""
    read = getattr(stream, "read1", stream.read)
    while chunk := read(CHUNK):
        yield chunk


def _stream(ctx: _Context, stream: IO[bytes]) -> Iterator[Record | SnapshotProblem]:
    """The records of one stored file or member: gunzipped when it says so, then split."""
    gzipped = stream.peek(2)[:2] == _GZIP  # type: ignore[attr-defined]
    if gzipped:
        stream = igzip.IGzipFile(fileobj=stream, mode="rb")
    chunks = _chunks(stream)
    head = b""
    for chunk in chunks:
        head += chunk
        if len(head) >= SNIFF:
            break
    if head.startswith(_BOM):
        head = head[3:]
    if not head:
        if not gzipped:
            yield ctx.problem("", "empty: no records")
        return
    name = ctx.member or ctx.path
    layout = _layout(head, name)
    if layout is None:
        yield ctx.problem("", f"neither JSON nor JSON Lines (starts with {head[:20]!r}); not read")
        return
    rest = chain([head], chunks)
    if layout == "lines":
        yield from _lines(ctx, rest)
        return
    yield from _items(ctx, rest)
    if gzipped:  # on to the gzip trailer: its CRC is checked there, and a corrupt stream names itself
        for _ in chunks:
            pass


def _part(ctx: _Context, handle: IO[bytes], start: int, stop: int) -> Iterator[Record | SnapshotProblem]:
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
    yield from _lines(ctx, chunks, start, stop)


def _lines(ctx: _Context, chunks: Iterator[bytes], pos: int = 0, stop: int | None = None) -> Iterator[Record]:
    """Non-blank lines as (ctx, line number, byte offset, line); blank lines are no records."""
    ctx.noun = "line"
    number = 0
    head = b""
    dropping = False  # inside a line too long to keep
    for chunk in chunks:
        if dropping:
            newline = chunk.find(b"\n")
            if newline < 0:
                pos += len(chunk)
                continue
            pos += newline + 1
            chunk = chunk[newline + 1:]
            dropping = False
        lines = (head + chunk if head else chunk).split(b"\n")
        head = lines.pop()
        for line in lines:
            number += 1
            ctx.number = number
            if stop is not None and pos >= stop:
                return
            if len(line) > MAX_RECORD:
                yield ctx, number, pos, _Bad(f"a line longer than {MAX_RECORD:,} bytes: skipped")
            elif line and not line.isspace():
                yield ctx, number, pos, line
            pos += len(line) + 1
        if len(head) > MAX_RECORD:
            number += 1
            ctx.number = number
            if stop is None or pos < stop:
                yield ctx, number, pos, _Bad(f"a line longer than {MAX_RECORD:,} bytes: skipped")
            pos += len(head)
            head, dropping = b"", True
    if head and not head.isspace() and (stop is None or pos < stop):
        number += 1
        ctx.number = number
        yield ctx, number, pos, head


class _Truncated(Exception):
    pass


class _Malformed(Exception):
    def __init__(self, message: str, at: int = -1) -> None:
        super().__init__(message)
        self.at = at  # offset in the window where msgspec found it wrong, when it said


class _Document:
    """A JSON document read through a window of chunks, for cutting out its items one by one."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.buf = b""
        self.pos = 0
        self.base = 0  # offset of buf[0] in the data
        self.eof = False

    def more(self, want: int = 0) -> bool:
        """Drop what was read, append at least one chunk (and `want` bytes); False at the end."""
        pieces = [self.buf[self.pos:]]
        got = 0
        while not self.eof and (got == 0 or got < want):
            chunk = next(self.chunks, b"")
            if not chunk:
                self.eof = True
            pieces.append(chunk)
            got += len(chunk)
        self.base += self.pos
        self.buf, self.pos = b"".join(pieces), 0
        return got > 0

    def peek(self) -> int | None:
        """The next byte that is not whitespace (moved to), or None at the end of the data."""
        while True:
            self.pos = _WS.match(self.buf, self.pos).end()
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.more():
                return None

    def value_end(self) -> int:
        """Where the JSON value at `pos` is followed by something (or the data ends)."""
        while True:
            try:
                end = _value_end(self.buf, self.pos)
            except _Malformed as exc:
                # A value cut by the end of the window can look wrong rather than cut ("1." is an
                # "invalid number"): near the end, look again with more data before believing it.
                if self.eof or exc.at < len(self.buf) - 64:
                    raise
                end = -1
            if end != -1 and end < len(self.buf):
                return end
            if len(self.buf) - self.pos > MAX_RECORD:
                raise _Malformed(f"a value longer than {MAX_RECORD:,} bytes")
            if not self.more(want=len(self.buf) - self.pos):
                if end == -1:
                    raise _Truncated()
                return end

    def key(self) -> bytes:
        while True:
            match = _KEY.match(self.buf, self.pos)
            if match is not None and (match.end() < len(self.buf) or self.eof):
                self.pos = match.end()
                return match.group(1)
            if len(self.buf) - self.pos > SNIFF or not self.more():
                raise _Malformed("expected a key")

    def find_items(self) -> bool:
        """Move just inside the items list: the document's, its message's, or the array itself."""
        if self.peek() == ord("["):
            self.pos += 1
            return True
        if self.peek() != ord("{"):
            raise _Malformed("expected { or [ at the start")
        self.pos += 1
        depth = 1
        while depth:
            char = self.peek()
            if char is None:
                raise _Truncated()
            if char == ord("}"):
                self.pos += 1
                depth -= 1
                continue
            if char == ord(","):
                self.pos += 1
                continue
            name = self.key()
            char = self.peek()
            if name == b"items" and char == ord("["):
                self.pos += 1
                return True
            if name == b"message" and char == ord("{"):
                self.pos += 1
                depth += 1
                continue
            self.pos = self.value_end()
        return False


def _value_end(buf: bytes, pos: int) -> int:
    """The offset of the first non-space byte after the JSON value at `pos`: len(buf) when
    the value ends the buffer, -1 when the buffer ends inside it. msgspec skips the value
    (C speed, nothing built) and names the offset of what trails it."""
    view = memoryview(buf)[pos:]
    try:
        _RAW.decode(view)
    except msgspec.DecodeError as exc:
        message = str(exc)
        trailing = _TRAILING.search(message)
        if trailing is not None:
            return pos + int(trailing.group(1)) - 1
        if "truncated" in message:
            return -1
        at = _AT.search(message)
        raise _Malformed(message.removeprefix("JSON is malformed: "), pos + int(at.group(1)) if at else len(buf)) from None
    finally:
        view.release()
    return len(buf)


def _items(ctx: _Context, chunks: Iterator[bytes]) -> Iterator[Record | SnapshotProblem]:
    """The items of `{"items": [...]}` (or an envelope, or an array) as (ctx, number, offset, bytes)."""
    doc = _Document(chunks)
    number = 0
    try:
        if not doc.find_items():
            yield ctx.problem("", "a JSON document without an items list: no records")
            return
        if doc.peek() == ord("]"):
            return
        while True:
            try:
                end = doc.value_end()  # may refill the window: the value then starts at the new pos
            except _Malformed as exc:
                ctx.number = number + 1
                yield ctx, number + 1, doc.base + doc.pos, _Bad(f"malformed JSON ({exc}); {ctx.rest}")
                return
            start = doc.pos
            number += 1
            ctx.number = number
            yield ctx, number, doc.base + start, doc.buf[start:end]
            doc.pos = end
            char = doc.peek()
            if char == ord(","):
                doc.pos += 1
                if doc.peek() == ord("]"):  # a trailing comma
                    return
            elif char == ord("]"):
                return
            elif char is None:
                raise _Truncated()
            else:
                raise _Malformed(f"expected , or ] after record {number}")
    except _Truncated:
        yield ctx.problem(f"after record {number}", "the data ends inside the items list (truncated?); "
                                                    "the records before are read")
    except _Malformed as exc:
        yield ctx.problem(f"after record {number}", f"malformed JSON ({exc}); {ctx.rest}")

