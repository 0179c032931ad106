"""The saved model directory: safetensors and JSON, written atomically, loaded without pickle.

Layout (``FORMAT_VERSION`` 1)::

    config.json        format version, model and training config, data and split, rating scale
    vocab.json         user and item ids in row order
    model.safetensors  the model's weights
    items.json         titles, genres and years per item row
    seen.safetensors   each user's training items (CSR) and per-item popularity
    metrics.json       evaluation on the held-out split, training history
    index/             the retrieval index (index.json + its files)
    ranker.json        the ranking stage's weights and config (models trained with one)
    item_item.safetensors  its item-item (EASE) weights, where the catalogue allows them
    manifest.json      SHA-256 of every file above; written last

The directory is assembled under a temporary name beside the target and renamed into
place, so a crash never leaves a directory that loads. Loading checks the format
version, then every file against the manifest, and names the file that is missing or
corrupt.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from safetensors import SafetensorError
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save_file
from safetensors.torch import load_file as load_torch
from safetensors.torch import save_file as save_torch

from mtrec.config import ModelConfig, TrainConfig
from mtrec.data import Items
from mtrec.errors import ArtifactError, ConfigError
from mtrec.features import RatingScale, SeenItems, Vocabs, interaction_counts
from mtrec.index import Index, load_index
from mtrec.io import current_umask, file_digest, read_json_object, write_json
from mtrec.model import MultiTaskModel
from mtrec.ranker import Ranker, StageOne
from mtrec.two_stage import TwoStage
from mtrec.vocab import Vocab

FORMAT_VERSION = 1
FILES = (
    "config.json",
    "vocab.json",
    "model.safetensors",
    "items.json",
    "seen.safetensors",
    "metrics.json",
)


@dataclasses.dataclass(frozen=True)
class ItemInfo:
    """Display metadata aligned to item rows (None/empty where the dataset had none)."""

    titles: list[str | None]
    genres: list[list[str]]
    years: list[int]

    @classmethod
    def from_items(cls, vocab: Vocab, items: Items | None) -> ItemInfo:
        n = len(vocab)
        if items is None:
            return cls([None] * n, [[] for _ in range(n)], [0] * n)
        position = {raw: p for p, raw in enumerate(items.ids.tolist())}
        where = [position.get(raw) for raw in vocab.id_array.tolist()]
        return cls(
            [None if p is None else str(items.titles[p]) for p in where],
            [[] if p is None else items.genres_of(p) for p in where],
            [0 if p is None else int(items.years[p]) for p in where],
        )


@dataclasses.dataclass(frozen=True)
class SavedModel:
    """Everything ``Recommender`` needs, as loaded from (or about to be written to) disk."""

    model: MultiTaskModel
    model_config: ModelConfig
    train_config: TrainConfig
    vocabs: Vocabs
    items: ItemInfo
    seen: SeenItems
    popularity: NDArray[np.int64]
    index: Index
    data: dict[str, Any]
    """Dataset name, source and split (kind, seed, test fraction, sizes, fingerprint)."""
    metrics: dict[str, Any]
    scale: RatingScale = dataclasses.field(default_factory=RatingScale)
    ranker: Ranker | None = None
    """The ranking stage; None: the list is retrieval re-sorted by predicted rating."""
    item_item: NDArray[np.float32] | None = None
    """(n_items, n_items) EASE weights the ranker reads (None: two-tower signals only)."""

    def two_stage(self) -> TwoStage | None:
        """The ranking stage over this model, or None for a model saved without one."""
        if self.ranker is None:
            return None
        counts = interaction_counts(self.seen, len(self.vocabs.items))
        return TwoStage(StageOne(self.model, self.index, self.item_item, counts), self.ranker)


def save(saved: SavedModel, directory: str | Path) -> Path:
    """Write ``saved`` to ``directory`` atomically (replacing an existing model there)."""
    target = Path(directory).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        os.chmod(tmp, 0o777 & ~current_umask())
        _write_files(saved, tmp)
        _swap_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _save_numpy(arrays: dict[str, NDArray[Any]], path: str) -> None:
    """safetensors' writer in C order: it stores an array's raw buffer whatever its strides,
    so a Fortran-ordered matrix (EASE's weights came out of PyTorch so) read back transposed."""
    save_file({name: np.ascontiguousarray(a) for name, a in arrays.items()}, path)


def _write_files(saved: SavedModel, out: Path) -> None:
    write_json(
        out / "config.json",
        {
            "format_version": FORMAT_VERSION,
            "model_config": saved.model_config.to_dict(),
            "train_config": saved.train_config.to_dict(),
            "data": saved.data,
            "rating_scale": dataclasses.asdict(saved.scale),
            "n_users": len(saved.vocabs.users),
            "n_items": len(saved.vocabs.items),
            "index": {"kind": saved.index.kind},
        },
    )
    write_json(
        out / "vocab.json",
        {"users": saved.vocabs.users.to_dict(), "items": saved.vocabs.items.to_dict()},
    )
    save_torch(
        {k: v.contiguous() for k, v in saved.model.state_dict().items()},
        str(out / "model.safetensors"),
    )
    write_json(out / "items.json", dataclasses.asdict(saved.items))
    _save_numpy(
        {
            "indptr": saved.seen.indptr,
            "items": saved.seen.items,
            "labels": saved.seen.labels,
            "popularity": saved.popularity,
        },
        str(out / "seen.safetensors"),
    )
    write_json(out / "metrics.json", saved.metrics)
    if saved.ranker is not None:
        write_json(out / "ranker.json", saved.ranker.to_dict())
    if saved.item_item is not None:
        _save_numpy({"weights": saved.item_item}, str(out / "item_item.safetensors"))
    saved.index.save(out / "index")
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    mode = 0o666 & ~current_umask()  # safetensors creates its files 0600
    for name in files:
        os.chmod(out / name, mode)
        with open(out / name, "rb") as fh:
            os.fsync(fh.fileno())
    write_json(
        out / "manifest.json",
        {
            "format_version": FORMAT_VERSION,
            "sha256": {name: file_digest(out / name) for name in files},
        },
    )


def _swap_into_place(tmp: Path, target: Path) -> None:
    if not target.exists():
        os.replace(tmp, target)
        return
    if not target.is_dir():
        raise ArtifactError(f"{target}: exists and is not a model directory")
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
    os.rmdir(old)
    os.replace(target, old)  # the old model stays whole until the new one is in place
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def load(directory: str | Path) -> SavedModel:
    """Load a model directory; every problem raises ``ArtifactError`` naming the file."""
    root = Path(directory)
    if not root.is_dir():
        raise ArtifactError(f"{root}: no such model directory")
    manifest = _json(root, "manifest.json")
    config = _json(root, "config.json")
    version = config.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise ArtifactError(
            f"{root / 'config.json'}: format_version {version!r}; this mtrec reads format "
            f"{FORMAT_VERSION} (a newer model needs a newer mtrec)"
        )
    digests = manifest.get("sha256", {})
    for name in (*FILES, "index/index.json"):
        if name not in digests:
            raise ArtifactError(f"{root / 'manifest.json'}: does not list {name}")
    for name, expected in digests.items():
        path = root / name
        if not path.is_file():
            raise ArtifactError(f"{path}: missing")
        if file_digest(path) != expected:
            raise ArtifactError(f"{path}: corrupt (checksum does not match manifest.json)")
    try:
        model_config = ModelConfig.from_dict(config["model_config"])
        train_config = TrainConfig.from_dict(config["train_config"])
        scale = RatingScale(**config["rating_scale"])
    except (KeyError, TypeError, ConfigError) as exc:
        raise ArtifactError(f"{root / 'config.json'}: invalid ({exc})") from None
    vocab = _json(root, "vocab.json")
    vocabs = Vocabs(
        Vocab.from_dict(vocab.get("users", {})), Vocab.from_dict(vocab.get("items", {}))
    )
    model = MultiTaskModel(len(vocabs.users), len(vocabs.items), model_config)
    weights = _safetensors(root / "model.safetensors", load_torch)
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise ArtifactError(
            f"{root / 'model.safetensors'}: does not fit config.json ({exc})"
        ) from None
    model.eval()
    seen = _safetensors(root / "seen.safetensors", load_numpy)
    _check_seen(root / "seen.safetensors", seen, len(vocabs.users), len(vocabs.items))
    history = SeenItems(seen["indptr"], seen["items"], seen["labels"])
    model.set_history(history)  # a user tower that reads histories reads the training items
    items = _json(root, "items.json")
    if sorted(items) != ["genres", "titles", "years"] or any(
        not isinstance(items[k], list) or len(items[k]) != len(vocabs.items) for k in items
    ):
        raise ArtifactError(f"{root / 'items.json'}: expected titles, genres, years per item")
    index = load_index(root / "index")
    if index.n_items != len(vocabs.items):
        raise ArtifactError(
            f"{root / 'index'}: has {index.n_items} items, vocab.json {len(vocabs.items)}"
        )
    ranker, item_item = _ranking_stage(root, digests, len(vocabs.items))
    try:
        return SavedModel(
            model,
            model_config,
            train_config,
            vocabs,
            ItemInfo(**items),
            history,
            seen["popularity"],
            index,
            config.get("data", {}),
            _json(root, "metrics.json"),
            scale,
            ranker,
            item_item,
        )
    except (KeyError, TypeError) as exc:
        raise ArtifactError(f"{root}: incomplete files ({exc})") from None


def _ranking_stage(
    root: Path, listed: dict[str, Any], n_items: int
) -> tuple[Ranker | None, NDArray[np.float32] | None]:
    """The ranker and its item-item weights, where the manifest lists them."""
    ranker = None
    if "ranker.json" in listed:
        ranker = Ranker.from_dict(_json(root, "ranker.json"), str(root / "ranker.json"))
    if "item_item.safetensors" not in listed:
        return ranker, None
    path = root / "item_item.safetensors"
    weights = _safetensors(path, load_numpy).get("weights")
    if (
        not isinstance(weights, np.ndarray)
        or weights.shape != (n_items, n_items)
        or weights.dtype != np.float32
    ):
        raise ArtifactError(f"{path}: expected float32 'weights' of {n_items} x {n_items}")
    return ranker, weights


def _check_seen(path: Path, seen: dict[str, Any], n_users: int, n_items: int) -> None:
    try:
        indptr, items, pop = seen["indptr"], seen["items"], seen["popularity"]
        labels = seen["labels"]
    except KeyError as exc:
        raise ArtifactError(f"{path}: missing array {exc}") from None
    ok = (
        indptr.shape == (n_users + 1,)
        and items.ndim == 1
        and pop.shape == (n_items,)
        and indptr.dtype.kind == items.dtype.kind == pop.dtype.kind == "i"
        and indptr[0] == 0
        and indptr[-1] == len(items)
        and labels.shape == items.shape
        and labels.dtype.kind == "f"
        and bool(np.all(np.diff(indptr) >= 0))
        and (len(items) == 0 or (items.min() >= 0 and items.max() < n_items))
    )
    if not ok:
        raise ArtifactError(f"{path}: arrays do not fit {n_users} users and {n_items} items")


def _json(root: Path, name: str) -> dict[str, Any]:
    return read_json_object(root / name)


def _safetensors(path: Path, loader: Any) -> dict[str, Any]:
    try:
        return dict(loader(str(path)))
    except (OSError, SafetensorError, ValueError) as exc:
        raise ArtifactError(f"{path}: unreadable ({exc})") from None
