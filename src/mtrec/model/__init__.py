"""The model stage: tensors of rows in, embeddings, predictions and losses out."""

from mtrec.model.multitask import Histories, LossParts, MultiTaskModel, RetrievalOptions, SplitHead
from mtrec.model.tasks import rating_loss, retrieval_loss

__all__ = [
    "Histories",
    "LossParts",
    "MultiTaskModel",
    "RetrievalOptions",
    "SplitHead",
    "rating_loss",
    "retrieval_loss",
]
