"""The multi-task model: two towers, a rating head, and the weighted sum of both losses."""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

from mtrec.config import ModelConfig
from mtrec.distributed import Shard
from mtrec.model.history import WholeLog, pool_at_once, pool_every, pool_histories
from mtrec.model.layers import (
    Dropout,
    Histories,
    LossParts,
    SplitHead,
    uniform_init,
)
from mtrec.model.tasks import (
    ExtraNegatives,
    RetrievalOptions,
    rating_loss,
    retrieval_task,
)


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
        width = 2 * dim + (1 if config.dot_in_head else 0)
        for hidden in config.head_layers:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            if config.dropout:
                layers.append(Dropout(config.dropout))
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.rating_head = nn.Sequential(*layers)
        self._add_side_features(n_users, n_items)
        if config.rating_biases:
            self.user_bias = nn.Embedding(n_users, 1)
            self.item_bias = nn.Embedding(n_items, 1)
        if config.learned_task_weights:  # log variances of (retrieval, rating); start at 0
            self.task_log_vars = nn.Parameter(torch.zeros(2))
        if config.history:
            self._add_history(n_users, n_items)
        self._whole_log: WholeLog | None = None  # built at first use (``pool_every``)
        self.draws: torch.Generator | None = None
        """Where training's random draws come from (dropout masks, new-user rows):
        ``seed_draws``'s generator, or PyTorch's global one until it is called."""
        self._init_weights(seed)

    def _add_side_features(self, n_users: int, n_items: int) -> None:
        """An embedding table per side feature, its codes per user/item as buffers (saved
        with the weights); code 0 means "none" and embeds to zero."""
        config = self.config
        self.feature_embeddings = nn.ModuleDict()
        n_features = len(config.user_features) + len(config.item_features)
        if len(config.feature_sizes) != n_features:
            raise ValueError(
                "MultiTaskModel: side features need their sizes (FeatureCodes.configure)"
            )
        names = [("user", f) for f in config.user_features] + [
            ("item", f) for f in config.item_features
        ]
        for (side, name), size, fwidth in zip(
            names, config.feature_sizes, config.feature_widths, strict=True
        ):
            self.feature_embeddings[f"{side}_{name}"] = nn.Embedding(
                size, config.embedding_dim, padding_idx=0
            )
            rows = n_users if side == "user" else n_items
            self.register_buffer(
                f"codes_{side}_{name}", torch.zeros((rows, fwidth), dtype=torch.long)
            )

    def _add_history(self, n_users: int, n_items: int) -> None:
        """The history tower's table; the histories are data, installed by ``set_history``
        (not saved with the weights)."""
        self.history_embedding = nn.Embedding(n_items, self.config.embedding_dim)
        for name, size, dtype in (
            ("indptr", n_users + 1, torch.long),
            ("items", 0, torch.long),
            ("labels", 0, torch.float32),
        ):
            self.register_buffer(f"history_{name}", torch.zeros(size, dtype=dtype), False)

    def seed_draws(self, seed: int) -> torch.Generator:
        """Give training's random draws a generator of their own on the model's device,
        seeded with ``seed``, and return it (its state goes into checkpoints).

        The global generator seeded with ``seed`` gives the same stream; one of the
        model's own keeps it from any other code's draws, so models train side by side
        in threads with the draws of one at a time (``pipeline.fit_side_by_side``)."""
        self.draws = torch.Generator(self.user_embedding.weight.device).manual_seed(seed)
        for module in self.modules():
            if isinstance(module, Dropout):
                module.generator = self.draws
        return self.draws

    @torch.no_grad()
    def _init_weights(self, seed: int) -> None:
        # The reference's tensors draw first and in the same order, so adding an option
        # never changes how the others start.
        gen = torch.Generator().manual_seed(seed)
        for table in (self.user_embedding, self.item_embedding):
            uniform_init(table.weight, 0.05, gen)
        for layer in self.rating_head:
            if isinstance(layer, nn.Linear):
                uniform_init(
                    layer.weight, (6.0 / (layer.in_features + layer.out_features)) ** 0.5, gen
                )
                layer.bias.zero_()
        for feature in self.feature_embeddings.values():
            assert isinstance(feature, nn.Embedding)
            uniform_init(feature.weight, 0.05, gen)
            feature.weight[0].zero_()
        if self.config.rating_biases:
            self.user_bias.weight.zero_()
            self.item_bias.weight.zero_()
        if self.config.history:  # drawn last: the options above start as they always did
            uniform_init(self.history_embedding.weight, 0.05, gen)

    def set_history(self, seen: Histories) -> None:
        """Install every user's history (``features.SeenItems``: user row u rated
        ``items[indptr[u]:indptr[u+1]]``, sorted, with scaled ``labels``). A no-op without
        ``config.history``."""
        if not self.config.history:
            return
        device = self.history_embedding.weight.device  # installed where the model is
        indptr = torch.as_tensor(seen.indptr, device=device)
        items = torch.as_tensor(seen.items, device=device)
        labels = torch.as_tensor(seen.labels, device=device)
        n_users = int(self.user_embedding.num_embeddings)
        if indptr.shape != (n_users + 1,) or items.shape != labels.shape:
            raise ValueError("set_history: expected indptr of n_users + 1 and equal items/labels")
        # the histories share the SeenItems arrays' memory on the CPU (both are read only):
        # a copy cost 130 MB a model at 16M training rows, two models at once under
        # `mtrec train` (the served one and the ranking stage's)
        self.history_indptr = indptr.long()
        self.history_items = items.long()
        self.history_labels = labels.float()  # an entry weighs 0.5 + its scaled rating
        self._whole_log = None  # the old histories' (370 MB at 15M rows) is rebuilt if needed

    def _history_pool(self, rows: torch.Tensor, exclude: torch.Tensor | None) -> torch.Tensor:
        """(B,) user rows -> (B, d) scaled sums of their history rows; ``exclude`` (B,) item
        rows are taken out of each row's own history (a training row's own item)."""
        histories = (self.history_indptr, self.history_items, self.history_labels)
        table = self.history_embedding
        if not (self.training and pool_at_once(table, self.history_items, rows)):
            return pool_histories(table, histories, self.n_items, rows, exclude)
        if self._whole_log is None or self._whole_log.items is not self.history_items:
            self._whole_log = WholeLog.of(histories, self.n_items)  # new histories, or moved
        return pool_every(table, self._whole_log, rows, exclude)

    def embed_history(self, items: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(n,) item rows a new user rated, (n,) scaled ratings -> (1, d) query embedding.

        A user the model never saw has no row of their own and no side features: the
        history term alone places them (a zero vector for an empty history).
        """
        if not self.config.history:
            raise ValueError("embed_history: this model's user tower does not read histories")
        weights = (0.5 + labels.float())[:, None]
        out = (weights * self.history_embedding(items)).sum(0, keepdim=True)
        out = out / max(len(items), 1) ** 0.5
        return F.normalize(out, dim=-1) if self.config.normalize else out

    def set_feature_codes(self, side: str, name: str, codes: torch.Tensor) -> None:
        """Install the (rows, width) codes of one side feature (0 = none)."""
        buffer = getattr(self, f"codes_{side}_{name}")
        if buffer.shape != codes.shape:
            got, want = tuple(codes.shape), tuple(buffer.shape)
            raise ValueError(f"feature {side}.{name}: codes of shape {got}, expected {want}")
        buffer.copy_(codes)

    def sparse_gradients(self, enabled: bool) -> None:
        """Give the per-user and per-item tables row-sparse gradients (or dense again).

        A batch touches at most ``batch`` rows of tables with hundreds of thousands; a dense
        gradient (and a dense optimizer step) would cost O(table) per step instead.
        """
        for name in (
            "user_embedding",
            "item_embedding",
            "user_bias",
            "item_bias",
            "history_embedding",
        ):
            table = getattr(self, name, None)
            if isinstance(table, nn.Embedding):
                table.sparse = enabled

    @property
    def n_items(self) -> int:
        return int(self.item_embedding.num_embeddings)

    @property
    def n_users(self) -> int:
        return int(self.user_embedding.num_embeddings)

    def _tower(
        self,
        side: str,
        table: nn.Embedding,
        rows: torch.Tensor | None,
        exclude: torch.Tensor | None = None,
        alone: torch.Tensor | None = None,
    ) -> torch.Tensor:
        out = table.weight if rows is None else table(rows)
        for name in self.config.user_features if side == "user" else self.config.item_features:
            codes = getattr(self, f"codes_{side}_{name}")
            codes = codes if rows is None else codes[rows]  # (B, width)
            out = out + self.feature_embeddings[f"{side}_{name}"](codes).sum(dim=1)
        if alone is not None:  # these users are seen as new ones: no row, no side features
            out = out * (~alone).unsqueeze(1)
        if side == "user" and self.config.history:
            every = torch.arange(table.num_embeddings, device=out.device) if rows is None else rows
            out = out + self._history_pool(every, exclude)
        if self.config.normalize:
            out = F.normalize(out, dim=-1)
        return out

    def embed_users(
        self,
        rows: torch.Tensor | None = None,
        exclude_items: torch.Tensor | None = None,
        alone: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B,) user rows -> (B, d) query embeddings; ``None`` gives every user.

        ``exclude_items`` (B,): with ``config.history``, each row's item is left out of
        that user's history (training: a row must not see its own answer). ``alone`` (B,)
        bool: those rows are embedded from their history only, as a new user would be.
        """
        return self._tower("user", self.user_embedding, rows, exclude_items, alone)

    def embed_items(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) item rows -> (B, d) candidate embeddings; ``None`` gives the whole catalogue."""
        return self._tower("item", self.item_embedding, rows)

    def predict_rating(
        self,
        user_emb: torch.Tensor,
        item_emb: torch.Tensor,
        user_rows: torch.Tensor | None = None,
        item_rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, d), (B, d) -> (B,) predicted scaled ratings (unclipped, as trained).

        With ``rating_biases`` the rows are needed too (their biases are added; user row -1,
        a user known only by a history, has none).
        """
        inputs = [user_emb, item_emb]
        if self.config.dot_in_head:
            inputs.append((user_emb * item_emb).sum(dim=1, keepdim=True))
        out = self.rating_head(torch.cat(inputs, dim=1)).squeeze(1)
        if self.config.rating_biases:
            if user_rows is None or item_rows is None:
                raise ValueError("predict_rating: this model has rating biases; pass the rows too")
            known = user_rows >= 0  # -1: a user embedded from a history alone has no bias
            user_bias = self.user_bias(user_rows.clamp(min=0)).squeeze(1) * known
            out = out + user_bias + self.item_bias(item_rows).squeeze(1)
        return out  # type: ignore[no-any-return]

    @torch.no_grad()
    def split_head(self, item_emb: torch.Tensor) -> SplitHead | None:
        """The rating head frozen for serving (inference, dropout off), its first layer split
        by side with the items' share computed once for the (n, d) ``item_emb``; None where
        the head also reads the dot product (it cannot be split by side)."""
        if self.config.dot_in_head:
            return None
        linears = [layer for layer in self.rating_head if isinstance(layer, nn.Linear)]
        dim = self.config.embedding_dim
        first = linears[0]

        def numpy(t: torch.Tensor) -> NDArray[np.float32]:
            return np.ascontiguousarray(t.detach().float().numpy())

        biases = self.config.rating_biases
        return SplitHead(
            user_weight=numpy(first.weight[:, :dim].T),
            item_part=numpy(item_emb.float() @ first.weight[:, dim:].T + first.bias),
            layers=tuple((numpy(layer.weight.T), numpy(layer.bias)) for layer in linears[1:]),
            user_bias=numpy(self.user_bias.weight[:, 0]) if biases else None,
            item_bias=numpy(self.item_bias.weight[:, 0]) if biases else None,
        )

    def loss(
        self,
        user: torch.Tensor,
        item: torch.Tensor,
        label: torch.Tensor,
        retrieval_weight: float = 1.0,
        rating_weight: float = 1.0,
        compute_dtype: torch.dtype | None = None,
        options: RetrievalOptions | None = None,
        shard: Shard | None = None,
    ) -> LossParts:
        """Weighted multi-task loss of one batch of (user row, item row, scaled label).

        A task whose weight is 0 is not computed at all: it could not change the
        gradients, and skipping it is what makes the single-task models cheap.
        ``compute_dtype`` (e.g. ``torch.bfloat16``) runs the matmuls of both tasks in that
        dtype under autocast; weights, softmax, losses and optimizer state stay float32.

        With ``shard`` (data-parallel training) these rows are this process's slice of a
        global batch: the retrieval softmax runs against the whole batch's items, gathered
        from every process, and both losses are normalised by the global batch, so that the
        processes' losses add up to the one-process loss of the global batch.
        """
        alone = None
        if self.training and self.config.history and self.config.new_user_rate:
            draw = torch.rand(len(user), device=user.device, generator=self.draws)
            alone = draw < self.config.new_user_rate
        u = self.embed_users(user, exclude_items=item, alone=alone)
        i = self.embed_items(item)
        total = u.new_zeros(())
        retrieval = rating = None
        if retrieval_weight:
            options = options or RetrievalOptions()
            extra = functools.partial(self._extra_negatives, options)
            retrieval = retrieval_task(u, i, item, label, options, compute_dtype, shard, extra)
            total = total + self._weigh(0, retrieval_weight * retrieval)
        if rating_weight:
            with torch.autocast(
                u.device.type, dtype=compute_dtype, enabled=compute_dtype is not None
            ):
                rating_rows = user if alone is None else torch.where(alone, -1, user)
                predicted = self.predict_rating(u, i, rating_rows, item)
            rating = rating_loss(predicted.float(), label, None if shard is None else shard.count)
            total = total + self._weigh(1, rating_weight * rating)
        return LossParts(total, retrieval, rating)

    def forward(
        self,
        user: torch.Tensor,
        item: torch.Tensor,
        label: torch.Tensor,
        retrieval_weight: float,
        rating_weight: float,
        compute_dtype: torch.dtype | None,
        options: RetrievalOptions | None,
        shard: Shard | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """:meth:`loss` as a tuple: what ``DistributedDataParallel`` calls, so that its
        gradient hooks run (a plain method call would bypass them)."""
        parts = self.loss(
            user, item, label, retrieval_weight, rating_weight, compute_dtype, options, shard
        )
        return parts.total, parts.retrieval, parts.rating

    def _extra_negatives(self, options: RetrievalOptions) -> ExtraNegatives | None:
        rows = options.extra_negatives
        if rows is None:
            return None
        # drawn uniformly: each has probability 1 / n_items per draw
        log_q = None
        if options.log_q is not None:
            log_q = rows.new_full((len(rows),), -math.log(self.n_items), dtype=torch.float32)
        return ExtraNegatives(self.embed_items(rows), rows, log_q)

    def _weigh(self, task: int, loss: torch.Tensor) -> torch.Tensor:
        """A task's loss as it enters the total: as is, or with a learned uncertainty weight
        (classification: exp(-s) L + s/2; regression: exp(-s) L / 2 + s/2)."""
        if not self.config.learned_task_weights:
            return loss
        s = self.task_log_vars[task]
        scale = 1.0 if task == 0 else 0.5
        return scale * torch.exp(-s) * loss + 0.5 * s

    def task_weights(self) -> tuple[float, float] | None:
        """The learned effective weights (retrieval, rating), or None for fixed weights."""
        if not self.config.learned_task_weights:
            return None
        s = self.task_log_vars.detach()
        return float(torch.exp(-s[0])), float(0.5 * torch.exp(-s[1]))
