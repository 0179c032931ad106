"""The saved model directory: safetensors and JSON, written atomically, loaded without pickle.

Layout (``FORMAT_VERSION`` 1)::

    config.json        format version, model, training and ranking-stage config, data and
                       split, rating scale (``mtrec train --config`` takes it back)
    vocab.json         user and item ids in row order
    model.safetensors  the model's weights
    items.json         titles, genres and years per item row
    seen.safetensors   each user's training items (CSR) and per-item popularity
    metrics.json       evaluation on the held-out split, training history
    index/             the retrieval index (index.json + its files)
    ranker.json        the ranking stage's weights and config (models trained with one)
    item_item.safetensors  its item-item (EASE) weights, where the catalogue allows them
    manifest.json      SHA-256 of every file above; written last

The directory is assembled under a temporary name beside the target and swapped into
place in one atomic exchange (Linux; two renames elsewhere), so the directory always
holds a whole model and a crash never leaves one that loads half. Loading reads each
file once, checks the format version and every file against the manifest, parses what
it checked, and names the file that is missing or corrupt.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import glob
import hashlib
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from safetensors import SafetensorError
from safetensors.numpy import load as load_numpy
from safetensors.numpy import save_file
from safetensors.torch import load as load_torch
from safetensors.torch import save_file as save_torch

from mtrec.config import ModelConfig, TrainConfig
from mtrec.data import Items
from mtrec.errors import ArtifactError, ConfigError
from mtrec.features import RatingScale, SeenItems, Vocabs, interaction_counts
from mtrec.index import Index, index_from_files
from mtrec.io import (
    current_umask,
    file_digest,
    fsync_dir,
    parse_json_object,
    read_files,
    write_json,
)
from mtrec.model import MultiTaskModel
from mtrec.ranking import Ranker, StageOne, TwoStage
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
    rating_errors: NDArray[np.float32] | None = None
    """The rating head's error on each entry of ``seen`` (aligned with it), which the
    ranker's neighbourhood correction reads; None where the ranker has no correction."""

    def two_stage(self) -> TwoStage | None:
        """The ranking stage over this model, or None for a model saved without one."""
        if self.ranker is None:
            return None
        counts = interaction_counts(self.seen, len(self.vocabs.items))
        stage = StageOne(
            self.model,
            self.index,
            self.item_item,
            counts,
            self.ranker.correction,
            self.rating_errors,
        )
        return TwoStage.around(stage, self.seen, self.ranker)


def save(saved: SavedModel, directory: str | Path) -> Path:
    """Write ``saved`` to ``directory`` atomically (replacing an existing model there).

    The new model is written beside the target under a temporary name, then swapped in
    with one atomic exchange where the system has one (Linux): at every instant the
    directory holds a whole model, the old or the new. Temporaries left by a writer that
    died are removed on the next save.
    """
    target = Path(directory).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(target)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(target), suffix=".tmp", dir=target.parent))
    try:
        os.chmod(tmp, 0o777 & ~current_umask())
        _write_files(saved, tmp)
        _swap_into_place(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the old model after a swap, or a failed write
    return target


def _temp_prefix(target: Path) -> str:
    return f".{target.name}.{os.getpid()}."


def _remove_stale_temporaries(target: Path) -> None:
    """Delete ``.NAME.PID.*.tmp`` directories beside ``target`` whose writer is gone."""
    for path in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
        pid = path.name.removeprefix(f".{target.name}.").split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _save_numpy(arrays: dict[str, NDArray[Any]], path: str) -> None:
    """safetensors' writer in C order: it stores an array's raw buffer whatever its strides,
    so a Fortran-ordered matrix (EASE's weights came out of PyTorch so) read back transposed."""
    save_file({name: np.ascontiguousarray(a) for name, a in arrays.items()}, path)


def config_document(saved: SavedModel) -> dict[str, Any]:
    """What ``config.json`` holds; ``RunConfig.from_dict`` reads it back as a run config."""
    return {
        "format_version": FORMAT_VERSION,
        "model_config": saved.model_config.to_dict(),
        "train_config": saved.train_config.to_dict(),
        "ranker_config": None if saved.ranker is None else saved.ranker.config.to_dict(),
        "data": saved.data,
        "rating_scale": dataclasses.asdict(saved.scale),
        "n_users": len(saved.vocabs.users),
        "n_items": len(saved.vocabs.items),
        "index": {"kind": saved.index.kind},
    }


def _write_files(saved: SavedModel, out: Path) -> None:
    write_json(out / "config.json", config_document(saved))
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
            **({} if saved.rating_errors is None else {"errors": saved.rating_errors}),
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
    """Put the model at ``tmp`` at ``target``; the old one, if any, ends up at ``tmp``."""
    if not target.exists():
        os.replace(tmp, target)
        return
    if not target.is_dir():
        raise ArtifactError(f"{target}: exists and is not a model directory")
    if _exchange(tmp, target):
        return
    # no atomic exchange here: two renames, with an instant where no model is at target
    old = Path(tempfile.mkdtemp(prefix=_temp_prefix(target), suffix=".tmp", dir=target.parent))
    os.rmdir(old)
    os.replace(target, old)
    os.replace(tmp, target)
    os.replace(old, tmp)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories in one step (Linux ``renameat2`` with ``RENAME_EXCHANGE``);
    False where the system or file system has no such call."""
    if not sys.platform.startswith("linux"):
        return False
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:  # a C library without it (glibc < 2.28)
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        fsync_dir(b.parent)
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


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
    _check_version(config.get("format_version"), root / "config.json")
    try:
        model_config = ModelConfig.from_dict(config["model_config"])
        train_config = TrainConfig.from_dict(config["train_config"])
        scale = RatingScale(**config["rating_scale"])
    except (KeyError, TypeError, ConfigError) as exc:
        raise ArtifactError(f"{root / 'config.json'}: invalid ({exc})") from None
    vocab = files.json("vocab.json")
    vocabs = Vocabs(
        Vocab.from_dict(vocab.get("users", {})), Vocab.from_dict(vocab.get("items", {}))
    )
    model = MultiTaskModel(len(vocabs.users), len(vocabs.items), model_config)
    try:
        model.load_state_dict(files.arrays("model.safetensors", load_torch))
    except RuntimeError as exc:
        raise ArtifactError(
            f"{root / 'model.safetensors'}: does not fit config.json ({exc})"
        ) from None
    model.eval()
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
            model,
            model_config,
            train_config,
            vocabs,
            items,
            history,
            seen["popularity"],
            index,
            config.get("data", {}),
            files.json("metrics.json"),
            scale,
            ranker,
            item_item,
            errors,
        )
    except (KeyError, TypeError) as exc:
        raise ArtifactError(f"{root}: incomplete files ({exc})") from None


_SHA256 = re.compile(r"[0-9a-f]{64}")


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
        parts = Path(name).parts
        if not parts or Path(name).is_absolute() or ".." in parts or "\\" in name:
            raise ArtifactError(f"{where}: {name!r} is not a file inside the directory")
    for name in (*FILES, "index/index.json"):
        if name not in digests:
            raise ArtifactError(f"{where}: does not list {name}")
    data = read_files(root, digests)
    for name, expected in digests.items():
        if hashlib.sha256(data[name]).hexdigest() != expected:
            raise ArtifactError(f"{root / name}: corrupt (checksum does not match {where.name})")
    return data


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
        and indptr.dtype.kind == items.dtype.kind == pop.dtype.kind == "i"
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
