"""Train/test splits of an interaction log: every kind a run can ask for, by name."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from mtrec.data.interactions import Interactions
from mtrec.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Split:
    """Disjoint train and test parts of one interaction log, with the seed that made them."""

    train: Interactions
    test: Interactions
    seed: int


def random_split(
    interactions: Interactions, *, test_fraction: float = 0.2, seed: int = 42
) -> Split:
    """The reference split: shuffle all rows once with ``seed``, then cut.

    The first ``n - round(n * test_fraction)`` shuffled rows train, the rest test
    (80,000 / 20,000 on MovieLens-100K). The permutation is NumPy's legacy
    ``RandomState(seed).permutation``, the same as the Keras-RS anchor run, so both see
    identical rows. Train rows stay in shuffled order: that order is the batch order.

    >>> split = random_split(interactions, seed=42)
    >>> len(split.train), len(split.test)
    (80000, 20000)
    """
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction: expected a value in (0, 1), got {test_fraction}")
    n = len(interactions)
    n_test = round(n * test_fraction)
    if n_test == 0 or n_test == n:
        raise ConfigError(
            f"test_fraction {test_fraction} of {n} rows leaves an empty train or test set"
        )
    order = np.random.RandomState(seed).permutation(n)
    return Split(
        train=interactions.take(order[: n - n_test]),
        test=interactions.take(order[n - n_test :]),
        seed=seed,
    )


def no_holdout(interactions: Interactions, *, seed: int = 42) -> Split:
    """Every row trains (for a model to deploy), in the order ``random_split`` would
    shuffle them to; the test part is empty."""
    order = np.random.RandomState(seed).permutation(len(interactions))
    return Split(train=interactions.take(order), test=interactions.take(order[:0]), seed=seed)


def temporal_split(
    interactions: Interactions, *, test_fraction: float = 0.2, per_user: bool = False, seed: int = 0
) -> Split:
    """The latest ``test_fraction`` of the log by timestamp is the test set.

    Globally (the last rows in time), or ``per_user`` (each user's last
    ``round(n_u * test_fraction)`` rows; a user with a single row keeps it in train).
    Ties in time keep the log's order (a stable sort), so the split is deterministic;
    ``seed`` is recorded only.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction: expected a value in (0, 1), got {test_fraction}")
    n = len(interactions)
    if not per_user:
        order = np.argsort(interactions.timestamp, kind="stable")
        n_test = round(n * test_fraction)
        if n_test == 0 or n_test == n:
            raise ConfigError(
                f"test_fraction {test_fraction} of {n} rows leaves an empty train or test set"
            )
        return Split(  # the training rows in time order: the latest are the ranker's
            interactions.take(order[: n - n_test]),
            interactions.take(np.sort(order[n - n_test :])),
            seed,
        )
    # per user: rank each row within its user by time, newest last
    order = np.lexsort((interactions.timestamp, interactions.user))  # by user, then time
    users = interactions.user[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    counts = np.diff(np.r_[starts, n])
    position = np.arange(n) - np.repeat(starts, counts)  # 0 = the user's oldest row
    user_test = np.where(counts > 1, np.rint(counts * test_fraction), 0).astype(np.int64)
    is_test = position >= np.repeat(counts - user_test, counts)
    test_rows, train_rows = np.sort(order[is_test]), np.sort(order[~is_test])
    if len(test_rows) == 0 or len(train_rows) == 0:
        raise ConfigError(f"test_fraction {test_fraction} leaves an empty train or test set")
    return Split(interactions.take(train_rows), interactions.take(test_rows), seed)


SPLITS = ("random", "temporal", "temporal-user")


GIVEN = "given"
"""The split kind of a run evaluated on a test set of its own (``prepare(test=...)``)."""


def make_split(interactions: Interactions, kind: str, test_fraction: float, seed: int) -> Split:
    """``random`` (the reference's), ``temporal`` (the latest rows overall) or
    ``temporal-user`` (each user's latest rows); ``test_fraction`` 0: no test part."""
    if kind not in SPLITS:
        raise ConfigError(f"split: expected one of {list(SPLITS)}, got {kind!r}")
    if test_fraction == 0:
        return no_holdout(interactions, seed=seed)
    if kind == "random":
        return random_split(interactions, test_fraction=test_fraction, seed=seed)
    if not interactions.timestamp.any():
        raise ConfigError(f"a {kind} split needs timestamps; this data has none")
    per_user = kind == "temporal-user"
    return temporal_split(interactions, test_fraction=test_fraction, per_user=per_user, seed=seed)


def split_fingerprint(test: Interactions) -> str:
    """SHA-256 of the test rows (user, item, rating), to tell whether a split is the same."""
    digest = hashlib.sha256()
    for column in (test.user, test.item, test.rating):
        digest.update(np.ascontiguousarray(column).tobytes())
    return digest.hexdigest()
