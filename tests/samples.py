"""The recorded Crossref responses, XML and events that tests and benchmarks read.

They live in the repository, in `tests/data/crossref/` (provenance and licences in its
SOURCES.md). Files over 200 KB are stored gzip-compressed as `NAME.gz`; `sample_path` and
`sample_bytes` take the original name and find either form. A missing sample is an error
that names the file, never a skip: a test that cannot read its data must fail.
"""

from __future__ import annotations

import gzip
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data" / "crossref"


def sample_path(name: str) -> Path:
    """The stored file of a sample, e.g. `rest-api/works-cursor-page-0.json` (maybe `….gz`)."""
    for path in (DATA / name, DATA / f"{name}.gz"):
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"the recorded sample {name} is missing from {DATA} "
        "(the repository's own copy; see SOURCES.md there)"
    )


def sample_bytes(name: str) -> bytes:
    """A sample's original bytes, inflated when it is stored compressed."""
    path = sample_path(name)
    data = path.read_bytes()
    return gzip.decompress(data) if path.name.endswith(".gz") else data


def sample_names(folder: str, suffix: str) -> list[str]:
    """Original names (`folder/NAME`) of the samples in a folder whose name ends in `suffix`."""
    names = {p.name.removesuffix(".gz") for p in (DATA / folder).iterdir()}
    if not names:
        raise FileNotFoundError(f"no recorded samples in {DATA / folder}")
    return sorted(f"{folder}/{n}" for n in names if n.endswith(suffix))
