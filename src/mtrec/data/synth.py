"""Synthetic interaction logs at any size, for benchmarks: power-law item popularity,
skewed user activity, and ratings from latent factors (so there is something to learn).

``synthesize`` draws who interacts with what from activity and popularity alone (fast,
for throughput runs: popularity is the best possible list there); ``synthesize_planted``
plants taste clusters in the choices too, and returns the truth for an oracle."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from mtrec.data.interactions import Interactions
from mtrec.errors import ConfigError
from mtrec.io import atomic_path

CHUNK = 2_000_000
"""Rows generated at a time: memory stays bounded whatever the size."""


def synthesize(
    n_interactions: int,
    n_users: int,
    n_items: int,
    *,
    dim: int = 16,
    popularity_exponent: float = 1.0,
    seed: int = 0,
) -> Interactions:
    """An interaction log with ids ``1..n_users`` and ``1..n_items`` and 1..5 star ratings.

    Item ``i`` (1-based popularity rank) is drawn with probability proportional to
    ``i ** -popularity_exponent`` (Zipf-like, as real catalogues are); user activity is
    log-normal. A rating is ``3 + 4 u . v + noise`` rounded and clipped to 1..5, with
    user and item factors ``u, v`` of ``dim`` dimensions. Timestamps increase with the
    row index. The same arguments always give the same log.
    """
    if min(n_interactions, n_users, n_items, dim) < 1:
        raise ConfigError("synthesize: sizes and dim must be >= 1")
    rng = np.random.default_rng(seed)
    item_p = np.arange(1, n_items + 1, dtype=np.float64) ** -popularity_exponent
    item_cdf = np.cumsum(item_p / item_p.sum())
    activity = rng.lognormal(0.0, 1.0, n_users)
    user_cdf = np.cumsum(activity / activity.sum())
    user_f = (rng.standard_normal((n_users, dim)) / np.sqrt(dim)).astype(np.float32)
    item_f = (rng.standard_normal((n_items, dim)) / np.sqrt(dim)).astype(np.float32)
    user = np.empty(n_interactions, dtype=np.int32)
    item = np.empty(n_interactions, dtype=np.int32)
    rating = np.empty(n_interactions, dtype=np.float32)
    for lo in range(0, n_interactions, CHUNK):
        hi = min(lo + CHUNK, n_interactions)
        # inverse-CDF sampling: one uniform draw and a binary search per row
        u = np.minimum(np.searchsorted(user_cdf, rng.random(hi - lo)), n_users - 1)
        i = np.minimum(np.searchsorted(item_cdf, rng.random(hi - lo)), n_items - 1)
        user[lo:hi], item[lo:hi] = u + 1, i + 1
        rating[lo:hi] = _stars(user_f[u], item_f[i], rng)
    timestamp = 1_000_000_000 + np.arange(n_interactions, dtype=np.int64)
    return Interactions(user.astype(np.int64), item.astype(np.int64), rating, timestamp)


@dataclasses.dataclass(frozen=True)
class PlantedTruth:
    """What a planted log's generator knows: each user's taste cluster and every cluster's
    true item scores, ``log p(item | cluster)`` up to a constant (the oracle's ranking)."""

    user_cluster: NDArray[np.int64]
    """(n_users,) the cluster of user id ``u + 1``."""
    scores: NDArray[np.float32]
    """(n_clusters, n_items) ``a log popularity + c . v / t`` of item id ``i + 1``."""


def synthesize_planted(
    n_interactions: int,
    n_users: int,
    n_items: int,
    *,
    clusters: int = 32,
    dim: int = 16,
    popularity_exponent: float = 1.0,
    popularity_weight: float = 0.5,
    temperature: float = 0.1,
    seed: int = 0,
) -> tuple[Interactions, PlantedTruth]:
    """A log whose choices carry user-specific signal, and the truth that generated it.

    Users and items belong to ``clusters`` taste clusters (centroids ``c`` in ``dim``
    dimensions; an item's factor is its centroid plus noise). A user of cluster ``c``
    picks item ``i`` with probability proportional to
    ``popularity_i ** popularity_weight * exp(c . v_i / temperature)``, where
    ``popularity_i = rank ** -popularity_exponent``: ``popularity_weight`` 0 is taste
    alone, a large ``temperature`` is popularity alone. A pair drawn twice is kept once
    (so the log has at most ``n_interactions`` rows). Ratings come from the user's and the
    item's factors as in ``synthesize``; user activity is log-normal. The same arguments
    give the same log.
    """
    if min(n_interactions, n_users, n_items, dim, clusters) < 1 or temperature <= 0:
        raise ConfigError("synthesize_planted: sizes, dim, clusters and temperature must be > 0")
    rng = np.random.default_rng(seed)
    centroids = rng.standard_normal((clusters, dim)) / np.sqrt(dim)
    user_cluster = rng.integers(0, clusters, n_users)
    item_cluster = rng.integers(0, clusters, n_items)
    noise = 0.5 / np.sqrt(dim)
    user_f = (centroids[user_cluster] + noise * rng.standard_normal((n_users, dim))).astype(
        np.float32
    )
    item_f = (centroids[item_cluster] + noise * rng.standard_normal((n_items, dim))).astype(
        np.float32
    )
    log_pop = -popularity_exponent * np.log(np.arange(1, n_items + 1, dtype=np.float64))
    scores = popularity_weight * log_pop + (centroids @ item_f.T.astype(np.float64)) / temperature
    weights = np.exp(scores - scores.max(axis=1, keepdims=True))
    item_cdf = np.cumsum(weights / weights.sum(axis=1, keepdims=True), axis=1)
    activity = rng.lognormal(0.0, 1.0, n_users)
    user_cdf = np.cumsum(activity / activity.sum())
    users, items = [], []
    for lo in range(0, n_interactions, CHUNK):
        n = min(CHUNK, n_interactions - lo)
        u = np.minimum(np.searchsorted(user_cdf, rng.random(n)), n_users - 1)
        draw, i = rng.random(n), np.empty(n, dtype=np.int64)
        for k in range(clusters):  # each cluster's users draw from that cluster's CDF
            rows = np.flatnonzero(user_cluster[u] == k)
            i[rows] = np.searchsorted(item_cdf[k], draw[rows])
        users.append(u)
        items.append(np.minimum(i, n_items - 1))
    user, item = np.concatenate(users), np.concatenate(items)
    _, first = np.unique(user * n_items + item, return_index=True)
    keep = np.sort(first)  # a pair drawn again is dropped; the log's order is kept
    user, item = user[keep], item[keep]
    log = Interactions(
        (user + 1).astype(np.int64),
        (item + 1).astype(np.int64),
        _stars(user_f[user], item_f[item], rng),
        1_000_000_000 + np.arange(len(user), dtype=np.int64),
    )
    return log, PlantedTruth(user_cluster.astype(np.int64), scores.astype(np.float32))


def _stars(
    user_f: NDArray[np.float32], item_f: NDArray[np.float32], rng: np.random.Generator
) -> NDArray[np.float32]:
    """1..5 stars from row-aligned user and item factors: ``3 + 4 u . v + noise``, rounded."""
    signal = np.einsum("nd,nd->n", user_f, item_f)
    noisy = 3.0 + 4.0 * signal + 0.5 * rng.standard_normal(len(user_f))
    stars: NDArray[np.float32] = np.clip(np.rint(noisy), 1, 5).astype(np.float32)
    return stars


def write_parquet(interactions: Interactions, path: str | Path) -> Path:
    """Write ``user_id, item_id, rating, timestamp`` (int32/int32/float32/int64), atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "user_id": interactions.user.astype(np.int32),
            "item_id": interactions.item.astype(np.int32),
            "rating": interactions.rating,
            "timestamp": interactions.timestamp,
        }
    )
    with atomic_path(path) as tmp:
        pq.write_table(table, str(tmp), row_group_size=1_000_000)
    return Path(path)
