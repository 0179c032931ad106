"""Interactions -> tensors of table rows and scaled labels, ready for the model."""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from mtrec.config import ModelConfig
from mtrec.data import Dataset, Interactions
from mtrec.errors import ConfigError, UnknownIdError
from mtrec.vocab import Vocab


@dataclasses.dataclass(frozen=True)
class RatingScale:
    """Maps ratings onto [0, 1] for the rating head: y = (rating - low) / (high - low).

    On MovieLens (1..5 stars), y = (r - 1) / 4, so a scaled RMSE of 0.25 is one star.
    """

    low: float = 1.0
    high: float = 5.0

    @classmethod
    def of(cls, dataset: Dataset) -> RatingScale:
        """The scale of a dataset's ratings: their observed range (1..5 on MovieLens-100K,
        0.5..5 on the half-star sets). Implicit feedback (no ratings) maps to 1."""
        rating = dataset.interactions.rating
        if not dataset.has_ratings or not len(rating):
            return cls(0.0, 1.0)
        low, high = float(rating.min()), float(rating.max())
        return cls(low, high) if high > low else cls(low - 1.0, high)

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
        user=torch.from_numpy(_rows(vocabs.users, interactions.user, interactions.user_names)),
        item=torch.from_numpy(_rows(vocabs.items, interactions.item, interactions.item_names)),
        label=torch.from_numpy(scale.scale(interactions.rating)),
    )


def _rows(vocab: Vocab, ids: NDArray[np.int64], names: NDArray[np.str_] | None) -> NDArray[Any]:
    """Rows of raw ids, or of codes into ``names``: those are looked up once per distinct
    name (a string search per row would cost seconds at 25M rows), then gathered."""
    if names is None:
        return vocab.rows(ids)
    table = vocab.rows(names, unknown="oov")
    rows = table[ids]
    if (rows < 0).any():
        raise UnknownIdError(vocab.name, str(names[ids[rows < 0][0]]))
    return rows


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


USER_FEATURES = ("age", "gender", "occupation")
ITEM_FEATURES = ("genres", "year")
AGE_BUCKETS = (18, 25, 35, 45, 50, 56)
"""MovieLens' own age groups: under 18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+."""


def available_features(config: ModelConfig, dataset: Dataset) -> tuple[ModelConfig, list[str]]:
    """``config`` without the side features ``dataset`` has no metadata for (a preset made
    for MovieLens, used on a log without a users file), and the names of those dropped."""
    dropped: list[str] = []
    user, item = config.user_features, config.item_features
    if user and dataset.users is None:
        dropped += [f"user {f}" for f in user]
        user = ()
    if item and dataset.items is None:
        dropped += [f"item {f}" for f in item]
        item = ()
    elif item and dataset.items is not None and not dataset.items.genres.shape[1]:
        dropped += [f"item {f}" for f in item if f == "genres"]
        item = tuple(f for f in item if f != "genres")
    if not dropped:
        return config, []
    return dataclasses.replace(
        config, user_features=user, item_features=item, feature_sizes=(), feature_widths=()
    ), dropped


class _TakesFeatureCodes(Protocol):
    def set_feature_codes(self, side: str, name: str, codes: torch.Tensor) -> None: ...


@dataclasses.dataclass(frozen=True)
class FeatureCodes:
    """Side-feature codes per user/item row (0 = none), and each feature's vocabulary size."""

    user: dict[str, torch.Tensor]
    item: dict[str, torch.Tensor]
    sizes: dict[str, int]

    def configure(self, config: ModelConfig) -> ModelConfig:
        """``config`` with these features' names, sizes and widths filled in."""
        names = [("user", n) for n in self.user] + [("item", n) for n in self.item]
        tables = {"user": self.user, "item": self.item}
        return dataclasses.replace(
            config,
            user_features=tuple(self.user),
            item_features=tuple(self.item),
            feature_sizes=tuple(self.sizes[f"{s}.{n}"] for s, n in names),
            feature_widths=tuple(int(tables[s][n].shape[1]) for s, n in names),
        )

    def install(self, model: _TakesFeatureCodes) -> None:
        """Copy the codes into a model built from :meth:`configure`'s config."""
        for name, codes in self.user.items():
            model.set_feature_codes("user", name, codes)
        for name, codes in self.item.items():
            model.set_feature_codes("item", name, codes)


def feature_codes(
    dataset: Dataset, vocabs: Vocabs, user_features: tuple[str, ...], item_features: tuple[str, ...]
) -> FeatureCodes:
    """Encode MovieLens side features for the model's towers.

    Users: ``age`` (MovieLens' 7 groups), ``gender``, ``occupation``. Items: ``genres``
    (multi-valued: up to all of an item's genres) and ``year`` (5-year buckets from 1920).
    A user or item without metadata gets code 0, which embeds to zero.
    """
    unknown = sorted(set(user_features) - set(USER_FEATURES)) + sorted(
        set(item_features) - set(ITEM_FEATURES)
    )
    if unknown:
        raise ConfigError(
            f"unknown side feature(s) {unknown}; users have {list(USER_FEATURES)}, "
            f"items {list(ITEM_FEATURES)}"
        )
    if (user_features and dataset.users is None) or (item_features and dataset.items is None):
        raise ConfigError(
            f"dataset {dataset.name!r} has no user or item metadata for side features"
        )
    users: dict[str, torch.Tensor] = {}
    items: dict[str, torch.Tensor] = {}
    sizes: dict[str, int] = {}
    if user_features:
        assert dataset.users is not None
        where = vocabs.users.rows(dataset.users.ids, unknown="oov")
        keep = where >= 0
        for name in user_features:
            column = {
                "age": dataset.users.age,
                "gender": dataset.users.gender,
                "occupation": dataset.users.occupation,
            }[name]
            if name == "age":
                codes, size = (
                    np.searchsorted(AGE_BUCKETS, column, side="right") + 1,
                    len(AGE_BUCKETS) + 2,
                )
            else:
                values, inverse = np.unique(column, return_inverse=True)
                codes, size = inverse + 1, len(values) + 1
            table = np.zeros((len(vocabs.users), 1), dtype=np.int64)
            table[where[keep], 0] = codes[keep]
            users[name], sizes[f"user.{name}"] = torch.from_numpy(table), int(size)
    if item_features:
        assert dataset.items is not None
        where = vocabs.items.rows(dataset.items.ids, unknown="oov")
        keep = where >= 0
        for name in item_features:
            if name == "genres":
                flags = dataset.items.genres
                width = max(1, int(flags.sum(axis=1).max(initial=1)))
                ranked = np.argsort(~flags, axis=1, kind="stable")[:, :width]  # set flags first
                codes = np.where(np.take_along_axis(flags, ranked, 1), ranked + 1, 0)
                size = flags.shape[1] + 1
            else:
                years = dataset.items.years.astype(np.int64)
                codes = np.where(years > 0, np.clip((years - 1920) // 5, -1, 20) + 2, 0)[:, None]
                size = 23
            table = np.zeros((len(vocabs.items), codes.shape[1]), dtype=np.int64)
            table[where[keep]] = codes[keep]
            items[name], sizes[f"item.{name}"] = torch.from_numpy(table), int(size)
    return FeatureCodes(users, items, sizes)
