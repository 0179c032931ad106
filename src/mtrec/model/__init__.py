"""The model stage: tensors of rows in, embeddings, predictions and losses out.

``multitask`` (the composition: towers, rating head, weighted losses), ``tasks`` (the
retrieval and rating losses), ``history`` (the history tower's pooling), ``layers`` (the
small parts: the serving head in NumPy, dropout, loss options).
"""

from mtrec.model.layers import Histories, LossParts, SplitHead
from mtrec.model.multitask import MultiTaskModel
from mtrec.model.tasks import RetrievalOptions, rating_loss, retrieval_loss

__all__ = [
    "Histories",
    "LossParts",
    "MultiTaskModel",
    "RetrievalOptions",
    "SplitHead",
    "rating_loss",
    "retrieval_loss",
]
