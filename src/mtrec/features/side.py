"""Side features (user age, gender, occupation; item genres, year) as codes per row."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch
from numpy.typing import NDArray

from mtrec.config import ModelConfig
from mtrec.data import Dataset, Items, Users
from mtrec.errors import ConfigError
from mtrec.features.encoding import Vocabs
from mtrec.vocab import Vocab

USER_FEATURES = ("age", "gender", "occupation")
ITEM_FEATURES = ("genres", "year")
AGE_BUCKETS = (18, 25, 35, 45, 50, 56)
"""MovieLens' own age groups: under 18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+."""


def available_features(config: ModelConfig, dataset: Dataset) -> tuple[ModelConfig, list[str]]:
    """``config`` without the side features ``dataset`` has no metadata for (a preset made
    for MovieLens, used on a log without a users file), and the names of those dropped."""
    dropped: list[str] = []
    user, item = config.user_features, config.item_features
    if user:  # a users file may give some of them
        users = dataset.users
        dropped += [f"user {f}" for f in user if users is None or not users.has(f)]
        user = tuple(f for f in user if users is not None and users.has(f))
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
    sizes: dict[str, int] = {}
    users: dict[str, torch.Tensor] = {}
    items: dict[str, torch.Tensor] = {}
    if user_features:
        assert dataset.users is not None
        codes_of = functools.partial(_user_codes, dataset.users)
        users = _code_tables(
            vocabs.users, dataset.users.ids, user_features, "user", sizes, codes_of
        )
    if item_features:
        assert dataset.items is not None
        codes_of = functools.partial(_item_codes, dataset.items)
        items = _code_tables(
            vocabs.items, dataset.items.ids, item_features, "item", sizes, codes_of
        )
    return FeatureCodes(users, items, sizes)


def _code_tables(
    vocab: Vocab,
    ids: NDArray[Any],
    names: tuple[str, ...],
    side: str,
    sizes: dict[str, int],
    codes_of: Callable[[str], tuple[NDArray[np.int64], int]],
) -> dict[str, torch.Tensor]:
    """Each feature's (rows, width) codes for every row of ``vocab`` (0 where the
    metadata has no such id), from ``codes_of`` (codes per metadata row of ``ids``, table
    size), its table size added to ``sizes`` as ``side.name``."""
    where = vocab.rows(ids, unknown="oov")
    keep = where >= 0
    tables = {}
    for name in names:
        codes, size = codes_of(name)
        codes = codes.reshape(len(codes), -1)  # a user feature has one code a row
        table = np.zeros((len(vocab), codes.shape[1]), dtype=np.int64)
        table[where[keep]] = codes[keep]
        tables[name], sizes[f"{side}.{name}"] = torch.from_numpy(table), int(size)
    return tables


def _user_codes(users: Users, name: str) -> tuple[NDArray[np.int64], int]:
    """One user feature's code per metadata row (0: none or not given) and its table size:
    age groups by MovieLens' buckets, gender and occupation by their distinct values."""
    if name == "age":  # -1: not given
        codes = np.searchsorted(AGE_BUCKETS, users.age, side="right") + 1
        return np.where(users.age >= 0, codes, 0), len(AGE_BUCKETS) + 2
    column = {"gender": users.gender, "occupation": users.occupation}[name]
    values, inverse = np.unique(column, return_inverse=True)
    if len(values) and values[0] == "":  # not given ("" sorts first): code 0
        return inverse, len(values)
    return inverse + 1, len(values) + 1


def _item_codes(items: Items, name: str) -> tuple[NDArray[np.int64], int]:
    """One item feature's codes per metadata row, (rows, width), and its table size:
    genres (multi-valued, an item's set genres first) or 5-year buckets from 1920."""
    if name == "genres":
        flags = items.genres
        width = max(1, int(flags.sum(axis=1).max(initial=1)))
        ranked = np.argsort(~flags, axis=1, kind="stable")[:, :width]  # set flags first
        return np.where(np.take_along_axis(flags, ranked, 1), ranked + 1, 0), flags.shape[1] + 1
    years = items.years.astype(np.int64)
    return np.where(years > 0, np.clip((years - 1920) // 5, -1, 20) + 2, 0)[:, None], 23
