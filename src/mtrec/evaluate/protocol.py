"""Evaluation of a trained model (or a baseline) on held-out interactions.

Two protocols, named in every report:

- ``reference`` (the tutorial's, PROTOCOL.md): every item in the catalogue is a
  candidate, including those the user rated in training;
- ``honest``: the user's training items are removed from the top-k before scoring,
  as a deployed recommender would (nobody is recommended what they already rated).

Ranking metrics come from inner products of user vectors with item vectors, searched
with the exact index: the model's embeddings, or a baseline's vectors (popularity:
one dimension; EASE: the user's interaction row against the item-item weights).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray

from mtrec.evaluate.metrics import mae, ranking_metrics, ranking_metrics_per_user, rmse
from mtrec.features import EncodedInteractions, RatingScale, SeenItems
from mtrec.index import ExactIndex
from mtrec.model import MultiTaskModel

EvalProtocol = Literal["reference", "honest"]


@dataclasses.dataclass(frozen=True)
class EvalReport:
    """Metrics of one model on one test set.

    ``top_k_accuracy`` is the reference's: among test rows rated above ``threshold``
    (scaled; 0.9 means five stars), the share whose movie is in the user's top ``k``.
    Recall@k, NDCG@k and MRR@k are per user, relevant = test rows rated at least
    ``relevant_min`` (0.75: four stars), averaged over users with a relevant item.
    ``coverage`` is the share of the catalogue appearing in some user's top k.
    Rating metrics are NaN for a retrieval-only scorer, ranking ones for a rating-only one.
    """

    protocol: str
    k: int
    top_k_accuracy: float
    rmse: float
    rmse_stars: float
    n_test: int
    n_top_k_rows: int
    mae: float = math.nan
    mae_stars: float = math.nan
    recall: float = math.nan
    ndcg: float = math.nan
    mrr: float = math.nan
    coverage: float = math.nan
    n_users: int = 0


@torch.no_grad()
def predict_ratings(
    model: MultiTaskModel, data: EncodedInteractions, batch_size: int = 65536
) -> torch.Tensor:
    """(n,) predicted scaled ratings for every row of ``data``, in batches."""
    out = [
        model.predict_rating(
            model.embed_users(data.user[lo : lo + batch_size]),
            model.embed_items(data.item[lo : lo + batch_size]),
            data.user[lo : lo + batch_size],
            data.item[lo : lo + batch_size],
        )
        for lo in range(0, len(data), batch_size)
    ]
    return torch.cat(out) if out else torch.zeros(0)


@torch.no_grad()
def top_k_items(model: MultiTaskModel, user_rows: torch.Tensor, k: int) -> torch.Tensor:
    """(n,) user rows -> (n, min(k, n_items)) item rows by descending dot product."""
    index = ExactIndex(model.embed_items().numpy())
    _, rows = index.search(model.embed_users(user_rows).numpy(), k)
    return torch.from_numpy(rows)


def ranking_report(
    user_vectors: NDArray[np.float32],
    item_vectors: NDArray[np.float32],
    test: EncodedInteractions,
    *,
    k: int = 10,
    protocol: EvalProtocol = "reference",
    seen: SeenItems | None = None,
    threshold: float = RatingScale.loved,
    relevant_min: float = RatingScale.liked,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Top-k accuracy, recall, NDCG, MRR and coverage of inner-product retrieval.

    ``user_vectors[u] . item_vectors[i]`` scores item row i for user row u. The
    ``honest`` protocol needs ``seen`` (the training items to exclude). The top-k search
    runs on ``device``.
    """
    if k < 1:
        raise ValueError(f"evaluate: k must be >= 1, got {k}")
    if protocol not in ("reference", "honest"):
        raise ValueError(f"evaluate: protocol must be 'reference' or 'honest', got {protocol!r}")
    if protocol == "honest" and seen is None:
        raise ValueError("evaluate: the honest protocol needs the training items (seen)")
    test_users, test_items = test.user.numpy(), test.item.numpy()
    labels = test.label.numpy()
    users = np.unique(test_users)  # every user with a test row, in row order
    exclude = [seen.of(int(u))[0] for u in users] if protocol == "honest" and seen else None
    index = ExactIndex(item_vectors, device=device)
    _, top = index.search(user_vectors[users], k, exclude=exclude)
    position = np.searchsorted(users, test_users)  # test row -> its user's row of ``top``
    five = labels > threshold
    hits = (top[position[five]] == test_items[five, None]).any(axis=1)
    relevant = labels >= relevant_min
    ranked = ranking_metrics(top, position[relevant], test_items[relevant])
    shown = np.unique(top[top >= 0])
    return {
        "top_k_accuracy": float(hits.mean()) if len(hits) else math.nan,
        "n_top_k_rows": len(hits),
        "recall": ranked["recall"],
        "ndcg": ranked["ndcg"],
        "mrr": ranked["mrr"],
        "n_users": int(ranked["n_users"]),
        "coverage": len(shown) / len(item_vectors),
    }


def rating_report(
    predicted: torch.Tensor, target: torch.Tensor, rating_range: float = 4.0
) -> dict[str, float]:
    """RMSE and MAE, scaled and in stars (NaN without a row: a test part of users the
    model does not know has no rating it predicted)."""
    if not len(target):
        return dict.fromkeys(("rmse", "rmse_stars", "mae", "mae_stars"), math.nan)
    error, absolute = rmse(predicted, target), mae(predicted, target)
    return {
        "rmse": error,
        "rmse_stars": error * rating_range,
        "mae": absolute,
        "mae_stars": absolute * rating_range,
    }


def evaluate(
    model: MultiTaskModel,
    test: EncodedInteractions,
    *,
    k: int = 10,
    threshold: float = RatingScale.loved,
    rating_range: float = 4.0,
    protocol: EvalProtocol = "reference",
    seen: SeenItems | None = None,
    device: str | torch.device = "cpu",
) -> EvalReport:
    """Rating and ranking metrics of ``model`` on ``test`` under ``protocol``.

    ``rating_range`` converts scaled errors to stars (4 on a 1..5 scale). The all-users
    top-k search, an evaluation's heaviest part, runs on ``device`` (the training one).

    >>> report = evaluate(model, encode(split.test, vocabs))
    >>> honest = evaluate(model, test, protocol="honest", seen=seen_items(train, n_users))
    """
    model.eval()
    with torch.no_grad():
        users, items = model.embed_users(None).numpy(), model.embed_items().numpy()
    ranked = ranking_report(
        users, items, test, k=k, protocol=protocol, seen=seen, threshold=threshold, device=device
    )
    rated = rating_report(predict_ratings(model, test), test.label, rating_range)
    return EvalReport(protocol=protocol, k=k, n_test=len(test), **ranked, **rated)  # type: ignore[arg-type]


@dataclasses.dataclass(frozen=True)
class ListReport:
    """Honest recall@k and NDCG@k of one kind of list, with 95% bootstrap intervals over users.

    ``differences[name]``: intervals of the paired difference to list ``name`` (the same
    resampled users), per metric: an interval above zero says this list beats that one.
    """

    name: str
    recall: float
    recall_ci: tuple[float, float]
    ndcg: float
    ndcg_ci: tuple[float, float]
    differences: dict[str, dict[str, tuple[float, float]]]
    n_users: int
    k: int = 10
    fell_back: int = 0
    """Of the ``n_users``, those without training rows: answered by the fallback list (the
    same one in every list of a report)."""


BOOT_BLOCKS = 10
"""Bootstrap resamples are averaged in this many blocks: at 50,000 users, 1,000 resamples
at once took 400 MB of indices and 400 MB of gathered values."""


def _resamples(n: int, n_boot: int, seed: int) -> NDArray[np.int32]:
    """``n_boot`` resamples of ``n`` users with replacement, as int32 (half the memory),
    drawn in blocks: the same indices as one (n_boot, n) draw from ``seed``."""
    rng = np.random.default_rng(seed)
    parts = [
        rng.integers(0, n, size=(len(block), n)).astype(np.int32)
        for block in np.array_split(np.arange(n_boot), BOOT_BLOCKS)
    ]
    return np.concatenate(parts) if n else np.zeros((n_boot, 0), dtype=np.int32)


def list_reports(
    lists: dict[str, NDArray[np.int64]],
    users: NDArray[np.int64],
    test: EncodedInteractions,
    *,
    against: tuple[str, ...] = ("EASE", "retrieval"),
    relevant_min: float = RatingScale.liked,
    n_boot: int = 1000,
    seed: int = 0,
) -> list[ListReport]:
    """Recall@k and NDCG@k of each named (n_users, k) list of item rows for ``users``
    (sorted user rows; the test rows' users must be among them), relevant = test rows
    rated at least ``relevant_min``. Intervals: percentile bootstrap over the users with
    a relevant test item, ``n_boot`` resamples from ``seed``; paired differences to each
    list named in ``against`` that is present.
    """
    position = np.searchsorted(users, test.user.numpy())
    relevant = test.label.numpy() >= relevant_min
    rel_user, rel_item = position[relevant], test.item.numpy()[relevant]
    per_user = {
        name: ranking_metrics_per_user(top, rel_user, rel_item) for name, top in lists.items()
    }
    n = len(next(iter(per_user.values()))["recall"]) if per_user else 0
    resample = _resamples(n, n_boot, seed)

    def interval(values: NDArray[np.float64]) -> tuple[float, float]:
        if n == 0:
            return (math.nan, math.nan)
        means = np.concatenate(
            [values[block].mean(axis=1) for block in np.array_split(resample, BOOT_BLOCKS)]
        )
        return (float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5)))

    out = []
    for name, metrics in per_user.items():
        differences = {
            other: {
                key: interval(metrics[key] - per_user[other][key]) for key in ("recall", "ndcg")
            }
            for other in against
            if other in per_user and other != name
        }
        out.append(
            ListReport(
                name,
                float(metrics["recall"].mean()) if n else math.nan,
                interval(metrics["recall"]),
                float(metrics["ndcg"].mean()) if n else math.nan,
                interval(metrics["ndcg"]),
                differences,
                n,
                int(next(iter(lists.values())).shape[1]),
            )
        )
    return out
