"""An output directory belongs to one state file, and nobody else's run may write into it.

Every state file numbers its files from `events-000001`, so two state files writing into one
directory would complete files over each other's. The first run claims the directory by
writing a marker (`.crawler-output.json`) that names the state file's id; a run of another
state file is refused, and so is a directory that already holds event files nobody claims.
The state records the directory only once it is claimed (it exists and can be written).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from crawler.errors import OutputError, StateError

MARKER = ".crawler-output.json"


@dataclass(frozen=True)
class Output:
    path: Path


def refuse_taken(path: Path, state_id: str | None, state_path: Path) -> bool:
    """Refuse `path` if another state file claims it (`state_id` None: a state file not made yet,
    so any claim is another's) or it holds event files nobody claims; True if it is this one's."""
    marker = path / MARKER
    try:
        owner = json.loads(marker.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        owner = None
    except (OSError, ValueError) as exc:
        raise StateError(f"{marker} cannot be read ({exc}); is {path} this crawler's output directory?") from None
    if owner is not None:
        if owner.get("state_id") != state_id:
            raise StateError(
                f"{path} holds the events of another state file ({owner.get('state', '?')}); "
                f"give {state_path} an output directory of its own with --out"
            )
        return True
    strays = sorted(p.name for p in path.iterdir() if p.name.startswith("events-")) if path.is_dir() else []
    if strays:
        raise StateError(
            f"{path} already holds event files no state file claims ({strays[0]}, ...); "
            "give an empty or new directory with --out"
        )
    return False


def claim(path: Path, state_id: str, state_path: Path) -> Output:
    """Create (if needed) and claim `path` for the state file `state_id`, or refuse."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"cannot create the output directory {path}: a file of that name is in the way") from None
    except OSError as exc:
        raise OutputError(f"cannot create the output directory {path}: {exc.strerror}") from None
    if refuse_taken(path, state_id, state_path):
        return Output(path)  # this state file's own
    marker = path / MARKER
    temporary = path / f"{MARKER}.tmp"
    try:
        temporary.write_text(json.dumps({"state_id": state_id, "state": str(state_path.resolve())}) + "\n",
                             encoding="utf-8")
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, marker)
    except OSError as exc:
        raise OutputError(f"cannot write into the output directory {path}: {exc.strerror}") from None
    return Output(path)
