"""Interactions -> tensors of table rows and scaled labels, ready for the model."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from mtrec.data import Dataset, Interactions
from mtrec.vocab import Vocab


@dataclasses.dataclass(frozen=True)
class RatingScale:
    """Maps ratings onto [0, 1] for the rating head: y = (rating - low) / (high - low).

    On MovieLens (1..5 stars), y = (r - 1) / 4, so a scaled RMSE of 0.25 is one star.
    """

    low: float = 1.0
    high: float = 5.0

    def scale(self, rating: ArrayLike) -> NDArray[np.float32]:
        return ((np.asarray(rating, dtype=np.float32) - self.low) / (self.high - self.low)).astype(
            np.float32
        )

    def stars(self, scaled: ArrayLike) -> NDArray[np.float32]:
        """Inverse of :meth:`scale`, clipped to the rating range (the tutorial's 5 y is not)."""
        raw = self.low + (self.high - self.low) * np.asarray(scaled, dtype=np.float32)
        return np.asarray(np.clip(raw, self.low, self.high), dtype=np.float32)


@dataclasses.dataclass(frozen=True)
class Vocabs:
    """The user and item vocabularies of one dataset."""

    users: Vocab
    items: Vocab

    @classmethod
    def from_dataset(cls, dataset: Dataset) -> Vocabs:
        """Vocabularies over the dataset's catalogue (metadata plus every id in a rating).

        Building them from the catalogue, not the training rows, mirrors the reference
        (tables sized to the largest id) and lets every test row be scored.
        """
        return cls(Vocab("user", dataset.user_ids()), Vocab("item", dataset.item_ids()))


@dataclasses.dataclass(frozen=True)
class EncodedInteractions:
    """Rows and labels as tensors: ``user``, ``item`` (n,) int64; ``label`` (n,) float32."""

    user: torch.Tensor
    item: torch.Tensor
    label: torch.Tensor

    def __len__(self) -> int:
        return int(self.user.shape[0])


def encode(
    interactions: Interactions, vocabs: Vocabs, scale: RatingScale | None = None
) -> EncodedInteractions:
    """Translate ids to rows (unknown ids are an error) and scale the ratings."""
    scale = scale or RatingScale()
    return EncodedInteractions(
        user=torch.from_numpy(vocabs.users.rows(interactions.user)),
        item=torch.from_numpy(vocabs.items.rows(interactions.item)),
        label=torch.from_numpy(scale.scale(interactions.rating)),
    )


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


def popularity(
    data: EncodedInteractions, n_items: int, min_label: float = 0.75
) -> NDArray[np.int64]:
    """Per item row, how many ratings reached ``min_label`` (0.75 = four stars on 1..5)."""
    liked = data.item[data.label >= min_label].numpy()
    return np.bincount(liked, minlength=n_items).astype(np.int64)
