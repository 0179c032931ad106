"""Lists in bulk: every user's list written to a Parquet file, and the reference's list."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mtrec.artifact import ItemInfo
from mtrec.data import Items
from mtrec.features import RatingScale, Vocabs
from mtrec.index import ExactIndex
from mtrec.io import atomic_path
from mtrec.model import MultiTaskModel
from mtrec.ranking import (
    retrieve_then_rank,
)
from mtrec.recommend.recommender import Recommender
from mtrec.recommend.records import Recommendation, records_of


def recommend_reference(
    model: MultiTaskModel,
    vocabs: Vocabs,
    user_id: int | str,
    *,
    k: int = 10,
    candidates: int | None = None,
    items: Items | None = None,
    scale: RatingScale | None = None,
) -> list[Recommendation]:
    """The reference's prediction: top ``candidates`` (default ``k``) over the whole
    catalogue by dot product, training movies included, ranked by predicted rating.

    >>> recs = recommend_reference(model, vocabs, 5, items=dataset.items)
    """
    with torch.inference_mode():
        index = ExactIndex(model.embed_items().numpy())
    row = np.array([vocabs.users.row(user_id)], dtype=np.int64)
    batch = retrieve_then_rank(model, index, row, k=k, candidates=candidates or k)
    info = ItemInfo.from_items(vocabs.items, items)
    return records_of(batch, 0, vocabs.items, info, scale or RatingScale())


def write_all_users(
    rec: Recommender,
    path: str | Path,
    *,
    k: int = 10,
    candidates: int | None = None,
    exclude_seen: bool = True,
    users_per_batch: int = 4096,
) -> int:
    """Write every known user's list to a Parquet file, atomically; returns the row count.

    Columns: ``user_id, rank, item_id, title, retrieval_score, predicted_rating, stars,
    rank_score`` (the ranking stage's score, which orders the list; null without one).
    Users are processed ``users_per_batch`` at a time, so memory stays bounded.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    vocab_users, vocab_items = rec.vocabs.users, rec.vocabs.items
    titles = np.array([t or "" for t in rec.saved.items.titles], dtype=object)
    n_users = len(vocab_users)
    written = 0
    with atomic_path(path) as tmp:
        writer: pq.ParquetWriter | None = None
        try:
            for lo in range(0, n_users, users_per_batch):
                user_rows = np.arange(lo, min(lo + users_per_batch, n_users), dtype=np.int64)
                batch = rec.rank_rows(user_rows, k, candidates, exclude_seen)
                keep = batch.rows >= 0
                ranks = np.broadcast_to(np.arange(1, batch.rows.shape[1] + 1), batch.rows.shape)
                item_rows = batch.rows[keep]
                table = pa.table(
                    {
                        "user_id": vocab_users.ids(
                            np.broadcast_to(user_rows[:, None], batch.rows.shape)[keep]
                        ),
                        "rank": ranks[keep].astype(np.int32),
                        "item_id": vocab_items.ids(item_rows),
                        "title": titles[item_rows],
                        "retrieval_score": batch.retrieval[keep],
                        "predicted_rating": batch.predicted[keep],
                        "stars": rec.saved.scale.stars(batch.predicted[keep]),
                        "rank_score": pa.nulls(int(keep.sum()), pa.float32())
                        if batch.score is None
                        else batch.score[keep],
                    }
                )
                if writer is None:
                    writer = pq.ParquetWriter(str(tmp), table.schema)
                writer.write_table(table)
                written += table.num_rows
        finally:
            if writer is not None:
                writer.close()
    return written
