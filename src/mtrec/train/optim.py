"""Adagrad as the reference (Keras) defines it, without torch.optim's start-up cost.

``torch.optim.Optimizer`` imports ``torch._dynamo`` on first use, which costs about a
second of process start on this class of machine (measured with cProfile on
``mtrec compare``: 1.09 s of a 6.3 s run). This update is the same arithmetic as
``torch.optim.Adagrad(lr, initial_accumulator_value, eps)`` (a test checks they agree)
in a few foreach kernels.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def row_sums(grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct rows a sparse (rows, d) gradient touches, sorted, and each one's
    summed values, as the dense gradient would have them: ``coalesce``'s result, from one
    ``unique`` of the row ids and an ``index_add_`` in the gradient's order. For the
    history table at 25M rows (~170k entries of 64 over 80k rows a step) that took 13 ms
    against ``coalesce``'s 33 ms here, and ``coalesce`` was a third of the training step.
    On a GPU ``index_add_`` adds atomically, in no fixed order: ``coalesce`` stays there.
    A gradient already one row per id, in order (the history table's, summed by the
    model's ``_BagSum``; autograd drops its coalesced flag), passes as it is."""
    if grad.device.type != "cpu":
        grad = grad.coalesce()
    ids = grad._indices()[0]
    if grad.is_coalesced() or bool((ids[1:] > ids[:-1]).all()):  # autograd drops the flag
        return ids, grad._values()
    rows, where = torch.unique(ids, return_inverse=True)
    summed = torch.zeros((len(rows), *grad.shape[1:]), dtype=grad.dtype, device=grad.device)
    return rows, summed.index_add_(0, where, grad._values())


class Adagrad:
    """acc += g * g;  p -= lr * g / (sqrt(acc) + eps), per element.

    Keras' defaults (the reference's optimizer): ``initial_accumulator_value=0.1``,
    ``eps=1e-7``. Parameters without a gradient in a step (a task whose weight is 0)
    are left untouched, exactly as a zero gradient would leave them.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float,
        initial_accumulator_value: float = 0.1,
        eps: float = 1e-7,
        weight_decay: float = 0.0,
    ) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.eps, self.weight_decay = lr, eps, weight_decay
        self.accumulators = [torch.full_like(p, initial_accumulator_value) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        live = []
        for p, a in zip(self.params, self.accumulators, strict=True):
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                self._sparse_step(p, p.grad, a)
            else:
                live.append((p, p.grad, a))
        if not live:
            return
        params, grads, accs = (list(t) for t in zip(*live, strict=True))
        if self.weight_decay:
            grads = list(torch._foreach_add(grads, params, alpha=self.weight_decay))
        torch._foreach_addcmul_(accs, grads, grads)
        denom = torch._foreach_sqrt(accs)
        torch._foreach_add_(denom, self.eps)
        torch._foreach_addcdiv_(params, grads, denom, value=-self.lr)

    def _sparse_step(self, param: torch.Tensor, grad: torch.Tensor, acc: torch.Tensor) -> None:
        """The same update on the rows a sparse embedding gradient touches.

        A row with no gradient in this step would get ``acc += 0`` and ``p -= 0`` from the
        dense update, so updating only the touched rows is exact, and costs O(batch) instead
        of O(table): at 200k users this is most of a training step (torch.profiler).
        """
        if self.weight_decay:
            raise ValueError("Adagrad: weight decay touches every row; use dense gradients")
        # coalesce, not row_sums: the two sum a row's duplicates in different orders, and
        # the reference's results are compared bit for bit with the Keras anchor's; its
        # batches touch at most 2,000 rows, where the two cost the same (0.1 ms)
        grad = grad.coalesce()  # duplicate rows summed, as the dense gradient would
        rows, values = grad.indices()[0], grad.values()
        total = acc.index_select(0, rows).addcmul_(values, values)
        acc.index_copy_(0, rows, total)
        # gathered, moved and written back: the rows are distinct, and the same ``add_``
        # kernel (one fused multiply-add) as ``index_add_(alpha=...)``, whose CPU path
        # adds row by row: 0.09 against 0.21 ms for 1,000 rows of 32 here, the same bits
        moved = param.index_select(0, rows).add_(
            values.div_(total.sqrt_().add_(self.eps)), alpha=-self.lr
        )
        param.index_copy_(0, rows, moved)


class Adam:
    """Adam, or AdamW with ``decoupled=True``, in foreach kernels (no ``torch._dynamo`` import).

    Same arithmetic as ``torch.optim.Adam``/``AdamW`` (tested) for parameters that get a
    gradient every step; a parameter without one in a step is left untouched, moments
    included. ``accumulators`` (both moments and the step count) is what a checkpoint saves.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled: bool = False,
    ) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.betas, self.eps = lr, betas, eps
        self.weight_decay, self.decoupled = weight_decay, decoupled
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.step_count = torch.zeros((), dtype=torch.float64)

    @property
    def accumulators(self) -> list[torch.Tensor]:
        return [*self.exp_avg, *self.exp_avg_sq, self.step_count]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        self.step_count += 1
        t = float(self.step_count)
        sparse = [i for i in live if self.params[i].grad.is_sparse]  # type: ignore[union-attr]
        # the step count as the fused kernel reads it: once a step, on each table's device
        devices = {self.params[i].device for i in sparse}
        counts = {device: self.step_count.to(device, torch.float32) for device in devices}
        for i in sparse:
            self._sparse_step(i, counts[self.params[i].device])
        live = [i for i in live if i not in sparse]
        if not live:
            return
        b1, b2 = self.betas
        params = [self.params[i] for i in live]
        grads: list[torch.Tensor] = [self.params[i].grad for i in live]  # type: ignore[misc]
        m = [self.exp_avg[i] for i in live]
        v = [self.exp_avg_sq[i] for i in live]
        if self.weight_decay and self.decoupled:
            torch._foreach_mul_(params, 1 - self.lr * self.weight_decay)
        elif self.weight_decay:
            grads = list(torch._foreach_add(grads, params, alpha=self.weight_decay))
        torch._foreach_lerp_(m, grads, 1 - b1)
        torch._foreach_mul_(v, b2)
        torch._foreach_addcmul_(v, grads, grads, value=1 - b2)
        denom = torch._foreach_sqrt(v)
        torch._foreach_div_(denom, (1 - b2**t) ** 0.5)
        torch._foreach_add_(denom, self.eps)
        torch._foreach_addcdiv_(params, m, denom, value=-self.lr / (1 - b1**t))

    def _sparse_step(self, i: int, count: torch.Tensor) -> None:
        """The update on the rows a sparse embedding gradient touches ("lazy" Adam, as
        ``torch.optim.SparseAdam``): their moments and weights move, weight decay
        included; untouched rows keep theirs until a batch touches them again.

        Not the dense update's arithmetic (that would decay every row's moments, and with
        weight decay every row, each step): O(batch) a step instead of O(table), which is
        what makes Adam(W) affordable on tables of hundreds of thousands of rows.
        """
        param, grad = self.params[i], self.params[i].grad
        assert grad is not None
        rows, values = row_sums(grad)
        tables = (param, self.exp_avg[i], self.exp_avg_sq[i])
        weights, m, v = (table.index_select(0, rows) for table in tables)
        # the gathered rows in one fused pass, instead of eight elementwise ones: at 25M
        # rows the history table's update (46k of 80k rows, d = 64) fell from 13.2-13.6 to
        # 10.6 ms a step in training here; gathering and writing back is the rest, at
        # memory bandwidth
        fused = torch._fused_adamw_ if self.decoupled else torch._fused_adam_
        fused(
            [weights], [values], [m], [v], [], [count],
            lr=self.lr, beta1=self.betas[0], beta2=self.betas[1],
            weight_decay=self.weight_decay, eps=self.eps, amsgrad=False, maximize=False,
        )  # fmt: skip
        for table, new in zip(tables, (weights, m, v), strict=True):
            table.index_copy_(0, rows, new)
