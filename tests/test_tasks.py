"""Losses against values computed by hand on 2-3 rows."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mtrec.config import ModelConfig
from mtrec.model import MultiTaskModel, RetrievalOptions, rating_loss, retrieval_loss


def test_retrieval_loss_by_hand() -> None:
    # logits = q @ c.T = [[1, 0], [0, 2]]; row 0: log(e^1 + e^0) - 1; row 1: log(e^0 + e^2) - 2
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    c = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    expected = (math.log(math.e + 1) - 1) + (math.log(1 + math.e**2) - 2)
    assert retrieval_loss(q, c).item() == pytest.approx(expected, rel=1e-6)
    assert retrieval_loss(q, c, reduction="mean").item() == pytest.approx(expected / 2, rel=1e-6)


def test_retrieval_loss_three_rows_with_grad() -> None:
    q = torch.tensor([[1.0, 2.0], [0.5, -1.0], [0.0, 1.0]], requires_grad=True)
    c = torch.tensor([[0.0, 1.0], [1.0, 1.0], [2.0, -1.0]], requires_grad=True)
    logits = [
        [sum(a * b for a, b in zip(qi, cj, strict=True)) for cj in c.tolist()] for qi in q.tolist()
    ]
    expected = sum(math.log(sum(math.exp(v) for v in row)) - row[i] for i, row in enumerate(logits))
    loss = retrieval_loss(q, c)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    # d loss / d q_i = sum_j (softmax_ij - [i == j]) c_j
    probs = torch.softmax(torch.tensor(logits), dim=1) - torch.eye(3)
    assert torch.allclose(q.grad, probs @ c.detach(), atol=1e-6)
    assert torch.allclose(c.grad, probs.T @ q.detach(), atol=1e-6)


def test_fused_retrieval_loss_matches_cross_entropy_at_batch_scale() -> None:
    gen = torch.Generator().manual_seed(0)
    q = (torch.randn(257, 16, generator=gen) * 3).requires_grad_()
    c = (torch.randn(257, 16, generator=gen) * 3).requires_grad_()
    q2, c2 = q.detach().clone().requires_grad_(), c.detach().clone().requires_grad_()
    ours = retrieval_loss(q, c) * 0.7
    ref = F.cross_entropy(q2 @ c2.T, torch.arange(257), reduction="sum") * 0.7
    ours.backward()
    ref.backward()
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)
    assert torch.allclose(q.grad, q2.grad, rtol=1e-4, atol=1e-5)
    assert torch.allclose(c.grad, c2.grad, rtol=1e-4, atol=1e-5)


def _options_through_autograd(  # the options' arithmetic spelled out, as an oracle
    q, c, offset, temperature, log_q, ids, weights, extra_c, extra_ids, extra_q
):  # type: ignore[no-untyped-def]
    columns = torch.cat([c, extra_c])
    logits = q @ columns.T / temperature - torch.cat([log_q, extra_q])[None, :]
    all_ids = torch.cat([ids, extra_ids])
    own = ids[offset : offset + len(q)]
    same = all_ids[None, :] == own[:, None]
    same.diagonal(offset).fill_(False)
    logits = logits.masked_fill(same, float("-inf"))
    target = torch.arange(len(q)) + offset
    return (F.cross_entropy(logits, target, reduction="none") * weights).sum() / weights.sum()


@pytest.mark.parametrize("offset", [0, 100])
def test_every_option_at_batch_scale_matches_autograd_in_value_and_gradients(offset: int) -> None:
    from mtrec.model.tasks import ExtraNegatives

    gen = torch.Generator().manual_seed(1)
    rows, columns, extra = 300, 300 + offset, 17
    q = (torch.randn(rows, 16, generator=gen) * 2).requires_grad_()
    c = (torch.randn(columns, 16, generator=gen) * 2).requires_grad_()
    e = torch.randn(extra, 16, generator=gen).requires_grad_()
    ids = torch.randint(0, 40, (columns,), generator=gen)  # many repeats: accidental hits
    extra_ids = torch.randint(0, 40, (extra,), generator=gen)
    log_q = -torch.rand(columns, generator=gen) * 5
    extra_q = torch.full((extra,), -math.log(40.0))
    weights = (torch.rand(rows, generator=gen) > 0.3).float()
    leaves = (q, c, e)
    copies = [t.detach().clone().requires_grad_() for t in leaves]
    ours = retrieval_loss(
        q, c, "mean", temperature=0.7, log_q=log_q, candidate_ids=ids, weights=weights,
        extra=ExtraNegatives(e, extra_ids, extra_q), offset=offset,
        count=None if offset == 0 else weights.sum(),
    )  # fmt: skip
    oracle = _options_through_autograd(
        *copies[:2], offset, 0.7, log_q, ids, weights, copies[2], extra_ids, extra_q
    )
    (ours * 1.3).backward()
    (oracle * 1.3).backward()
    assert ours.item() == pytest.approx(oracle.item(), rel=1e-5)
    for mine, theirs in zip(leaves, copies, strict=True):
        torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-4, atol=1e-6)


def test_the_loss_refuses_a_second_backward_through_its_reused_buffer() -> None:
    q = torch.randn(4, 3, requires_grad=True)
    c = torch.randn(4, 3, requires_grad=True)
    loss = retrieval_loss(q, c)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward through the same loss twice"):
        loss.backward()


def test_accidental_hits_are_the_other_columns_of_a_rows_own_item() -> None:
    from mtrec.model.tasks import accidental_hits

    ids = torch.tensor([5, 7, 5, 9, 5, 7, 3])  # rows 0..2 own columns 2..4 (offset 2)
    rows, cols = accidental_hits(ids, offset=2, rows=3)
    got = sorted(zip(rows.tolist(), cols.tolist(), strict=True))
    # row 0 (column 2, item 5): columns 0 and 4; row 1 (item 9): none; row 2 (column 4,
    # item 5): columns 0 and 2
    assert got == [(0, 0), (0, 4), (2, 0), (2, 2)]
    rows, cols = accidental_hits(torch.tensor([1, 2, 3]), offset=0, rows=3)
    assert len(rows) == len(cols) == 0


def test_retrieval_loss_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match=r"expected \(B, d\) queries"):
        retrieval_loss(torch.zeros(3, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="offset 2"):  # rows 2..5 of a 4-row global batch
        retrieval_loss(torch.zeros(3, 2), torch.zeros(4, 2), offset=2, count=4)


def test_offset_rows_of_a_global_batch_sum_to_the_whole_batch_loss() -> None:
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(6, 3, generator=gen, requires_grad=True)
    c = torch.randn(6, 3, generator=gen, requires_grad=True)
    whole = retrieval_loss(q, c)
    parts = retrieval_loss(q[:4], c, offset=0, count=6) + retrieval_loss(
        q[4:], c, offset=4, count=6
    )
    assert parts.item() == pytest.approx(whole.item(), rel=1e-6)
    mean = retrieval_loss(q[4:], c, "mean", offset=4, count=6)
    assert mean.item() == pytest.approx(retrieval_loss(q[4:], c, offset=4, count=6).item() / 6)


def test_rating_loss_by_hand() -> None:
    pred = torch.tensor([0.5, 1.0, 0.0])
    target = torch.tensor([0.25, 0.5, 0.0])
    assert rating_loss(pred, target).item() == pytest.approx((0.0625 + 0.25 + 0) / 3)


def test_multitask_loss_is_weighted_sum_and_skips_zero_weight_tasks() -> None:
    model = MultiTaskModel(4, 5, ModelConfig(embedding_dim=3, head_layers=(4,)), seed=1)
    user, item, label = (
        torch.tensor([0, 1, 3]),
        torch.tensor([4, 2, 0]),
        torch.tensor([0.1, 0.9, 0.5]),
    )
    both = model.loss(user, item, label, 2.0, 3.0)
    u, i = model.embed_users(user), model.embed_items(item)
    ret = F.cross_entropy(u @ i.T, torch.arange(3), reduction="sum")
    rat = F.mse_loss(model.predict_rating(u, i), label)
    assert both.total.item() == pytest.approx((2 * ret + 3 * rat).item(), rel=1e-6)
    only_rating = model.loss(user, item, label, 0.0, 1.0)
    assert only_rating.retrieval is None
    assert only_rating.total.item() == pytest.approx(rat.item(), rel=1e-6)
    only_retrieval = model.loss(user, item, label, 1.0, 0.0)
    assert only_retrieval.rating is None
    only_retrieval.total.backward()
    assert all(p.grad is None for p in model.rating_head.parameters())


def test_rating_only_rows_train_the_rating_head_and_stay_candidates() -> None:
    """A warm start's replayed rows: no retrieval positive (their own softmax row is out
    of the loss), but their items stay negatives of the other rows, and the rating loss
    counts every row."""
    model = MultiTaskModel(4, 5, ModelConfig(embedding_dim=3, head_layers=(4,)), seed=1)
    user, item, label = (
        torch.tensor([0, 1, 3]),
        torch.tensor([4, 2, 0]),
        torch.tensor([0.1, 0.9, 0.5]),
    )
    options = RetrievalOptions(rating_only=torch.tensor([False, True, False]))
    got = model.loss(user, item, label, 1.0, 1.0, options=options)
    u, i = model.embed_users(user), model.embed_items(item)
    rows = F.cross_entropy(u @ i.T, torch.arange(3), reduction="none")
    assert got.retrieval.item() == pytest.approx((rows[0] + rows[2]).item(), rel=1e-6)
    assert got.rating.item() == pytest.approx(
        F.mse_loss(model.predict_rating(u, i), label).item(), rel=1e-6
    )
    model.zero_grad()
    model.loss(user, item, label, 1.0, 0.0, options=options).total.backward()
    grad = model.user_embedding.weight.grad.to_dense()
    assert not grad[1].any() and grad[0].any() and grad[3].any()  # user 1: no positive
    assert model.item_embedding.weight.grad.to_dense()[2].any()  # item 2: still a negative


def test_model_init_is_keras_like_and_seeded() -> None:
    a = MultiTaskModel(10, 20, ModelConfig(), seed=3)
    b = MultiTaskModel(10, 20, ModelConfig(), seed=3)
    c = MultiTaskModel(10, 20, ModelConfig(), seed=4)
    assert all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    assert not torch.equal(a.user_embedding.weight, c.user_embedding.weight)
    assert a.item_embedding.weight.abs().max() <= 0.05
    first = a.rating_head[0]
    assert first.weight.abs().max() <= (6 / (64 + 256)) ** 0.5
    assert torch.count_nonzero(first.bias) == 0


def _ce_rows(logits: list[list[float]]) -> list[float]:
    """Cross-entropy of each row against its diagonal, by hand."""
    return [
        math.log(sum(math.exp(v) for v in row if v != -math.inf)) - row[i]
        for i, row in enumerate(logits)
    ]


Q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
C = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 0.0]])
LOGITS = [[1.0, 0.0, 1.0], [0.0, 2.0, 0.0], [1.0, 2.0, 1.0]]  # Q @ C.T


def test_temperature_by_hand() -> None:
    scaled = [[v / 0.5 for v in row] for row in LOGITS]
    assert retrieval_loss(Q, C, temperature=0.5).item() == pytest.approx(
        sum(_ce_rows(scaled)), rel=1e-6
    )


def test_log_q_correction_by_hand() -> None:
    log_q = torch.tensor([math.log(0.5), math.log(0.25), math.log(0.25)])
    corrected = [[v - float(log_q[j]) for j, v in enumerate(row)] for row in LOGITS]
    got = retrieval_loss(Q, C, log_q=log_q)
    assert got.item() == pytest.approx(sum(_ce_rows(corrected)), rel=1e-6)


def test_accidental_hits_removed_by_hand() -> None:
    ids = torch.tensor([7, 3, 7])  # rows 0 and 2 hold the same item
    masked = [row[:] for row in LOGITS]
    masked[0][2] = masked[2][0] = -math.inf
    got = retrieval_loss(Q, C, candidate_ids=ids)
    assert got.item() == pytest.approx(sum(_ce_rows(masked)), rel=1e-6)


def test_row_weights_and_mean_reduction_by_hand() -> None:
    rows = _ce_rows(LOGITS)
    weights = torch.tensor([1.0, 0.0, 1.0])  # row 1 (a low rating) is not a positive
    assert retrieval_loss(Q, C, weights=weights).item() == pytest.approx(
        rows[0] + rows[2], rel=1e-6
    )
    assert retrieval_loss(Q, C, "mean", weights=weights).item() == pytest.approx(
        (rows[0] + rows[2]) / 2, rel=1e-6
    )
    assert retrieval_loss(Q, C, "mean").item() == pytest.approx(sum(rows) / 3, rel=1e-6)


@pytest.mark.parametrize("offset", [0, 50])
def test_rows_of_weight_zero_are_skipped(offset: int) -> None:
    """The softmax is made for the weighted rows alone: the loss and the queries' gradient
    are the bits of the softmax over every row, the candidates' gradient the same sums
    over the kept rows alone (a float32 rounding apart)."""
    from mtrec.model.tasks import _InBatchSoftmax, accidental_hits

    gen = torch.Generator().manual_seed(3)
    q = torch.randn(400, 32, generator=gen, requires_grad=True)
    c = torch.randn(400 + offset, 32, generator=gen, requires_grad=True)
    ids = torch.randint(0, 60, (400 + offset,), generator=gen)
    log_q = -torch.rand(400 + offset, generator=gen) * 4
    weights = (torch.rand(400, generator=gen) > 0.6).float()  # ~40% kept
    got = retrieval_loss(
        q, c, "mean", log_q=log_q, candidate_ids=ids, weights=weights, offset=offset,
        count=weights.sum(),
    )  # fmt: skip
    got.backward()
    q2, c2 = q.detach().clone().requires_grad_(), c.detach().clone().requires_grad_()
    every = _InBatchSoftmax.apply(
        q2, c2, None, offset, 1.0, log_q, accidental_hits(ids, offset, 400), weights, None
    ) / weights.sum()  # fmt: skip
    every.backward()
    assert torch.equal(got, every)
    assert torch.equal(q.grad, q2.grad)
    torch.testing.assert_close(c.grad, c2.grad, rtol=1e-5, atol=1e-6)
    assert not q.grad[weights == 0].any()  # a row of weight 0 gets no gradient


def test_model_options_rating_biases_dot_and_normalisation() -> None:
    config = ModelConfig(
        embedding_dim=3, head_layers=(4,), rating_biases=True, dot_in_head=True, normalize=True
    )
    model = MultiTaskModel(4, 5, config, seed=0)
    with torch.no_grad():
        model.user_bias.weight[2] = 0.5
        model.item_bias.weight[1] = -0.25
    users, items = torch.tensor([2, 0]), torch.tensor([1, 1])
    u, i = model.embed_users(users), model.embed_items(items)
    assert torch.allclose(u.norm(dim=1), torch.ones(2)) and torch.allclose(
        i.norm(dim=1), torch.ones(2)
    )
    head_only = model.rating_head(torch.cat([u, i, (u * i).sum(1, keepdim=True)], dim=1)).squeeze(1)
    got = model.predict_rating(u, i, users, items)
    assert torch.allclose(got, head_only + torch.tensor([0.25, -0.25]))
    with pytest.raises(ValueError, match="pass the rows"):
        model.predict_rating(u, i)


def test_learned_task_weights_by_hand() -> None:
    config = ModelConfig(embedding_dim=3, head_layers=(4,), learned_task_weights=True)
    model = MultiTaskModel(4, 5, config, seed=0)
    with torch.no_grad():
        model.task_log_vars.copy_(torch.tensor([0.5, -1.0]))
    user, item, label = (
        torch.tensor([0, 1, 3]),
        torch.tensor([4, 2, 0]),
        torch.tensor([0.1, 0.9, 0.5]),
    )
    parts = model.loss(user, item, label, 1.0, 1.0)
    assert parts.retrieval is not None and parts.rating is not None
    expected = (math.exp(-0.5) * parts.retrieval + 0.25) + (
        0.5 * math.exp(1.0) * parts.rating - 0.5
    )
    assert parts.total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert model.task_weights() == pytest.approx((math.exp(-0.5), 0.5 * math.exp(1.0)))
    parts.total.backward()
    assert model.task_log_vars.grad is not None  # the weights are learned


def test_extra_negatives_by_hand() -> None:
    from mtrec.model.tasks import ExtraNegatives

    extra = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
    columns = torch.cat([C, extra])
    logits = (Q @ columns.T).tolist()  # (3, 5): the batch's items, then two shared negatives
    got = retrieval_loss(Q, C, extra=ExtraNegatives(extra))
    assert got.item() == pytest.approx(sum(_ce_rows(logits)), rel=1e-6)
    # an extra negative that is a row's own item is an accidental hit for that row
    ids, extra_ids = torch.tensor([7, 3, 5]), torch.tensor([3, 9])
    masked = [row[:] for row in logits]
    masked[1][3] = -math.inf
    got = retrieval_loss(Q, C, candidate_ids=ids, extra=ExtraNegatives(extra, extra_ids))
    assert got.item() == pytest.approx(sum(_ce_rows(masked)), rel=1e-6)


def _history_model(
    items: torch.Tensor, n_users: int, n_items: int, dim: int, seed: int, gen: torch.Generator
) -> MultiTaskModel:
    """A history-reading model whose users each rated an equal share of ``items`` (in
    order), the ratings drawn from ``gen``."""
    from types import SimpleNamespace

    length = len(items) // n_users
    seen = SimpleNamespace(
        indptr=torch.arange(0, n_users * length + 1, length).numpy(),
        items=items.numpy(),
        labels=torch.rand(n_users * length, generator=gen).numpy(),
    )
    model = MultiTaskModel(
        n_users, n_items, ModelConfig(embedding_dim=dim, history=True), seed=seed
    )
    model.set_history(seen)
    return model


def test_a_models_histories_are_the_seen_arrays_not_a_copy() -> None:
    """Two models hold the training histories under `mtrec train` (the served one and the
    ranking stage's): a copy each was 130 MB at 16M rows, a third of the 25M run's peak
    margin. The model reads the SeenItems arrays themselves."""
    from mtrec.features import EncodedInteractions, seen_items

    rows = EncodedInteractions(
        torch.tensor([2, 0, 2, 1, 0]), torch.tensor([3, 1, 0, 3, 2]), torch.rand(5)
    )
    seen = seen_items(rows, 3)
    model = MultiTaskModel(3, 4, ModelConfig(embedding_dim=4, history=True), seed=0)
    model.set_history(seen)
    assert model.history_items.tolist() == [1, 2, 3, 0, 3]  # user 0's, 1's, 2's
    assert model.history_items.data_ptr() == seen.items.ctypes.data
    assert model.history_indptr.data_ptr() == seen.indptr.ctypes.data
    assert model.history_labels.data_ptr() == seen.labels.ctypes.data


def test_history_pooling_gradient_is_the_same_on_every_run() -> None:
    # a batch repeats users, so pooled rows are gathered many times: with advanced
    # indexing the backward's accumulation order followed the threads and runs differed
    n_users, n_items, length = 300, 500, 400
    gen = torch.Generator().manual_seed(0)
    items = torch.randint(0, n_items, (n_users * length,), generator=gen)
    model = _history_model(items, n_users, n_items, 32, 1, gen)
    rows = torch.randint(0, n_users, (20_000,), generator=gen)
    weights = torch.randn(20_000, 32, generator=gen)
    grads = []
    for _ in range(4):
        model.zero_grad()
        (model.embed_users(rows) * weights).sum().backward()
        grads.append(model.history_embedding.weight.grad.clone())
    assert all(torch.equal(grads[0], g) for g in grads[1:])


def _batch_with_own_items(
    n_users: int, n_items: int, length: int, batch: int, seed: int
) -> tuple[MultiTaskModel, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A history model (8-d) whose users rated ``length`` distinct items each, and a batch:
    (model, items, rows, each row's own item (a third not in its history), output grads)."""
    gen = torch.Generator().manual_seed(seed)
    items = torch.stack([torch.randperm(n_items, generator=gen)[:length].sort().values
                         for _ in range(n_users)]).reshape(-1)  # fmt: skip
    model = _history_model(items, n_users, n_items, 8, seed, gen)
    rows = torch.randint(0, n_users, (batch,), generator=gen)
    own = items.reshape(n_users, length)[rows, torch.randint(0, length, (batch,), generator=gen)]
    own[::3] = torch.randint(0, n_items, (len(own[::3]),), generator=gen)
    return model, items, rows, own, torch.randn(batch, 8, generator=gen)


def test_history_gradient_with_sparse_updates_is_the_dense_one_coalesced() -> None:
    """With sparse updates the history table's gradient comes from _BagSum: one coalesced
    row per item the batch's histories (and own items) touch, the dense gradient's values,
    the same bits on one thread and on two."""
    n_users, n_items, length = 60, 90, 25
    model, items, rows, own, weights = _batch_with_own_items(n_users, n_items, length, 300, 4)

    def gradient(sparse: bool, threads: int) -> torch.Tensor:
        model.zero_grad()
        model.sparse_gradients(sparse)
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            (model.embed_users(rows, exclude_items=own) * weights).sum().backward()
        finally:
            torch.set_num_threads(before)
        grad = model.history_embedding.weight.grad
        assert grad is not None
        return grad.clone()

    dense, sparse = gradient(False, 1), gradient(True, 1)
    assert sparse.is_sparse  # one row per touched item, in order (autograd drops the flag)
    touched = torch.unique(torch.cat([items.reshape(n_users, length)[rows].reshape(-1), own]))
    assert torch.equal(sparse._indices()[0], touched)
    torch.testing.assert_close(sparse.to_dense(), dense, rtol=1e-5, atol=1e-6)
    again = gradient(True, 2)
    assert torch.equal(again._indices(), sparse._indices())
    assert torch.equal(again._values(), sparse._values())


def test_a_training_step_pools_every_history_at_once_to_the_same_sums() -> None:
    """Training pools every user's history at once (``pool_every``, where the log is small
    against the batch); the rows it gives, own items taken out, and the table's gradient
    are those of pooling the batch's users alone."""
    from mtrec.model import history

    model, _, rows, own, weights = _batch_with_own_items(50, 70, 20, 200, 5)
    calls = []
    original = history.pool_every

    def counted(*args: object) -> torch.Tensor:
        calls.append(1)
        return original(*args)  # type: ignore[arg-type]

    def pooled(training: bool) -> tuple[torch.Tensor, torch.Tensor]:
        model.zero_grad()
        model.train(training)
        out = model.embed_users(rows, exclude_items=own)
        (out * weights).sum().backward()
        return out.detach(), model.history_embedding.weight.grad.clone()

    import mtrec.model.multitask as multitask

    multitask.pool_every, before = counted, multitask.pool_every
    try:
        at_once, batch = pooled(True), pooled(False)
    finally:
        multitask.pool_every = before
    assert len(calls) == 1  # training pooled at once, evaluation by the batch's users
    torch.testing.assert_close(at_once[0], batch[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(at_once[1], batch[1], rtol=1e-5, atol=1e-6)
    assert not torch.equal(at_once[1], torch.zeros_like(at_once[1]))


def test_dropout_drops_its_share_keeps_the_mean_and_follows_the_seed() -> None:
    from mtrec.model.layers import Dropout

    layer = Dropout(0.2)
    x = torch.full((400, 1001), 3.0)
    torch.manual_seed(5)
    y = layer(x)
    dropped = float((y == 0).float().mean())
    assert dropped == pytest.approx(0.2, abs=0.005)
    rate = round(0.2 * 65536) / 65536  # the rate the 16-bit mask can express
    assert torch.unique(y).tolist() == pytest.approx([0.0, 3.0 / (1 - rate)], rel=1e-6)
    assert abs(rate - 0.2) < 1e-5
    assert float(y.mean()) == pytest.approx(3.0, rel=0.01)
    torch.manual_seed(5)
    assert torch.equal(layer(x), y)  # one seed, one mask
    assert not torch.equal(layer(x), y)
    assert Dropout(0.999999)(x).isfinite().all()  # a rate just under 1 stays a rate under 1
    layer.eval()
    assert layer(x) is x
    x.requires_grad_()
    layer.train()
    torch.manual_seed(5)
    layer(x).sum().backward()
    assert torch.equal(x.grad, (y != 0) * (1 / (1 - rate)))  # the gradient flows through kept units
