"""Which test users an evaluation measures: all of them, or a seeded sample on big logs.

An honest evaluation makes every evaluated user's list from the whole catalogue; at
25M interactions that is ~200k users x 80k items for each list compared, which took
longer than the training epoch here. A seeded sample of users keeps the metrics
unbiased (the bootstrap intervals then reflect the sample), and the report says so.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from mtrec.features import EncodedInteractions

EVAL_USERS = 50_000
"""Test users measured at most by default (a seeded sample above it): every user of
MovieLens up to ML-1M (6,040), 36% of ML-20M's; ``0``/None measures all."""


@dataclasses.dataclass(frozen=True)
class EvaluatedUsers:
    """How many test users an evaluation measured, of how many, and the sample's seed."""

    users: int
    of: int
    seed: int | None
    """None: every test user was measured."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def sample_users(
    rows: EncodedInteractions, limit: int | None, seed: int
) -> tuple[EncodedInteractions, EvaluatedUsers]:
    """The ``rows`` of at most ``limit`` of their users, drawn without replacement by
    ``seed`` (every row of a drawn user is kept); all of them when there are no more.
    The evaluation's sample of test users, and the ranking stage's of carved-out users."""
    users = np.unique(rows.user.numpy())
    if not limit or len(users) <= limit:
        return rows, EvaluatedUsers(len(users), len(users), None)
    drawn = np.random.default_rng(seed).choice(users, size=limit, replace=False)
    keep = torch.from_numpy(np.isin(rows.user.numpy(), drawn))
    return rows.subset(keep), EvaluatedUsers(limit, len(users), seed)
