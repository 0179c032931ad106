"""Writing a model directory: assembled under a temporary name, swapped into place at once."""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import glob
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from safetensors import SafetensorError
from safetensors.numpy import save_file
from safetensors.torch import save_file as save_torch

from mtrec.artifact.model_dir import FILES, FORMAT_VERSION, SavedModel
from mtrec.errors import ArtifactError
from mtrec.io import (
    current_umask,
    file_digest,
    fsync_dir,
    write_json,
)


def save(
    saved: SavedModel, directory: str | Path, extras: Mapping[str, Path] | None = None
) -> Path:
    """Write ``saved`` to ``directory`` atomically (replacing an existing model there;
    anything else already there is refused: see ``check_target``). ``extras``: files to
    put beside the model under those names (``REPORT_FILES``: the training report),
    checksummed with it.

    The new model is written beside the target under a temporary name, then swapped in
    with one atomic exchange where the system has one (Linux): at every instant the
    directory holds a whole model, the old or the new. Temporaries left by a writer that
    died are removed on the next save.
    """
    target = check_target(directory)  # its folder made and writable
    _remove_stale_temporaries(target)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(target), suffix=".tmp", dir=target.parent))
    try:
        os.chmod(tmp, 0o777 & ~current_umask())
        _write_files(saved, tmp, extras or {})
        _swap_into_place(tmp, target)
    except (OSError, SafetensorError) as exc:  # a full disk, a lost mount: keep the work
        shutil.rmtree(tmp, ignore_errors=True)  # first: its space may be what the copy needs
        raise ArtifactError(
            f"{target}: the model could not be written ({_reason(exc)}); {_keep_elsewhere(saved)}"
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the old model after a swap, or a failed write
    return target


def _reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def _keep_elsewhere(saved: SavedModel) -> str:
    """Write ``saved`` to a new folder in the system's temporary directory (another file
    system, often) so that a failed save does not lose a training run; says where."""
    try:
        kept = Path(tempfile.mkdtemp(prefix="mtrec-unsaved-"))
    except OSError as exc:
        return f"it could not be kept in {tempfile.gettempdir()} either ({_reason(exc)})"
    try:
        _write_files(saved, kept, {})
    except (OSError, SafetensorError) as exc:
        shutil.rmtree(kept, ignore_errors=True)
        return f"it could not be kept in {kept.parent} either ({_reason(exc)})"
    return f"the trained model was written to {kept} instead: move it where it belongs"


REPORT_FILES = frozenset({"report.md", "report.png"})
"""What ``save``'s ``extras`` may name: ``mtrec train``'s report of the run."""
MODEL_ENTRIES = frozenset(
    {*FILES, *REPORT_FILES, "manifest.json", "ranker.json", "item_item.safetensors", "index"}
)
"""Every name a model directory can hold: replacing one deletes nothing else."""


def check_target(directory: str | Path) -> Path:
    """``directory`` resolved, if a model may be written there: its folder is writable
    (created if need be), and it does not exist, is an empty folder, or holds a saved model
    and nothing else. Anything else is refused before any work, since the swap would
    delete what is there (a working directory given as ``-o .`` lost every file so)."""
    target = Path(directory).resolve()
    _check_writable(target.parent)
    if not target.exists():
        return target
    if not target.is_dir():
        raise ArtifactError(f"{target}: exists and is not a model directory")
    entries = {entry.name for entry in target.iterdir()}
    foreign = sorted(entries - MODEL_ENTRIES)
    if foreign or (entries and "manifest.json" not in entries):
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise ArtifactError(
            f"{target}: exists and is not a saved model ({shown or 'no manifest.json'}); "
            "writing a model there would delete its files: choose another output directory"
        )
    return target


def _check_writable(folder: Path) -> None:
    """``folder`` exists (made now) and takes a new entry: tried, since permission bits
    tell root nothing (a read-only or full filesystem, /proc, a file in the way)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        os.rmdir(tempfile.mkdtemp(prefix=".mtrec-check-", dir=folder))
    except OSError as exc:
        raise ArtifactError(f"{folder}: a model cannot be written there ({exc.strerror})") from None


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


def _write_files(saved: SavedModel, out: Path, extras: Mapping[str, Path]) -> None:
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
    for name, source in extras.items():
        if name not in REPORT_FILES:
            raise ArtifactError(f"{name}: not a file a model directory holds")
        shutil.copyfile(source, out / name)
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
