"""Links that waited for an agency, fetched again once their object's prefix is known.

A link whose prefix no agency knew is not dropped: the state keeps the (prefix, subject) pair
(`select`). At the start of each run the prefixes whose negative answer has expired are asked
again; the works citing those now known are fetched again from the API (`doi:` filters, a
batch per request) and go through the commit path, which emits the links it now may.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from crawler.decode import parse_body
from crawler.model import SELECT_FIELDS

if TYPE_CHECKING:
    from crawler.engine import Crawl

log = logging.getLogger(__name__)

BATCH = 50  # DOIs per request: the URL stays well under the usual 8 KB


async def fetch_again(crawl: Crawl) -> int:
    """Emit what waited for prefixes that are now known; returns the works fetched again."""
    assert crawl.resolver is not None
    prefixes = await crawl.store.deferred_prefixes()
    if not prefixes:
        return 0
    agencies = await crawl.resolver.resolve(prefixes)
    known = sorted(p for p in prefixes if agencies[p] is not None)
    if not known:
        return 0
    subjects = [s for s in await crawl.store.deferred_subjects(known) if "," not in s]
    log.info("%d prefix(es) became known; fetching %d work(s) again for the links that waited", len(known), len(subjects))
    for i in range(0, len(subjects), BATCH):
        if crawl.stopping.is_set():
            return i
        batch = subjects[i : i + BATCH]
        params = {"filter": ",".join(f"doi:{doi}" for doi in batch), "rows": str(len(batch)),
                  "select": ",".join(SELECT_FIELDS)}
        body = await crawl.client.works(params)
        await crawl.commit_page(await crawl.parse(parse_body, body))
    await crawl.store.forget_deferred(known)
    return len(subjects)
