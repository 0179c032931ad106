"""Columnar records for interactions and their side metadata (no per-row Python objects)."""

from __future__ import annotations

import dataclasses

import numpy as np
from numpy.typing import NDArray

from mtrec.errors import DataError


@dataclasses.dataclass(frozen=True)
class Interactions:
    """Parallel columns of (user, item, rating, timestamp); row i is one rating event.

    Ids are the dataset's raw ids; ``mtrec.vocab.Vocab`` turns them into table rows.
    Ratings are on the dataset's own scale (1..5 stars for MovieLens).
    """

    user: NDArray[np.int64]
    item: NDArray[np.int64]
    rating: NDArray[np.float32]
    timestamp: NDArray[np.int64]

    def __post_init__(self) -> None:
        n = len(self.user)
        for name in ("item", "rating", "timestamp"):
            if len(getattr(self, name)) != n:
                rows = len(getattr(self, name))
                raise DataError(
                    f"column lengths differ: user has {n}, {name} has {rows}", field=name
                )

    def __len__(self) -> int:
        return len(self.user)

    def take(self, rows: NDArray[np.int64] | slice) -> Interactions:
        """The subset at ``rows`` (indices or a slice), in that order."""
        return Interactions(
            self.user[rows], self.item[rows], self.rating[rows], self.timestamp[rows]
        )


@dataclasses.dataclass(frozen=True)
class Items:
    """Item catalogue metadata; ``titles[i]`` describes item ``ids[i]``."""

    ids: NDArray[np.int64]
    titles: NDArray[np.str_]
    years: NDArray[np.int32]
    """Release year, 0 where unknown."""
    genres: NDArray[np.bool_]
    """(n_items, n_genres) flags, columns named by ``genre_names``."""
    genre_names: tuple[str, ...]

    def __post_init__(self) -> None:
        _same_length("item", self.ids, titles=self.titles, years=self.years, genres=self.genres)
        if self.genres.ndim != 2 or self.genres.shape[1] != len(self.genre_names):
            raise DataError(
                f"genre flags of shape {self.genres.shape} for {len(self.genre_names)} genres",
                field="genres",
            )

    def __len__(self) -> int:
        return len(self.ids)

    def genres_of(self, index: int) -> list[str]:
        """Genre names of the item at position ``index``."""
        return [
            name for name, flag in zip(self.genre_names, self.genres[index], strict=True) if flag
        ]


@dataclasses.dataclass(frozen=True)
class Users:
    """User metadata; row i describes user ``ids[i]``."""

    ids: NDArray[np.int64]
    age: NDArray[np.int32]
    gender: NDArray[np.str_]
    occupation: NDArray[np.str_]
    zip_code: NDArray[np.str_]

    def __post_init__(self) -> None:
        _same_length(
            "user",
            self.ids,
            age=self.age,
            gender=self.gender,
            occupation=self.occupation,
            zip_code=self.zip_code,
        )

    def __len__(self) -> int:
        return len(self.ids)


def _same_length(what: str, ids: NDArray[np.generic], **columns: NDArray[np.generic]) -> None:
    for name, column in columns.items():
        if len(column) != len(ids):
            raise DataError(f"{what} metadata: {len(ids)} ids but {len(column)} {name}", field=name)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A named interaction log with optional item and user metadata."""

    name: str
    interactions: Interactions
    items: Items | None = None
    users: Users | None = None
    source: str = ""
    """Where it was loaded from (e.g. ``cache /path/ml-100k.v1.npz``), for reports."""

    def item_ids(self) -> NDArray[np.int64]:
        """Every item id known to the dataset: the catalogue plus any id seen in a rating."""
        ids = (
            self.interactions.item
            if self.items is None
            else np.concatenate([self.items.ids, self.interactions.item])
        )
        return np.unique(ids)

    def user_ids(self) -> NDArray[np.int64]:
        """Every user id known to the dataset: the user table plus any id seen in a rating."""
        ids = (
            self.interactions.user
            if self.users is None
            else np.concatenate([self.users.ids, self.interactions.user])
        )
        return np.unique(ids)
