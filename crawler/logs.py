"""Where the crawler's words go: log lines as text, on a live terminal, or as JSON objects.

A log collector gets one JSON object per line, and the figures of a progress line or of a
run's outcome as fields of their own (`works`, `events`, `pages_per_s`, `eta_s`, …), not
only inside `message`, so that a run can be graphed without parsing sentences.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import Any

FIGURES = "figures"  # the LogRecord attribute (logging's `extra`) holding a line's figures


def _now_iso(created: float) -> str:
    return datetime.fromtimestamp(created, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO-8601), level, logger, message, and the figures."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _now_iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, FIGURES, None) or {})
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(verbose: bool, quiet: bool, log_format: str, live: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler: logging.Handler
    if log_format == "json":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
    elif live:
        from rich.logging import RichHandler

        from crawler.progress import console

        handler = RichHandler(console=console, show_path=False, show_level=False, log_time_format="%H:%M:%S")
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.getLogger("crawler").setLevel(level)
    # aiosqlite logs every statement at debug level, from its own thread: noise even with
    # --verbose, and those lines could land after the run's last word (its error message).
    logging.getLogger("aiosqlite").setLevel(logging.WARNING)
    if not verbose:
        logging.getLogger("asyncio").setLevel(logging.WARNING)


def print_outcome(code: int, message: str, figures: dict[str, Any], log_format: str) -> None:
    """A run's last word, whatever --quiet says: stdout when it succeeded, else stderr. As JSON,
    one object with the exit code (`outcome`) and the run's figures."""
    stream = sys.stderr if code else sys.stdout
    if log_format == "json":
        import time

        entry = {"time": _now_iso(time.time()), "level": "error" if code else "info", "logger": "crawler",
                 "message": message, "outcome": code, **figures}
        print(json.dumps(entry, ensure_ascii=False), file=stream, flush=True)
    else:
        print(f"crawler: {message}", file=stream, flush=True)
