"""How many epochs a model served through the ranking stage trains: until its stage one's
list stops improving on the training rows carved out for the ranker.

Stage one trains on the training rows less a carved-out share (``stages.carve``), and
those rows are what its two-tower list should find: after each epoch, its recall@C (C the
ranker's candidates a source) of their liked items is measured on a seeded sample of their
users. Once the best of the last ``STOP_WINDOW`` epochs is less than ``min_gain`` above the
best before them, stage one stops (the served model where it serves; with
``RankerConfig.refit`` the served model, training beside it or after it, stops at the same
epoch); an epoch of more than ``JUDGED_ROWS`` rows is judged in shares. No test row is
read: the carved-out rows are training rows.

On ML-100K this recall rises to about the fifteenth epoch, the default's most; on a
planted log of ML-1M's shape it is flat from the second, and five epochs run instead of
fifteen (``benchmarks/time_to_quality.py``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from mtrec import seeds
from mtrec.evaluate.metrics import ranking_metrics
from mtrec.features import EncodedInteractions, RatingScale, SeenItems
from mtrec.index import ExactIndex
from mtrec.model import MultiTaskModel

STOP_WINDOW = 3
"""Epochs whose best recall must beat the best before them by ``min_gain``: one epoch's
recall wobbles (ML-100K: 0.5621 at epoch 12, 0.5621 at 13, 0.5678 at 14)."""
JUDGED_USERS = 2_000
"""Carved-out users whose lists judge an epoch (a seeded sample): their recall@50 is
measured in 0.03 s on ML-100K, 0.1 s on a 1M-row log."""


JUDGED_ROWS = 2_000_000
"""Training rows between two verdicts at most: an epoch of a larger log is judged in equal
shares (the 25M planted log's 16.2M training rows in nine), so that a log whose list is as
good after part of an epoch stops there."""


class EpochVerdicts:
    """Stage one's verdict after each epoch (or each ``per_epoch``-th of one), read by the
    served model training beside it (``served_stops`` waits for the verdict on its own
    share) or after it. Thread-safe."""

    def __init__(self, min_gain: float, most: int, k: int, per_epoch: int = 1) -> None:
        self.min_gain, self.most, self.k, self.per_epoch = min_gain, most, k, per_epoch
        self.recalls: list[float] = []
        self.stopped_at: int | None = None
        self._changed = threading.Condition()
        self._closed = False

    @classmethod
    def for_rows(cls, rows: int, min_gain: float, most: int, k: int) -> EpochVerdicts:
        """Verdicts for a run on ``rows`` training rows: a share of an epoch at a time
        where an epoch has more than ``JUDGED_ROWS``."""
        return cls(min_gain, most, k, max(1, -(-rows // JUDGED_ROWS)))

    def judge(self, recall: float) -> bool:
        """Record stage one's recall after its next epoch; whether it stops there."""
        with self._changed:
            self.recalls.append(recall)
            if self.stopped_at is None and _flat(self.recalls, self.min_gain):
                self.stopped_at = len(self.recalls)
            self._changed.notify_all()
            return self.stopped_at is not None

    def judge_with(self, recall: Callable[[], float]) -> Callable[[int], bool]:
        """Stage one's check (``train.Checks``): measure ``recall()`` and ``judge`` it."""
        return lambda epoch: self.judge(recall())

    def close(self) -> None:
        """Stage one has ended (its last epoch, or a failure): no verdict is waited for."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def served_stops(self, share: int) -> bool:
        """Whether the served model stops after its ``share``-th verdict's point (waits for
        stage one's verdict there)."""
        with self._changed:
            self._changed.wait_for(lambda: len(self.recalls) >= share or self._closed)
            return self.stopped_at is not None and self.stopped_at <= share

    def record(self) -> dict[str, Any]:
        """``metrics.json``'s ``epochs``: how many ran of the most, and why."""
        shares = self.stopped_at or min(len(self.recalls), self.most * self.per_epoch)
        whole, part = divmod(shares, self.per_epoch)
        unit = "epochs" if self.per_epoch == 1 else f"shares (1/{self.per_epoch} of an epoch)"
        if self.stopped_at is not None:
            why = (
                f"stage one's held-out recall@{self.k} of the last {STOP_WINDOW} {unit} rose "
                f"less than {self.min_gain:.1%} above the best before them"
            )
        else:
            why = "the most epochs the config allows"
        return {
            "ran": whole if not part else round(shares / self.per_epoch, 2),
            "most": self.most,
            "why": why,
            "verdicts_per_epoch": self.per_epoch,
            f"stage_one_recall_at_{self.k}": [round(r, 4) for r in self.recalls],
        }


def _flat(recalls: list[float], min_gain: float) -> bool:
    if len(recalls) <= STOP_WINDOW:
        return False
    recent, before = max(recalls[-STOP_WINDOW:]), max(recalls[:-STOP_WINDOW])
    return recent < before * (1.0 + min_gain)


def held_out_recall(
    model: MultiTaskModel, seen: SeenItems, held: EncodedInteractions, k: int, seed: int
) -> Callable[[], float]:
    """What judges an epoch: the two-tower recall@k of ``held``'s liked items, each user's
    ``seen`` items excluded, over a seeded sample of ``JUDGED_USERS`` of its users."""
    liked = held.label.numpy() >= RatingScale.liked
    users_of, items_of = held.user.numpy()[liked], held.item.numpy()[liked]
    users = np.unique(users_of)
    if len(users) > JUDGED_USERS:
        draw = np.random.default_rng(seed + seeds.JUDGED_USERS)
        users = np.sort(draw.choice(users, JUDGED_USERS, replace=False))
    position = np.searchsorted(users, users_of).clip(max=max(len(users) - 1, 0))
    judged = users[position] == users_of if len(users) else np.zeros(0, dtype=bool)
    relevant = (position[judged], items_of[judged])
    exclude = [seen.of(int(u))[0] for u in users]

    def recall() -> float:
        if not len(users):
            return 0.0
        model.eval()
        with torch.inference_mode():
            queries = model.embed_users(torch.from_numpy(users)).numpy()
            index = ExactIndex(model.embed_items().numpy())
        model.train()
        _, top = index.search(queries, k, exclude)
        return ranking_metrics(top, *relevant)["recall"]

    return recall
