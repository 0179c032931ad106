"""Exact search: a matrix product and top-k, in chunks of the catalogue."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch
from numpy.typing import NDArray
from safetensors import SafetensorError
from safetensors.numpy import load as load_numpy
from safetensors.numpy import save_file

from mtrec.errors import ArtifactError
from mtrec.index.base import Exclusions, check_queries, exclusion_pairs
from mtrec.io import atomic_path, write_json

SMALL_SEARCH = 1 << 16
"""Queries x items at most this go through NumPy in one piece (a request's search)."""


GROUPS = 8
"""``top_k`` splits a wide row into this many interleaved slices (see there)."""
GROUPED_MIN_WIDTH = 8192
"""Rows at least this wide take ``top_k``'s grouped path (narrower, ``torch.topk`` alone
was as fast or faster here)."""


def top_k(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.topk(scores, k, dim=1)`` of an (n, m) block: the same scores, in
    the same order, and the same columns but where the k-th score is tied (then another of
    the tied columns may come back, as ``topk``'s own choice among ties is arbitrary).

    On a CPU a wide row goes by groups: column j + t * w (t < ``GROUPS``) belongs to
    group j, and the top k is taken of the columns of the k groups of highest maximum. A
    group left out has k maxima at least its own above it, in k other columns: none of its
    columns beats the k-th score, and one can only tie it. ``topk`` over a (1,024 x
    16,384) block took 12.6 ms for k = 10 and 31.4 ms for k = 100 here, the grouped path
    5.6 and 23.9 ms: an evaluation's all-users searches at 25M rows are ~50,000 users by
    80,000 items.
    """
    n, m = scores.shape
    width = m // GROUPS
    if scores.device.type != "cpu" or m < GROUPED_MIN_WIDTH or 4 * k > width:
        values, columns = torch.topk(scores, k, dim=1)
        return values, columns
    scores = scores.contiguous()  # a no-op on the search's blocks
    # (n, GROUPS, width): [i, t, j] is row i's column t * width + j, of group j
    slices = scores.as_strided(
        (n, GROUPS, width), (scores.stride(0), width, 1), scores.storage_offset()
    )
    _, groups = torch.topk(slices.amax(dim=1), k, dim=1, sorted=False)
    starts = torch.arange(0, GROUPS * width, width)
    columns = (groups[:, :, None] + starts).flatten(1)
    if GROUPS * width < m:  # the last few columns, in no group: candidates of every row
        columns = torch.cat([columns, torch.arange(GROUPS * width, m).expand(n, -1)], dim=1)
    top, where = torch.topk(scores.gather(1, columns), k, dim=1)
    return top, columns.gather(1, where)


class ExactIndex:
    """Brute-force inner-product search: the reference every other index is measured by.

    Scores are computed ``query_batch`` queries at a time against as many catalogue
    rows as fit in ``score_budget`` scores (64 MB by default), keeping a running top-k:
    memory stays bounded whatever the catalogue size, so a batch of 1,000 queries over
    1M items never materialises a (1,000 x 1M) matrix.

    >>> index = ExactIndex.build(item_embeddings)          # (n_items, d) float32
    >>> scores, rows = index.search(queries, k=10, exclude=[seen_rows])
    """

    kind = "exact"
    is_exact = True
    files: tuple[str, ...] = ("embeddings.safetensors",)

    def __init__(
        self,
        embeddings: NDArray[np.float32],
        score_budget: int = 1 << 24,
        query_batch: int = 1024,
        *,
        device: str | torch.device = "cpu",
    ):
        self.embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        if self.embeddings.ndim != 2:
            raise ArtifactError(
                f"ExactIndex: embeddings must be 2-d, got shape {self.embeddings.shape}"
            )
        # batched searches score there (an evaluation's all-users top-k on a GPU); a few
        # queries over a small catalogue stay in NumPy on the host (``_search_small``)
        self.device = torch.device(device)
        self._items = torch.from_numpy(self.embeddings).to(self.device)
        self.score_budget = score_budget
        self.query_batch = query_batch

    @classmethod
    def build(cls, embeddings: NDArray[np.float32], **options: int) -> Self:
        return cls(embeddings, **dict[str, Any](options))

    @property
    def n_items(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    @torch.no_grad()
    def search(
        self, queries: NDArray[np.float32], k: int, exclude: Exclusions = None
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        q = check_queries(queries, self.dim, k, exclude)
        k = min(k, self.n_items)
        if k == 0:  # an empty catalogue
            return np.zeros((len(q), 0), dtype=np.float32), np.zeros((len(q), 0), dtype=np.int64)
        ex_q, ex_rows = exclusion_pairs(exclude, len(q))
        if len(q) * self.n_items <= SMALL_SEARCH:
            return self._search_small(q, k, ex_q, ex_rows)
        scores = np.empty((len(q), k), dtype=np.float32)
        rows = np.empty((len(q), k), dtype=np.int64)
        # every block's scores are written into this one buffer: fresh 64 MB blocks each
        # came as new pages from the OS, and faulting them in took 41 of a block's 67 ms
        # (1,024 queries x 16,384 items, 2-core AMD EPYC)
        scratch = torch.empty(max(self.score_budget, k * self.query_batch), device=self.device)
        for qlo in range(0, len(q), self.query_batch):
            qhi = min(qlo + self.query_batch, len(q))
            sel = (ex_q >= qlo) & (ex_q < qhi)
            block = torch.from_numpy(q[qlo:qhi]).to(self.device)
            s, r = self._search_block(block, k, ex_q[sel] - qlo, ex_rows[sel], scratch)
            scores[qlo:qhi], rows[qlo:qhi] = s, r
        return scores, rows

    def _search_small(
        self, q: NDArray[np.float32], k: int, ex_q: NDArray[np.int64], ex_rows: NDArray[np.int64]
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """A few queries over a small catalogue in NumPy: a single request's search costs
        tens of microseconds here against ~150 in the chunked PyTorch path's overheads."""
        s = q @ self.embeddings.T  # (n, n_items)
        s[ex_q, ex_rows] = -np.inf
        if k < self.n_items:
            top = np.argpartition(-s, k - 1, axis=1)[:, :k]
        else:
            top = np.broadcast_to(np.arange(self.n_items), s.shape).copy()
        per_row = np.arange(len(s))[:, None]
        top_s = s[per_row, top]
        order = np.argsort(-top_s, axis=1, kind="stable")
        rows, best = top[per_row, order], top_s[per_row, order]
        rows = np.where(np.isneginf(best), -1, rows)  # excluded or missing: no row
        return best.astype(np.float32), rows.astype(np.int64)

    def _search_block(
        self,
        q: torch.Tensor,
        k: int,
        ex_q: NDArray[np.int64],
        ex_rows: NDArray[np.int64],
        scratch: torch.Tensor,
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        chunk = max(k, self.score_budget // len(q))  # len(q) x chunk fits in ``scratch``
        best_s = best_r = None
        for lo in range(0, self.n_items, chunk):
            hi = min(lo + chunk, self.n_items)
            s = scratch[: len(q) * (hi - lo)].view(len(q), hi - lo)
            torch.mm(q, self._items[lo:hi].T, out=s)  # (b, chunk)
            inside = (ex_rows >= lo) & (ex_rows < hi)
            if inside.any():
                hit_q = torch.from_numpy(ex_q[inside]).to(self.device)
                hit_rows = torch.from_numpy(ex_rows[inside] - lo).to(self.device)
                s[hit_q, hit_rows] = -torch.inf
            top_s, top_r = top_k(s, min(k, hi - lo))
            if best_s is None or best_r is None:  # the first chunk (often the only one)
                best_s, best_r = top_s, top_r + lo
                continue
            cand_s = torch.cat([best_s, top_s], dim=1)
            cand_r = torch.cat([best_r, top_r + lo], dim=1)
            best_s, pos = torch.topk(cand_s, k, dim=1)
            best_r = torch.gather(cand_r, 1, pos)
        assert best_s is not None and best_r is not None  # k >= 1 and n_items >= 1
        best_r[torch.isneginf(best_s)] = -1  # excluded or missing: no row
        return best_s.cpu().numpy(), best_r.cpu().numpy()

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / "embeddings.safetensors") as tmp:
            save_file({"embeddings": self.embeddings}, str(tmp))
        write_json(
            directory / "index.json", {"kind": self.kind, "n_items": self.n_items, "dim": self.dim}
        )

    @classmethod
    def from_files(cls, meta: dict[str, Any], files: Mapping[str, bytes], where: Path) -> Self:
        path = where / "embeddings.safetensors"
        try:
            embeddings = load_numpy(files["embeddings.safetensors"])["embeddings"]
        except (KeyError, ValueError, SafetensorError) as exc:
            raise ArtifactError(f"{path}: cannot load the exact index ({exc})") from None
        shape = (meta.get("n_items"), meta.get("dim"))
        if meta.get("kind") != cls.kind or embeddings.ndim != 2 or embeddings.shape != shape:
            raise ArtifactError(f"{where}/index.json does not describe {path.name}")
        return cls(embeddings)
