"""Baselines on tiny planted data where the right answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtrec.errors import ConfigError
from mtrec.evaluate import ranking_report
from mtrec.evaluate.baselines import ease, global_mean, popularity
from mtrec.features import EncodedInteractions, seen_items


def _data(pairs: list[tuple[int, int]], label: float = 1.0) -> EncodedInteractions:
    users, items = zip(*pairs, strict=True)
    return EncodedInteractions(
        torch.tensor(users), torch.tensor(items), torch.full((len(pairs),), label)
    )


def test_popularity_ranks_by_training_count() -> None:
    train = _data([(0, 2), (1, 2), (2, 2), (0, 1), (1, 1), (2, 0)])
    vectors = popularity(train, n_users=3, n_items=4)
    scores = vectors.users @ vectors.items.T
    assert np.array_equal(np.argsort(-scores[0], kind="stable")[:3], [2, 1, 0])


def test_ease_recovers_item_to_item_structure() -> None:
    # items 0-2 always co-occur, items 3-5 always co-occur; user 9 has seen 0 and 1 only
    pairs = [(u, i) for u in range(8) for i in ((0, 1, 2) if u < 4 else (3, 4, 5))]
    train = _data([*pairs, (8, 0), (8, 1)])
    vectors = ease(train, n_users=9, n_items=6, lam=1.0)
    test = EncodedInteractions(torch.tensor([8]), torch.tensor([2]), torch.tensor([1.0]))
    report = ranking_report(
        vectors.users, vectors.items, test, k=1, protocol="honest", seen=seen_items(train, 9)
    )
    assert report["top_k_accuracy"] == 1.0 and report["recall"] == 1.0
    b = vectors.items.T  # (items, items) weights
    assert np.allclose(np.diag(b), 0.0)
    assert b[0, 2] > 0.1 and abs(b[0, 4]) < 1e-6


def test_ease_guards_and_global_mean() -> None:
    train = _data([(0, 0), (1, 1)], label=0.5)
    with pytest.raises(ConfigError, match="lambda"):
        ease(train, 2, 2, lam=0)
    assert global_mean(_data([(0, 0), (1, 1), (0, 1)], label=0.25)) == pytest.approx(0.25)


def test_biased_mf_learns_planted_ratings() -> None:
    from mtrec.evaluate.baselines import biased_mf

    # users 0-9 love items 0-4 (rating 1.0) and dislike 5-9 (0.0); users 10-19 the reverse
    users, items, labels = [], [], []
    for u in range(20):
        for i in range(10):
            if (u + i) % 3:  # hold out a third
                users.append(u)
                items.append(i)
                labels.append(1.0 if (u < 10) == (i < 5) else 0.0)
    train = EncodedInteractions(torch.tensor(users), torch.tensor(items), torch.tensor(labels))
    mf = biased_mf(train, 20, 10, dim=4, epochs=200, lr=0.02, reg=0.001, batch_size=64)
    held = [(u, i) for u in range(20) for i in range(10) if not (u + i) % 3]
    pred = mf.predict(torch.tensor([h[0] for h in held]), torch.tensor([h[1] for h in held]))
    truth = torch.tensor([1.0 if (u < 10) == (i < 5) else 0.0 for u, i in held])
    assert float(((pred - truth) ** 2).mean().sqrt()) < 0.25  # the mean (0.5) would be 0.5 off


def test_co_occurrences_are_the_dense_gram_matrix_block_by_block(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """EASE's Gram matrix from sparse products over blocks of users: exact counts, the
    same whatever the block size (users with no item between others included), and no
    warning about PyTorch's sparse tensors reaches the user."""
    import warnings

    from mtrec.evaluate import baselines

    rng = np.random.default_rng(0)
    pairs = np.unique(rng.integers(0, 50, 400) * 30 + rng.integers(0, 30, 400))
    users, items = pairs // 30, pairs % 30
    keep = (users != 7) & (users != 8)  # two users without an item
    users, items = users[keep], items[keep]
    x = np.zeros((50, 30))
    x[users, items] = 1.0
    for budget in (1, 7, 1 << 25):  # a user a block, a few, all of them
        monkeypatch.setattr(baselines, "CO_OCCURRENCE_BUDGET", budget)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            gram = baselines.co_occurrences(users, items, 30)
        assert gram.dtype == torch.float64
        assert np.array_equal(gram.numpy(), x.T @ x)
    assert not baselines.co_occurrences(users[:0], items[:0], 30).any()
