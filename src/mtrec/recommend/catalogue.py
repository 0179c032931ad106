"""Finding items in a saved model's catalogue by title: what a new user's history is
picked from (the service's page, ``GET /v1/items``)."""

from __future__ import annotations

from mtrec.recommend.recommender import Recommender
from mtrec.recommend.records import CatalogueItem, describe

MAX_QUERY = 100
"""Characters a title search may have."""


def find_items(recommender: Recommender, query: str, k: int = 10) -> list[CatalogueItem]:
    """Up to ``k`` items whose title holds ``query`` (any case), or whose id is ``query``,
    the most liked in training first: typing "star" finds Star Wars before Stargate."""
    wanted = query.strip().casefold()
    if not wanted:
        return []
    vocab, info = recommender.vocabs.items, recommender.saved.items
    raw = vocab.parse(query.strip())
    exact = vocab.row(raw) if raw in vocab else -1
    found = []
    for row in recommender.popular_rows.tolist():
        title = info.titles[row]
        if row == exact or (title is not None and wanted in title.casefold()):
            found.append(CatalogueItem(*describe(vocab, info, row)))
            if len(found) == k:
                break
    return found
