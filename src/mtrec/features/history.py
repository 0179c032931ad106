"""What each user did in training (seen items, their ratings) and how often items occur."""

from __future__ import annotations

import dataclasses

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

    A (user, item) pair rated more than once keeps its last rating.
    """
    users, items = data.user.numpy().astype(np.int64), data.item.numpy().astype(np.int64)
    width = int(items.max(initial=0)) + 1
    keys = users * width + items
    # np.unique keeps the first occurrence: reverse so that the last rating wins
    pairs, first = np.unique(keys[::-1], return_index=True)
    labels = data.label.numpy()[::-1][first]
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.add.at(indptr, pairs // width + 1, 1)
    return SeenItems(np.cumsum(indptr), pairs % width, labels.astype(np.float32))


def liked_counts(
    data: EncodedInteractions, n_items: int, min_label: float = RatingScale.liked
) -> NDArray[np.int64]:
    """Per item row, how many ratings reached ``min_label`` (four stars on 1..5): the
    cold-start list. (The popularity *baseline* counts every row: ``interaction_counts``.)"""
    liked = data.item[data.label >= min_label].numpy()
    return np.bincount(liked, minlength=n_items).astype(np.int64)


def interaction_counts(seen: SeenItems, n_items: int) -> NDArray[np.int64]:
    """Per item row, how many users interacted with it in training: the popularity
    baseline's score and the ranker's popularity signal."""
    return np.bincount(seen.items, minlength=n_items).astype(np.int64)
