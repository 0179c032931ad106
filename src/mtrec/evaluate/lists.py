"""The lists a user would get, side by side: what mtrec serves, each stage alone, baselines."""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray

from mtrec.baselines import EASE_MAX_ITEMS, ease_weights
from mtrec.features import EncodedInteractions, SeenItems, interaction_counts
from mtrec.index import ExactIndex
from mtrec.model import MultiTaskModel
from mtrec.ranker import user_queries
from mtrec.two_stage import TwoStage, retrieve_then_rank

SERVED = "served"
"""The name of the list ``mtrec recommend`` serves (the ranker's, or rating-sorted)."""


def user_lists(
    model: MultiTaskModel,
    two_stage: TwoStage | None,
    seen: SeenItems,
    users: NDArray[np.int64],
    *,
    k: int = 10,
    candidates: int = 100,
    ease_lambda: float = 500.0,
) -> dict[str, NDArray[np.int64]]:
    """(n_users, k) item rows per list for ``users``, each user's training items excluded.

    ``served``: the ranker over both sources (``two_stage``), or without one the top
    ``candidates`` by retrieval re-sorted by predicted rating (the reference's list);
    ``retrieval``: the two-tower top k; ``retrieve C, then rank by rating`` (with a
    ranker, for the record); ``popularity``: most training interactions; ``EASE``
    (catalogues of at most ``EASE_MAX_ITEMS``).
    """
    n_items = model.n_items
    exclude = [seen.of(int(u))[0] for u in users]
    with torch.inference_mode():
        index = ExactIndex(model.embed_items().numpy())
        queries = model.embed_users(torch.from_numpy(users)).numpy()
    rated = retrieve_then_rank(
        model, index, users, k=k, candidates=candidates, exclude=exclude, user_vectors=queries
    )
    lists: dict[str, NDArray[np.int64]] = {}
    if two_stage is not None:
        lists[SERVED] = two_stage.lists(user_queries(two_stage.stage, users, seen), k).rows
        lists[f"retrieve {candidates}, then rank by rating"] = rated.rows
    else:
        lists[SERVED] = rated.rows
    lists["retrieval"] = index.search(queries, k, exclude=exclude)[1]
    lists["popularity"] = popularity_list(seen, exclude, n_items, k)
    if n_items <= EASE_MAX_ITEMS:
        lists["EASE"] = ease_list(seen.as_rows(), exclude, n_items, k, ease_lambda)
    return lists


def popularity_list(
    seen: SeenItems, histories: list[NDArray[np.int64]], n_items: int, k: int
) -> NDArray[np.int64]:
    """(n, k): the items most users interacted with in training (``seen``), each of the
    ``histories`` left out of its list."""
    counts = interaction_counts(seen, n_items).astype(np.float32)[:, None]
    everyone = np.ones((len(histories), 1), dtype=np.float32)
    return ExactIndex(counts).search(everyone, k, exclude=histories)[1]


def ease_list(
    train: EncodedInteractions,
    histories: list[NDArray[np.int64]],
    n_items: int,
    k: int,
    ease_lambda: float = 500.0,
) -> NDArray[np.int64]:
    """(n, k): EASE fitted on ``train``, each user's binary history row folded in (their
    scores are the row times the weights), the history left out of the list."""
    weights = ease_weights(train, n_items, ease_lambda)
    rows = np.zeros((len(histories), n_items), dtype=np.float32)
    for j, items in enumerate(histories):
        rows[j, items] = 1.0
    return ExactIndex(np.ascontiguousarray(weights.T)).search(rows, k, exclude=histories)[1]
