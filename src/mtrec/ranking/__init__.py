"""The second stage: candidates from two sources, ordered by a ranker trained to rank.

Stage one gives every user two candidate lists: the two-tower model's top ``C`` by
retrieval score (through the index) and the item-item model's top ``C`` (EASE weights
over the user's history, when the catalogue is small enough for an item x item matrix).
The ranker then scores the union with a linear function of a few signals per (user,
candidate), listed in ``FEATURES``:

- the two-tower score and the item-item score, each standardised per user over the
  catalogue (the two-tower mean and spread in closed form from the item embeddings'
  first and second moments, so that any index serves);
- the predicted rating (the rating head: shown as stars, and one signal among others);
- the item's popularity (log of its training interactions, scaled to [0, 1]);
- the candidate's rank within the list by each score (-log(1 + rank));
- both standardised scores times log(1 + history length): how far to trust each source
  depends on how much the user has rated;
- both again for a user known only by a history (zero for a known user): the two-tower
  score of a history alone is less sure than that of a user the model trained on.

It is trained listwise (softmax cross-entropy over each user's candidates, with graded
gains from ratings) on interactions carved out of the training rows, with stage one
fitted on the rest (``pipeline.fit_stage_one``): no test row is ever seen.

The files follow a request: ``queries`` (who a list is for), ``stage_one``,
``item_item`` and ``candidates`` (the two sources and the features), ``ratings`` (the
rating head and its neighbourhood correction, ``neighbours``), ``ranker`` (the listwise
ranker), ``two_stage`` (the one inference path serving and evaluation share).
"""

from mtrec.ranking.candidates import (
    FEATURES,
    QUERIES_PER_CHUNK,
    Candidates,
    candidates,
    stack_candidates,
    tower_scores,
)
from mtrec.ranking.item_item import (
    KNOWN_ITEM_ITEM_MAX_ENTRIES,
    item_item_rows,
    item_item_source,
    union_rows,
    with_known_item_item,
)
from mtrec.ranking.queries import (
    Queries,
    exclusion_lists,
    histories_of,
    history_queries,
    history_query,
    user_queries,
)
from mtrec.ranking.ranker import Ranker, fit_ranker, gains_of, listwise_loss
from mtrec.ranking.ratings import (
    HISTORY_ENTRIES_PER_CHUNK,
    PAIRS_PER_CHUNK,
    corrected,
    corrections,
    fit_correction,
    head_ratings,
    predicted_for_pairs,
    predicted_ratings,
    training_errors,
)
from mtrec.ranking.stage_one import ItemItemSource, StageOne, tower_stats
from mtrec.ranking.two_stage import (
    PAIRS_PER_BLOCK,
    RankedBatch,
    TwoStage,
    rank_by_rating,
    rank_candidates,
    retrieve_then_rank,
)

__all__ = [
    "FEATURES",
    "HISTORY_ENTRIES_PER_CHUNK",
    "KNOWN_ITEM_ITEM_MAX_ENTRIES",
    "PAIRS_PER_BLOCK",
    "PAIRS_PER_CHUNK",
    "QUERIES_PER_CHUNK",
    "Candidates",
    "ItemItemSource",
    "Queries",
    "RankedBatch",
    "Ranker",
    "StageOne",
    "TwoStage",
    "candidates",
    "corrected",
    "corrections",
    "exclusion_lists",
    "fit_correction",
    "fit_ranker",
    "gains_of",
    "head_ratings",
    "histories_of",
    "history_queries",
    "history_query",
    "item_item_rows",
    "item_item_source",
    "listwise_loss",
    "predicted_for_pairs",
    "predicted_ratings",
    "rank_by_rating",
    "rank_candidates",
    "retrieve_then_rank",
    "stack_candidates",
    "tower_scores",
    "tower_stats",
    "training_errors",
    "union_rows",
    "user_queries",
    "with_known_item_item",
]
