"""Synthetic interaction logs at any size, for benchmarks: power-law item popularity,
skewed user activity, and ratings from latent factors (so there is something to learn)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

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
        signal = np.einsum("nd,nd->n", user_f[u], item_f[i])
        noisy = 3.0 + 4.0 * signal + 0.5 * rng.standard_normal(hi - lo)
        user[lo:hi], item[lo:hi] = u + 1, i + 1
        rating[lo:hi] = np.clip(np.rint(noisy), 1, 5)
    timestamp = 1_000_000_000 + np.arange(n_interactions, dtype=np.int64)
    return Interactions(user.astype(np.int64), item.astype(np.int64), rating, timestamp)


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
