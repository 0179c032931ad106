"""The model stage: tensors of rows in, embeddings, predictions and losses out."""

from mtrec.model.multitask import Histories, LossParts, MultiTaskModel, RetrievalOptions
from mtrec.model.tasks import rating_loss, retrieval_loss

__all__ = [
    "Histories",
    "LossParts",
    "MultiTaskModel",
    "RetrievalOptions",
    "rating_loss",
    "retrieval_loss",
]
