"""Keep a long run's resident memory to what it uses: glibc's malloc, tuned once per process."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

_M_MMAP_THRESHOLD = -3  # from glibc's malloc.h
BIG_BLOCK = 128 * 1024  # glibc's own starting threshold


def map_big_blocks() -> bool:
    """Serve every block of BIG_BLOCK or more from its own mapping, given back when freed.

    glibc does that at first, but raises the threshold to the size of each such block freed
    (up to 32 MB): after the first page, each page's body, its inflated 18 MB and its big
    strings come from the heap, and the holes they leave stay resident. Fixed, the peak of a
    heavy backfill is ~10% lower (BENCHMARKS.md). Returns False where malloc is not glibc's,
    and leaves a threshold set with glibc's MALLOC_MMAP_THRESHOLD_ alone.
    """
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    # Only glibc has gnu_get_libc_version; another libc's mallopt numbers mean other things.
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, BIG_BLOCK))
