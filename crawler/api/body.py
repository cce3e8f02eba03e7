"""A page as it came over the wire: still compressed.

A 1,000-row page is ~18 MB of JSON but ~3 MB gzipped. Kept compressed while it waits for a
parser, and inflated in the parser process, it costs the crawler a sixth of the memory per
page in flight and takes decompression off the event loop. Inflating stops at `max_size`,
so a decompression bomb is an error, not an exhausted machine.
"""

from __future__ import annotations

from typing import NamedTuple

from isal import isal_zlib

from crawler.errors import ApiError, PageTooLarge, RetryableError

# zlib's window bits: 31 = gzip, 47 = zlib or gzip, detected from the header.
_WBITS = {"gzip": 31, "x-gzip": 31, "deflate": 47}


class Body(NamedTuple):
    data: bytes
    encoding: str  # the Content-Encoding: "" (none), "gzip" or "deflate"
    max_size: int  # the most bytes it may inflate to

    def inflate(self, head: int | None = None) -> bytes:
        """The decompressed body, or just its first `head` bytes (cheap: the rest stays packed)."""
        encoding = self.encoding.strip().lower()
        if encoding in ("", "identity"):
            return self.data[:head] if head is not None else self.data
        if encoding not in _WBITS:
            raise ApiError(f"the API sent a Content-Encoding we did not ask for: {self.encoding!r}")
        inflater = isal_zlib.decompressobj(_WBITS[encoding])
        try:
            data = inflater.decompress(self.data, head or self.max_size + 1)
        except isal_zlib.error as exc:
            raise RetryableError(f"the page's {encoding} stream is corrupt ({exc})", outage=False) from None
        if head is not None:
            return data
        if len(data) > self.max_size:
            raise PageTooLarge(
                f"a response exceeded {self.max_size / (1024 * 1024):g} MiB once decompressed "
                "(a runaway page or a decompression bomb); its window is fetched again with fewer rows per page"
            )
        if not inflater.eof:
            raise RetryableError(f"the page's {encoding} stream is cut short or corrupt", outage=False)
        return data
