"""Interactions -> tensors of table rows and scaled labels, ready for the model.

- ``encoding``: vocabularies, the rating scale, encoded rows;
- ``history``: each user's seen items, item counts;
- ``side``: side-feature codes for the towers.
"""

from mtrec.features.encoding import (
    EncodedInteractions,
    RatingScale,
    Unseen,
    Vocabs,
    encode,
    known_rows,
)
from mtrec.features.history import (
    SeenItems,
    fallback_order,
    interaction_counts,
    liked_counts,
    seen_items,
    top_of_order,
)
from mtrec.features.recency import Recency, choose_recency, recent_counts
from mtrec.features.side import (
    AGE_BUCKETS,
    ITEM_FEATURES,
    USER_FEATURES,
    FeatureCodes,
    available_features,
    feature_codes,
)

__all__ = [
    "AGE_BUCKETS",
    "ITEM_FEATURES",
    "USER_FEATURES",
    "EncodedInteractions",
    "FeatureCodes",
    "RatingScale",
    "Recency",
    "SeenItems",
    "Unseen",
    "Vocabs",
    "available_features",
    "choose_recency",
    "encode",
    "fallback_order",
    "feature_codes",
    "interaction_counts",
    "known_rows",
    "liked_counts",
    "recent_counts",
    "seen_items",
    "top_of_order",
]
