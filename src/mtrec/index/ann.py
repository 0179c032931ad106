"""Approximate search with FAISS (HNSW or IVF, inner product); the ``ann`` extra."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, Self

import numpy as np
from numpy.typing import NDArray

from mtrec.errors import ArtifactError, ConfigError
from mtrec.index.base import Exclusions, check_queries
from mtrec.io import atomic_path, write_json


def _faiss() -> ModuleType:
    try:
        import faiss
    except ImportError:
        raise ConfigError(
            "the FAISS index needs faiss-cpu: pip install faiss-cpu (in a clone of mtrec: "
            "pip install -e '.[ann]'), or use the exact index"
        ) from None
    return faiss


class FaissIndex:
    """HNSW or IVF-flat inner-product search, tested by its recall against ``ExactIndex``.

    Exclusions are honoured by over-fetching ``k + len(exclude)`` neighbours and
    filtering, so a query never returns an excluded row; the search breadth
    (``ef_search`` or ``nprobe``) is raised to at least that many for the call.

    >>> index = FaissIndex.build(item_embeddings, method="hnsw", m=32, ef_search=128)
    >>> scores, rows = index.search(queries, k=10)
    """

    is_exact = False
    files: tuple[str, ...] = ("faiss.index",)

    def __init__(
        self,
        index: Any,
        method: Literal["hnsw", "ivf"],
        params: dict[str, int],
        recall: dict[str, float] | None = None,
    ):
        self.index = index
        self.method = method
        self.params = params
        self.recall = recall or {}
        self.kind = f"faiss-{method}"

    @classmethod
    def build(
        cls,
        embeddings: NDArray[np.float32],
        method: Literal["hnsw", "ivf"] = "hnsw",
        m: int = 32,
        ef_construction: int = 200,
        ef_search: int = 128,
        nlist: int | None = None,
        nprobe: int = 16,
    ) -> Self:
        """Index ``embeddings`` (n, d); ``m``/``ef_*`` for HNSW, ``nlist``/``nprobe`` for IVF."""
        faiss = _faiss()
        x = np.ascontiguousarray(embeddings, dtype=np.float32)
        n, d = x.shape
        if method == "hnsw":
            index = faiss.IndexHNSWFlat(d, m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = ef_construction
            index.add(x)
            return cls(
                index, method, {"m": m, "ef_construction": ef_construction, "ef_search": ef_search}
            )
        if method == "ivf":
            nlist = nlist or max(1, min(int(4 * np.sqrt(n)), n // 39 or 1))
            nlist = min(nlist, n)  # k-means needs at least one point per list
            quantizer = faiss.IndexFlatIP(d)
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(0)
            sample = x if n <= 256 * nlist else x[rng.choice(n, 256 * nlist, replace=False)]
            index.train(sample)
            index.add(x)
            return cls(index, method, {"nlist": nlist, "nprobe": nprobe})
        raise ConfigError(f"FaissIndex: method must be 'hnsw' or 'ivf', got {method!r}")

    @property
    def n_items(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def search(
        self, queries: NDArray[np.float32], k: int, exclude: Exclusions = None
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        faiss = _faiss()
        q = check_queries(queries, self.dim, k, exclude)
        k = min(k, self.n_items)
        extra = max((len(e) for e in exclude), default=0) if exclude is not None else 0
        fetch = min(k + extra, self.n_items)
        if self.method == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=max(self.params["ef_search"], fetch))
        else:
            params = faiss.SearchParametersIVF(nprobe=self.params["nprobe"])
        scores, rows = self.index.search(q, fetch, params=params)
        rows = rows.astype(np.int64)
        scores = np.where(rows >= 0, scores, -np.inf).astype(np.float32)
        if exclude is not None and extra:
            for i, banned in enumerate(exclude):
                if len(banned):
                    hit = np.isin(rows[i], banned)
                    rows[i, hit], scores[i, hit] = -1, -np.inf
            order = np.argsort(-scores, axis=1, kind="stable")  # push the holes to the end
            rows, scores = np.take_along_axis(rows, order, 1), np.take_along_axis(scores, order, 1)
        return scores[:, :k], rows[:, :k]

    def save(self, directory: str | Path) -> None:
        faiss = _faiss()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / "faiss.index") as tmp:
            faiss.write_index(self.index, str(tmp))
        write_json(
            directory / "index.json",
            {
                "kind": self.kind,
                "n_items": self.n_items,
                "dim": self.dim,
                "params": self.params,
                "recall": self.recall,
            },
        )

    @classmethod
    def from_files(cls, meta: dict[str, Any], files: Mapping[str, bytes], where: Path) -> Self:
        faiss = _faiss()
        try:
            raw = np.frombuffer(files["faiss.index"], dtype=np.uint8)
            index = faiss.deserialize_index(raw)
        except (KeyError, ValueError, RuntimeError) as exc:
            raise ArtifactError(f"{where}: cannot load the FAISS index ({exc})") from None
        method = str(meta.get("kind", "")).removeprefix("faiss-")
        if method not in ("hnsw", "ivf") or index.ntotal != meta.get("n_items"):
            raise ArtifactError(f"{where}/index.json does not describe faiss.index")
        return cls(index, method, dict(meta.get("params", {})), dict(meta.get("recall", {})))  # type: ignore[arg-type]
