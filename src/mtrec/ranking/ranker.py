"""The listwise ranker: a linear score over the candidates' features, trained to put held-aside
items first.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from mtrec.config import RankerConfig
from mtrec.errors import ArtifactError
from mtrec.ranking.candidates import FEATURES, Candidates
from mtrec.ranking.neighbours import MAX_CORRECTION
from mtrec.train.optim import Adam


@dataclasses.dataclass(frozen=True)
class Ranker:
    """A linear scorer over ``FEATURES``; the fitted weights are the whole model, with the
    weight of the neighbourhood correction of predicted ratings fitted beside them."""

    weights: NDArray[np.float32]
    config: RankerConfig
    correction: float = 0.0
    """Models saved before the correction existed have none (0)."""
    half_life: float | None = None
    """Seconds: the recency of the ``recent_popularity`` feature (the saved model's
    fallback counts, ``features.recency``); None: that feature is off (zero)."""

    def score(self, found: Candidates) -> NDArray[np.float32]:
        """(n, c) scores; pads score -inf so they sort last."""
        scores = found.features @ self.weights
        return np.where(found.rows >= 0, scores, -np.inf).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": list(FEATURES),
            "weights": [float(w) for w in self.weights],
            "correction": self.correction,
            "recency_half_life": self.half_life,
            "config": self.config.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> Ranker:
        """Rebuild from ``to_dict``; anything else raises ``ArtifactError`` naming ``where``."""
        weights = data.get("weights") if isinstance(data, dict) else None
        correction = data.get("correction", 0.0) if isinstance(data, dict) else None
        half_life = data.get("recency_half_life") if isinstance(data, dict) else None
        named = data.get("features") if isinstance(data, dict) else None
        if (
            not isinstance(named, list)
            or not 0 < len(named) <= len(FEATURES)
            or named != list(FEATURES[: len(named)])  # a file from before a feature: it weighs 0
            or not isinstance(weights, list)
            or len(weights) != len(named)
            or not all(_finite(w) for w in weights)
            or not (_finite(correction) and 0 <= correction <= MAX_CORRECTION)
            or not (half_life is None or (_finite(half_life) and half_life > 0))
        ):
            raise ArtifactError(
                f"{where}: expected 'features' {list(FEATURES)} (or the first of them), as many "
                f"finite 'weights', a 'correction' in [0, {MAX_CORRECTION:g}] and a "
                "'recency_half_life' > 0 or null"
            )
        weights = [*weights, *[0.0] * (len(FEATURES) - len(weights))]
        try:
            config = RankerConfig.from_dict(data.get("config", {}))
        except Exception as exc:
            raise ArtifactError(f"{where}: invalid ranker config ({exc})") from None
        weights_array = np.asarray(weights, dtype=np.float32)
        return cls(weights_array, config, float(correction), _seconds(half_life))


def _seconds(value: Any) -> float | None:
    return None if value is None else float(value)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def listwise_loss(scores: torch.Tensor, gains: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy of (n, c) scores against gains, averaged over the n lists:
    -sum_i g_i log softmax(s)_i / sum_i g_i. Pads (``pad`` True) take no probability."""
    log_p = torch.log_softmax(scores.masked_fill(pad, -torch.inf), dim=1).masked_fill(pad, 0.0)
    return -((gains * log_p).sum(1) / gains.sum(1)).mean()


def fit_ranker(
    found: Candidates,
    gains: NDArray[np.float32],
    config: RankerConfig,
    correction: float = 0.0,
    half_life: float | None = None,
) -> Ranker:
    """Fit the weights by :func:`listwise_loss` over the users with a positive, plus an
    L2 penalty (``correction``: the stage's, already fitted, kept with the weights).

    Full-batch Adam from zero weights, a fixed number of steps: deterministic.
    """
    keep = gains.sum(axis=1) > 0
    x = torch.from_numpy(found.features[keep])
    g = torch.from_numpy(gains[keep])
    pad = torch.from_numpy(found.rows[keep] < 0)
    w = torch.zeros(x.shape[-1], requires_grad=True)
    optimizer = Adam([w], lr=config.learning_rate)  # torch.optim's costs a second's import
    for _ in range(config.steps if len(x) else 0):
        loss = listwise_loss(x @ w, g, pad) + config.l2 * (w**2).sum()
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    return Ranker(w.detach().numpy().astype(np.float32), config, correction, half_life)


def gains_of(
    found: Candidates,
    user_of_query: NDArray[np.int64],
    held_users: NDArray[np.int64],
    held_items: NDArray[np.int64],
    held_labels: NDArray[np.float32],
    config: RankerConfig,
    liked: float,
) -> NDArray[np.float32]:
    """(n, c) gains of the candidates: 1 for a held-aside item the user liked, the
    config's ``low_rating_gain`` for one rated lower, 0 otherwise."""
    width = int(max(found.rows.max(initial=0), held_items.max(initial=0))) + 1
    keys = user_of_query[:, None] * width + found.rows
    held_keys = held_users * width + held_items
    order = np.argsort(held_keys)
    held_keys, held_labels = held_keys[order], held_labels[order]
    pos = np.searchsorted(held_keys, keys).clip(0, max(len(held_keys) - 1, 0))
    hit = (found.rows >= 0) & (held_keys[pos] == keys) if len(held_keys) else found.rows < -1
    label = held_labels[pos] if len(held_keys) else np.zeros(keys.shape, dtype=np.float32)
    gain = np.where(label >= liked, 1.0, config.low_rating_gain)
    return np.where(hit, gain, 0.0).astype(np.float32)
