"""Stage one: the two-tower model, its index, the item-item weights and item counts, with what
every query reuses computed once.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from mtrec.features import fallback_order
from mtrec.index import Index
from mtrec.model import MultiTaskModel, SplitHead
from mtrec.ranking.neighbours import unit_rows


@dataclasses.dataclass(frozen=True)
class ItemItemSource:
    """Users' EASE scores of the whole catalogue (history items and blocked ones -inf),
    with what the ranker reads of them: each row's mean and spread over its finite
    entries, and its top ``per_source`` item rows (-1 where fewer are finite)."""

    scores: NDArray[np.float32]
    stats: NDArray[np.float64]
    top: NDArray[np.int64]

    @classmethod
    def of(cls, scores: NDArray[np.float32], per_source: int) -> ItemItemSource:
        n, n_items = scores.shape
        top = np.argpartition(scores, n_items - per_source, axis=1)[:, n_items - per_source :]
        # a history item (-inf) is never a candidate, even where the rest is too short
        top = np.where(np.isfinite(scores[np.arange(n)[:, None], top]), top, -1)
        finite = np.isfinite(scores)
        count = np.maximum(finite.sum(axis=1), 1)
        kept = np.where(finite, scores, 0.0).astype(np.float64)
        mean = kept.sum(axis=1) / count
        var = np.einsum("ij,ij->i", kept, kept) / count - mean**2
        stats = np.stack([mean, np.sqrt(np.maximum(var, 0.0)) + 1e-9], axis=1)
        return cls(scores, stats, top)

    def rows(self, users: NDArray[np.int64] | slice) -> ItemItemSource:
        return ItemItemSource(self.scores[users], self.stats[users], self.top[users])

    def standardised(self, items: NDArray[np.int64]) -> NDArray[np.float64]:
        """The (n, c) scores of item rows, standardised per user (0 for a history item)."""
        raw = self.scores[np.arange(len(items))[:, None], items]
        return np.where(np.isfinite(raw), (raw - self.stats[:, :1]) / self.stats[:, 1:], 0.0)


@dataclasses.dataclass(frozen=True)
class StageOne:
    """What the ranker reads: the two-tower model and its index, the item-item weights
    (None where the catalogue is too large for them), item interaction counts, and the
    weight of the neighbourhood correction of predicted ratings (``neighbours``; 0: off)."""

    model: MultiTaskModel
    index: Index
    item_item: NDArray[np.float32] | None
    counts: NDArray[np.int64]
    correction: float = 0.0
    errors: NDArray[np.float32] | None = None
    """The rating head's error on each training entry of the users' histories (aligned
    with them: ``training_errors``), for the correction; None: computed per query."""
    known_item_item: ItemItemSource | None = None
    """Every known user's item-item source over the histories the stage was built with
    (``with_known_item_item``), like ``user_embeddings`` computed once: summing a
    request's history rows of the weights, then finding their top, was the largest step
    of a request; None: per query."""
    recent: NDArray[np.float64] | None = None
    """Each item's liked rows weighted by recency (``features.recency``), for the
    ``recent_popularity`` feature; None: that feature is zero."""
    item_embeddings: NDArray[np.float32] = dataclasses.field(init=False)
    user_embeddings: NDArray[np.float32] = dataclasses.field(init=False)
    """Every known user's query embedding, computed once (a history-reading tower pools
    the user's whole history for each one)."""
    item_mean: NDArray[np.float64] = dataclasses.field(init=False)
    item_moment: NDArray[np.float64] = dataclasses.field(init=False)
    user_tower_stats: NDArray[np.float64] = dataclasses.field(init=False)
    """(n_users, 2) each known user's two-tower mean and spread over the catalogue."""
    popularity: NDArray[np.float64] = dataclasses.field(init=False)
    """Each item's popularity feature: log of its interactions, scaled to [0, 1]."""
    recent_popularity: NDArray[np.float64] | None = dataclasses.field(init=False)
    """Each item's rank by ``recent``, as -log(1 + rank) (None without it)."""
    recent_order: NDArray[np.int64] | None = dataclasses.field(init=False)
    """The item rows by ``recent``, most first: a third candidate source (None without)."""
    head: SplitHead | None = dataclasses.field(init=False)
    """The rating head frozen for serving, each item's share computed once."""
    unit_items: NDArray[np.float32] = dataclasses.field(init=False)
    """The item embeddings at unit length: the correction's item similarities."""

    def __post_init__(self) -> None:
        self.model.eval()  # stage one serves: dropout off
        with torch.inference_mode():
            items = self.model.embed_items().numpy().astype(np.float32)
            users = self.model.embed_users().numpy().astype(np.float32)
            head = self.model.split_head(torch.from_numpy(items))
        object.__setattr__(self, "head", head)
        wide = items.astype(np.float64)
        object.__setattr__(self, "item_embeddings", items)
        object.__setattr__(self, "user_embeddings", users)
        object.__setattr__(self, "item_mean", wide.mean(axis=0))
        object.__setattr__(self, "item_moment", wide.T @ wide / max(len(wide), 1))
        object.__setattr__(self, "unit_items", unit_rows(items))
        object.__setattr__(self, "user_tower_stats", tower_stats(self, users))
        object.__setattr__(self, "popularity", _log_scaled(self.counts))
        order = None if self.recent is None else fallback_order(self.recent)
        object.__setattr__(self, "recent_order", order)
        recent = None if order is None else _rank_scores(order)
        object.__setattr__(self, "recent_popularity", recent)

    def updated(self, **fields: Any) -> StageOne:
        """This stage with ``fields`` (``correction``, ``errors``, ``known_item_item``)
        replaced and its computed fields shared (``dataclasses.replace`` would compute
        them again)."""
        out = copy.copy(self)
        for name, value in fields.items():
            object.__setattr__(out, name, value)
        return out


def _log_scaled(counts: NDArray[np.int64] | NDArray[np.float64]) -> NDArray[np.float64]:
    """log(1 + count) scaled to [0, 1] by the largest (at least 1)."""
    return np.log1p(counts) / math.log1p(max(float(counts.max(initial=0)), 1.0))


def _rank_scores(order: NDArray[np.int64]) -> NDArray[np.float64]:
    """Per item row, -log(1 + its rank in ``order``): the scale of the ranker's other rank
    features (a [0, 1] log count needed weights its 300 steps could not reach)."""
    scores = np.empty(len(order), dtype=np.float64)
    scores[order] = -np.log1p(np.arange(len(order)))
    return scores


def tower_stats(stage: StageOne, queries: NDArray[np.float32]) -> NDArray[np.float64]:
    """(n, 2) each query's two-tower mean and spread over the catalogue, in closed form
    from the item embeddings' first and second moments (so that any index serves)."""
    q = queries.astype(np.float64)
    mean = q @ stage.item_mean
    spread = ((q @ stage.item_moment) * q).sum(axis=1)
    return np.stack([mean, np.sqrt(np.maximum(spread - mean**2, 1e-12))], axis=1)
