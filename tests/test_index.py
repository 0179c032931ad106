"""One contract every index passes: exact equals a NumPy argsort oracle, ANN reaches recall."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from mtrec.errors import ConfigError
from mtrec.index import ExactIndex, FaissIndex, Index, build_index, load_index, recall_vs_exact
from mtrec.index.base import recall_at_k
from mtrec.index.exact import GROUPED_MIN_WIDTH, GROUPS, SMALL_SEARCH, top_k


def oracle(items: np.ndarray, queries: np.ndarray, k: int, exclude=None):  # type: ignore[no-untyped-def]
    """Ten lines of NumPy: score everything, blank the excluded, argsort."""
    scores = queries.astype(np.float64) @ items.astype(np.float64).T
    if exclude is not None:
        for i, banned in enumerate(exclude):
            scores[i, banned] = -np.inf
    rows = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(scores, rows, 1)
    return top, np.where(np.isneginf(top), -1, rows)


class IndexContract:
    """Mixin: subclasses provide ``make(items) -> Index`` and the recall they promise."""

    min_recall = 1.0

    def make(self, items: np.ndarray) -> Index:
        raise NotImplementedError

    @pytest.fixture
    def data(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(0)
        items = rng.normal(size=(500, 16)).astype(np.float32)
        queries = rng.normal(size=(40, 16)).astype(np.float32)
        return items, queries

    def _agreement(self, rows: np.ndarray, truth: np.ndarray) -> float:
        return recall_at_k(rows, truth)

    def test_matches_oracle(self, data: tuple[np.ndarray, np.ndarray]) -> None:
        items, queries = data
        index = self.make(items)
        scores, rows = index.search(queries, 10)
        _, truth = oracle(items, queries, 10)
        assert rows.shape == scores.shape == (40, 10)
        assert self._agreement(rows, truth) >= self.min_recall
        assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first
        valid = rows >= 0
        expected = np.einsum("qd,qkd->qk", queries, items[np.where(valid, rows, 0)])
        assert np.allclose(scores[valid], expected[valid], atol=1e-4)

    def test_exclusions_are_honoured(self, data: tuple[np.ndarray, np.ndarray]) -> None:
        items, queries = data
        index = self.make(items)
        _, plain = index.search(queries, 10)
        exclude = [row[:5].copy() for row in plain]  # ban each query's own top 5
        _, rows = index.search(queries, 10, exclude=exclude)
        for banned, got in zip(exclude, rows, strict=True):
            assert not np.isin(got, banned).any()
        _, truth = oracle(items, queries, 10, exclude)
        assert self._agreement(rows, truth) >= self.min_recall

    def test_k_larger_than_catalogue(self) -> None:
        rng = np.random.default_rng(1)
        items = rng.normal(size=(7, 4)).astype(np.float32)
        index = self.make(items)
        scores, rows = index.search(
            items[:2], 50, exclude=[np.array([0, 1]), np.array([], dtype=np.int64)]
        )
        assert rows.shape == (2, 7)
        assert sorted(rows[1].tolist()) == list(range(7))
        assert sorted(rows[0][:5].tolist()) == [2, 3, 4, 5, 6]
        assert rows[0][5:].tolist() == [-1, -1] and np.isneginf(scores[0][5:]).all()

    def test_batch_equals_single_queries(self, data: tuple[np.ndarray, np.ndarray]) -> None:
        items, queries = data
        index = self.make(items)
        exclude = [np.arange(i, i + 3) for i in range(len(queries))]
        batch_s, batch_r = index.search(queries, 8, exclude=exclude)
        for i in range(len(queries)):
            s, r = index.search(queries[i : i + 1], 8, exclude=[exclude[i]])
            assert np.array_equal(r[0], batch_r[i])
            assert np.allclose(s[0], batch_s[i])

    def test_save_load_round_trip(
        self, data: tuple[np.ndarray, np.ndarray], tmp_path: Path
    ) -> None:
        items, queries = data
        index = self.make(items)
        index.save(tmp_path / "idx")
        again = load_index(tmp_path / "idx")
        assert type(again) is type(index) and again.kind == index.kind
        a, b = index.search(queries, 10), again.search(queries, 10)
        assert np.array_equal(a[1], b[1]) and np.array_equal(a[0], b[0])

    def test_rejects_bad_queries(self, data: tuple[np.ndarray, np.ndarray]) -> None:
        items, queries = data
        index = self.make(items)
        with pytest.raises(ConfigError, match="shape"):
            index.search(queries[:, :3], 5)
        with pytest.raises(ConfigError, match="k must be"):
            index.search(queries, 0)
        with pytest.raises(ConfigError, match="exclude"):
            index.search(queries, 5, exclude=[np.array([1])])


class TestExactIndex(IndexContract):
    def make(self, items: np.ndarray) -> Index:
        return ExactIndex.build(items)

    def _agreement(self, rows: np.ndarray, truth: np.ndarray) -> float:
        assert np.array_equal(rows, truth)  # the oracle, exactly
        return 1.0

    def test_chunking_does_not_change_results(self, data: tuple[np.ndarray, np.ndarray]) -> None:
        items, queries = data
        whole = ExactIndex(items).search(queries, 10)
        chunked = ExactIndex(items, score_budget=37 * 6, query_batch=6).search(
            queries, 10, exclude=[np.array([], dtype=np.int64)] * len(queries)
        )
        assert np.array_equal(whole[1], chunked[1])
        assert np.allclose(whole[0], chunked[0])

    def test_blocks_and_chunks_find_the_brute_force_top_k(self) -> None:
        # past SMALL_SEARCH, so the blocked path runs: 9 blocks of 6 queries (the last of
        # 2), chunks of 37 items (the last partial), every score written into one buffer
        rng = np.random.default_rng(1)
        items = rng.normal(size=(3001, 8)).astype(np.float32)
        queries = rng.normal(size=(50, 8)).astype(np.float32)
        assert len(queries) * len(items) > SMALL_SEARCH
        exclude = [rng.choice(len(items), n % 7, replace=False) for n in range(len(queries))]
        scores, rows = ExactIndex(items, score_budget=37 * 6, query_batch=6).search(
            queries, 10, exclude=exclude
        )
        truth = queries.astype(np.float64) @ items.T.astype(np.float64)
        for n, seen in enumerate(exclude):
            truth[n, seen] = -np.inf
        assert np.array_equal(rows, np.argsort(-truth, axis=1, kind="stable")[:, :10])
        assert np.allclose(scores, np.take_along_axis(truth, rows, axis=1), atol=1e-5)


@pytest.mark.parametrize("width", [GROUPED_MIN_WIDTH, GROUPED_MIN_WIDTH * 2 + GROUPS - 3])
@pytest.mark.parametrize("k", [1, 10, 100])
def test_grouped_top_k_is_topk(width: int, k: int) -> None:
    # distinct scores (a permutation: no ties, where topk's own pick is arbitrary), wide
    # enough for the grouped path, some rows' best columns blanked as exclusions are, one
    # row with fewer than k scores left (the rest -inf), one row's top k in one group
    g = torch.Generator().manual_seed(width + k)
    rows = 12
    scores = torch.randperm(rows * width, generator=g).float().reshape(rows, width)
    scores[0, torch.topk(scores[0], 3 * k).indices] = -torch.inf
    scores[1, k // 2 :] = -torch.inf
    group = torch.arange(5, GROUPS * (width // GROUPS), width // GROUPS)  # group 5's columns
    scores[2, group] = scores[2].max() + 1 + torch.arange(len(group), dtype=torch.float32)
    tail = width % GROUPS or 1  # row 3: the columns past the last whole group lead
    scores[3, -tail:] = 1e9 + 1024 * torch.arange(tail, dtype=torch.float32)
    top, columns = top_k(scores, k)
    expected_top, expected_columns = torch.topk(scores, k, dim=1)
    assert torch.equal(top, expected_top)
    finite = torch.isfinite(expected_top)  # which -inf column comes back is arbitrary
    assert torch.equal(columns[finite], expected_columns[finite])
    if k >= 8:  # row 2: group 5's eight columns lead
        assert set(columns[2, :GROUPS].tolist()) == set(group.tolist())


def test_a_wide_catalogue_searches_by_groups_and_finds_the_brute_force_top_k() -> None:
    rng = np.random.default_rng(2)
    items = rng.normal(size=(GROUPED_MIN_WIDTH * 3 + 5, 8)).astype(np.float32)
    queries = rng.normal(size=(64, 8)).astype(np.float32)
    exclude = [rng.choice(len(items), n * 9, replace=False) for n in range(len(queries))]
    index = ExactIndex(items, score_budget=64 * (GROUPED_MIN_WIDTH + 17), query_batch=64)
    scores, rows = index.search(queries, 50, exclude=exclude)
    truth = queries.astype(np.float64) @ items.T.astype(np.float64)
    for n, seen in enumerate(exclude):
        truth[n, seen] = -np.inf
    assert np.array_equal(rows, np.argsort(-truth, axis=1, kind="stable")[:, :50])
    assert np.allclose(scores, np.take_along_axis(truth, rows, axis=1), atol=1e-5)


needs_faiss = pytest.mark.skipif(
    importlib.util.find_spec("faiss") is None, reason="faiss-cpu (the 'ann' extra) is not installed"
)


@needs_faiss
class TestFaissHNSW(IndexContract):
    min_recall = 0.95

    def make(self, items: np.ndarray) -> Index:
        return build_index("faiss-hnsw", items, m=16, ef_search=64)


@needs_faiss
class TestFaissIVF(IndexContract):
    min_recall = 0.9

    def make(self, items: np.ndarray) -> Index:
        return FaissIndex.build(items, method="ivf", nlist=8, nprobe=8)


@needs_faiss
def test_recall_vs_exact_and_unknown_kind(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    items = rng.normal(size=(300, 8)).astype(np.float32)
    exact = ExactIndex.build(items)
    assert recall_vs_exact(exact, exact, items[:20]) == 1.0
    assert recall_vs_exact(build_index("faiss-hnsw", items), exact, items[:20]) >= 0.95
    with pytest.raises(ConfigError, match="index kind"):
        build_index("annoy", items)


def test_index_options_are_checked() -> None:
    items = np.zeros((4, 2), dtype=np.float32)
    with pytest.raises(
        ConfigError, match=r"exact index: unknown option\(s\) \['m'\]; it takes none"
    ):
        build_index("exact", items, m=3)
    with pytest.raises(ConfigError, match=r"faiss-hnsw index: unknown option\(s\) \['nprobe'\]"):
        build_index("faiss-hnsw", items, nprobe=3)


@given(
    seed=st.integers(0, 10_000),
    n_items=st.integers(1, 60),
    k=st.integers(1, 70),
    banned=st.lists(st.lists(st.integers(0, 59), max_size=70), min_size=1, max_size=4),
)
def test_exclusions_never_come_back(
    seed: int, n_items: int, k: int, banned: list[list[int]]
) -> None:
    """Whatever is excluded (duplicates, out of range ones dropped) never appears in a result."""
    rng = np.random.default_rng(seed)
    items = rng.normal(size=(n_items, 3)).astype(np.float32)
    queries = rng.normal(size=(len(banned), 3)).astype(np.float32)
    exclude = [np.array([b for b in ban if b < n_items], dtype=np.int64) for ban in banned]
    _, rows = ExactIndex.build(items).search(queries, k, exclude=exclude)
    for got, ban in zip(rows, exclude, strict=True):
        valid = got[got >= 0]
        assert not np.isin(valid, ban).any()
        assert len(valid) == min(k, n_items - len(np.unique(ban)))
        assert len(set(valid.tolist())) == len(valid)
