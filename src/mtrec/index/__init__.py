"""The index stage: candidates for serving, by inner product over item embeddings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from mtrec.errors import ArtifactError, ConfigError
from mtrec.index.ann import FaissIndex
from mtrec.index.base import Exclusions, Index, read_index_meta, recall_at_k
from mtrec.index.exact import ExactIndex

INDEX_KINDS = ("exact", "faiss-hnsw", "faiss-ivf")
INDEX_OPTIONS: dict[str, tuple[str, ...]] = {
    "exact": (),
    "faiss-hnsw": ("m", "ef_construction", "ef_search"),
    "faiss-ivf": ("nlist", "nprobe"),
}


def build_index(kind: str, embeddings: NDArray[np.float32], **params: Any) -> Index:
    """Build an index of ``kind`` (one of ``INDEX_KINDS``) over (n_items, d) embeddings."""
    allowed = INDEX_OPTIONS.get(kind)
    if allowed is None:
        raise ConfigError(f"index kind: expected one of {INDEX_KINDS}, got {kind!r}")
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ConfigError(
            f"{kind} index: unknown option(s) {unknown}; it takes {list(allowed) or 'none'}"
        )
    if kind == "exact":
        return ExactIndex.build(embeddings)
    return FaissIndex.build(embeddings, method=kind.removeprefix("faiss-"), **params)  # type: ignore[arg-type]


def load_index(directory: str | Path) -> Index:
    """Load whichever index ``directory/index.json`` describes."""
    kind = read_index_meta(directory).get("kind")
    if kind == "exact":
        return ExactIndex.load(directory)
    if kind in ("faiss-hnsw", "faiss-ivf"):
        return FaissIndex.load(directory)
    raise ArtifactError(f"{directory}/index.json: unknown index kind {kind!r}")


def recall_vs_exact(
    index: Index, exact: ExactIndex, queries: NDArray[np.float32], k: int = 10
) -> float:
    """Recall@k of ``index`` against the exact top-k for ``queries``."""
    _, approx = index.search(queries, k)
    _, truth = exact.search(queries, k)
    return recall_at_k(approx, truth)


__all__ = [
    "INDEX_KINDS",
    "ExactIndex",
    "Exclusions",
    "FaissIndex",
    "Index",
    "build_index",
    "load_index",
    "recall_vs_exact",
]
