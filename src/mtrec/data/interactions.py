"""Columnar records for interactions and their side metadata (no per-row Python objects)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from numpy.typing import NDArray

from mtrec.errors import DataError


@dataclasses.dataclass(frozen=True)
class Interactions:
    """Parallel columns of (user, item, rating, timestamp); row i is one rating event.

    Ids are the dataset's raw ids; ``mtrec.vocab.Vocab`` turns them into table rows.
    Ratings are on the dataset's own scale (1..5 stars for MovieLens).

    String ids stay columnar too: ``user`` then holds codes into ``user_names`` (sorted,
    unique), so that 25M rows cost 8 bytes each, not a Python string each. The raw id of
    row i is ``user_names[user[i]]``; :meth:`raw_users` gives them.
    """

    user: NDArray[np.int64]
    item: NDArray[np.int64]
    rating: NDArray[np.float32]
    timestamp: NDArray[np.int64]
    user_names: NDArray[np.str_] | None = None
    item_names: NDArray[np.str_] | None = None

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
            self.user[rows],
            self.item[rows],
            self.rating[rows],
            self.timestamp[rows],
            self.user_names,
            self.item_names,
        )

    def distinct_users(self) -> NDArray[np.generic]:
        """The distinct raw user ids (strings where the log has string ids), sorted."""
        codes = distinct(self.user)
        return codes if self.user_names is None else self.user_names[codes]

    def distinct_items(self) -> NDArray[np.generic]:
        """The distinct raw item ids (strings where the log has string ids), sorted."""
        codes = distinct(self.item)
        return codes if self.item_names is None else self.item_names[codes]


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
    """User metadata; row i describes user ``ids[i]`` (integer or text ids). A value a
    users file did not give is -1 (age) or "" (the others): no feature code."""

    ids: NDArray[Any]
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

    def has(self, feature: str) -> bool:
        """Whether any user has a value of ``feature`` (age, gender, occupation)."""
        if feature == "age":
            return bool((self.age >= 0).any())
        text = {"gender": self.gender, "occupation": self.occupation}[feature]
        return bool((text != "").any())


def distinct(ids: NDArray[np.int64]) -> NDArray[np.int64]:
    """Sorted distinct integer ids: ``np.unique``, in O(n) when the id range is compact
    (the usual case: a sort of 25M ids takes seconds, one pass over them milliseconds)."""
    if len(ids) < 4096:
        return np.unique(ids)
    lo, hi = int(ids.min()), int(ids.max())
    if hi - lo > max(4 * len(ids), 1 << 20):
        return np.unique(ids)
    present = np.zeros(hi - lo + 1, dtype=bool)
    present[ids - lo] = True
    return np.flatnonzero(present).astype(np.int64) + lo


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
    has_ratings: bool = True
    """False for implicit feedback (no rating column): only the retrieval task can train."""
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)
    """Bad rows dropped on request while loading, counted per column."""

    def item_ids(self) -> NDArray[np.generic]:
        """Every item id known to the dataset: the catalogue plus any id seen in a rating."""
        seen = self.interactions.distinct_items()
        return seen if self.items is None else np.unique(np.concatenate([self.items.ids, seen]))

    def user_ids(self) -> NDArray[np.generic]:
        """Every user id known to the dataset: the user table plus any id seen in a rating."""
        seen = self.interactions.distinct_users()
        return seen if self.users is None else np.unique(np.concatenate([self.users.ids, seen]))
