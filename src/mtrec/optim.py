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
    ) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.eps = lr, eps
        self.accumulators = [torch.full_like(p, initial_accumulator_value) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        live = [
            (p, p.grad, a)
            for p, a in zip(self.params, self.accumulators, strict=True)
            if p.grad is not None
        ]
        if not live:
            return
        params, grads, accs = (list(t) for t in zip(*live, strict=True))
        torch._foreach_addcmul_(accs, grads, grads)
        denom = torch._foreach_sqrt(accs)
        torch._foreach_add_(denom, self.eps)
        torch._foreach_addcdiv_(params, grads, denom, value=-self.lr)
