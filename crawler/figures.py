"""How numbers are said to the operator: a count with its noun, a duration, a rate.

One place, so that the progress lines, the panel, `status` and the run's last word all say
"1 record" and "2 records", "3 h 05 min", and never "0 s" for something that is not done.
"""

from __future__ import annotations

import math


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """'1 record', '2 records', '1,204 windows' (`plural` for nouns not made with an s)."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


def duration(seconds: float | None) -> str:
    """'42 s', '12 min', '3 h 05 min', '4 d 2 h'; None (not known yet) is 'unknown'. Seconds
    are rounded up: something left to do never reads '0 s'."""
    if seconds is None:
        return "unknown"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min" if minutes else f"{math.ceil(seconds)} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    return f"{hours // 24} d {hours % 24} h"


def per_hour(count: int, seconds: float) -> float:
    """`count` over `seconds`, per hour (0 for a run of no length)."""
    return count * 3600 / seconds if seconds > 0 else 0.0


def few(paths: list[str], most: int = 3) -> str:
    """A few paths by name, and how many more: 'a, b, c and 4 more files'."""
    return ", ".join(paths[:most]) + (f" and {counted(len(paths) - most, 'more file')}" if len(paths) > most else "")
