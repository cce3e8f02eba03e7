"""Paths -> units: files found and told apart by content, plain tars listed from their headers."""

from __future__ import annotations

import os
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from isal import isal_zlib

from crawler.errors import UsageError
from crawler.output import MARKER as OUTPUT_MARKER
from crawler.snapshot import base
from crawler.snapshot.base import (
    ARCHIVES, BOM, BROKEN, FILE, GZIP_MAGIC, MEMBER, PART, STREAM_ERRORS, SUFFIXES, TAR_STREAM, Unit, wanted,
)
from crawler.snapshot.jsontext import layout
from crawler.store import file_stamp


def list_units(paths: Iterable[Path], *, part_bytes: int | None = None) -> Iterator[Unit]:
    """The units of the files and directories named, in a deterministic order.

    Paths in the order given, directories walked recursively in sorted order (hidden entries left
    out), tar members in archive order, each file once. A directory contributes its files named
    *.json, *.jsonl (also .gz), *.tar, *.tar.gz, *.tgz and any other file whose content is one of
    those; a file named explicitly is always read. A plain tar is listed from its headers alone
    (its members' data is never read here). A missing path raises UsageError before any unit, a
    folder holding no snapshot file once it is reached. A crawler's output folder (any state's:
    its event files are JSON Lines too) is never walked into, and refused when named.
    """
    part_bytes = part_bytes or base.PART_BYTES
    paths = [Path(p) for p in paths]
    for path in paths:
        if not path.exists():
            raise UsageError(f"no such file or directory: {path} (give snapshot files or directories)")
        if _is_output(str(path)):
            raise UsageError(f"{path} is a crawler's output folder (its events), not a snapshot")
    seen: set[str] = set()
    for path in paths:
        root = os.path.abspath(path)
        files = ((f, False) for f in _walk(root)) if os.path.isdir(root) else iter([(root, True)])
        found = False
        for file, explicit in files:
            found = found or file in seen
            if file not in seen:
                seen.add(file)
                for unit in _file_units(file, explicit, part_bytes):
                    found = True
                    yield unit
        if not found:  # a typo'd or still empty download folder is not a finished snapshot
            raise UsageError(f"no snapshot files in {path}: give a folder holding .json, .jsonl (or .json.gz, "
                             ".jsonl.gz), .tar, .tar.gz or .tgz files")


def _walk(root: str) -> Iterator[str]:
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not _is_output(os.path.join(directory, d)))
        for name in sorted(files):
            if not name.startswith("."):
                yield os.path.join(directory, name)


def _is_output(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, OUTPUT_MARKER))


def _file_units(path: str, explicit: bool, part_bytes: int) -> Iterator[Unit]:
    info = os.stat(path)
    size, stamp = info.st_size, file_stamp(info)
    lower = path.lower()
    kind = sniff(path)
    if kind == "tar" or (kind is None and lower.endswith(".tar")):
        yield from _tar_units(path, stamp)
    elif kind == "tgz":
        yield Unit(path, path, None, 0, size, TAR_STREAM, sequential=True, stamp=stamp)
    elif kind == "lines" and size > part_bytes:
        for part, offset in enumerate(range(0, size, part_bytes)):
            yield Unit(f"{path}#{part}", path, None, offset, min(part_bytes, size - offset), PART, part=part,
                       stamp=stamp)
    elif kind is not None or explicit or lower.endswith(SUFFIXES + ARCHIVES):
        yield Unit(path, path, None, 0, size, FILE, sequential=size > part_bytes, stamp=stamp)


def sniff(path: str) -> str | None:
    """'tar', 'tgz', 'gzip' (JSON inside), 'lines', 'doc' (uncompressed JSON), or None.

    From the first 4 KB: a listing of 30,000 files reads little more than their first blocks.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except OSError:
        return None
    if head[257:262] == b"ustar":
        return "tar"
    if head[:2] == GZIP_MAGIC:
        try:
            inflated = isal_zlib.decompressobj(31).decompress(head, 1024)
        except (isal_zlib.error, zlib.error):
            return "gzip"  # corrupt from its start: reading reports it
        if inflated[257:262] == b"ustar":
            return "tgz"
        return "gzip" if inflated.lstrip(BOM + b" \t\r\n")[:1] in (b"{", b"[") else None
    return layout(head, path)


def _tar_units(path: str, stamp: str) -> Iterator[Unit]:
    """A unit per member of a plain tar whose name says JSON, from the headers (data never read).

    tarfile stops quietly at a cut or unreadable header; a tar ends with zero blocks, so anything
    else after the last member is reported (as a BROKEN unit).
    """
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
                if not wanted(info):
                    continue
                key = f"{path}::{info.name}"
                if info.name in names:  # a member appended again: both are read
                    key = f"{key}@{info.offset_data}"
                names.add(info.name)
                yield Unit(key, path, info.name, info.offset_data, info.size, MEMBER, stamp=stamp)
    except STREAM_ERRORS as exc:
        if last is None:
            yield _broken(path, 0, f"not a readable tar ({exc})", stamp)
        elif end > os.path.getsize(path):
            yield _cut_inside(path, last, stamp)
        else:
            yield _broken(path, end, f"the tar is unreadable after member {last} ({exc}): truncated? "
                                     "members after it are not read", stamp)
        return
    if end > os.path.getsize(path):
        yield _cut_inside(path, last, stamp)
        return
    with open(path, "rb") as handle:
        handle.seek(end)
        block = handle.read(512)
    if len(block) < 512:
        after = f" after member {last}" if last else ""
        yield _broken(path, end, f"the tar ends without its end-of-archive blocks{after}: truncated? "
                                 "members after it are missing", stamp)
    elif block.strip(b"\0"):
        yield _broken(path, end, f"unreadable tar header at byte {end}: members from there on are not read",
                      stamp)


def _cut_inside(path: str, member: str | None, stamp: str) -> Unit:
    size = os.path.getsize(path)
    return _broken(path, size, f"the tar ends inside member {member}: truncated? members after it are missing",
                   stamp)


def _broken(path: str, offset: int, message: str, stamp: str) -> Unit:
    return Unit(f"{path}::#listing", path, None, offset, 0, BROKEN, note=message, stamp=stamp)
