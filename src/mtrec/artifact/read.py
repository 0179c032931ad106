"""Reading a model directory: each file once, checked against the manifest, parsed without
pickle.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from safetensors import SafetensorError
from safetensors.numpy import load as load_numpy
from safetensors.torch import load as load_torch

from mtrec.artifact.model_dir import FILES, FORMAT_VERSION, ItemInfo, SavedModel
from mtrec.config import ModelConfig, TrainConfig
from mtrec.errors import ArtifactError, ConfigError
from mtrec.features import RatingScale, SeenItems, Vocabs
from mtrec.index import index_from_files
from mtrec.io import (
    parse_json_object,
    read_files,
)
from mtrec.model import MultiTaskModel
from mtrec.ranking import Ranker
from mtrec.vocab import Vocab

_SHA256 = re.compile(r"[0-9a-f]{64}")
"""A manifest's digest: SHA-256 in lower-case hex."""


def load(directory: str | Path) -> SavedModel:
    """Load a model directory; every problem raises ``ArtifactError`` naming the file.

    Each file is read once, checked against the manifest and parsed from what was read:
    a directory replaced while it loads gives a clean error, never a mix of two models.
    """
    root = Path(directory)
    if not root.is_dir():
        raise ArtifactError(f"{root}: no such model directory")
    files = _Files.read(root)
    config = files.json("config.json")
    model_config, train_config, scale = _configs(config, root / "config.json")
    vocab = files.json("vocab.json")
    vocabs = Vocabs(
        Vocab.from_dict(vocab.get("users", {})), Vocab.from_dict(vocab.get("items", {}))
    )
    model = _model(files, model_config, vocabs, root / "model.safetensors")
    seen = files.arrays("seen.safetensors", load_numpy)
    _check_seen(root / "seen.safetensors", seen, len(vocabs.users), len(vocabs.items))
    history = SeenItems(seen["indptr"], seen["items"], seen["labels"])
    model.set_history(history)  # a user tower that reads histories reads the training items
    items = _item_info(files.json("items.json"), len(vocabs.items), root / "items.json")
    index = index_from_files(files.under("index/"), root / "index")
    if index.n_items != len(vocabs.items):
        raise ArtifactError(
            f"{root / 'index'}: has {index.n_items} items, vocab.json {len(vocabs.items)}"
        )
    ranker, item_item = _ranking_stage(files, len(vocabs.items))
    errors = seen.get("errors")
    if ranker is not None and ranker.correction and errors is None:
        raise ArtifactError(
            f"{root / 'seen.safetensors'}: the ranker corrects ratings but the rating "
            "head's training errors ('errors') are missing"
        )
    try:
        return SavedModel(
            model=model,
            model_config=model_config,
            train_config=train_config,
            vocabs=vocabs,
            items=items,
            seen=history,
            popularity=seen["popularity"].astype(np.float64),  # counts, before recency
            index=index,
            data=config.get("data", {}),
            metrics=files.json("metrics.json"),
            scale=scale,
            ranker=ranker,
            item_item=item_item,
            rating_errors=errors,
        )
    except (KeyError, TypeError) as exc:
        raise ArtifactError(f"{root}: incomplete files ({exc})") from None


def _configs(config: dict[str, Any], where: Path) -> tuple[ModelConfig, TrainConfig, RatingScale]:
    """``config.json``'s model and training configs and rating scale, checked."""
    _check_version(config.get("format_version"), where)
    try:
        model_config = ModelConfig.from_dict(config["model_config"])
        train_config = TrainConfig.from_dict(config["train_config"])
        scale = RatingScale(**config["rating_scale"])
    except (KeyError, TypeError, ConfigError) as exc:
        raise ArtifactError(f"{where}: invalid ({exc})") from None
    return model_config, train_config, scale


def _model(files: _Files, config: ModelConfig, vocabs: Vocabs, where: Path) -> MultiTaskModel:
    """The model rebuilt from its config, its weights loaded (in inference mode)."""
    model = MultiTaskModel(len(vocabs.users), len(vocabs.items), config)
    try:
        model.load_state_dict(files.arrays("model.safetensors", load_torch))
    except RuntimeError as exc:
        raise ArtifactError(f"{where}: does not fit config.json ({exc})") from None
    bad = [name for name, t in model.state_dict().items() if not bool(torch.isfinite(t).all())]
    if bad:  # such a model would answer every request with a 500 (JSON has no NaN)
        raise ArtifactError(f"{where}: non-finite weights in {', '.join(bad[:5])}")
    model.eval()
    return model


def _check_version(version: Any, where: Path) -> None:
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise ArtifactError(
            f"{where}: format_version {version!r}; this mtrec reads format "
            f"{FORMAT_VERSION} (a newer model needs a newer mtrec)"
        )


@dataclasses.dataclass(frozen=True)
class _Files:
    """A model directory's files as read once and checked against its manifest."""

    root: Path
    data: dict[str, bytes]

    @classmethod
    def read(cls, root: Path, attempts: int = 3) -> _Files:
        """Read and verify; where the manifest itself changed meanwhile (a new model was
        swapped in), read again, up to ``attempts`` times."""
        where = root / "manifest.json"
        for _ in range(attempts):
            manifest = read_files(root, ["manifest.json"])["manifest.json"]
            try:
                return cls(root, _verified(root, manifest))
            except ArtifactError:
                if read_files(root, ["manifest.json"])["manifest.json"] == manifest:
                    raise  # the files, not a swap
        raise ArtifactError(f"{where}: replaced {attempts} times while loading; load again")

    def __contains__(self, name: str) -> bool:
        return name in self.data

    def json(self, name: str) -> dict[str, Any]:
        return parse_json_object(self.data[name], self.root / name)

    def arrays(self, name: str, loader: Callable[[bytes], dict[str, Any]]) -> dict[str, Any]:
        try:
            return dict(loader(self.data[name]))
        except (SafetensorError, ValueError) as exc:
            raise ArtifactError(f"{self.root / name}: unreadable ({exc})") from None

    def under(self, folder: str) -> dict[str, bytes]:
        return {n.removeprefix(folder): d for n, d in self.data.items() if n.startswith(folder)}


def _verified(root: Path, manifest_bytes: bytes) -> dict[str, bytes]:
    """Every file the manifest lists, read once and checked against it."""
    where = root / "manifest.json"
    manifest = parse_json_object(manifest_bytes, where)
    _check_version(manifest.get("format_version"), where)  # a newer layout: say so first
    digests = manifest.get("sha256")
    if not isinstance(digests, dict) or not all(
        isinstance(name, str) and isinstance(d, str) and _SHA256.fullmatch(d)
        for name, d in digests.items()
    ):
        raise ArtifactError(f"{where}: 'sha256' must map file names to SHA-256 hex digests")
    for name in digests:
        if not _file_name(name):
            raise ArtifactError(f"{where}: {name!r} is not a file inside the directory")
    for name in (*FILES, "index/index.json"):
        if name not in digests:
            raise ArtifactError(f"{where}: does not list {name}")
    data = read_files(root, digests)
    for name, expected in digests.items():
        if hashlib.sha256(data[name]).hexdigest() != expected:
            raise ArtifactError(f"{root / name}: corrupt (checksum does not match {where.name})")
    return data


def _file_name(name: str) -> bool:
    """Whether a manifest's ``name`` is a relative path inside the directory that the file
    system can open (a NUL or a lone surrogate raised from ``open``, a traceback)."""
    if "\x00" in name or "\\" in name:
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    parts = Path(name).parts
    return bool(parts) and not Path(name).is_absolute() and ".." not in parts


def _item_info(items: dict[str, Any], n_items: int, where: Path) -> ItemInfo:
    """items.json checked field by field: a wrong type fails here, not at recommend time."""
    fields: dict[str, Callable[[Any], bool]] = {
        "titles": lambda v: v is None or isinstance(v, str),
        "genres": lambda v: isinstance(v, list) and all(isinstance(g, str) for g in v),
        "years": lambda v: isinstance(v, int) and not isinstance(v, bool),
    }
    if sorted(items) != sorted(fields):
        raise ArtifactError(f"{where}: expected titles, genres, years per item")
    for name, valid in fields.items():
        values = items[name]
        if not isinstance(values, list) or len(values) != n_items:
            raise ArtifactError(f"{where}: '{name}' must list one entry per item ({n_items})")
        bad = next((i for i, v in enumerate(values) if not valid(v)), None)
        if bad is not None:
            raise ArtifactError(f"{where}: '{name}' entry {bad} is {values[bad]!r}")
    return ItemInfo(**items)


def _ranking_stage(files: _Files, n_items: int) -> tuple[Ranker | None, NDArray[np.float32] | None]:
    """The ranker and its item-item weights, where the manifest lists them."""
    ranker = None
    if "ranker.json" in files:
        where = str(files.root / "ranker.json")
        ranker = Ranker.from_dict(files.json("ranker.json"), where)
    if "item_item.safetensors" not in files:
        return ranker, None
    weights = files.arrays("item_item.safetensors", load_numpy).get("weights")
    if (
        not isinstance(weights, np.ndarray)
        or weights.shape != (n_items, n_items)
        or weights.dtype != np.float32
    ):
        path = files.root / "item_item.safetensors"
        raise ArtifactError(f"{path}: expected float32 'weights' of {n_items} x {n_items}")
    return ranker, weights


def _fits_entries(errors: Any, items: NDArray[np.int64]) -> bool:
    """Absent, or one finite float per history entry."""
    return errors is None or (
        errors.shape == items.shape and errors.dtype.kind == "f" and bool(np.isfinite(errors).all())
    )


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
        and indptr.dtype.kind == items.dtype.kind == "i"
        and pop.dtype.kind in "if"
        and bool(np.isfinite(pop).all())
        and indptr[0] == 0
        and indptr[-1] == len(items)
        and labels.shape == items.shape
        and labels.dtype.kind == "f"
        and bool(np.all(np.diff(indptr) >= 0))
        and (len(items) == 0 or (items.min() >= 0 and items.max() < n_items))
        and _fits_entries(seen.get("errors"), items)
    )
    if not ok:
        raise ArtifactError(f"{path}: arrays do not fit {n_users} users and {n_items} items")
