"""`crawler status`: where a job stands, read from the state file (safe beside a live run)."""

from __future__ import annotations

import json
from pathlib import Path

from crawler.store import WINDOW_STATUSES, Store


async def print_status(state: Path) -> int:
    store = await Store.open(state, readonly=True)
    try:
        meta = await store.meta()
        summary = await store.window_summary()
        counters = await store.counters()
        errors = await store.last_errors()
        seq, offset = await store.sink_position()
    finally:
        await store.close()
    print(f"state file     {state}")
    print(f"output         {meta.get('out', '?')} (current file events-{seq:06d}, {offset:,} bytes committed)")
    backfill = summary.get("backfill", {})
    if "backfill_from" in meta:
        finished = meta.get("backfill_finished_at")
        print(f"backfill       created {meta['backfill_from']}..{meta['backfill_until']}, started "
              f"{meta.get('backfill_started_at', '?')}, " + (f"finished {finished}" if finished else "not finished"))
    mark = meta.get("update_mark") or (meta.get("backfill_started_at", "")[:10] + " (backfill start)" if "backfill_started_at" in meta else None)
    if mark:
        print(f"high-water mark {mark}")
    if "last_update" in meta:
        last = json.loads(meta["last_update"])
        print(f"last update    index dates {last['from']}..{last['until']}, finished {last['finished_at']}: "
              f"{last['works']:,} works, {last['events']:,} new events")
    update = summary.get("update", {})
    if any(update.get(s) for s in ("unsized", "pending", "running", "short", "failed")):
        running = ", ".join(f"{update.get(s, 0)} {s}" for s in WINDOW_STATUSES if update.get(s))
        print(f"update running index dates {meta.get('update_from')}..{meta.get('update_until')}: windows {running}")
    windows = ", ".join(f"{backfill.get(s, 0)} {s}" for s in WINDOW_STATUSES if backfill.get(s))
    print(f"windows        {windows or 'none yet'}")
    print(f"works          {backfill.get('works', 0):,} of {backfill.get('planned', 0):,} planned")
    print(f"events         {counters.get('events', 0):,} written")
    print(f"pages          {counters.get('pages', 0):,}")
    skipped = {k: v for k, v in counters.items() if k not in ("events", "pages", "works")}
    if skipped:
        print("not emitted    " + ", ".join(f"{k} {v:,}" for k, v in sorted(skipped.items())))
    for where, status, error in errors:
        print(f"last error     {where} ({status}): {error}")
    return 0
