"""Crossref XML files (deposits, UNIXREF, UNIXSD, OAI-PMH) as a source of works.

The files are read in order, in batches of up to `rows` records, by one dedicated thread:
lxml keeps per-thread state (its dictionaries), and a parser started in one thread must be
advanced and freed in that same thread. The batches' link extraction runs in the parser
processes, and each batch goes through the one commit path. A file's records are committed
with its progress (a `units` row), so a rerun skips finished files and resumes a file after
its committed records.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from crawler.decode import ParsedPage, parse_works
from crawler.model import Work
from crawler.store import UnitProgress, file_stamp
from crawler.xmlreader import XmlProblem, iter_paths, read_works

if TYPE_CHECKING:
    from crawler.engine import Crawl

log = logging.getLogger(__name__)

# file, its stamp, works, problems, records so far, file done
_Batch = tuple[Path, str, list[Work], list[XmlProblem], int, bool]


def _batches(files: list[tuple[Path, str]], size: int, done: dict[str, tuple[int, int, bool, bool]]) -> Iterator[_Batch]:
    for path, stamp in files:
        key = str(path.resolve())
        records, _, finished, failed = done.get(key, (0, 0, False, False))
        if finished and not failed:
            continue
        if failed:
            records = 0  # read again whole: what it yielded is in the seen store already
        works: list[Work] = []
        problems: list[XmlProblem] = []
        consumed = 0
        for item in read_works(path):
            consumed += 1
            if consumed <= records:
                continue  # committed by an earlier run
            if isinstance(item, XmlProblem):
                problems.append(item)
                continue
            works.append(item)
            if len(works) >= size:
                yield path, stamp, works, problems, consumed, False
                works, problems = [], []
        yield path, stamp, works, problems, consumed, True


async def _listed(crawl: Crawl, paths: list[Path]) -> list[tuple[Path, str]]:
    """The files with their stamps; the rows of a file replaced since they were written (another
    file copied over the same path) are forgotten: it is read again from its start."""
    files = await asyncio.to_thread(lambda: [(p, file_stamp(p.stat())) for p in iter_paths(paths)])
    stamps = await crawl.store.unit_stamps()
    changed = [key for path, stamp in files if (recorded := stamps.get(key := str(path.resolve()))) and recorded != stamp]
    for key in changed:
        log.warning("%s changed since it was read (size or modification time): it is read again from its start "
                    "(links already written are not written again)", key)
    await crawl.store.forget_units(changed)
    return files


async def ingest(crawl: Crawl, paths: list[Path]) -> tuple[int, int, int]:
    """Every record of the files into the commit path; returns (files, records, problems)."""
    config = crawl.config
    source = _batches(await _listed(crawl, paths), config.rows, await crawl.store.units())
    files: set[Path] = set()
    bad = records = 0
    last_report = time.monotonic()
    reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xml")
    loop = asyncio.get_running_loop()
    try:
        while not crawl.stopping.is_set():
            item = await loop.run_in_executor(reader, next, source, None)
            if item is None:
                break
            path, stamp, works, problems, consumed, finished = item
            if path not in files:
                files.add(path)
                log.info("reading %s", path)
            for problem in problems:
                bad += 1
                log.warning("%s:%s: %s", problem.path, problem.line or "?", problem.message)
            parsed, prefixes = await crawl.parse(parse_works, works) if works else ([], set())
            records += len(works)
            page = ParsedPage(None, None, len(works), parsed, [], prefixes)
            unit = UnitProgress(str(path.resolve()), consumed, len(problems), finished,
                                failed=bool(problems) and finished, stamp=stamp)
            await crawl.commit_page(page, unit=unit)
            if config.progress_s and time.monotonic() - last_report >= config.progress_s:
                last_report = time.monotonic()
                log.info("%d file(s), %s records, %s new events so far", len(files),
                         f"{records:,}", f"{crawl.progress.events:,}")
    finally:
        # The generator (and the lxml parser inside it) ends in the thread that ran it.
        await loop.run_in_executor(reader, source.close)
        reader.shutdown(wait=True)
    return len(files), records, bad
