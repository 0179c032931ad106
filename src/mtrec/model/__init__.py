"""Stage 3, model: tensors of rows in, embeddings, predictions and losses out."""

from mtrec.model.multitask import LossParts, MultiTaskModel
from mtrec.model.tasks import rating_loss, retrieval_loss

__all__ = ["LossParts", "MultiTaskModel", "rating_loss", "retrieval_loss"]
