"""Evaluation of a trained model on held-out interactions (the reference protocol)."""

from __future__ import annotations

import dataclasses

import torch

from mtrec.evaluate.metrics import rmse, top_k_hits
from mtrec.features import EncodedInteractions
from mtrec.model import MultiTaskModel


@dataclasses.dataclass(frozen=True)
class EvalReport:
    """Metrics of one model on one test set.

    ``top_k_accuracy`` is the reference's: among test rows rated above ``threshold``
    (scaled; 0.9 means five stars), the share whose movie is in the user's top ``k`` by
    dot product over the whole catalogue, training movies NOT excluded.
    """

    protocol: str
    k: int
    top_k_accuracy: float
    rmse: float
    rmse_stars: float
    n_test: int
    n_top_k_rows: int


@torch.no_grad()
def predict_ratings(
    model: MultiTaskModel, data: EncodedInteractions, batch_size: int = 65536
) -> torch.Tensor:
    """(n,) predicted scaled ratings for every row of ``data``, in batches."""
    out = [
        model.predict_rating(
            model.embed_users(data.user[lo : lo + batch_size]),
            model.embed_items(data.item[lo : lo + batch_size]),
        )
        for lo in range(0, len(data), batch_size)
    ]
    return torch.cat(out)


@torch.no_grad()
def top_k_items(
    model: MultiTaskModel, user_rows: torch.Tensor, k: int, batch_size: int = 4096
) -> torch.Tensor:
    """(n,) user rows -> (n, min(k, n_items)) item rows by descending dot product.

    Scores the whole catalogue ``batch_size`` users at a time, so memory stays at
    ``batch_size x n_items`` scores whatever the number of users.
    """
    items = model.embed_items()  # (n_items, d)
    k = min(k, items.shape[0])
    out = []
    for lo in range(0, len(user_rows), batch_size):
        scores = model.embed_users(user_rows[lo : lo + batch_size]) @ items.T  # (b, n_items)
        out.append(torch.topk(scores, k, dim=1).indices)
    return torch.cat(out) if out else torch.empty((0, k), dtype=torch.long)


def evaluate(
    model: MultiTaskModel,
    test: EncodedInteractions,
    *,
    k: int = 10,
    threshold: float = 0.9,
    rating_range: float = 4.0,
) -> EvalReport:
    """RMSE over all test rows and top-k accuracy over the rows above ``threshold``.

    ``rating_range`` converts scaled RMSE to stars (4 on a 1..5 scale).

    >>> report = evaluate(model, encode(split.test, vocabs))
    >>> report.top_k_accuracy, report.rmse
    """
    if k < 1:
        raise ValueError(f"evaluate: k must be >= 1, got {k}")
    model.eval()
    error = rmse(predict_ratings(model, test), test.label)
    relevant = test.label > threshold
    users, targets = test.user[relevant], test.item[relevant]
    hits = top_k_hits(top_k_items(model, users, k), targets)
    accuracy = float(hits.double().mean()) if len(hits) else float("nan")
    return EvalReport("reference", k, accuracy, error, error * rating_range, len(test), len(hits))
