"""What each user did in training (seen items, their ratings) and how often items occur."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from mtrec.features.encoding import EncodedInteractions, RatingScale


@dataclasses.dataclass(frozen=True)
class SeenItems:
    """Each user's training items and their scaled ratings, as CSR arrays.

    User row u rated ``items[indptr[u]:indptr[u + 1]]`` (sorted, no duplicates) with
    ``labels`` at the same positions. Recommendations leave these out; the service shows
    a user's best-rated ones.
    """

    indptr: NDArray[np.int64]
    items: NDArray[np.int64]
    labels: NDArray[np.float32]

    def as_rows(self) -> EncodedInteractions:
        """One row per (user, item) pair, with its (last) scaled rating."""
        users = np.repeat(np.arange(len(self.indptr) - 1), np.diff(self.indptr))
        return EncodedInteractions(
            torch.from_numpy(users), torch.from_numpy(self.items), torch.from_numpy(self.labels)
        )

    def of(self, user_row: int) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        lo, hi = int(self.indptr[user_row]), int(self.indptr[user_row + 1])
        return self.items[lo:hi], self.labels[lo:hi]


def seen_items(data: EncodedInteractions, n_users: int) -> SeenItems:
    """Build :class:`SeenItems` with one sort, no Python loop per row.

    A (user, item) pair rated more than once keeps its last rating. The sort is torch's
    stable one (radix, threaded; 0.9 s against NumPy's 3.1-3.7 s for 16M keys here): the
    whole build of 16M rows took 2.7 s against 7.1 s with ``np.unique``.
    """
    users, items = data.user.to(torch.int64), data.item.to(torch.int64)
    width = int(items.max()) + 1 if len(items) else 1
    keys, order = torch.sort(users * width + items, stable=True)
    last = torch.ones(len(keys), dtype=torch.bool)  # the last row of each pair wins
    torch.ne(keys[1:], keys[:-1], out=last[:-1])
    pairs = keys[last].numpy()
    labels = data.label[order[last]].numpy()
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(pairs // width, minlength=n_users), out=indptr[1:])
    return SeenItems(indptr, pairs % width, labels.astype(np.float32, copy=False))


def liked_counts(
    data: EncodedInteractions, n_items: int, min_label: float = RatingScale.liked
) -> NDArray[np.int64]:
    """Per item row, how many ratings reached ``min_label`` (four stars on 1..5): the
    cold-start list. (The popularity *baseline* counts every row: ``interaction_counts``.)"""
    liked = data.item[data.label >= min_label].numpy()
    return np.bincount(liked, minlength=n_items).astype(np.int64)


def fallback_order(popularity: NDArray[Any]) -> NDArray[np.int64]:
    """Item rows by descending ``popularity`` (liked counts, maybe weighted by recency:
    ``Prepared.fallback_counts``; ties by row): the list a user the model does not know
    is served, and that every evaluated list gives such a user."""
    return np.argsort(-popularity, kind="stable").astype(np.int64)


def top_of_order(
    order: NDArray[np.int64], excluded: list[NDArray[np.int64]] | None, n: int, k: int
) -> NDArray[np.int64]:
    """(n, k): each of ``n`` lists' first ``k`` rows of one global ``order``, its
    ``excluded`` rows left out (-1 pads a list the order cannot fill). One ranking for
    everyone, cut per list: scoring the catalogue per user took 10 s of a 25M-row log's
    evaluation (50,000 users x 80,000 items)."""
    lists = np.full((n, min(k, len(order))), -1, dtype=np.int64)
    for row in range(n):
        history = excluded[row] if excluded is not None else None
        if history is None or not len(history):
            lists[row] = order[: lists.shape[1]]
            continue
        top = order[: k + len(history)]
        top = top[~np.isin(top, history)][:k]
        lists[row, : len(top)] = top
    return lists


def interaction_counts(seen: SeenItems, n_items: int) -> NDArray[np.int64]:
    """Per item row, how many users interacted with it in training: the popularity
    baseline's score and the ranker's popularity signal."""
    return np.bincount(seen.items, minlength=n_items).astype(np.int64)
