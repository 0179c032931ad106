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
fitted on the rest (see ``pipeline.fit_two_stage``): no test row is ever seen.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from mtrec.config import RankerConfig
from mtrec.errors import ArtifactError
from mtrec.features import EncodedInteractions
from mtrec.index import Index
from mtrec.model import Histories, MultiTaskModel, SplitHead
from mtrec.neighbours import MAX_CORRECTION, by_user, correction, fit_weight, unit_rows
from mtrec.optim import Adam

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
)


@dataclasses.dataclass(frozen=True)
class Queries:
    """Users to rank for: query embeddings and histories (CSR over item rows).

    ``user_rows`` is -1 for a user known only by a history (no row of their own); the
    history's items are what the item-item source reads and what the list leaves out.
    """

    embeddings: NDArray[np.float32]
    user_rows: NDArray[np.int64]
    indptr: NDArray[np.int64]
    items: NDArray[np.int64]
    exclude_history: bool = True
    """Leave each user's history out of their candidates (False: rated items may return)."""
    blocked: NDArray[np.int64] | None = None
    """Item rows no query's list may hold (a request's filters)."""
    labels: NDArray[np.float32] | None = None
    """The history entries' scaled ratings (the neighbourhood correction reads the rating
    head's errors on them); None: predicted ratings go uncorrected."""
    errors: NDArray[np.float32] | None = None
    """The rating head's error on each history entry, where known in advance (a known
    user's, computed when the model was trained); None: computed from ``labels``."""

    def __len__(self) -> int:
        return len(self.user_rows)

    def history(self, i: int) -> NDArray[np.int64]:
        return self.items[self.indptr[i] : self.indptr[i + 1]]

    def take(self, lo: int, hi: int) -> Queries:
        """Queries ``lo..hi-1`` (their histories with them)."""
        a, b = int(self.indptr[lo]), int(self.indptr[hi])
        return dataclasses.replace(
            self,
            embeddings=self.embeddings[lo:hi],
            user_rows=self.user_rows[lo:hi],
            indptr=self.indptr[lo : hi + 1] - a,
            items=self.items[a:b],
            labels=None if self.labels is None else self.labels[a:b],
            errors=None if self.errors is None else self.errors[a:b],
        )

    def exclusions(self) -> list[NDArray[np.int64]] | None:
        """Per query, the item rows its list leaves out: its history and the blocked rows."""
        own = [self.history(i) for i in range(len(self))] if self.exclude_history else None
        return exclusion_lists(own, self.blocked, len(self))


def exclusion_lists(
    own: list[NDArray[np.int64]] | None, blocked: NDArray[np.int64] | None, n: int
) -> list[NDArray[np.int64]] | None:
    """Each of ``n`` queries' exclusions: its ``own`` rows (None: none) and the ``blocked``
    rows every query leaves out (a request's filters); None where nothing is left out."""
    if blocked is None:
        return own
    if own is None:
        return [blocked] * n
    return [np.concatenate([rows, blocked]) for rows in own]


def user_queries(
    stage: StageOne,
    users: NDArray[np.int64],
    seen: Histories,
    exclude_history: bool = True,
    blocked: NDArray[np.int64] | None = None,
) -> Queries:
    """Queries for known user rows, each with their training items as history (and the
    rating head's errors on them, where the stage holds them); ``blocked``: item rows no
    list may hold."""
    indptr, entries = _entries(seen, users)
    rows = users.astype(np.int64)
    return Queries(
        stage.user_embeddings[rows],
        rows,
        indptr,
        seen.items[entries].astype(np.int64),
        exclude_history,
        blocked,
        labels=seen.labels[entries],
        errors=None if stage.errors is None else stage.errors[entries],
    )


def histories_of(
    seen: Histories, users: NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float32]]:
    """The histories of ``users`` as CSR (indptr, item rows, scaled labels), one per user."""
    indptr, entries = _entries(seen, users)
    return indptr, seen.items[entries].astype(np.int64), seen.labels[entries]


def _entries(
    seen: Histories, users: NDArray[np.int64]
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """The CSR indptr of ``users``' histories and where their entries sit in ``seen``."""
    starts, ends = seen.indptr[users], seen.indptr[users + 1]
    indptr = np.concatenate([[0], np.cumsum(ends - starts)]).astype(np.int64)
    entries = np.arange(int(indptr[-1])) - np.repeat(indptr[:-1] - starts, ends - starts)
    return indptr, entries


def history_queries(
    model: MultiTaskModel,
    indptr: NDArray[np.int64],
    items: NDArray[np.int64],
    labels: NDArray[np.float32],
) -> Queries:
    """Users the model never saw, known by the items they rated (CSR over item rows, with
    scaled ``labels``): each embedded from their history alone."""
    n = len(indptr) - 1
    with torch.inference_mode():
        embeddings = [
            model.embed_history(
                torch.from_numpy(items[indptr[u] : indptr[u + 1]]),
                torch.from_numpy(labels[indptr[u] : indptr[u + 1]]),
            )
            for u in range(n)
        ]
    stacked = torch.cat(embeddings).numpy() if n else np.zeros((0, model.config.embedding_dim))
    rows = np.full(n, -1, dtype=np.int64)
    return Queries(
        stacked.astype(np.float32),
        rows,
        indptr.astype(np.int64),
        items.astype(np.int64),
        labels=labels.astype(np.float32),
    )


def history_query(
    model: MultiTaskModel, items: NDArray[np.int64], labels: NDArray[np.float32]
) -> Queries:
    """One user the model never saw, known by the items they rated (scaled ``labels``)."""
    indptr = np.array([0, len(items)], dtype=np.int64)
    return history_queries(model, indptr, items, labels)


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
        object.__setattr__(self, "user_tower_stats", _tower_stats(self, users))
        scale = math.log1p(max(int(self.counts.max(initial=0)), 1))
        object.__setattr__(self, "popularity", np.log1p(self.counts) / scale)

    def updated(self, **fields: Any) -> StageOne:
        """This stage with ``fields`` (``correction``, ``errors``, ``known_item_item``)
        replaced and its computed fields shared (``dataclasses.replace`` would compute
        them again)."""
        out = copy.copy(self)
        for name, value in fields.items():
            object.__setattr__(out, name, value)
        return out


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
    _, tower_rows = stage.index.search(queries.embeddings, c, exclude=queries.exclusions())
    item_item = _item_item_source(stage, queries, c)
    lists = [tower_rows] if item_item is None else [tower_rows, item_item.top]
    rows = _union(np.concatenate(lists, axis=1))
    valid = rows >= 0
    safe = np.where(valid, rows, 0)
    q = queries.embeddings
    tower = tower_scores(stage, q, safe)
    known = queries.user_rows >= 0
    stats = stage.user_tower_stats[queries.user_rows] if known.all() else _tower_stats(stage, q)
    tower_z = (tower - stats[:, :1]) / stats[:, 1:]
    predicted = _head(stage, q, queries.user_rows, safe)  # the correction: shown, not a feature
    length = np.log1p(queries.indptr[1:] - queries.indptr[:-1])[:, None] / 5.0
    features = np.zeros((*rows.shape, len(FEATURES)), dtype=np.float32)
    column = _COLUMN
    features[..., column["two_tower"]] = tower_z
    features[..., column["predicted_rating"]] = predicted
    features[..., column["popularity"]] = stage.popularity[safe]
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


def _tower_stats(stage: StageOne, queries: NDArray[np.float32]) -> NDArray[np.float64]:
    """(n, 2) each query's two-tower mean and spread over the catalogue, in closed form
    from the item embeddings' first and second moments (so that any index serves)."""
    q = queries.astype(np.float64)
    mean = q @ stage.item_mean
    spread = ((q @ stage.item_moment) * q).sum(axis=1)
    return np.stack([mean, np.sqrt(np.maximum(spread - mean**2, 1e-12))], axis=1)


def tower_scores(
    stage: StageOne, embeddings: NDArray[np.float32], items: NDArray[np.int64]
) -> NDArray[np.float32]:
    """(n, c) two-tower scores of (n, c) item rows for n query embeddings."""
    scores: NDArray[np.float32] = np.matmul(stage.item_embeddings[items], embeddings[:, :, None])
    return scores[..., 0]


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


def _item_item_source(stage: StageOne, queries: Queries, per_source: int) -> ItemItemSource | None:
    """The queries' item-item source: known users' (their histories left out) read from
    ``StageOne.known_item_item`` where a request changes nothing it depends on, else
    computed from the histories."""
    if stage.item_item is None:
        return None
    known = stage.known_item_item
    rows = queries.user_rows
    if known is not None and queries.exclude_history and bool((rows >= 0).all()):
        if queries.blocked is None and known.top.shape[1] == per_source:
            return known.rows(rows)
        scores = known.scores[rows]  # a copy, history already -inf, as blocked rows go in
    else:
        indptr, items = queries.indptr, queries.items
        scores = item_item_rows(stage.item_item, indptr, items, queries.exclude_history)
    if queries.blocked is not None:
        scores[:, queries.blocked] = -np.inf
    return ItemItemSource.of(scores, per_source)


def with_known_item_item(stage: StageOne, seen: Histories, per_source: int) -> StageOne:
    """``stage`` with every known user's item-item source computed once, ``per_source``
    candidates each (``StageOne.known_item_item``), where it has item-item weights and
    the scores fit in ``KNOWN_ITEM_ITEM_MAX_ENTRIES``; else ``stage`` as it is."""
    n_users, n_items = len(seen.indptr) - 1, len(stage.counts)
    if stage.item_item is None or n_users * n_items > KNOWN_ITEM_ITEM_MAX_ENTRIES:
        return stage
    scores = item_item_rows(stage.item_item, seen.indptr.astype(np.int64), seen.items)
    return stage.updated(known_item_item=ItemItemSource.of(scores, min(per_source, n_items)))


KNOWN_ITEM_ITEM_MAX_ENTRIES = 1 << 25
"""Known users' item-item scores are kept up to this many (128 MB; ML-1M's 6,040 users x
3,706 items take 90 MB); past it each request sums its history's rows of the weights."""


def item_item_rows(
    weights: NDArray[np.float32],
    indptr: NDArray[np.int64],
    items: NDArray[np.int64],
    exclude_history: bool = True,
) -> NDArray[np.float32]:
    """(n, n_items) item-item scores of n histories (CSR ``indptr``/``items``): the sum
    of their rows of ``weights``; each history's own items -inf (``exclude_history``)."""
    n, n_items = len(indptr) - 1, len(weights)
    scores = np.empty((n, n_items), dtype=np.float32)
    for lo in range(0, n, 256):  # 256 users at a time
        hi = min(lo + 256, n)
        a, b = int(indptr[lo]), int(indptr[hi])
        if hi - lo == 1:  # one user (a request): their rows of B, even for a long history
            scores[lo] = weights[items[a:b]].sum(axis=0)  # (600 rows: 0.2 ms; B x
            continue  # a binary row reads all of B: 0.5 ms with a request's cache misses)
        # short histories: add up their rows of B; long ones: a dense row times B (BLAS
        # does 1,682 x 1,682 in ~0.3 ms, while gathering 700 rows costs more)
        if (b - a) * 8 <= (hi - lo) * n_items and (b - a) * n_items <= 1 << 22:
            starts = indptr[lo:hi] - a
            # a zero row at the end: an empty last history still has a valid start
            gathered = np.concatenate([weights[items[a:b]], np.zeros((1, n_items))])
            sums = np.add.reduceat(gathered, starts, axis=0)
            empty = indptr[lo + 1 : hi + 1] == indptr[lo:hi]
            scores[lo:hi] = np.where(empty[:, None], 0.0, sums)  # reduceat: empty = next row
            continue
        x = torch.zeros((hi - lo, n_items))  # many: binary history rows times B
        within = np.repeat(np.arange(hi - lo), np.diff(indptr[lo : hi + 1]))
        x[torch.from_numpy(within), torch.from_numpy(items[a:b])] = 1.0
        scores[lo:hi] = (x @ torch.from_numpy(weights)).numpy()
    if exclude_history:
        user = np.repeat(np.arange(n), np.diff(indptr))
        scores[user, items] = -np.inf
    return scores


def _union(rows: NDArray[np.int64]) -> NDArray[np.int64]:
    """Each row's distinct item rows (sorted), duplicates and pads as -1 at the end."""
    if len(rows) == 1:  # a request: marks over the catalogue, no sort (np.unique: 25 us)
        marked = np.zeros(int(rows.max(initial=-1)) + 1, dtype=bool)
        marked[rows[rows >= 0]] = True
        return np.flatnonzero(marked)[None, :]
    ordered = np.sort(rows, axis=1)
    repeat = np.zeros_like(ordered, dtype=bool)
    repeat[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    ordered = np.where(repeat | (ordered < 0), np.iinfo(np.int64).max, ordered)
    ordered = np.sort(ordered, axis=1)
    width = int((ordered != np.iinfo(np.int64).max).sum(axis=1).max(initial=0))
    out = ordered[:, :width]
    return np.where(out == np.iinfo(np.int64).max, -1, out)


def _rank_feature(
    scores: NDArray[np.floating[Any]], valid: NDArray[np.bool_]
) -> NDArray[np.float64]:
    """-log(1 + rank) of each candidate by ``scores`` within its row (pads ranked last)."""
    order = np.argsort(np.where(valid, -scores, np.inf), axis=1, kind="stable")
    out = np.empty(order.shape, dtype=np.float64)  # the inverse permutation, no 2nd sort
    out[np.arange(len(order))[:, None], order] = -np.log1p(np.arange(order.shape[1]))
    return out


def predicted_ratings(
    stage: StageOne, queries: Queries, items: NDArray[np.int64]
) -> NDArray[np.float32]:
    """(n, c) predicted scaled ratings of the queries' item rows: the rating head's, plus
    the weighted neighbourhood correction where the stage has one."""
    return corrected(
        stage, queries, items, _head(stage, queries.embeddings, queries.user_rows, items)
    )


def corrected(
    stage: StageOne, queries: Queries, items: NDArray[np.int64], head: NDArray[np.float32]
) -> NDArray[np.float32]:
    """The rating head's (n, c) predictions ``head`` of the queries' item rows plus the
    stage's weighted correction (as they are where it has none, or the queries carry no
    ratings)."""
    if not stage.correction:
        return head
    found = corrections(stage, queries, items)
    return head if found is None else head + np.float32(stage.correction) * found


def corrections(
    stage: StageOne, queries: Queries, items: NDArray[np.int64]
) -> NDArray[np.float32] | None:
    """The unweighted neighbourhood corrections of the queries' (n, c) item rows, from
    the rating head's errors on their histories; None where the queries carry no ratings."""
    if queries.labels is None:
        return None
    errors = queries.errors
    if errors is None:
        errors = queries.labels - _history_predictions(stage, queries)
    return correction(stage.unit_items, items, queries.indptr, queries.items, errors)


def training_errors(stage: StageOne, seen: Histories) -> NDArray[np.float32]:
    """The rating head's error (scaled label minus prediction) on every entry of the
    known users' histories ``seen``, aligned with them: what the correction reads for a
    known user, computed once (a request would otherwise pay for its whole history)."""
    queries = user_queries(stage, np.arange(len(seen.indptr) - 1), seen)
    assert queries.labels is not None
    return (queries.labels - _history_predictions(stage, queries)).astype(np.float32)


def _history_predictions(stage: StageOne, queries: Queries) -> NDArray[np.float32]:
    """The rating head's prediction of every history entry of the queries (flat, as
    ``queries.items``), ``HISTORY_ENTRIES_PER_CHUNK`` at a time."""
    if len(queries) == 1:  # a request: the user's side of the head once, not per entry
        one: NDArray[np.float32] = _head(
            stage, queries.embeddings, queries.user_rows, queries.items[None, :]
        )[0]
        return one
    owner = np.repeat(np.arange(len(queries)), np.diff(queries.indptr))
    out = np.empty(len(queries.items), dtype=np.float32)
    for lo in range(0, len(owner), HISTORY_ENTRIES_PER_CHUNK):
        who = owner[lo : lo + HISTORY_ENTRIES_PER_CHUNK]
        items = queries.items[lo : lo + HISTORY_ENTRIES_PER_CHUNK, None]
        out[lo : lo + len(who)] = _head(
            stage, queries.embeddings[who], queries.user_rows[who], items
        )[:, 0]
    return out


HISTORY_ENTRIES_PER_CHUNK = 65536
"""History entries whose predictions are computed at a time (the head's hidden layer
holds 256 floats for each)."""


PAIRS_PER_CHUNK = 262_144
"""(user, item) cells, padding included, whose predictions are computed at once: the
head's hidden layer holds 256 floats for each (256 MB)."""


def _head(
    stage: StageOne,
    users: NDArray[np.float32],
    user_rows: NDArray[np.int64],
    items: NDArray[np.int64],
) -> NDArray[np.float32]:
    """The rating head's (n, c) predictions for (n, d) user embeddings and (n, c) items,
    at most ``PAIRS_PER_CHUNK`` pairs at a time: 8,192 users' 50 candidates at once held
    a 420 MB hidden layer (one such chunk at 25M rows: 679 MB over its start, 444 after)."""
    n, c = items.shape
    step = max(1, PAIRS_PER_CHUNK // max(c, 1))
    if n <= step:
        return _head_block(stage, users, user_rows, items)
    return np.concatenate(
        [
            _head_block(
                stage, users[lo : lo + step], user_rows[lo : lo + step], items[lo : lo + step]
            )
            for lo in range(0, n, step)
        ]
    )


def _head_block(
    stage: StageOne,
    users: NDArray[np.float32],
    user_rows: NDArray[np.int64],
    items: NDArray[np.int64],
) -> NDArray[np.float32]:
    if stage.head is not None:
        return stage.head.predict(users, user_rows, items)
    n, c = items.shape  # a head that reads the dot product: the whole head per pair
    flat = items.reshape(-1)
    embedded = torch.from_numpy(stage.item_embeddings[flat])
    with torch.inference_mode():
        predicted = stage.model.predict_rating(
            torch.from_numpy(np.repeat(users, c, axis=0)),
            embedded,
            torch.from_numpy(np.repeat(user_rows, c)),
            torch.from_numpy(flat),
        )
    return predicted.reshape(n, c).numpy()


def _pair_chunks(users: NDArray[np.int64]) -> list[NDArray[np.int64]]:
    """Positions of the pairs of ``users``, in chunks of whole users that fill at most
    ``PAIRS_PER_CHUNK`` cells once padded to their widest user (users of like row counts
    together; a wider user is a chunk alone). One chunk holds every position in order.

    Why: the pairs are laid out as an (users, widest) matrix, and at scale one user's many
    rows widened it for all: 20M planted rows asked for (196,688 x 453 x 256) floats,
    85 GB, when the ranking stage fitted its correction."""
    if not len(users):
        return []
    _, row, counts = np.unique(users, return_inverse=True, return_counts=True)
    order = np.argsort(counts, kind="stable")  # users by their rows, narrowest first
    widths = counts[order]
    chunk_of = np.empty(len(counts), dtype=np.int64)
    chunk, start = 0, 0
    while start < len(order):  # the widest user so far sets the chunk's width
        candidates = widths[start : start + max(PAIRS_PER_CHUNK // int(widths[start]), 1)]
        cells = candidates * np.arange(1, len(candidates) + 1)  # taking the first k users
        stop = start + max(int(np.searchsorted(cells, PAIRS_PER_CHUNK, side="right")), 1)
        chunk_of[order[start:stop]] = chunk
        chunk, start = chunk + 1, stop
    of_pair = chunk_of[row]
    positions = np.argsort(of_pair, kind="stable")
    return np.split(positions, np.cumsum(np.bincount(of_pair))[:-1])


def _pairs_by_user(
    stage: StageOne, seen: Histories, users: NDArray[np.int64], items: NDArray[np.int64]
) -> Iterator[
    tuple[
        NDArray[np.int64],
        Queries,
        NDArray[np.int64],
        NDArray[np.float32],
        tuple[NDArray[np.int64], NDArray[np.int64]],
    ]
]:
    """For each chunk of the (known user row, item row) pairs: its positions, its users'
    queries, their (n, c) item rows (pads at row 0), the rating head's predictions of
    them, and where each pair landed, (row, column)."""
    for part in _pair_chunks(users):
        distinct, matrix, landed = by_user(users[part], items[part])
        queries = user_queries(stage, distinct, seen)
        safe = np.maximum(matrix, 0)
        yield part, queries, safe, _head(stage, queries.embeddings, queries.user_rows, safe), landed


def predicted_for_pairs(
    stage: StageOne, seen: Histories, users: NDArray[np.int64], items: NDArray[np.int64]
) -> NDArray[np.float32]:
    """The predicted scaled rating of each (known user row, item row) pair, as the
    served list shows it (the neighbourhood correction included)."""
    out = np.empty(len(users), dtype=np.float32)
    for part, queries, safe, head, (row, column) in _pairs_by_user(stage, seen, users, items):
        out[part] = corrected(stage, queries, safe, head)[row, column]
    return out


def fit_correction(stage: StageOne, seen: Histories, held: EncodedInteractions) -> float:
    """The correction's weight that best fits the ``held`` rows (carved out of training,
    never seen by ``stage``'s model), with the histories ``seen`` it trained on."""
    users, items, labels = held.user.numpy(), held.item.numpy(), held.label.numpy()
    found, residual = [np.zeros(0, np.float32)], [np.zeros(0, np.float32)]
    for part, queries, safe, head, (row, column) in _pairs_by_user(stage, seen, users, items):
        spread = corrections(stage, queries, safe)
        assert spread is not None
        found.append(spread[row, column])
        residual.append(labels[part] - head[row, column])
    return fit_weight(np.concatenate(found), np.concatenate(residual))


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


@dataclasses.dataclass(frozen=True)
class Ranker:
    """A linear scorer over ``FEATURES``; the fitted weights are the whole model, with the
    weight of the neighbourhood correction of predicted ratings fitted beside them."""

    weights: NDArray[np.float32]
    config: RankerConfig
    correction: float = 0.0
    """Models saved before the correction existed have none (0)."""

    def score(self, found: Candidates) -> NDArray[np.float32]:
        """(n, c) scores; pads score -inf so they sort last."""
        scores = found.features @ self.weights
        return np.where(found.rows >= 0, scores, -np.inf).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": list(FEATURES),
            "weights": [float(w) for w in self.weights],
            "correction": self.correction,
            "config": self.config.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> Ranker:
        """Rebuild from ``to_dict``; anything else raises ``ArtifactError`` naming ``where``."""
        weights = data.get("weights") if isinstance(data, dict) else None
        correction = data.get("correction", 0.0) if isinstance(data, dict) else None
        if (
            not isinstance(data, dict)
            or data.get("features") != list(FEATURES)
            or not isinstance(weights, list)
            or len(weights) != len(FEATURES)
            or not all(_finite(w) for w in weights)
            or not (_finite(correction) and 0 <= correction <= MAX_CORRECTION)
        ):
            raise ArtifactError(
                f"{where}: expected 'features' {list(FEATURES)}, as many finite 'weights' "
                f"and a 'correction' in [0, {MAX_CORRECTION:g}]"
            )
        try:
            config = RankerConfig.from_dict(data.get("config", {}))
        except Exception as exc:
            raise ArtifactError(f"{where}: invalid ranker config ({exc})") from None
        return cls(np.asarray(weights, dtype=np.float32), config, float(correction))


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def listwise_loss(scores: torch.Tensor, gains: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy of (n, c) scores against gains, averaged over the n lists:
    -sum_i g_i log softmax(s)_i / sum_i g_i. Pads (``pad`` True) take no probability."""
    log_p = torch.log_softmax(scores.masked_fill(pad, -torch.inf), dim=1).masked_fill(pad, 0.0)
    return -((gains * log_p).sum(1) / gains.sum(1)).mean()


def fit_ranker(
    found: Candidates, gains: NDArray[np.float32], config: RankerConfig, correction: float = 0.0
) -> Ranker:
    """Fit the weights by :func:`listwise_loss` over the users with a positive, plus an
    L2 penalty (``correction``: the stage's, already fitted, kept with the weights).

    Full-batch Adam from zero weights, a fixed number of steps: deterministic.
    """
    keep = gains.sum(axis=1) > 0
    x = torch.from_numpy(found.features[keep])
    g = torch.from_numpy(gains[keep])
    pad = torch.from_numpy(found.rows[keep] < 0)
    w = torch.zeros(x.shape[-1], requires_grad=True)
    optimizer = Adam([w], lr=config.learning_rate)  # torch.optim's costs a second's import
    for _ in range(config.steps if len(x) else 0):
        loss = listwise_loss(x @ w, g, pad) + config.l2 * (w**2).sum()
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    return Ranker(w.detach().numpy().astype(np.float32), config, correction)


def gains_of(
    found: Candidates,
    user_of_query: NDArray[np.int64],
    held_users: NDArray[np.int64],
    held_items: NDArray[np.int64],
    held_labels: NDArray[np.float32],
    config: RankerConfig,
    liked: float,
) -> NDArray[np.float32]:
    """(n, c) gains of the candidates: 1 for a held-aside item the user liked, the
    config's ``low_rating_gain`` for one rated lower, 0 otherwise."""
    width = int(max(found.rows.max(initial=0), held_items.max(initial=0))) + 1
    keys = user_of_query[:, None] * width + found.rows
    held_keys = held_users * width + held_items
    order = np.argsort(held_keys)
    held_keys, held_labels = held_keys[order], held_labels[order]
    pos = np.searchsorted(held_keys, keys).clip(0, max(len(held_keys) - 1, 0))
    hit = (found.rows >= 0) & (held_keys[pos] == keys) if len(held_keys) else found.rows < -1
    label = held_labels[pos] if len(held_keys) else np.zeros(keys.shape, dtype=np.float32)
    gain = np.where(label >= liked, 1.0, config.low_rating_gain)
    return np.where(hit, gain, 0.0).astype(np.float32)
