"""Retrieve, then rank: candidates by dot product, ordered by the rating head."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from mtrec.data import Items
from mtrec.evaluate import top_k_items
from mtrec.features import RatingScale, Vocabs
from mtrec.model import MultiTaskModel


@dataclasses.dataclass(frozen=True)
class Recommendation:
    """One recommended item: who it is, why it was retrieved and how it was ranked."""

    item_id: int | str
    title: str | None
    genres: tuple[str, ...]
    retrieval_score: float
    """Dot product of the user and item embeddings (what retrieval sorted by)."""
    predicted_rating: float
    """The rating head's scaled prediction y (unclipped)."""
    stars: float
    """``1 + 4 y`` on MovieLens, clipped to the rating range."""


@torch.no_grad()
def retrieve_then_rank(
    model: MultiTaskModel,
    vocabs: Vocabs,
    user_id: int | str,
    *,
    k: int = 10,
    candidates: int | None = None,
    items: Items | None = None,
    scale: RatingScale | None = None,
) -> list[Recommendation]:
    """Top ``candidates`` items by retrieval score, re-sorted by predicted rating, first ``k``.

    ``candidates`` defaults to ``k`` (the reference: retrieve ten, rate those ten).
    ``items`` supplies titles and genres. Raises ``UnknownIdError`` for an unknown user.

    >>> recs = retrieve_then_rank(model, vocabs, 5, items=dataset.items)
    >>> [(r.title, round(r.stars, 1)) for r in recs[:2]]
    """
    scale = scale or RatingScale()
    user_row = torch.tensor([vocabs.users.row(user_id)])
    rows = top_k_items(model, user_row, candidates or k)[0]  # (c,)
    user = model.embed_users(user_row).expand(len(rows), -1)  # (c, d)
    item = model.embed_items(rows)
    retrieval = (user * item).sum(dim=1)
    predicted = model.predict_rating(user, item)
    order = torch.argsort(predicted, descending=True, stable=True)[:k]
    stars = scale.stars(predicted.numpy())
    ids = vocabs.items.ids(rows.numpy())
    position = {} if items is None else {i: p for p, i in enumerate(items.ids.tolist())}
    out = []
    for j in order.tolist():
        raw = ids[j].item() if isinstance(ids[j], np.generic) else ids[j]
        meta = position.get(raw)
        out.append(
            Recommendation(
                item_id=raw,
                title=None if meta is None or items is None else str(items.titles[meta]),
                genres=() if meta is None or items is None else tuple(items.genres_of(meta)),
                retrieval_score=float(retrieval[j]),
                predicted_rating=float(predicted[j]),
                stars=float(stars[j]),
            )
        )
    return out
