"""The local cache of fetched MovieLens releases: one .npz per release, read without pickle."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from mtrec.data.interactions import Dataset, Interactions, Items, Users
from mtrec.data.releases import ML100K
from mtrec.errors import ArtifactError, DataError
from mtrec.io import atomic_path

CACHE_VERSION = 2
"""2: timestamps exact (version 1 caches hold them rounded to float32's precision)."""


def default_cache_dir() -> Path:
    """Where fetched datasets are kept: ``MTREC_CACHE_DIR`` or the user cache directory."""
    if env := os.environ.get("MTREC_CACHE_DIR"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mtrec"


def cache_path(cache_dir: str | Path | None = None, name: str = ML100K) -> Path:
    """The cache file of one dataset."""
    return Path(cache_dir or default_cache_dir()) / f"{name}.v{CACHE_VERSION}.npz"


_CACHE_KEYS = (
    "user",
    "item",
    "rating",
    "timestamp",
    "item_ids",
    "titles",
    "years",
    "genres",
    "genre_names",
    "user_ids",
    "age",
    "gender",
    "occupation",
    "zip_code",
)


_INT, _FLOAT, _STR, _BOOL = "iu", "f", "U", "b"
_CACHE_SCHEMA = {
    "user": (_INT, 1),
    "item": (_INT, 1),
    "rating": (_FLOAT, 1),
    "timestamp": (_INT, 1),
    "item_ids": (_INT, 1),
    "titles": (_STR, 1),
    "years": (_INT, 1),
    "genres": (_BOOL, 2),
    "genre_names": (_STR, 1),
    "user_ids": (_INT, 1),
    "age": (_INT, 1),
    "gender": (_STR, 1),
    "occupation": (_STR, 1),
    "zip_code": (_STR, 1),
}
"""Expected dtype kinds and dimensions of each cached array."""


def write_cache(dataset: Dataset, path: str | Path) -> None:
    """Write a normalised copy (plain arrays, no pickle) atomically."""
    if dataset.items is None:
        raise DataError("only datasets with item metadata are cached", path=path)
    it, ev = dataset.items, dataset.interactions
    us = dataset.users or Users(
        np.zeros(0, np.int64), np.zeros(0, np.int32), *([np.zeros(0, np.str_)] * 3)
    )
    narrow = len(ev) and max(int(ev.user.max()), int(ev.item.max())) < 2**31
    arrays: dict[str, NDArray[Any]] = dict(
        name=np.array(dataset.name),
        has_users=np.array(dataset.users is not None),
        user=ev.user.astype(np.int32) if narrow else ev.user,  # half the size, same ids
        item=ev.item.astype(np.int32) if narrow else ev.item,
        rating=ev.rating,
        timestamp=ev.timestamp,
        item_ids=it.ids,
        titles=it.titles,
        years=it.years,
        genres=it.genres,
        genre_names=np.array(it.genre_names, dtype=np.str_),
        user_ids=us.ids,
        age=us.age,
        gender=us.gender,
        occupation=us.occupation,
        zip_code=us.zip_code,
    )
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]  # stub types allow_pickle here


def read_cache(path: str | Path) -> Dataset:
    """Load a cache file written by :func:`write_cache`; any damage raises ArtifactError."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in _CACHE_KEYS if k not in npz.files]
            if missing:
                raise ArtifactError(f"{path}: unreadable cache, missing arrays {missing}")
            a = {k: npz[k] for k in _CACHE_KEYS}
            name = str(npz["name"]) if "name" in npz.files else ML100K  # v1 files: 100K only
            has_users = bool(npz["has_users"]) if "has_users" in npz.files else True
        for key, (kinds, ndim) in _CACHE_SCHEMA.items():
            if a[key].dtype.kind not in kinds or a[key].ndim != ndim:
                raise ArtifactError(
                    f"{path}: unreadable cache, array {key!r} is {a[key].dtype}"
                    f" with {a[key].ndim} dimension(s)"
                )
        return Dataset(
            name=name,
            interactions=Interactions(
                a["user"].astype(np.int64), a["item"].astype(np.int64), a["rating"], a["timestamp"]
            ),
            items=Items(
                a["item_ids"],
                a["titles"],
                a["years"],
                a["genres"],
                tuple(a["genre_names"].tolist()),
            ),
            users=(
                Users(a["user_ids"], a["age"], a["gender"], a["occupation"], a["zip_code"])
                if has_users
                else None
            ),
        )
    except ArtifactError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError, DataError) as exc:
        raise ArtifactError(f"{path}: unreadable cache ({type(exc).__name__}: {exc})") from None
