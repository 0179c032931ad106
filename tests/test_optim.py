"""mtrec's Adagrad must be torch.optim.Adagrad (Keras constants), step for step."""

from __future__ import annotations

import pytest
import torch

from mtrec.train.optim import Adagrad, Adam, row_sums


def test_matches_torch_adagrad_over_steps() -> None:
    gen = torch.Generator().manual_seed(0)
    ours = [
        torch.randn(5, 3, generator=gen).requires_grad_(),
        torch.randn(4, generator=gen).requires_grad_(),
    ]
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    opt_a = Adagrad(ours, lr=0.1, initial_accumulator_value=0.1, eps=1e-7)
    opt_b = torch.optim.Adagrad(theirs, lr=0.1, initial_accumulator_value=0.1, eps=1e-7)
    targets = [torch.randn(5, 3, generator=gen), torch.randn(4, generator=gen)]
    for step in range(6):
        for params, opt in ((ours, opt_a), (theirs, opt_b)):
            opt.zero_grad()
            loss = sum(
                ((p - t) ** 2 * (step + 1)).sum() for p, t in zip(params, targets, strict=True)
            )
            loss.backward()
            opt.step()
    for a, b in zip(ours, theirs, strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-7)


def test_update_by_hand_and_params_without_grad_untouched() -> None:
    p = torch.tensor([1.0, -2.0], requires_grad=True)
    idle = torch.tensor([5.0], requires_grad=True)
    opt = Adagrad([p, idle], lr=0.5, initial_accumulator_value=0.1, eps=0.0)
    p.grad = torch.tensor([0.3, -0.4])
    opt.step()
    # acc = 0.1 + g^2 = [0.19, 0.26]; p -= 0.5 * g / sqrt(acc)
    expected = torch.tensor([1.0 - 0.5 * 0.3 / 0.19**0.5, -2.0 + 0.5 * 0.4 / 0.26**0.5])
    assert torch.allclose(p.detach(), expected, atol=1e-6)
    assert idle.item() == 5.0
    assert torch.allclose(opt.accumulators[1], torch.tensor([0.1]))


@pytest.mark.parametrize(("decoupled", "weight_decay"), [(False, 0.0), (False, 0.1), (True, 0.05)])
def test_adam_and_adamw_match_torch(decoupled: bool, weight_decay: float) -> None:
    gen = torch.Generator().manual_seed(1)
    ours = [
        torch.randn(4, 3, generator=gen).requires_grad_(),
        torch.randn(5, generator=gen).requires_grad_(),
    ]
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    opt_a = Adam(ours, lr=0.01, weight_decay=weight_decay, decoupled=decoupled)
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    opt_b = cls(theirs, lr=0.01, weight_decay=weight_decay)
    targets = [torch.randn(4, 3, generator=gen), torch.randn(5, generator=gen)]
    for _ in range(7):
        for params, opt in ((ours, opt_a), (theirs, opt_b)):
            opt.zero_grad()
            sum(((p - t) ** 2).sum() for p, t in zip(params, targets, strict=True)).backward()
            opt.step()
    for a, b in zip(ours, theirs, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert float(opt_a.step_count) == 7 and len(opt_a.accumulators) == 5


def test_sparse_rows_update_equals_dense_update() -> None:
    """Row-sparse gradients (repeated rows included) move the table exactly as dense ones."""
    gen = torch.Generator().manual_seed(1)
    dense = torch.nn.Embedding(50, 4)
    sparse = torch.nn.Embedding(50, 4, sparse=True)
    with torch.no_grad():
        sparse.weight.copy_(dense.weight)
    opt_d = Adagrad(dense.parameters(), lr=0.2)
    opt_s = Adagrad(sparse.parameters(), lr=0.2)
    drawn = torch.zeros(50, dtype=torch.bool)
    for _ in range(5):
        rows = torch.randint(0, 50, (30,), generator=gen)  # ~30 rows, some twice
        drawn[rows] = True
        target = torch.randn(30, 4, generator=gen)
        for table, opt in ((dense, opt_d), (sparse, opt_s)):
            opt.zero_grad()
            ((table(rows) - target) ** 2).sum().backward()
            opt.step()
    assert sparse.weight.grad is not None and sparse.weight.grad.is_sparse
    assert torch.allclose(dense.weight, sparse.weight, rtol=0, atol=1e-6)
    assert torch.allclose(opt_d.accumulators[0], opt_s.accumulators[0], rtol=1e-6, atol=0)
    assert not drawn.all()  # rows never drawn keep their initial accumulator exactly
    assert (opt_s.accumulators[0][~drawn] == 0.1).all()


def test_sparse_gradients_refused_where_not_exact() -> None:
    table = torch.nn.Embedding(5, 2, sparse=True)
    table(torch.tensor([1])).sum().backward()
    with pytest.raises(ValueError, match="weight decay"):
        Adagrad(table.parameters(), lr=0.1, weight_decay=0.01).step()


@pytest.mark.parametrize(("decoupled", "weight_decay"), [(False, 0.0), (True, 0.1), (False, 0.1)])
def test_lazy_adam_rows_match_dense_adam_where_every_row_trains(
    decoupled: bool, weight_decay: float
) -> None:
    """Touched every step, a row moves as dense Adam(W) moves it; untouched, not at all."""
    gen = torch.Generator().manual_seed(2)
    dense = torch.nn.Embedding(6, 3)
    sparse = torch.nn.Embedding(9, 3, sparse=True)  # rows 6.. never drawn
    with torch.no_grad():
        sparse.weight[:6].copy_(dense.weight)
    untouched = sparse.weight[6:].detach().clone()
    kw = {"lr": 0.05, "weight_decay": weight_decay, "decoupled": decoupled}
    opt_d, opt_s = Adam(dense.parameters(), **kw), Adam(sparse.parameters(), **kw)
    for _ in range(7):
        rows = torch.cat([torch.arange(6), torch.randint(0, 6, (5,), generator=gen)])
        target = torch.randn(len(rows), 3, generator=gen)
        for table, opt in ((dense, opt_d), (sparse, opt_s)):
            opt.zero_grad()
            ((table(rows) - target) ** 2).sum().backward()
            opt.step()
    assert sparse.weight.grad is not None and sparse.weight.grad.is_sparse
    assert torch.allclose(dense.weight, sparse.weight[:6], rtol=0, atol=1e-6)
    assert torch.equal(sparse.weight[6:], untouched)
    assert (opt_s.exp_avg[0][6:] == 0).all() and (opt_s.exp_avg_sq[0][6:] == 0).all()


def test_row_sums_by_hand_and_as_coalesce() -> None:
    grad = torch.sparse_coo_tensor(
        torch.tensor([[2, 0, 2, 5]]),
        torch.tensor([[1.0, -1.0], [2.0, 0.5], [3.0, 1.0], [4.0, 4.0]]),
        (7, 2),
        check_invariants=True,
    )
    rows, values = row_sums(grad)
    assert rows.tolist() == [0, 2, 5]
    assert values.tolist() == [[2.0, 0.5], [4.0, 0.0], [4.0, 4.0]]
    coalesced = grad.coalesce()  # already summed: taken as it is
    assert [t.tolist() for t in row_sums(coalesced)] == [rows.tolist(), values.tolist()]
    no_rows = torch.zeros((1, 0), dtype=torch.long)
    empty = torch.sparse_coo_tensor(no_rows, torch.zeros(0, 2), (7, 2), check_invariants=True)
    assert row_sums(empty)[0].tolist() == [] and row_sums(empty)[1].shape == (0, 2)
