"""crawler: rebuild Crossref Event Data's "crossref" source from the Crossref REST API."""

__version__ = "0.1.0"
PROJECT_URL = "https://github.com/crossref-event-data/crawler"
