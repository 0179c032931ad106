"""What a list could reach on a planted synthetic log: the oracle beside popularity.

The oracle ranks items by the generator's own scores (``PlantedTruth``); popularity by
training counts. Both leave out each user's training items and are measured as the
served list is (honest protocol: recall@k and NDCG@k against test rows of 4+ stars) on
the split ``mtrec train`` makes (random, seeded), over a seeded sample of test users.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from mtrec.data import Interactions, random_split
from mtrec.data.synth import PlantedTruth
from mtrec.evaluate.metrics import ranking_metrics
from mtrec.index import ExactIndex

LIKED_STARS = 4.0


@dataclasses.dataclass(frozen=True)
class PlantedReport:
    """The oracle's and popularity's recall@k and NDCG@k, over ``users`` sampled test users
    (of ``of_users`` with a liked test row)."""

    k: int
    users: int
    of_users: int
    oracle: dict[str, float]
    popularity: dict[str, float]


def planted_lists(
    log: Interactions,
    truth: PlantedTruth,
    *,
    k: int = 10,
    test_fraction: float = 0.2,
    seed: int = 42,
    max_users: int = 10_000,
) -> PlantedReport:
    """recall@k and NDCG@k of the oracle and of popularity on ``log``'s held-out rows.

    Ids are the generator's (``1..n``). Users are sampled (seeded) down to ``max_users``
    of those with a liked test row; the report says how many were measured.
    """
    split = random_split(log, test_fraction=test_fraction, seed=seed)
    train, test = split.train, split.test
    n_items = truth.scores.shape[1]
    liked = test.rating >= LIKED_STARS
    candidates = np.unique(test.user[liked])
    draw = np.random.default_rng(seed)
    users = np.sort(draw.choice(candidates, min(max_users, len(candidates)), replace=False))
    order = np.argsort(train.user, kind="stable")
    starts = np.searchsorted(train.user[order], users)
    ends = np.searchsorted(train.user[order], users, side="right")
    seen = [train.item[order[a:b]] - 1 for a, b in zip(starts, ends, strict=True)]
    counts = np.bincount(train.item - 1, minlength=n_items).astype(np.float32)
    clusters = np.eye(truth.scores.shape[0], dtype=np.float32)[truth.user_cluster[users - 1]]
    lists = {  # the truth as a one-hot cluster query against each item's cluster scores
        "oracle": ExactIndex(truth.scores.T).search(clusters, k, exclude=seen)[1],
        "popularity": ExactIndex(counts[:, None]).search(
            np.ones((len(users), 1), dtype=np.float32), k, exclude=seen
        )[1],
    }
    position = np.searchsorted(users, test.user[liked])
    at = np.minimum(position, len(users) - 1)
    measured = (position < len(users)) & (users[at] == test.user[liked])
    relevant_user, relevant_item = position[measured], test.item[liked][measured] - 1
    measured_lists = {}
    for name, top in lists.items():
        metrics = ranking_metrics(top, relevant_user, relevant_item)
        measured_lists[name] = {"recall": metrics["recall"], "ndcg": metrics["ndcg"]}
    return PlantedReport(k, len(users), len(candidates), **measured_lists)
