"""What a model directory holds, in memory: the saved model and its items' metadata."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from numpy.typing import NDArray

from mtrec.config import ModelConfig, TrainConfig
from mtrec.data import Items
from mtrec.features import RatingScale, SeenItems, Vocabs, interaction_counts
from mtrec.index import Index
from mtrec.model import MultiTaskModel
from mtrec.ranking import Ranker, StageOne, TwoStage
from mtrec.vocab import Vocab

FORMAT_VERSION = 1
FILES = (
    "config.json",
    "vocab.json",
    "model.safetensors",
    "items.json",
    "seen.safetensors",
    "metrics.json",
)


@dataclasses.dataclass(frozen=True)
class ItemInfo:
    """Display metadata aligned to item rows (None/empty where the dataset had none)."""

    titles: list[str | None]
    genres: list[list[str]]
    years: list[int]

    @classmethod
    def from_items(cls, vocab: Vocab, items: Items | None) -> ItemInfo:
        n = len(vocab)
        if items is None:
            return cls([None] * n, [[] for _ in range(n)], [0] * n)
        position = {raw: p for p, raw in enumerate(items.ids.tolist())}
        where = [position.get(raw) for raw in vocab.id_array.tolist()]
        return cls(
            [None if p is None else str(items.titles[p]) for p in where],
            [[] if p is None else items.genres_of(p) for p in where],
            [0 if p is None else int(items.years[p]) for p in where],
        )


@dataclasses.dataclass(frozen=True)
class SavedModel:
    """Everything ``Recommender`` needs, as loaded from (or about to be written to) disk."""

    model: MultiTaskModel
    model_config: ModelConfig
    train_config: TrainConfig
    vocabs: Vocabs
    items: ItemInfo
    seen: SeenItems
    popularity: NDArray[np.float64]
    """Per item, what a user the model does not know is served by (``fallback_order``):
    liked training rows, weighted by recency where the run chose to."""
    index: Index
    data: dict[str, Any]
    """Dataset name, source and split (kind, seed, test fraction, sizes, fingerprint)."""
    metrics: dict[str, Any]
    scale: RatingScale = dataclasses.field(default_factory=RatingScale)
    ranker: Ranker | None = None
    """The ranking stage; None: the list is retrieval re-sorted by predicted rating."""
    item_item: NDArray[np.float32] | None = None
    """(n_items, n_items) EASE weights the ranker reads (None: two-tower signals only)."""
    rating_errors: NDArray[np.float32] | None = None
    """The rating head's error on each entry of ``seen`` (aligned with it), which the
    ranker's neighbourhood correction reads; None where the ranker has no correction."""

    def two_stage(self) -> TwoStage | None:
        """The ranking stage over this model, or None for a model saved without one."""
        if self.ranker is None:
            return None
        counts = interaction_counts(self.seen, len(self.vocabs.items))
        stage = StageOne(
            self.model,
            self.index,
            self.item_item,
            counts,
            self.ranker.correction,
            self.rating_errors,
            recent=self.popularity if self.ranker.half_life is not None else None,
        )
        return TwoStage.around(stage, self.seen, self.ranker)
