"""Ids to table rows and ratings to the rating head's [0, 1] labels."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from mtrec.config import LIKED, LOVED
from mtrec.data import Dataset, Interactions
from mtrec.errors import DataError, UnknownIdError
from mtrec.vocab import Vocab


@dataclasses.dataclass(frozen=True)
class RatingScale:
    """Maps ratings onto [0, 1] for the rating head: y = (rating - low) / (high - low).

    On MovieLens (1..5 stars), y = (r - 1) / 4, so a scaled RMSE of 0.25 is one star.
    """

    low: float = 1.0
    high: float = 5.0

    liked: typing.ClassVar[float] = LIKED
    """Scaled label of a liked item: four stars on 1..5 (relevant in recall, NDCG, MRR)."""
    loved: typing.ClassVar[float] = LOVED
    """Scaled labels above this are top ratings: five stars on 1..5 (the reference's
    top-k accuracy counts only these rows)."""

    @classmethod
    def of(cls, dataset: Dataset, rows: Interactions | None = None) -> RatingScale:
        """The scale of a dataset's ratings: their observed range (1..5 on MovieLens-100K,
        0.5..5 on the half-star sets), over ``rows`` where given (the training rows: no
        evaluation row sets it). Implicit feedback (no ratings) maps to 1."""
        rating = (dataset.interactions if rows is None else rows).rating
        if not dataset.has_ratings or not len(rating):
            return cls(0.0, 1.0)
        low, high = float(rating.min()), float(rating.max())
        return cls(low, high) if high > low else cls(low - 1.0, high)

    def check_fits(self, dataset: Dataset, what: str) -> None:
        """``dataset``'s ratings lie on this scale, or a ``DataError`` naming ``what``: a
        2..10 log on a 1..5 model trained on labels up to 2.25 and showed 10 stars as 5,
        and its RMSE in stars meant nothing. Unrated data fits any scale."""
        rating = dataset.interactions.rating
        if not dataset.has_ratings or not len(rating):
            return
        low, high = float(rating.min()), float(rating.max())
        if low < self.low or high > self.high:
            raise DataError(
                f"{what}: ratings {low:g}..{high:g} are off the model's scale "
                f"{self.low:g}..{self.high:g}; give ratings on the same scale",
                path=dataset.source or dataset.name,
            )

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

    @classmethod
    def from_training(cls, dataset: Dataset, train: Interactions) -> Vocabs:
        """What a model trained on ``train`` knows: the users with a training row, and the
        items with one or in ``dataset``'s catalogue (those without a row are cold items,
        embedded from their side features). A user or item seen only in evaluation rows is
        unknown, as it would be in deployment: such a user gets the fallback list."""
        items = train.distinct_items()
        if dataset.items is not None:
            items = np.unique(np.concatenate([dataset.items.ids, items]))
        return cls(Vocab("user", train.distinct_users()), Vocab("item", items))


@dataclasses.dataclass(frozen=True)
class EncodedInteractions:
    """Rows and labels as tensors: ``user``, ``item`` (n,) int64; ``label`` (n,) float32."""

    user: torch.Tensor
    item: torch.Tensor
    label: torch.Tensor
    rating_only: torch.Tensor | None = None
    """(n,) bool: True where a row trains the rating head only (a warm start's replayed
    rows), not the retrieval task, whose candidates it still is; None: no such row."""
    time: torch.Tensor | None = None
    """(n,) int64 timestamps, where a run reads them (a split by time: ``encode``'s
    ``with_time``); None otherwise (8 bytes a row it does not need)."""

    def __len__(self) -> int:
        return int(self.user.shape[0])

    def subset(self, rows: torch.Tensor) -> EncodedInteractions:
        """The rows selected by an index or boolean mask tensor."""
        only = None if self.rating_only is None else self.rating_only[rows]
        time = None if self.time is None else self.time[rows]
        return EncodedInteractions(self.user[rows], self.item[rows], self.label[rows], only, time)

    def only_for_rating(self) -> EncodedInteractions:
        """These rows, every one training the rating head only."""
        return dataclasses.replace(self, rating_only=torch.ones(len(self), dtype=torch.bool))

    @staticmethod
    def cat(parts: list[EncodedInteractions]) -> EncodedInteractions:
        """The rows of ``parts``, one after another."""
        only = None
        if any(p.rating_only is not None for p in parts):
            only = torch.cat([
                torch.zeros(len(p), dtype=torch.bool) if p.rating_only is None else p.rating_only
                for p in parts
            ])  # fmt: skip
        times = [p.time for p in parts]
        return EncodedInteractions(
            torch.cat([p.user for p in parts]),
            torch.cat([p.item for p in parts]),
            torch.cat([p.label for p in parts]),
            only,
            None if any(t is None for t in times) else torch.cat(times),  # type: ignore[arg-type]
        )


def encode(
    interactions: Interactions,
    vocabs: Vocabs,
    scale: RatingScale | None = None,
    *,
    with_time: bool = False,
) -> EncodedInteractions:
    """Translate ids to rows (unknown ids are an error) and scale the ratings; with
    ``with_time``, keep the timestamps too."""
    scale = scale or RatingScale()
    time = torch.from_numpy(interactions.timestamp.astype(np.int64)) if with_time else None
    return EncodedInteractions(
        user=torch.from_numpy(_rows(vocabs.users, interactions.user, interactions.user_names)),
        item=torch.from_numpy(_rows(vocabs.items, interactions.item, interactions.item_names)),
        label=torch.from_numpy(scale.scale(interactions.rating)),
        time=time,
    )


def known_rows(interactions: Interactions, vocabs: Vocabs) -> Unseen:
    """Which rows of a log from elsewhere (a test file, a split's test part) have a user and
    an item that ``vocabs`` know, which have a known item but an unknown user (a user
    without training rows: evaluated on the fallback list), and how many users, items and
    rows are unknown."""
    user = _rows(vocabs.users, interactions.user, interactions.user_names, "oov")
    item = _rows(vocabs.items, interactions.item, interactions.item_names, "oov")
    return Unseen(
        known=(user >= 0) & (item >= 0),
        users=len(np.unique(interactions.user[user < 0])),
        items=len(np.unique(interactions.item[item < 0])),
        new_user=(user < 0) & (item >= 0),
    )


@dataclasses.dataclass(frozen=True)
class Unseen:
    """Rows of a test log whose user or item the model never saw. A row on an unknown item
    cannot be in any list and is left out (counted); a known item's row of an unknown user
    is evaluated on the fallback list that user would be served."""

    known: NDArray[np.bool_]
    users: int
    """Distinct unknown users."""
    items: int
    """Distinct unknown items."""
    new_user: NDArray[np.bool_]
    """Rows of an unknown user on a known item (evaluated on the fallback list)."""
    cold_item_rows: int | None = None
    """Evaluated rows on a catalogue item without a training row (known from the catalogue,
    embedded from its side features); None: not counted."""
    cold_items: int | None = None
    """Distinct such items."""

    def with_cold(self, items: NDArray[np.int64], trained: NDArray[np.bool_]) -> Unseen:
        """These counts with the cold items among the evaluated rows' ``items`` (item rows)
        counted: those ``trained`` (per item row: has a training row) says are not."""
        cold = ~trained[items]
        n_items = len(np.unique(items[cold]))
        return dataclasses.replace(self, cold_item_rows=int(cold.sum()), cold_items=n_items)

    @property
    def rows(self) -> int:
        """Rows left out: those on an unknown item."""
        return int((~(self.known | self.new_user)).sum())

    def to_dict(self) -> dict[str, int]:
        said = {"rows": self.rows, "users": self.users, "items": self.items}
        said["new_user_rows"] = int(self.new_user.sum())
        if self.cold_item_rows is not None and self.cold_items is not None:
            said["cold_item_rows"], said["cold_items"] = self.cold_item_rows, self.cold_items
        return said


def _rows(
    vocab: Vocab,
    ids: NDArray[np.int64],
    names: NDArray[np.str_] | None,
    unknown: typing.Literal["error", "oov"] = "error",
) -> NDArray[Any]:
    """Rows of raw ids, or of codes into ``names``: those are looked up once per distinct
    name (a string search per row would cost seconds at 25M rows), then gathered."""
    if names is None:
        return vocab.rows(ids, unknown)
    table = vocab.rows(names, unknown="oov")
    rows = table[ids]
    if unknown == "error" and (rows < 0).any():
        raise UnknownIdError(vocab.name, str(names[ids[rows < 0][0]]))
    return rows
