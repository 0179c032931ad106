"""The multi-task model: two towers, a rating head, and the weighted sum of both losses."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from mtrec.config import ModelConfig
from mtrec.model.tasks import rating_loss, retrieval_loss


@dataclasses.dataclass(frozen=True)
class LossParts:
    """The weighted total and each task's unweighted loss (None when its weight is 0)."""

    total: torch.Tensor
    retrieval: torch.Tensor | None
    rating: torch.Tensor | None


class MultiTaskModel(nn.Module):
    """User and item embedding tables (the two towers) and a rating MLP on top of them.

    The retrieval score of (user, item) is the dot product of their embeddings; the
    rating head maps concat(user, item) -> hidden ReLU layers -> one linear output, the
    predicted scaled rating. Initialisation follows Keras (uniform +-0.05 embeddings,
    Glorot-uniform dense kernels, zero biases) from a generator seeded with ``seed``,
    so a model is a pure function of its config and seed.

    >>> model = MultiTaskModel(n_users=943, n_items=1682, config=ModelConfig(), seed=42)
    >>> u, i = model.embed_users(torch.tensor([0])), model.embed_items(torch.tensor([5]))
    >>> model.predict_rating(u, i).shape
    torch.Size([1])
    """

    def __init__(self, n_users: int, n_items: int, config: ModelConfig, seed: int = 0) -> None:
        super().__init__()
        self.config = config
        dim = config.embedding_dim
        self.user_embedding = nn.Embedding(n_users, dim)
        self.item_embedding = nn.Embedding(n_items, dim)
        layers: list[nn.Module] = []
        width = 2 * dim
        for hidden in config.head_layers:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.rating_head = nn.Sequential(*layers)
        self._init_weights(seed)

    @torch.no_grad()
    def _init_weights(self, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        for table in (self.user_embedding, self.item_embedding):
            table.weight.uniform_(-0.05, 0.05, generator=gen)
        for layer in self.rating_head:
            if isinstance(layer, nn.Linear):
                limit = (6.0 / (layer.in_features + layer.out_features)) ** 0.5
                layer.weight.uniform_(-limit, limit, generator=gen)
                layer.bias.zero_()

    @property
    def n_items(self) -> int:
        return int(self.item_embedding.num_embeddings)

    def embed_users(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) user rows -> (B, d) query embeddings; ``None`` gives every user."""
        if rows is None:
            return self.user_embedding.weight
        return self.user_embedding(rows)  # type: ignore[no-any-return]

    def embed_items(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) item rows -> (B, d) candidate embeddings; ``None`` gives the whole catalogue."""
        if rows is None:
            return self.item_embedding.weight
        return self.item_embedding(rows)  # type: ignore[no-any-return]

    def predict_rating(self, user_emb: torch.Tensor, item_emb: torch.Tensor) -> torch.Tensor:
        """(B, d), (B, d) -> (B,) predicted scaled ratings (unclipped, as trained)."""
        return self.rating_head(torch.cat([user_emb, item_emb], dim=1)).squeeze(1)  # type: ignore[no-any-return]

    def loss(
        self,
        user: torch.Tensor,
        item: torch.Tensor,
        label: torch.Tensor,
        retrieval_weight: float = 1.0,
        ranking_weight: float = 1.0,
        compute_dtype: torch.dtype | None = None,
    ) -> LossParts:
        """Weighted multi-task loss of one batch of (user row, item row, scaled label).

        A task whose weight is 0 is not computed at all: it could not change the
        gradients, and skipping it is what makes the single-task models cheap.
        ``compute_dtype`` (e.g. ``torch.bfloat16``) runs the matmuls of both tasks in that
        dtype under autocast; weights, softmax, losses and optimizer state stay float32.
        """
        u = self.embed_users(user)
        i = self.embed_items(item)
        total = u.new_zeros(())
        retrieval = rating = None
        if retrieval_weight:
            retrieval = retrieval_loss(u, i, compute_dtype=compute_dtype)
            total = total + retrieval_weight * retrieval
        if ranking_weight:
            with torch.autocast(
                u.device.type, dtype=compute_dtype, enabled=compute_dtype is not None
            ):
                predicted = self.predict_rating(u, i)
            rating = rating_loss(predicted.float(), label)
            total = total + ranking_weight * rating
        return LossParts(total, retrieval, rating)
