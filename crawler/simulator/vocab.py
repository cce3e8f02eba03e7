"""The generator's vocabulary: prefixes and their agencies and owners, work types and their
`type-name` labels, relation names, and the words, names, licenses and funders works are made of.

Kept in one place: the corpus draws from it and the simulator's filters and facets read it.
"""

from __future__ import annotations

CROSSREF_PREFIXES = (
    "10.1016", "10.1007", "10.1038", "10.1103", "10.1145", "10.1371", "10.3389", "10.1101",
    "10.2196", "10.12688", "10.21037", "10.1093", "10.1002", "10.1111", "10.1080", "10.1177",
    "10.3390", "10.1186", "10.1021", "10.1063",
)
OTHER_AGENCIES = {
    "10.5061": "DataCite", "10.5281": "DataCite", "10.6084": "DataCite", "10.17605": "DataCite",
    "10.3280": "mEDRA", "10.11501": "JaLC", "10.22711": "KISTI", "10.13140": "DataCite",
}
UNKNOWN_PREFIXES = ("10.99999", "10.88888", "10.777777")
AGENCIES: dict[str, str | None] = {
    **{p: "Crossref" for p in CROSSREF_PREFIXES},
    **OTHER_AGENCIES,
    **{p: None for p in UNKNOWN_PREFIXES},
}

TYPES = (
    ("journal-article", 60), ("book-chapter", 8), ("proceedings-article", 8), ("posted-content", 6),
    ("peer-review", 4), ("dataset", 3), ("report", 3), ("dissertation", 2), ("standard", 1),
    ("component", 2), ("book", 3),
)
TYPE_LABELS = {  # the production API's `type-name` (facet and filter): labels, not ids
    "journal-article": "Journal Article", "book-chapter": "Chapter", "proceedings-article": "Conference Paper",
    "posted-content": "Posted Content", "peer-review": "Peer Review", "dataset": "Dataset", "report": "Report",
    "dissertation": "Dissertation", "standard": "Standard", "component": "Component", "book": "Book",
}
OWNERS = {  # prefix -> (member id, publisher name): one member may own several prefixes
    "10.1016": ("78", "Elsevier BV"), "10.1007": ("297", "Springer Science and Business Media LLC"),
    "10.1038": ("297", "Springer Science and Business Media LLC"), "10.1103": ("16", "American Physical Society (APS)"),
    "10.1145": ("320", "Association for Computing Machinery (ACM)"), "10.1371": ("340", "Public Library of Science (PLoS)"),
    "10.3389": ("1965", "Frontiers Media SA"), "10.1101": ("246", "Cold Spring Harbor Laboratory"),
    "10.2196": ("1010", "JMIR Publications Inc."), "10.12688": ("2560", "F1000 Research Ltd"),
    "10.21037": ("4212", "AME Publishing Company"), "10.1093": ("286", "Oxford University Press (OUP)"),
    "10.1002": ("311", "Wiley"), "10.1111": ("311", "Wiley"), "10.1080": ("301", "Informa UK Limited"),
    "10.1177": ("179", "SAGE Publications"), "10.3390": ("1968", "MDPI AG"),
    "10.1186": ("297", "Springer Science and Business Media LLC"), "10.1021": ("316", "American Chemical Society (ACS)"),
    "10.1063": ("317", "AIP Publishing"),
}
LICENSES = (
    "http://creativecommons.org/licenses/by/4.0/", "https://www.elsevier.com/tdm/userlicense/1.0/",
    "http://onlinelibrary.wiley.com/termsAndConditions#vor", "https://creativecommons.org/licenses/by-nc-nd/4.0/",
)
FUNDERS = (
    ("10.13039/501100000780", "European Commission"), ("10.13039/100000002", "National Institutes of Health"),
    ("10.13039/501100001659", "Deutsche Forschungsgemeinschaft"), ("10.13039/100000001", "National Science Foundation"),
)
GIVEN = ("Ana", "Wei", "Jonas", "Chidi", "Marta", "Ólafur", "Yuki", "Priya", "Sean")
RELATION_NAMES = (
    "has-preprint", "is-preprint-of", "is-review-of", "has-review", "is-supplemented-by",
    "is-supplement-to", "is-version-of", "has-version", "is-part-of", "has-part", "cites",
    "is-cited-by", "is-identical-to", "has-related-material", "is-related-material", "references",
)
WORDS = (
    "analysis", "of", "the", "cellular", "response", "to", "thermal", "stress", "in", "mice", "a",
    "review", "model", "quantum", "transport", "networks", "soil", "carbon", "dynamics", "evidence",
    "from", "cohort", "study", "deep", "learning", "for", "protein", "folding", "urban", "water",
    "policy", "énergie", "Ärzte", "Zürich", "naïve", "Bayes", "on", "graphs", "and", "trees",
)
JOURNALS = ("Nature", "J. Biol. Chem.", "Phys. Rev. B", "PLoS ONE", "Front. Neuroanat.", "Cell", "BMJ")
SURNAMES = ("Smith", "García", "Müller", "Nguyen", "Okafor", "Zhang", "Kowalski", "O'Brien", "Dávila-Aranda")
