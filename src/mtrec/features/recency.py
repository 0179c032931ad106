"""Popularity that knows what time it is: liked rows weighted by how recent they are.

On a log split by time the test rows are the weeks after training, and what is popular
moves: an item liked a hundred times last year weighs less than one liked thirty times
last week. Whether (and how fast) to forget is chosen on training rows only: the latest
``VALIDATION_SHARE`` of them by time play the weeks to come, the rows before them count.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from mtrec.config import LIKED
from mtrec.features.encoding import EncodedInteractions
from mtrec.features.history import liked_counts

HALF_LIVES = (1 / 2, 1 / 8, 1 / 32)
"""The half-lives tried, as shares of the training rows' time span (besides none: plain
counts)."""

VALIDATION_SHARE = 0.1
"""The latest share of the training rows (by time) that the half-life is chosen on."""


def recent_counts(
    rows: EncodedInteractions, n_items: int, half_life: float | None, min_label: float = LIKED
) -> NDArray[np.float64]:
    """Per item row, its rows rated at least ``min_label``, each weighing
    ``2 ** -(age / half_life)`` (age: seconds before the latest row); plain counts where
    ``half_life`` is None."""
    if half_life is None or rows.time is None or not len(rows):
        return liked_counts(rows, n_items, min_label).astype(np.float64)
    liked = rows.label >= min_label
    items = rows.item[liked].numpy()
    time = rows.time.numpy()
    age = (time.max() - time[liked.numpy()]).astype(np.float64)
    weighted = np.bincount(items, weights=np.exp2(-age / half_life), minlength=n_items)
    return np.asarray(weighted, dtype=np.float64)


@dataclasses.dataclass(frozen=True)
class Recency:
    """The chosen half-life in seconds (None: plain counts did as well) and each tried
    half-life's hit rate on the validation window."""

    half_life: float | None
    validation: dict[str, float]

    def counts(self, rows: EncodedInteractions, n_items: int) -> NDArray[np.float64]:
        """``recent_counts`` of ``rows`` with this half-life."""
        return recent_counts(rows, n_items, self.half_life)

    def to_dict(self) -> dict[str, Any]:
        days = None if self.half_life is None else round(self.half_life / 86400, 3)
        return {
            "half_life_days": days,
            "chosen_on": f"the latest {VALIDATION_SHARE:.0%} of the training rows by time",
            "hit_rate_at_10": self.validation,
        }


NO_RECENCY = Recency(None, {})
"""No recency: plain counts, nothing measured (a log without a split by time)."""


def choose_recency(rows: EncodedInteractions, n_items: int, k: int = 10) -> Recency:
    """The half-life (or none) whose top ``k`` items, counted on the rows before the
    validation window, hold most of the window's liked rows; ties go to plain counts.
    Needs ``rows.time``; without it (or with too few rows) plain counts, untried."""
    if rows.time is None or len(rows) < 100:
        return NO_RECENCY
    time = rows.time.numpy()
    order = np.argsort(time, kind="stable")
    cut = len(order) - max(1, round(len(order) * VALIDATION_SHARE))
    ordered = torch.from_numpy(order)
    before, window = rows.subset(ordered[:cut]), rows.subset(ordered[cut:])
    liked_items = window.item[window.label >= LIKED].numpy()
    span = float(time[order[cut - 1]] - time[order[0]])
    if not len(liked_items) or span <= 0:
        return NO_RECENCY
    tried: dict[str, float] = {}
    best, best_rate = None, -1.0
    for share in (None, *HALF_LIVES):
        half_life = None if share is None else share * span
        top = np.argsort(-recent_counts(before, n_items, half_life), kind="stable")[:k]
        rate = float(np.isin(liked_items, top).mean())
        tried["none" if share is None else f"{share:g} of the span"] = round(rate, 4)
        if rate > best_rate:
            best, best_rate = half_life, rate
    return Recency(best, tried)
