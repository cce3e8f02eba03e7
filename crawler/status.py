"""`crawler status` and `crawler stats`: what a state file knows, as a table or as JSON.

Both only read the state (safe beside a live run) and never the output files, so they answer
in milliseconds even after a backfill of the whole corpus. `status` also says where the time
went in the last run (pages/s, works/s, retries and 429s per hour: a slow API or a slow
crawler), and `status --windows` lists every window, the troubled ones first.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from crawler.figures import counted, duration, few, per_hour
from crawler.store import RUN, RUN_COUNTERS, WINDOW_STATUSES, Store, crawler_running

BREAKDOWNS = ("relation", "agency", "subject-prefix")  # counter families written per new event
# `status --windows`: the troubled windows first, then those still to do, the done ones last.
WINDOW_ORDER = {status: rank for rank, status in enumerate(("failed", "short", "running", "pending", "unsized", "done"))}


async def _read(state: Path) -> tuple[dict[str, str], dict[str, dict[str, int]], dict[str, int], Any, Any,
                                      tuple[int, int], dict[str, int]]:
    store = await Store.open(state, readonly=True)
    try:
        windows = [w for job in ("backfill", "update") for w in await store.windows(job, "short", "failed")]
        return (await store.meta(), await store.window_summary(), await store.counters(),
                windows, await store.last_errors(), await store.sink_position(), await _file_units(store))
    finally:
        await store.close()


async def _file_units(store: Store) -> dict[str, int]:
    """The units of XML files: every unit but a snapshot's (`status` shows those on their own)."""
    every, snapshot = await store.unit_summary(), await store.unit_summary("snapshot:")
    return {name: every[name] - snapshot[name] for name in every}


def _waiting(meta: dict[str, str], running: bool) -> list[str]:
    """'waiting for the API since 14:02 (503 …); next try in 40 s', while a crawler waits."""
    if not running or "outage" not in meta:
        return []
    lines = []
    for outage in json.loads(meta["outage"]):
        since = datetime.fromtimestamp(outage["since"]).strftime("%H:%M")
        wait = max(0.0, outage["next_try"] - time.time())
        lines.append(f"waiting for {outage['service']} since {since} ({outage['error']}); next try in {wait:.0f} s")
    return lines


def _output_files(out: str | None, seq: int, offset: int) -> dict[str, Any]:
    """The last completed file and the one being written, as they are on disk."""
    folder = Path(out) if out else None
    completed = f"events-{seq - 1:06d}.jsonl.gz" if seq > 1 else None
    part = f"events-{seq:06d}.jsonl.gz.part"
    writing = part if folder is not None and (folder / part).exists() else None
    return {"last_completed": completed, "writing": writing, "committed_bytes": offset if writing else 0,
            "completed_files": seq - 1}


async def status_report(state: Path) -> dict[str, Any]:
    """Everything `crawler status` shows, as plain data (the --json output)."""
    meta, summary, counters, unfinished, errors, (seq, offset), units = await _read(state)
    running = crawler_running(state)

    def windows(job: str) -> dict[str, int]:
        return {s: summary.get(job, {}).get(s, 0) for s in WINDOW_STATUSES}

    backfill = None
    if "backfill_from" in meta:
        entry = summary.get("backfill", {})
        backfill = {
            "from": meta["backfill_from"], "until": meta.get("backfill_until"), "filter": meta.get("backfill_filter", ""),
            "started_at": meta.get("backfill_started_at"), "finished_at": meta.get("backfill_finished_at"),
            "windows": windows("backfill"), "works": entry.get("works", 0), "planned": entry.get("planned", 0),
            "events": entry.get("events", 0),
        }
    mark, source = meta.get("update_mark"), "update"
    if not mark:
        from crawler.jobs import first_mark

        mark = first_mark(meta) or None
        source = "backfill start" if mark == meta.get("backfill_started_at", "")[:10] else "snapshot's currency"
    update_running = None
    if any(n for s, n in windows("update").items() if s not in ("done", "short")):
        update_running = {"from": meta.get("update_from"), "until": meta.get("update_until"), "windows": windows("update")}
    return {
        "state": str(state),
        "crawler_running": running,
        "waiting": _waiting(meta, running),
        "out": meta.get("out"),
        "output_files": _output_files(meta.get("out"), seq, offset),
        "last_error": json.loads(meta["last_error"]) if "last_error" in meta else None,
        "backfill": backfill,
        "snapshot": await _snapshot(state, meta),
        "update": {
            "high_water_mark": mark,
            "mark_from": source if mark else None,
            "last": json.loads(meta["last_update"]) if "last_update" in meta else None,
            "running": update_running,
        },
        "totals": {name: counters.get(name, 0) for name in RUN_COUNTERS},
        "last_run": _last_run(meta, counters, running),
        "files": {k: units[k] for k in ("units", "done", "failed", "records", "problems")} if units["units"] else None,
        "not_emitted": {k: v for k, v in sorted(counters.items()) if ":" not in k and k not in RUN_COUNTERS},
        "short_windows": [
            {"job": w.job, "start": w.start, "end": w.end, "status": w.status, "total": w.total}
            for w in unfinished
        ],
        "last_errors": [{"window": where, "status": status, "error": error} for where, status, error in errors],
    }


async def _snapshot(state: Path, meta: dict[str, str]) -> dict[str, Any] | None:
    """The snapshot files read into this state, from its meta and its units."""
    if "snapshot_paths" not in meta:
        return None
    store = await Store.open(state, readonly=True)
    try:
        units = await store.unit_summary("snapshot:")
        problems = await store.unit_problems("snapshot:")
    finally:
        await store.close()
    return {
        "paths": json.loads(meta["snapshot_paths"]), "currency": meta.get("snapshot_currency"),
        "started_at": meta.get("snapshot_started_at"), "finished_at": meta.get("snapshot_finished_at"),
        "unfinished": json.loads(meta.get("snapshot_unfinished", "[]")),  # files an earlier run left half read
        "records": units["records"], "units_done": units["done"] - units["failed"], "units_failed": units["failed"],
        "units_unfinished": units["units"] - units["done"], "problems": units["problems"], "bytes_done": units["bytes"],
        # what went wrong, per failed unit (its last problem; the run's log has them all)
        "failed_units": [{"unit": key[len("snapshot:"):], "problem": note} for key, note in problems],
    }


async def stats_report(state: Path, top: int = 10) -> dict[str, Any]:
    """Events by relation type, by object agency and the top subject prefixes (the --json output)."""
    _, _, counters, _, _, _, _ = await _read(state)
    families: dict[str, dict[str, int]] = {name: {} for name in BREAKDOWNS}
    for key, value in counters.items():
        family, _, name = key.partition(":")
        if family in families and value:
            families[family][name] = value

    def ranked(values: dict[str, int], limit: int | None = None) -> dict[str, int]:
        return dict(sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))[:limit])

    return {
        "events": counters.get("events", 0),
        "by_relation": ranked(families["relation"]),
        "by_agency": ranked(families["agency"]),
        "top_subject_prefixes": ranked(families["subject-prefix"], top),
        "subject_prefixes": len(families["subject-prefix"]),
    }


def _last_run(meta: dict[str, str], counters: dict[str, int], running: bool) -> dict[str, Any] | None:
    """The last run's time and speeds: its counters (`run:…`) over its time up to its last
    commit, or up to now while it runs (an outage with no commit still counts)."""
    if "run_started_at" not in meta:
        return None
    figures = {name: counters.get(RUN + name, 0) for name in RUN_COUNTERS}
    elapsed = counters.get(RUN + "ms", 0) / 1000
    if running:
        started = datetime.fromisoformat(meta["run_started_at"].replace("Z", "+00:00"))
        elapsed = max(elapsed, (datetime.now(timezone.utc) - started).total_seconds())
    return {
        "started_at": meta["run_started_at"], "running": running, "elapsed_s": round(elapsed, 1), **figures,
        "pages_per_s": round(figures["pages"] / elapsed, 3) if elapsed else 0.0,
        "works_per_s": round(figures["works"] / elapsed, 1) if elapsed else 0.0,
        "retries_per_h": round(per_hour(figures["retries"], elapsed), 1),
        "429s_per_h": round(per_hour(figures["429s"], elapsed), 1),
    }


def _windows_line(windows: dict[str, int]) -> str:
    return ", ".join(f"{n:,} {s}" for s, n in windows.items() if n) or "none yet"


def status_table(report: dict[str, Any]) -> Table:
    table = Table(show_header=False, box=None, title=f"crawler status: {report['state']}", title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    table.add_row("crawler", "[green]running[/]" if report["crawler_running"] else "not running")
    for line in report["waiting"]:
        table.add_row("[yellow]waiting[/]", line)
    files = report["output_files"]
    table.add_row("output", f"{report['out'] or '?'}: {counted(files['completed_files'], 'completed file')}"
                  + (f", last {files['last_completed']}" if files["last_completed"] else "")
                  + (f"; writing {files['writing']} ({files['committed_bytes']:,} bytes committed)" if files["writing"] else ""))
    backfill = report["backfill"]
    if backfill:
        finished = backfill["finished_at"]
        table.add_row("backfill", f"created {backfill['from']}..{backfill['until']}"
                      + (f", filter {backfill['filter']}" if backfill["filter"] else "") + f", started {backfill['started_at']}, "
                      + (f"finished {finished}" if finished else "[yellow]not finished[/]"))
        table.add_row("windows", _windows_line(backfill["windows"]))
        table.add_row("works", f"{backfill['works']:,} of {backfill['planned']:,} planned")
    elif not report["snapshot"]:
        table.add_row("backfill", "none in this state file")
    snapshot = report["snapshot"]
    if snapshot:
        finished = snapshot["finished_at"]
        table.add_row("snapshot", ", ".join(snapshot["paths"]) + f"; started {snapshot['started_at']}, "
                      + (f"finished {finished}" if finished else "[yellow]not finished[/]")
                      + (f" (units of {few(snapshot['unfinished'], 5)} are not finished: give "
                         "those paths to the backfill again)" if snapshot["unfinished"] else ""))
        table.add_row("snapshot read", f"{snapshot['records']:,} records; units {snapshot['units_done']:,} done"
                      + (f", {snapshot['units_unfinished']:,} not finished" if snapshot["units_unfinished"] else "")
                      + (f", [red]{snapshot['units_failed']:,} failed[/] ({counted(snapshot['problems'], 'problem')}; "
                         "replace or download again the files named, then run the same backfill: only those units are read again)" if snapshot["units_failed"] else "")
                      + f"; currency {snapshot['currency'] or 'unknown'}")
        for failed in snapshot["failed_units"]:
            table.add_row("[red]failed unit[/]", f"{failed['unit']}: {failed['problem']}")
    update = report["update"]
    if update["high_water_mark"]:
        table.add_row("high-water mark", f"{update['high_water_mark']} (from the {update['mark_from']})")
    if update["last"]:
        last = update["last"]
        table.add_row("last update", f"index dates {last['from']}..{last['until']}, finished {last['finished_at']}: "
                      f"{counted(last['works'], 'work')}, {counted(last['events'], 'new event')}")
    if update["running"]:
        running = update["running"]
        table.add_row("update running", f"index dates {running['from']}..{running['until']}: {_windows_line(running['windows'])}")
    totals = report["totals"]
    table.add_row("events", f"{totals['events']:,} written")
    if totals["pages"] or totals["retries"] or totals["429s"]:
        table.add_row("requests", f"{counted(totals['pages'], 'page')} of the API; {counted(totals['retries'], 'retry', 'retries')}, "
                      f"{counted(totals['429s'], '429', '429s')}")
    inputs = report["files"]
    if inputs:
        table.add_row("files", f"{counted(inputs['units'], 'file')} read ({inputs['done']:,} done"
                      + (f", {inputs['failed']:,} with problems" if inputs["failed"] else "")
                      + f"), {counted(inputs['records'], 'record')}"
                      + (f", {counted(inputs['problems'], 'problem')}" if inputs["problems"] else ""))
    run = report["last_run"]
    if run:
        api = run["pages"] or run["retries"] or run["429s"]  # else a run of files alone: no API figures
        table.add_row("last run", f"started {run['started_at']}" + (" (running)" if run["running"] else "")
                      + f", {duration(run['elapsed_s'])}: {counted(run['works'], 'work')}, {counted(run['events'], 'new event')}"
                      + (f", {counted(run['pages'], 'page')}" if api else ""))
        table.add_row("speed", (f"{run['pages_per_s']:.2f} pages/s, " if api else "")
                      + f"{run['works_per_s']:,.0f} works/s over the run"
                      + (f"; {run['retries_per_h']:,.1f} retries/h, {run['429s_per_h']:,.1f} 429s/h" if api else ""))
    if report["not_emitted"]:
        table.add_row("not emitted", ", ".join(f"{k} {v:,}" for k, v in report["not_emitted"].items()))
    for window in report["short_windows"]:
        table.add_row(f"[red]{window['status']} window[/]", f"{window['job']} {window['start']}..{window['end']} "
                      f"({window['total']} expected); run the same command again to retry it")
    for error in report["last_errors"]:
        table.add_row("window error", f"{error['window']} ({error['status']}): {error['error']}")
    if report["last_error"]:
        table.add_row("last error", f"{report['last_error']['error']} (at {report['last_error']['at']})")
    return table


async def windows_report(state: Path) -> list[dict[str, Any]]:
    """Every window (the --windows --json output): failed and short first, then running,
    pending, unsized, done; within a status by job and date. `filter` is what the window
    asks beside its dates: the crawl's --filter and the window's own split (`scope`)."""
    store = await Store.open(state, readonly=True)
    try:
        rows, crawl_filter = await store.all_windows(), (await store.meta()).get("backfill_filter", "")
    finally:
        await store.close()
    names = ("job", "field", "start", "end", "scope", "status", "total", "works", "events", "attempts",
             "last_error", "error_at")
    windows = [dict(zip(names, row)) for row in rows]
    for w in windows:
        w["filter"] = ",".join(part for part in (crawl_filter, w["scope"]) if part)
    return sorted(windows, key=lambda w: (WINDOW_ORDER.get(w["status"], len(WINDOW_ORDER)), w["job"], w["start"]))


def windows_table(windows: list[dict[str, Any]]) -> Table:
    table = Table(title=f"{counted(len(windows), 'window')}", title_justify="left", box=None)
    for name, justify in (("job", "left"), ("range", "left"), ("filter", "left"), ("status", "left"),
                          ("total", "right"), ("works", "right"), ("attempts", "right"), ("last error", "left")):
        table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for w in windows:
        status = f"[red]{w['status']}[/]" if w["status"] in ("short", "failed") else w["status"]
        table.add_row(w["job"], f"{w['field']} {w['start']}..{w['end']}", w["filter"] or "", status,
                      "?" if w["total"] is None else f"{w['total']:,}", f"{w['works']:,}", str(w["attempts"]),
                      w["last_error"] or "")
    return table


def stats_table(report: dict[str, Any]) -> Table:
    table = Table(title=f"{report['events']:,} events", title_justify="left", box=None)
    table.add_column("by", style="bold")
    table.add_column("name")
    table.add_column("events", justify="right")
    for label, key in (("relation", "by_relation"), ("object agency", "by_agency"), ("subject prefix", "top_subject_prefixes")):
        for i, (name, value) in enumerate(report[key].items()):
            table.add_row(label if i == 0 else "", name, f"{value:,}")
    return table


async def print_status(state: Path, as_json: bool = False, windows: bool = False) -> int:
    if windows:
        _print(await windows_report(state), windows_table, as_json)
    else:
        _print(await status_report(state), status_table, as_json)
    return 0


async def print_stats(state: Path, top: int = 10, as_json: bool = False) -> int:
    report = await stats_report(state, top)
    _print(report, stats_table, as_json)
    return 0


def _print(report: Any, table, as_json: bool) -> None:  # type: ignore[no-untyped-def]
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        # Not a terminal: wide enough that no line is wrapped for the scripts that read it.
        Console(highlight=False, width=None if sys.stdout.isatty() else 200).print(table(report))
