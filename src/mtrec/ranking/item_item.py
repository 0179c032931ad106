"""The item-item candidate source: EASE weights summed over a user's history, and their top."""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray

from mtrec.model import Histories
from mtrec.ranking.queries import Queries
from mtrec.ranking.stage_one import ItemItemSource, StageOne


def item_item_source(stage: StageOne, queries: Queries, per_source: int) -> ItemItemSource | None:
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


def union_rows(rows: NDArray[np.int64]) -> NDArray[np.int64]:
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
