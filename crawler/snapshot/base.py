"""What the snapshot modules share: the limits, the unit and batch types, where a record is."""

from __future__ import annotations

import tarfile
import zlib
from dataclasses import dataclass
from typing import NamedTuple

from isal import isal_zlib

from crawler.model import Work

# Limits, read at use (tests lower them to reach every edge with small files).
CHUNK = 256 << 10  # bytes inflated / read at a time (what a truncation can cost of the data before it)
MAX_RECORD = 64 << 20  # one record (a line or an item) larger than this is reported and skipped
PART_BYTES = 256 << 20  # an uncompressed JSON Lines file is cut into parts of this size
SNIFF = 64 << 10  # bytes looked at to tell a document from JSON Lines
WHOLE_DOC = 32 << 20  # a JSON document up to this size (inflated) is decoded in one typed pass

# Unit kinds
FILE = "file"  # a whole file on disk (offset 0, length its size)
PART = "part"  # bytes [offset, offset + length) of an uncompressed JSON Lines file: the lines starting there
MEMBER = "member"  # a member of a plain tar: its data at [offset, offset + length)
TAR_STREAM = "tar-stream"  # a whole .tar.gz, read member after member
BROKEN = "broken"  # what listing a file found wrong; reading the unit reports `note`

SUFFIXES = (".json", ".json.gz", ".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")
ARCHIVES = (".tar", ".tar.gz", ".tgz")
LINES_NAMES = (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")
GZIP_MAGIC = b"\x1f\x8b"
BOM = b"\xef\xbb\xbf"
# Errors of bad data from the file, gzip and tar layers; anything else is a bug and is raised.
STREAM_ERRORS = (OSError, EOFError, isal_zlib.error, zlib.error, tarfile.TarError)


@dataclass(frozen=True)
class Unit:
    """A piece of a snapshot that one process reads from its start; small and picklable.

    `key` is stable across runs (the engine's state names units by it): the file's absolute path,
    `path::member` for a tar member, `path#N` for part N of a split file. `offset` and `length`
    locate the unit's stored bytes in `path` (compressed size where compressed), for progress.
    `stamp`: the file's size and modification time when listed (`size:mtime_ns`): progress
    recorded under another stamp is of another file at this path (copied over it), not of this one.
    `sequential`: one stream too big to split (a .tar.gz, a gzip file or a JSON document over
    `part_bytes`): read by one process in one go, its batches streamed; a resume reads it again
    from its start up to the resume point.
    """

    key: str
    path: str  # absolute
    member: str | None  # tar member name (kind MEMBER)
    offset: int
    length: int
    kind: str = FILE
    sequential: bool = False
    part: int = 0  # kind PART: the part's number
    note: str = ""  # kind BROKEN: the problem
    stamp: str = ""  # the file's `size:mtime_ns` when listed


class SnapshotProblem(NamedTuple):
    path: str  # the file on disk
    where: str  # "record 17", "line 17", "member 0007.json.gz, record 17", "member x.json.gz", "file", ...
    message: str


class Batch(NamedTuple):
    works: list[Work]
    problems: list[SnapshotProblem]
    records: int  # records consumed by this batch, good or bad (not the skipped ones)
    end: bool  # the unit is finished
    position: int = 0  # bytes of the unit's stored data read so far (about: reads run ahead), for progress


class Bad(NamedTuple):
    """A record that could not even be cut out of the data: counted, reported, never decoded."""

    message: str


class Context:
    """Where records come from (file, member, part) and how far it got, to name them in problems."""

    def __init__(self, path: str, member: str | None = None, part: int | None = None) -> None:
        self.path = path
        self.member = member
        self.part = part
        self.noun = "record"  # or "line"
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


# What the splitters hand on: (context, record or line number, byte offset, the record's bytes,
# or its Work when decoded with its whole document, or Bad), or a problem of the stream itself.
Record = tuple[Context, int, int, "bytes | memoryview | Work | Bad"]


def wanted(info: tarfile.TarInfo) -> bool:
    """A tar member to read: a regular file named like JSON, not hidden (macOS `._x` files)."""
    base = info.name.rsplit("/", 1)[-1]
    return info.isreg() and not base.startswith(".") and base.lower().endswith(SUFFIXES)
