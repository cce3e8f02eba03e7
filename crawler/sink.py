"""Output files: `events-NNNNNN.jsonl.gz`, written as `….jsonl.gz.part` until complete.

Exactly-once rests on one rule: bytes are appended and fsynced *before* the state commits the
file's new length, and on start-up the part file is cut back to the committed length. Bytes
past it belong to a page whose seen keys were never committed, so that page is redone.
A part file gets its final name (and the state moves to the next number) when it is large
enough and whenever a run stops cleanly, so no partial file survives a clean stop. Completing
is safe at every step against a crash or a power cut: the state first records the file's full
length durably (the caller's job), then the final name is linked to the part file (never over
an existing file), the part name removed and the directory fsynced, and only then does the
state move on; `recover` finishes whichever step a crash interrupted.

`CRAWLER_CRASH_AT` names a step (see `crash_point`) at which the process kills itself: the
tests use it to crash the crawler at every step of a completion.
"""

from __future__ import annotations

import os
from pathlib import Path

from crawler.errors import OutputError

PART_SUFFIX = ".jsonl.gz.part"
_CRASH_AT = os.environ.get("CRAWLER_CRASH_AT", "")


def crash_point(step: str) -> None:
    """Die here, as a power cut or SIGKILL would, if the tests asked for it."""
    if step == _CRASH_AT:
        os.kill(os.getpid(), 9)
FINAL_SUFFIX = ".jsonl.gz"
ROTATE_BYTES = 256 * 1024 * 1024


class Sink:
    def __init__(self, out_dir: Path, seq: int, offset: int, rotate_bytes: int = ROTATE_BYTES) -> None:
        self.out_dir = out_dir
        self.seq = seq
        self.offset = offset
        self.rotate_bytes = rotate_bytes
        self._file: int | None = None
        # Set when the file holds bytes the state never committed and they could not be cut
        # off: nothing more may be appended or renamed; the next start's recover() cuts them.
        self.stuck = False

    def path(self, seq: int | None = None, *, final: bool = False) -> Path:
        name = f"events-{self.seq if seq is None else seq:06d}"
        return self.out_dir / (name + (FINAL_SUFFIX if final else PART_SUFFIX))

    def recover(self) -> bool:
        """Make the files agree with the committed position. True if the position moved
        (a rename had happened before the crash): the caller must then commit it."""
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create the output directory {self.out_dir}: {exc.strerror}") from None
        part, final = self.path(), self.path(final=True)
        if part.exists() and final.exists() and os.path.samefile(part, final):
            part.unlink()  # completed, but the crash came before the part name went
            _fsync_dir(self.out_dir)
        if final.exists() and not part.exists():
            size = final.stat().st_size
            if self.offset == 0 or size != self.offset:
                raise OutputError(
                    f"{final} exists but the state records {self.offset} bytes for it ({size} on disk): "
                    "it was not written by this state file's last run. Move it away, or use another --out"
                )
            self.seq, self.offset = self.seq + 1, 0  # completed before the crash: move on
            return True
        if part.exists():
            if part.stat().st_size < self.offset:
                raise OutputError(
                    f"{part} is shorter than the state records ({part.stat().st_size} < "
                    f"{self.offset} bytes): the output was changed behind the crawler's back"
                )
            with open(part, "r+b") as handle:
                handle.truncate(self.offset)
                os.fsync(handle.fileno())
            if self.offset == 0:
                part.unlink()
            return False
        if self.offset == 0:
            return False
        raise OutputError(
            f"{part} is missing although the state records {self.offset} bytes in it: "
            "events would be lost. Restore the file, or start over with a new --state and --out."
        )

    def append(self, data: bytes) -> int:
        """Append and fsync; returns the new length to commit. Blocking: call in a thread."""
        if self.stuck:
            raise OutputError(f"{self.path()} holds uncommitted bytes; the next run cuts them off")
        if self._file is None:
            try:
                self._file = os.open(self.path(), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            except OSError as exc:
                raise OutputError(f"cannot write {self.path()}: {exc.strerror}") from None
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._file, view)
                view = view[written:]
            os.fsync(self._file)
        except OSError as exc:
            # Cut back what went in, so the file stays equal to the committed length.
            self._close()
            try:
                os.truncate(self.path(), self.offset)
            except OSError:
                self.stuck = True  # recover() will do it on the next start; rename nothing before
            raise OutputError(f"cannot write {self.path()}: {exc.strerror or exc}") from None
        self.offset += len(data)
        return self.offset

    def rollback(self, offset: int) -> None:
        """Cut the file back to `offset` after the state failed to commit what was appended
        past it: those events belong to a page that will be fetched and written again."""
        self._close()
        try:
            os.truncate(self.path(), offset)
        except OSError:
            self.stuck = True
        self.offset = offset

    def wants_rotation(self) -> bool:
        return self.offset >= self.rotate_bytes

    def finish_file(self) -> Path | None:
        """Give the current part file its final name, never replacing a file; the caller has
        made its length durable in the state before, and commits (seq, 0) after."""
        self._close()
        if self.offset == 0 or self.stuck:
            return None
        part, final = self.path(), self.path(final=True)
        crash_point("complete:before-link")
        try:
            os.link(part, final)
        except FileExistsError:
            raise OutputError(f"{final} already exists: refusing to replace it (was another run writing here?)") from None
        except OSError as exc:
            raise OutputError(f"cannot complete {part}: {exc.strerror}") from None
        crash_point("complete:after-link")
        part.unlink()
        crash_point("complete:after-unlink")
        _fsync_dir(self.out_dir)
        crash_point("complete:after-fsync")
        self.seq, self.offset = self.seq + 1, 0
        return final

    def _close(self) -> None:
        if self._file is not None:
            os.close(self._file)
            self._file = None

    def close(self) -> None:
        self._close()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
