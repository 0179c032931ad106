"""What a user gets: a saved model's lists, from its ranking stage or its rating head.

``Recommender`` is the one object the CLI and the HTTP service use: it holds a loaded
model directory and answers ``recommend``, ``similar`` and ``rank`` with typed records
(``records``). Ids are raw dataset ids; rows never leave this package. ``batch`` writes
every user's list at once; ``catalogue`` finds items by title.
"""

from mtrec.recommend.batch import recommend_reference, write_all_users
from mtrec.recommend.catalogue import MAX_QUERY, find_items
from mtrec.recommend.recommender import Recommender
from mtrec.recommend.records import (
    FRAME_COLUMNS,
    CatalogueItem,
    RatedItem,
    Recommendation,
    Recommendations,
    SimilarItem,
    to_frame,
)

__all__ = [
    "FRAME_COLUMNS", "MAX_QUERY", "CatalogueItem", "RatedItem", "Recommendation",
    "Recommendations", "Recommender", "SimilarItem", "find_items", "recommend_reference",
    "to_frame", "write_all_users",
]  # fmt: skip
