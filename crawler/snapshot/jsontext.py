"""Inflated bytes -> records: JSON Lines cut at newlines, a `{"items": [...]}` document cut item by
item, the layout told from the first bytes. Nothing here decodes a record; it only finds it.

A document is read through a window of chunks. msgspec skips each item at C speed (decoding it
as `Raw`) and names, in its error, the offset of what trails it: that is where the item ends.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import msgspec

from crawler.snapshot import base
from crawler.snapshot.base import BOM, LINES_NAMES, Bad, Context, Record, SnapshotProblem

# Top-level keys that make a `{` a document of items rather than the first work of JSON Lines.
_DOC_KEYS = {b"items", b"message", b"status", b"message-type", b"message-version"}
_SPACES = b" \t\r\x0b\x0c"
_RAW = msgspec.json.Decoder(msgspec.Raw)
WS = re.compile(rb"[ \t\r\n]*")
_KEY = re.compile(rb'"((?:[^"\\]|\\.)*)"[ \t\r\n]*:[ \t\r\n]*')
_TRAILING = re.compile(r"trailing characters \(byte (\d+)\)")
_AT = re.compile(r"\(byte (\d+)\)")


def layout(head: bytes, name: str) -> str | None:
    """'doc' (`{"items": [...]}`, an envelope or an array), 'lines' (JSON Lines) or None, by content.

    A `{` starts a document when its first key is a document's (items, message, status...), or
    when its first line is not a whole value (pretty-printed); otherwise one work per line.
    """
    data = head[3:] if head.startswith(BOM) else head
    start = WS.match(data).end()
    first = data[start:start + 1]
    if first == b"[":
        return "doc"
    if first == b"{":
        key = _KEY.match(data, WS.match(data, start + 1).end())
        if key is not None and key.group(1) in _DOC_KEYS:
            return "doc"
        if name.lower().endswith(LINES_NAMES):
            return "lines"
        newline = data.find(b"\n", start)
        return "doc" if newline >= 0 and value_end(data[:newline], start) == -1 else "lines"
    return "lines" if name.lower().endswith(LINES_NAMES) else None


def lines(ctx: Context, chunks: Iterator[bytes], pos: int = 0, stop: int | None = None) -> Iterator[Record]:
    """Non-blank lines as (ctx, line number, byte offset, line); blank lines are no records.

    With `stop`, only the lines that start before it. Lines inside a chunk are handed out as
    memoryviews (no copy); a line over MAX_RECORD is reported as bad and not kept.
    """
    ctx.noun = "line"
    limit = base.MAX_RECORD
    too_long = Bad(f"a line longer than {limit:,} bytes: skipped")
    number = 0
    pending: list[bytes] = []  # the start of a line that runs on into the next chunk
    held = 0  # its length so far
    dropping = False  # that line is too long: skip to its end
    for chunk in chunks:
        start = 0
        if pending or dropping:
            newline = chunk.find(b"\n")
            end = len(chunk) if newline < 0 else newline
            held += end
            if held > limit:
                dropping, pending = True, []
            elif end:
                pending.append(chunk[:end])
            if newline < 0:
                continue
            number += 1
            ctx.number = number
            if stop is not None and pos >= stop:
                return
            if dropping:
                yield ctx, number, pos, too_long
            elif (line := b"".join(pending)) and not line.isspace():
                yield ctx, number, pos, line
            pos += held + 1
            pending, held, dropping = [], 0, False
            start = newline + 1
        view = memoryview(chunk)
        find = chunk.find
        while (newline := find(b"\n", start)) >= 0:
            number += 1
            if stop is not None and pos >= stop:
                return
            if newline > start and not (chunk[start] in _SPACES and chunk[start:newline].isspace()):
                ctx.number = number
                yield ctx, number, pos, (view[start:newline] if newline - start <= limit else too_long)
            pos += newline - start + 1
            start = newline + 1
        if start < len(chunk):
            held = len(chunk) - start
            if held > limit:
                dropping = True
            else:
                pending = [chunk[start:]]
    if (pending or dropping) and (stop is None or pos < stop):
        line = b"".join(pending)
        if dropping or not line.isspace():
            number += 1
            ctx.number = number
            yield ctx, number, pos, too_long if dropping else line


def items(ctx: Context, chunks: Iterator[bytes]) -> Iterator[Record | SnapshotProblem]:
    """The items of `{"items": [...]}` (or an envelope, or an array) as (ctx, number, offset, bytes).

    Broken JSON inside the list ends the reading (no safe way to find the next item): the item
    where it breaks is a bad record, the items before are read.
    """
    doc = _Window(chunks)
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
                yield ctx, number + 1, doc.base + doc.pos, Bad(f"malformed JSON ({exc}); {ctx.rest}")
                return
            start = doc.pos
            number += 1
            ctx.number = number
            yield ctx, number, doc.base + start, memoryview(doc.buf)[start:end]
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


class _Truncated(Exception):
    pass


class _Malformed(Exception):
    def __init__(self, message: str, at: int = -1) -> None:
        super().__init__(message)
        self.at = at  # offset in the window where msgspec found it wrong, when it said


class _Window:
    """A JSON document seen through a window of chunks, for cutting out its items one by one."""

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
            self.pos = WS.match(self.buf, self.pos).end()
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.more():
                return None

    def value_end(self) -> int:
        """Where the JSON value at `pos` is followed by something (or the data ends)."""
        while True:
            try:
                end = value_end(self.buf, self.pos)
            except _Malformed as exc:
                # A value cut by the end of the window can look wrong rather than cut ("1." is an
                # "invalid number"): near the end, look again with more data before believing it.
                if self.eof or exc.at < len(self.buf) - 64:
                    raise
                end = -1
            if end != -1 and end < len(self.buf):
                return end
            if len(self.buf) - self.pos > base.MAX_RECORD:
                raise _Malformed(f"a record longer than {base.MAX_RECORD:,} bytes")
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
            if len(self.buf) - self.pos > base.SNIFF or not self.more():
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


def value_end(buf: bytes, pos: int) -> int:
    """The offset of the first non-space byte after the JSON value at `pos`: len(buf) when the
    value ends the buffer, -1 when the buffer ends inside it; raises _Malformed. msgspec skips
    the value (C speed, nothing built) and names the offset of what trails it, plus one."""
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
        where = pos + int(at.group(1)) if at else len(buf)
        raise _Malformed(message.removeprefix("JSON is malformed: "), where) from None
    finally:
        view.release()
    return len(buf)
