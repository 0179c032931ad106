"""The lists a user would get, side by side: what mtrec serves, each stage alone, baselines."""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray

from mtrec.baselines import EASE_MAX_ITEMS, ease_weights
from mtrec.features import SeenItems, interaction_counts
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
    rated = retrieve_then_rank(model, index, users, k=k, candidates=candidates, exclude=exclude)
    lists: dict[str, NDArray[np.int64]] = {}
    if two_stage is not None:
        lists[SERVED] = two_stage.lists(user_queries(two_stage.stage, users, seen), k).rows
        lists[f"retrieve {candidates}, then rank by rating"] = rated.rows
    else:
        lists[SERVED] = rated.rows
    lists["retrieval"] = index.search(queries, k, exclude=exclude)[1]
    counts = interaction_counts(seen, n_items).astype(np.float32)[:, None]
    everyone = np.ones((len(users), 1), dtype=np.float32)
    lists["popularity"] = ExactIndex(counts).search(everyone, k, exclude=exclude)[1]
    if n_items <= EASE_MAX_ITEMS:
        weights = ease_weights(seen.as_rows(), n_items, ease_lambda)
        history = np.zeros((len(users), n_items), dtype=np.float32)
        for j, items in enumerate(exclude):
            history[j, items] = 1.0
        lists["EASE"] = ExactIndex(np.ascontiguousarray(weights.T)).search(
            history, k, exclude=exclude
        )[1]
    return lists
