"""Each user's candidates from both sources, with the features the ranker reads."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from numpy.typing import NDArray

from mtrec.features import top_of_order
from mtrec.ranking.item_item import item_item_source, union_rows
from mtrec.ranking.queries import Queries
from mtrec.ranking.ratings import head_ratings
from mtrec.ranking.stage_one import StageOne, tower_stats

FEATURES = (
    "two_tower",
    "item_item",
    "predicted_rating",
    "popularity",
    "two_tower_rank",
    "item_item_rank",
    "history_x_two_tower",
    "history_x_item_item",
    "new_user_x_two_tower",
    "new_user_x_item_item",
    "recent_popularity",
)


@dataclasses.dataclass(frozen=True)
class Candidates:
    """(n, c) candidate item rows per user (-1 pads), their features and stage-one scores."""

    rows: NDArray[np.int64]
    features: NDArray[np.float32]
    """(n, c, len(FEATURES)); zeros where a row pads."""
    retrieval: NDArray[np.float32]
    """The two-tower score of each candidate (shown with a recommendation)."""
    predicted: NDArray[np.float32]
    """The rating head's scaled prediction of each candidate (a ranker feature; the
    rating a list shows adds the neighbourhood correction: ``predicted_ratings``)."""


QUERIES_PER_CHUNK = 8192
"""Users whose candidates are built at a time: fitting the ranker on a 1M-row log (170k
users, each also as a new user) gathered a (users, candidates, dim) block of 4 GB and
peaked at 14 GB."""


def candidates(stage: StageOne, queries: Queries, per_source: int) -> Candidates:
    """Each user's candidates from both sources (union, history excluded) and their
    features, ``QUERIES_PER_CHUNK`` users at a time."""
    if len(queries) <= QUERIES_PER_CHUNK:
        return _candidates(stage, queries, per_source)
    return stack_candidates(
        [
            _candidates(
                stage, queries.take(lo, min(lo + QUERIES_PER_CHUNK, len(queries))), per_source
            )
            for lo in range(0, len(queries), QUERIES_PER_CHUNK)
        ]
    )


def _candidates(stage: StageOne, queries: Queries, per_source: int) -> Candidates:
    n_items = len(stage.counts)
    c = min(per_source, n_items)
    excluded = queries.exclusions()
    _, tower_rows = stage.index.search(queries.embeddings, c, exclude=excluded)
    item_item = item_item_source(stage, queries, c)
    lists = [tower_rows] if item_item is None else [tower_rows, item_item.top]
    if stage.recent_order is not None:  # what is liked lately, on a log split by time
        lists.append(top_of_order(stage.recent_order, excluded, len(queries), c))
    rows = union_rows(np.concatenate(lists, axis=1))
    valid = rows >= 0
    safe = np.where(valid, rows, 0)
    q = queries.embeddings
    tower = tower_scores(stage, q, safe)
    known = queries.user_rows >= 0
    stats = stage.user_tower_stats[queries.user_rows] if known.all() else tower_stats(stage, q)
    tower_z = (tower - stats[:, :1]) / stats[:, 1:]
    predicted = head_ratings(
        stage, q, queries.user_rows, safe
    )  # the correction: shown, not a feature
    length = np.log1p(queries.indptr[1:] - queries.indptr[:-1])[:, None] / 5.0
    features = np.zeros((*rows.shape, len(FEATURES)), dtype=np.float32)
    column = _COLUMN
    features[..., column["two_tower"]] = tower_z
    features[..., column["predicted_rating"]] = predicted
    features[..., column["popularity"]] = stage.popularity[safe]
    if stage.recent_popularity is not None:
        features[..., column["recent_popularity"]] = stage.recent_popularity[safe]
    features[..., column["two_tower_rank"]] = _rank_feature(tower, valid)
    features[..., column["history_x_two_tower"]] = length * tower_z
    new = ~known
    if new.any():
        features[new, :, column["new_user_x_two_tower"]] = tower_z[new]
    if item_item is not None:  # without item-item weights its four columns stay zero
        ii_z = item_item.standardised(safe)
        features[..., column["item_item"]] = ii_z
        features[..., column["item_item_rank"]] = _rank_feature(ii_z, valid)
        features[..., column["history_x_item_item"]] = length * ii_z
        if new.any():
            features[new, :, column["new_user_x_item_item"]] = ii_z[new]
    if valid.all():  # a request's candidates: no pads (each np.where below costs a call)
        return Candidates(rows, features, tower.astype(np.float32, copy=False), predicted)
    features[~valid] = 0.0
    return Candidates(
        rows,
        features,
        np.where(valid, tower, -np.inf).astype(np.float32),
        np.where(valid, predicted, -np.inf).astype(np.float32),
    )


_COLUMN = {name: j for j, name in enumerate(FEATURES)}
"""Each feature's column in ``Candidates.features``."""


def tower_scores(
    stage: StageOne, embeddings: NDArray[np.float32], items: NDArray[np.int64]
) -> NDArray[np.float32]:
    """(n, c) two-tower scores of (n, c) item rows for n query embeddings."""
    scores: NDArray[np.float32] = np.matmul(stage.item_embeddings[items], embeddings[:, :, None])
    return scores[..., 0]


def _rank_feature(
    scores: NDArray[np.floating[Any]], valid: NDArray[np.bool_]
) -> NDArray[np.float64]:
    """-log(1 + rank) of each candidate by ``scores`` within its row (pads ranked last)."""
    order = np.argsort(np.where(valid, -scores, np.inf), axis=1, kind="stable")
    out = np.empty(order.shape, dtype=np.float64)  # the inverse permutation, no 2nd sort
    out[np.arange(len(order))[:, None], order] = -np.log1p(np.arange(order.shape[1]))
    return out


def stack_candidates(parts: list[Candidates]) -> Candidates:
    """Several users' candidate sets in one, padded to the widest (-1 rows, zero features)."""
    width = max(p.rows.shape[1] for p in parts)

    def pad(a: NDArray[Any], value: float) -> NDArray[Any]:
        extra = [(0, 0), (0, width - a.shape[1])] + [(0, 0)] * (a.ndim - 2)
        return np.pad(a, extra, constant_values=value)

    return Candidates(
        np.concatenate([pad(p.rows, -1) for p in parts]),
        np.concatenate([pad(p.features, 0.0) for p in parts]),
        np.concatenate([pad(p.retrieval, -np.inf) for p in parts]),
        np.concatenate([pad(p.predicted, -np.inf) for p in parts]),
    )
