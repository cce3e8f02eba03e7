"""Which links of a batch of works are new and become events, by the agency rules. Pure.

A link becomes an event once per state file: its hash joins its subject's seen set when it
is emitted. What is *not* emitted is remembered just as carefully, so that the counters read
the same however often a work is fetched again (a resumed window, an update):

- a mined DOI of another agency is never an event (Event Data's Crossref -> DataCite agent
  never mined text): its `rejected_hash` joins the seen set, and it is counted once;
- a link whose object's prefix no agency knows (yet) is not dropped: the (prefix, subject)
  pair is kept in the state with the number of such links, and the work is fetched again
  once the prefix is known (see `agency`);
- a bad field is counted once per work and kind of problem (`problem_hash`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from crawler.decode import ParsedWork
from crawler.events import CROSSREF_TOKEN, EventGroup, render, token_for
from crawler.extract import prefix_of
from crawler.keys import link_hash
from crawler.model import Problem
from crawler.store import pack, unpack


def rejected_hash(relation: str, obj: str) -> int:
    """The seen-set entry of a mined link that may never become an event (another namespace
    than `link_hash`: relation names never start with '#')."""
    return link_hash(f"#{relation}", obj)


def problem_hash(kind: str, detail: str) -> int:
    """The seen-set entry of a problem already counted for this work."""
    return link_hash(f"#problem:{kind}", detail)


class Selection(NamedTuple):
    groups: list[EventGroup]  # events that differ only by their object, to render
    events: int
    seen: dict[int, set[int]]  # the updated seen sets of the subjects that changed
    counts: Counter[str]  # for the state's counters: new events by relation/agency/prefix, rejections
    unknown: dict[tuple[str, str], int]  # (object prefix, subject DOI) -> links waiting for an agency


def select_new(
    works: list[ParsedWork],
    seen_blobs: dict[int, bytes],
    agencies: dict[str, str | None],
    problems: Iterable[tuple[str, str, str]] = (),
) -> Selection:
    """The links of `works` never emitted before that may become events, by the agency rules.

    `seen_blobs` holds the packed seen sets of the works' subjects; `agencies` the agency of
    every object prefix (None: unknown). `problems` are the batch's (kind, DOI, detail)."""
    known: dict[int, set[int]] = {}
    changed: dict[int, set[int]] = {}
    groups: list[EventGroup] = []
    total = 0
    counts: Counter[str] = Counter()
    unknown: Counter[tuple[str, str]] = Counter()
    tokens = {prefix: token_for(agency) for prefix, agency in agencies.items()}
    new_prefixes: list[str] = []

    def seen_of(subject: int) -> set[int]:
        hashes = known.get(subject)
        if hashes is None:
            blob = seen_blobs.get(subject)
            hashes = known[subject] = set(unpack(blob)) if blob else set()
        return hashes

    for work in works:
        hashes = seen_of(work.subject)
        before = len(hashes)
        work_events = 0
        for relation, mined, objs, link_hashes in work.groups:
            if hashes:
                unseen = [i for i, h in enumerate(link_hashes) if h not in hashes]
                if len(unseen) < len(objs):
                    objs, link_hashes = [objs[i] for i in unseen], [link_hashes[i] for i in unseen]
            if not objs:
                continue
            prefixes = [obj[: obj.index("/")] for obj in objs]
            group_tokens = list(map(tokens.__getitem__, prefixes))
            kept: dict[str, Sequence[str]]  # objects by source token (agent)
            agent = group_tokens[0]
            if not mined and agent is not None and group_tokens.count(agent) == len(objs):
                # The usual case: every link becomes an event, all for the same agent.
                kept = {agent: objs}
                hashes.update(link_hashes)
                new_prefixes += prefixes
            else:
                by_agent: dict[str, list[str]] = {}
                for obj, h, prefix, token in zip(objs, link_hashes, prefixes, group_tokens):
                    if token is None:
                        unknown[(prefix, work.doi)] += 1
                    elif mined and token != CROSSREF_TOKEN:
                        rejected = rejected_hash(relation, obj)
                        if rejected not in hashes:
                            hashes.add(rejected)
                            counts[Problem.MINED_NOT_CROSSREF] += 1
                    else:
                        by_agent.setdefault(token, []).append(obj)
                        hashes.add(h)
                        new_prefixes.append(prefix)
                kept = by_agent
            for token, these in kept.items():
                groups.append((work.doi, work.type, work.occurred_at, relation, token, these))
                counts[f"relation:{relation}"] += len(these)
                work_events += len(these)
        if work_events:
            counts[f"subject-prefix:{prefix_of(work.doi)}"] += work_events
            total += work_events
        if len(hashes) != before:
            changed[work.subject] = hashes
    for kind, subject, detail, subject_key in _problem_keys(problems, works):
        hashes = seen_of(subject_key)
        entry = problem_hash(kind, detail)
        if entry not in hashes:
            hashes.add(entry)
            changed[subject_key] = hashes
            counts[kind] += 1
    for prefix, n in Counter(new_prefixes).items():
        counts[f"agency:{agencies[prefix]}"] += n
    return Selection(groups, total, changed, counts, dict(unknown))


class Rendered(NamedTuple):
    """A `Selection` with its events rendered: what the commit path writes (`Crawl.commit_selected`).
    A parser process that selected the batch itself packs the seen sets it hands back."""

    data: bytes  # one gzip member of event lines (b"" when no event)
    events: int
    seen: dict[int, bytes] | dict[int, set[int]]  # the changed subjects' seen sets, packed (`store.pack`) or not
    counts: Counter[str]
    unknown: dict[tuple[str, str], int]


def select_and_render(works: list[ParsedWork], seen_blobs: dict[int, bytes], agencies: dict[str, str | None],
                      problems: Iterable[tuple[str, str, str]], timestamp: str) -> Rendered:
    """`select_new`, then `render` of what it chose: in one parser process, nothing of the
    batch's works crosses back to the main process."""
    chosen = select_new(works, seen_blobs, agencies, problems)
    data = render(chosen.groups, timestamp) if chosen.groups else b""
    return Rendered(data, chosen.events, {subject: pack(hashes) for subject, hashes in chosen.seen.items()},
                    chosen.counts, chosen.unknown)


# Problems of records without a usable DOI are kept under this pseudo-subject, by their detail.
NO_DOI_SUBJECT = "#no-doi"


def _problem_keys(problems: Iterable[tuple[str, str, str]], works: list[ParsedWork]):  # type: ignore[no-untyped-def]
    from crawler.keys import subject_hash

    subjects = {work.doi: work.subject for work in works}
    for kind, doi, detail in problems:
        key = doi.strip().lower()
        if key in subjects:
            yield kind, key, detail, subjects[key]
        else:
            pseudo = key if key and key != "?" else NO_DOI_SUBJECT
            yield kind, pseudo, detail, subject_hash(pseudo)


def problem_subjects(problems: Iterable[tuple[str, str, str]], works: list[ParsedWork]) -> list[int]:
    """The seen-set rows `select_new` reads for the problems (besides the works' own)."""
    return [key for _, _, _, key in _problem_keys(problems, works)]
