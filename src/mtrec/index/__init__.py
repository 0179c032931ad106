"""The index stage: candidates for serving, by inner product over item embeddings."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from mtrec.errors import ArtifactError, ConfigError
from mtrec.index.ann import FaissIndex
from mtrec.index.base import Exclusions, Index, index_meta, recall_at_k
from mtrec.index.exact import ExactIndex
from mtrec.io import read_files

INDEX_KINDS = ("exact", "faiss-hnsw", "faiss-ivf")
INDEX_OPTIONS: dict[str, tuple[str, ...]] = {
    "exact": (),
    "faiss-hnsw": ("m", "ef_construction", "ef_search"),
    "faiss-ivf": ("nlist", "nprobe"),
}


OPTION_RANGES: dict[str, tuple[int, int]] = {
    "m": (2, 512), "ef_construction": (1, 1 << 20), "ef_search": (1, 1 << 20),
    "nlist": (1, 1 << 20), "nprobe": (1, 1 << 20),
}  # fmt: skip
"""Each option's accepted range: FAISS itself crashes the process (``m`` 1: a segfault,
0: an abort) or raises deep inside a search (``nprobe`` 0) on values outside them."""


def check_index_options(kind: str, params: dict[str, Any]) -> None:
    """``kind`` is an index kind and ``params`` its options, integers in range: checked
    before any work, so that a bad option never costs a training run."""
    allowed = INDEX_OPTIONS.get(kind)
    if allowed is None:
        raise ConfigError(f"index kind: expected one of {INDEX_KINDS}, got {kind!r}")
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ConfigError(
            f"{kind} index: unknown option(s) {unknown}; it takes {list(allowed) or 'none'}"
        )
    for name, value in params.items():
        low, high = OPTION_RANGES[name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigError(
                f"{kind} index: {name} expected an integer in [{low}, {high}], got {value!r}"
            )


def build_index(kind: str, embeddings: NDArray[np.float32], **params: Any) -> Index:
    """Build an index of ``kind`` (one of ``INDEX_KINDS``) over (n_items, d) embeddings."""
    check_index_options(kind, params)
    if kind == "exact":
        return ExactIndex.build(embeddings)
    return FaissIndex.build(embeddings, method=kind.removeprefix("faiss-"), **params)  # type: ignore[arg-type]


def load_index(directory: str | Path) -> Index:
    """Load whichever index ``directory/index.json`` describes."""
    meta = read_files(directory, ["index.json"])
    kind = index_meta(meta["index.json"], Path(directory)).get("kind")
    cls = _index_class(kind, Path(directory))
    return index_from_files({**meta, **read_files(directory, cls.files)}, Path(directory))


def index_from_files(files: Mapping[str, bytes], where: Path) -> Index:
    """The index whose files (``index.json`` and what its kind writes) were read as
    ``files``, from the directory ``where`` (named in errors)."""
    if "index.json" not in files:
        raise ArtifactError(f"{where / 'index.json'}: missing")
    meta = index_meta(files["index.json"], where)
    return _index_class(meta.get("kind"), where).from_files(meta, files, where)


def _index_class(kind: Any, where: Path) -> type[ExactIndex] | type[FaissIndex]:
    if kind == "exact":
        return ExactIndex
    if kind in ("faiss-hnsw", "faiss-ivf"):
        return FaissIndex
    raise ArtifactError(f"{where}/index.json: unknown index kind {kind!r}")


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
    "check_index_options",
    "index_from_files",
    "load_index",
    "recall_vs_exact",
]
