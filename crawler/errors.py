"""One exception tree: what is retried, what stops the run, what is bad state.

Waiting cures most failures of a shared public API, so almost everything the network does
is a `RetryableError`, retried until it succeeds. A run stops early only for what waiting
cannot fix; each such error has its own exit code (see `EXIT_CODES`).

Messages are written for the operator: one line, what happened and what to do next. None of
them ever carries the Plus token (requests' headers are never put into a message).
"""

from __future__ import annotations

# The exit codes of every command, documented in the README and in `crawler --help`.
EXIT_CODES = {
    0: "done",
    1: "incomplete: windows the API keeps serving short, or snapshot/XML input with problems "
       "(rerun the same command to retry them)",
    2: "bad usage, or a state file or output directory that cannot be used as asked",
    3: "the output or the state file cannot be written (disk full, permissions)",
    4: "the API rejected a request as invalid (its own message is shown)",
    5: "the API refused the credentials (Plus token)",
    6: "the API (or the registration-agency service) could not be reached for longer than --give-up-after",
    130: "stopped by SIGINT (Ctrl-C); rerun to resume",
    143: "stopped by SIGTERM; rerun to resume",
}


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


class DiskError(OutputError):
    """The state file cannot be written (disk full, permissions): nothing committed is lost."""


class ApiError(CrawlerError):
    """An answer from the API (or the RA service) that we could not use."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class FatalApiError(ApiError):
    """Retrying cannot help: the API rejects our request as invalid (400, its own JSON)."""

    exit_code = 4


class CredentialsRefused(FatalApiError):
    """401: the Plus token was refused."""

    exit_code = 5


class Unreachable(ApiError):
    """The API stayed unreachable for longer than the operator allowed (--give-up-after)."""

    exit_code = 6
    advice = "everything so far is saved: run the same command again to resume"


class RetryableError(ApiError):
    """Worth another try after a pause.

    `maybe_advanced`: the server may have processed the request although we lost the answer;
    for a scroll cursor this means a page may be gone, which the window's count will show.
    `outage`: the failure says the service is not answering (5xx, timeouts, resets), as
    opposed to an answer we could not use; enough of them in a row pause the crawl.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        maybe_advanced: bool = True,
        retry_after: float | None = None,
        outage: bool = True,
    ) -> None:
        super().__init__(message, status=status)
        self.maybe_advanced = maybe_advanced
        self.retry_after = retry_after
        self.outage = outage


class RateLimited(RetryableError):
    """429: refused before the backend saw it, so a scroll has not moved."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message, status=429, maybe_advanced=False, retry_after=retry_after, outage=False)


class PageTooLarge(RetryableError):
    """A page over the body-size cap: its window is fetched again with fewer rows per page."""

    def __init__(self, message: str) -> None:
        super().__init__(message, outage=False)


class Stopped(ApiError):
    """A stop (SIGINT/SIGTERM) came while a request waited on a failing service: it is not
    tried again. What waited on it ends uncommitted, to be read again by the next run."""

    exit_code = 130


class CursorInvalid(ApiError):
    """404 cursor-invalid: the scroll expired or is unknown; the window must restart."""
