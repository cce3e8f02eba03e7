"""The repository is self-contained: a clone in an empty folder has every file its tests,
benchmarks and docs read (scripts/check_fresh_clone.sh runs the whole suite in one)."""

from __future__ import annotations

import re
import subprocess

from tests.conftest import ROOT
from tests.samples import DATA, sample_bytes, sample_path

MAX_TRACKED_BYTES = 2 * 1024 * 1024


def _tracked() -> list[str]:
    return subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()


def test_every_sample_in_the_provenance_table_is_in_the_repository_with_its_size():
    table = (DATA / "SOURCES.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| ([\w./-]+) \| .* \| (\d+) \|$", table, re.MULTILINE)
    assert len(rows) >= 40
    for name, size in rows:
        assert len(sample_bytes(name)) == int(size), name
    stored = {p.relative_to(DATA).as_posix().removesuffix(".gz") for p in DATA.rglob("*") if p.is_file()}
    assert stored - {"SOURCES.md"} == {name for name, _ in rows}, "a sample without provenance, or the reverse"


def test_a_missing_sample_is_an_error_naming_it_not_a_skip():
    try:
        sample_path("rest-api/no-such-recording.json")
    except FileNotFoundError as exc:
        assert "no-such-recording.json" in str(exc)
    else:
        raise AssertionError("a missing sample must raise")


def test_no_tracked_file_is_over_2_mb():
    big = [(name, (ROOT / name).stat().st_size) for name in _tracked()
           if (ROOT / name).is_file() and (ROOT / name).stat().st_size > MAX_TRACKED_BYTES]
    assert big == []


def test_nothing_reads_outside_the_repository():
    """What `grep -rn "shared/" tests scripts crawler README.md` would find, and parent paths."""
    outside = re.compile(r"shared/|CROSSREF_SAMPLES|parents\[2\]|\.\./")
    found = []
    for name in _tracked():
        if not (ROOT / name).is_file():
            continue
        if name == "README.md" or (name.split("/")[0] in ("tests", "scripts", "crawler") and name.endswith((".py", ".sh", ".md"))):
            if name == "tests/test_repository.py":
                continue
            for number, line in enumerate((ROOT / name).read_text(encoding="utf-8").splitlines(), 1):
                if outside.search(line):
                    found.append(f"{name}:{number}: {line.strip()}")
    assert found == []
