"""A Crossref-compatible simulator: a generated corpus with known links, served like the real API.

`corpus` generates works whose expected events are recorded from the generator's intent (never
by running the crawler's own extraction); `app` serves them over HTTP with scroll cursors,
polite-pool limits, real error bodies and seeded faults; `python -m crawler.simulator` runs it.
"""
