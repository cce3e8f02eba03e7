"""Crossref snapshot files -> `Work`s, streamed in units that parser processes read on their own.

    from crawler.snapshot import Batch, SnapshotProblem, Unit, list_units, read_unit

What is read (the format is decided by content; names only pick files out of directories):
- the public data file 2020-2024: a `.tar` of `N.json.gz`, each `{"items": [work, ...]}` (2023
  pretty-printed, `"items" :` on the second line); read in place, one unit per member;
- the public data file 2025 on: `*.jsonl.gz`, one work per line, in a directory (one unit per
  file) or in a tar;
- a Metadata Plus snapshot: `all.json.tar.gz`, a gzipped tar of `{"items": [...]}` files;
- single `.json` / `.jsonl` files, gzipped or not, the API's envelope
  `{"message": {"items": [...]}}`, and a bare JSON array of works.

A unit is a piece that one process reads from its start: a member of a plain tar, a file, a
byte range ("part") of a big uncompressed JSON Lines file, or a whole `.tar.gz` (not seekable).
`read_unit` yields `Batch`es of up to `batch` records in order; `records` counts every record
consumed, good or bad, so the engine's resume position is a record count, and `skip` passes
that many records over cheaply: they are cut out (lines split, or JSON values skipped by msgspec
at C speed) but not decoded. Records decode straight into `crawler.model.Work` (msgspec, typed:
the fields events do not need are skipped); a document of up to WHOLE_DOC bytes inflated (a
public data file member is ~10 MB) is decoded in one typed pass.

What a resume (a rerun with `skip`) costs, per format:
- plain `.tar` (public data 2020-2024): finished members are skipped by key; the interrupted
  member is sought to and read again from its start (a few MB inflated and decoded);
- a directory of files (public data 2025+): finished files are skipped by key; the interrupted
  file is inflated again from its start, `skip` records cut out and passed over undecoded;
- `.tar.gz` / `.tgz` (Plus snapshots): one `sequential` unit: the archive is inflated again from
  its start up to the resume point, the skipped records cut out but not decoded (small member
  documents are decoded whole, skipped records included);
- a single gzip file (`.json.gz`, `.jsonl.gz`): one unit, `sequential` when over `part_bytes`;
  a resume costs what a `.tar.gz`'s does: inflate from the start, cut out, skip;
- an uncompressed `.jsonl` over `part_bytes`: parts of `part_bytes` (256 MiB), each sought to
  directly, so a resume reads again at most what its part holds before the resume point;
- an uncompressed `.json` document: one unit (no safe place to cut a JSON array), scanned again
  from its start up to the resume point (`sequential` when over `part_bytes`).

Memory stays bounded whatever the sizes: data is inflated and scanned CHUNK bytes at a time, a
document is decoded whole only up to WHOLE_DOC, a batch holds at most `batch` works, and a record
over MAX_RECORD is reported, not kept.

Bad input never raises out of `read_unit`: a line that is not JSON, a record of the wrong shape
(salvaged field by field with `crawler.decode.salvage`), a record without a DOI, a corrupt gzip
member, a truncated file, tar or document come back as `SnapshotProblem`s naming the file and the
record, line or member, and reading goes on wherever the format allows: the next line of JSON
Lines, the next member of a tar. A document broken inside its items list cannot be resynchronised
and is read up to there. What listing a plain tar finds wrong (cut, unreadable header) comes back
as a unit of kind BROKEN whose reading yields just that problem.
"""

from crawler.snapshot.base import (
    BROKEN, FILE, MEMBER, PART, TAR_STREAM, Batch, SnapshotProblem, Unit,
)
from crawler.snapshot.listing import list_units
from crawler.snapshot.reading import read_unit

__all__ = [
    "BROKEN", "FILE", "MEMBER", "PART", "TAR_STREAM", "Batch", "SnapshotProblem", "Unit", "list_units", "read_unit",
]
