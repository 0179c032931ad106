"""The index protocol: top-k inner-product search over item embeddings."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, Self

import numpy as np
from numpy.typing import NDArray

from mtrec.errors import ConfigError
from mtrec.io import parse_json_object

Exclusions = list[NDArray[np.int64]] | None
"""Per query, the item rows it must not return (e.g. what the user already rated)."""


class Index(Protocol):
    """Finds the items with the largest dot product with each query.

    Rows are item-table rows ``0..n-1``. ``search`` returns ``(scores, rows)``, both
    ``(n_queries, min(k, n_items))``, best first; where a query has fewer eligible
    items than that (exclusions), the tail is padded with row ``-1`` and score ``-inf``.

    >>> index = ExactIndex.build(item_embeddings)
    >>> scores, rows = index.search(user_embeddings, k=10, exclude=seen_rows)
    >>> index.save(path); load_index(path)
    """

    kind: str
    is_exact: bool

    @property
    def n_items(self) -> int: ...

    @property
    def dim(self) -> int: ...

    def search(
        self, queries: NDArray[np.float32], k: int, exclude: Exclusions = None
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]: ...

    def save(self, directory: str | Path) -> None: ...

    files: tuple[str, ...]
    """The files ``save`` writes beside ``index.json``."""

    @classmethod
    def from_files(cls, meta: dict[str, Any], files: Mapping[str, bytes], where: Path) -> Self:
        """The index from ``index.json`` (``meta``) and its files' bytes, read once by the
        caller (a saved model's loader checks them against its manifest first)."""
        ...


def check_queries(
    queries: NDArray[np.float32], dim: int, k: int, exclude: Exclusions
) -> NDArray[np.float32]:
    """Validate a search call once, at the boundary; returns C-contiguous float32 queries."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    if q.ndim != 2 or q.shape[1] != dim:
        raise ConfigError(f"search: queries must have shape (n, {dim}), got {tuple(q.shape)}")
    if k < 1:
        raise ConfigError(f"search: k must be >= 1, got {k}")
    if exclude is not None and len(exclude) != len(q):
        raise ConfigError(f"search: exclude has {len(exclude)} lists for {len(q)} queries")
    return q


def exclusion_pairs(
    exclude: Exclusions, n_queries: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Flatten per-query exclusions into parallel (query, row) arrays."""
    if exclude is None:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    lengths = np.fromiter((len(e) for e in exclude), dtype=np.int64, count=n_queries)
    queries = np.repeat(np.arange(n_queries, dtype=np.int64), lengths)
    rows = (
        np.concatenate([np.asarray(e, dtype=np.int64) for e in exclude])
        if lengths.sum()
        else queries
    )
    return queries, rows


def index_meta(data: bytes, where: Path) -> dict[str, Any]:
    """``where/index.json`` (its bytes ``data``) as a dict; else an ``ArtifactError``."""
    return parse_json_object(data, where / "index.json")


def recall_at_k(approx_rows: NDArray[np.int64], exact_rows: NDArray[np.int64]) -> float:
    """Mean share of the exact top-k rows that the approximate top-k also returned."""
    hits = [
        len(np.intersect1d(a[a >= 0], e[e >= 0])) / max(1, int((e >= 0).sum()))
        for a, e in zip(approx_rows, exact_rows, strict=True)
    ]
    return float(np.mean(hits)) if hits else float("nan")
