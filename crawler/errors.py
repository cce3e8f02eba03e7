"""One exception tree: what is retried, what stops the run, what is bad state.

Messages are written for the operator: one line, what happened and what to do next. None of
them ever carries the Plus token (requests' headers are never put into a message).
"""

from __future__ import annotations


class CrawlerError(Exception):
    """Base of every error the crawler raises on purpose; `str()` is the one-line message.

    `advice`, when set, is what the operator can do next; the CLI prints it after the message.
    """

    exit_code = 1
    advice = ""


class StateError(CrawlerError):
    """The state file cannot be used: foreign, corrupt, locked or belonging to another job."""

    exit_code = 2


class UsageError(CrawlerError):
    """A flag or argument is wrong."""

    exit_code = 2


class OutputError(CrawlerError):
    """The output directory cannot be written (disk full, permissions, missing part file)."""

    exit_code = 3


class ApiError(CrawlerError):
    """An answer from the API (or the RA service) that we could not use."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class FatalApiError(ApiError):
    """Retrying cannot help: our request is wrong (4xx) or our credentials are (401)."""

    exit_code = 4


class RetryableError(ApiError):
    """Worth another try after a pause.

    `maybe_advanced`: the server may have processed the request although we lost the answer;
    for a scroll cursor this means the page may be gone, so the window restarts instead.
    """

    advice = ("the API kept failing after every retry; everything so far is saved: check the "
              "network and --api-url / --ra-url, then run the same command again to resume")

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        maybe_advanced: bool = True,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status)
        self.maybe_advanced = maybe_advanced
        self.retry_after = retry_after


class RateLimited(RetryableError):
    """429: refused before the backend saw it, so a scroll has not moved."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message, status=429, maybe_advanced=False, retry_after=retry_after)


class CursorInvalid(ApiError):
    """404 cursor-invalid: the scroll expired or is unknown; the window must restart."""


class WindowIncomplete(CrawlerError):
    """A window's scroll ended with fewer items than `total-results`, or broke."""
