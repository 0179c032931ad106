"""Atomic writes and checksums: nothing mtrec writes is ever left half-written."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from mtrec.errors import ArtifactError


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it over ``target`` on success.

    The temp file lives in the same directory so the final ``os.replace`` is atomic on
    POSIX; on any exception it is deleted, so a crash never leaves a file a later run
    would trust.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, 0o666 & ~current_umask())  # mkstemp's 0600 is for the temp only
        os.replace(tmp_path, target)
        fsync_dir(target.parent)  # make the rename itself durable
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def fsync_dir(directory: str | Path) -> None:
    """Flush a directory entry (a rename) to disk where the platform allows it."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def current_umask() -> int:
    """The process umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(target: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file for writing that replaces ``target`` only when closed cleanly."""
    encoding = None if "b" in mode else "utf-8"
    with atomic_path(target) as tmp, open(tmp, mode, encoding=encoding) as fh:
        yield fh


def json_safe(value: Any) -> Any:
    """NaN (a metric that does not apply) as null, so the JSON is valid for every reader."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def write_json(target: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON (NaN as null), atomically."""
    with atomic_open(target) as fh:
        json.dump(json_safe(obj), fh, indent=2, sort_keys=False, allow_nan=False)
        fh.write("\n")


def read_json_object(path: str | Path) -> dict[str, Any]:
    """A JSON file that must hold an object; a missing, unreadable or other file raises
    ``ArtifactError`` naming it (what every saved file of mtrec is read with)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing") from None
    except OSError as exc:
        raise ArtifactError(f"{path}: unreadable ({exc})") from None
    return parse_json_object(data, path)


def parse_json_object(data: bytes, path: str | Path) -> dict[str, Any]:
    """``data``, read from ``path``, as a JSON object; anything else an ``ArtifactError``."""
    try:
        parsed = json.loads(data.decode("utf-8"))
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ArtifactError(f"{path}: unreadable ({exc})") from None
    except RecursionError:  # a hostile file nested 100k levels deep
        raise ArtifactError(f"{path}: unreadable (nested too deeply)") from None
    if not isinstance(parsed, dict):
        raise ArtifactError(f"{path}: expected a JSON object")
    return parsed


def read_files(directory: str | Path, names: Iterable[str]) -> dict[str, bytes]:
    """The named files under ``directory``, each read once (missing: ``ArtifactError``)."""
    out = {}
    for name in names:
        path = Path(directory) / name
        try:
            out[name] = path.read_bytes()
        except FileNotFoundError:
            raise ArtifactError(f"{path}: missing") from None
        except OSError as exc:
            raise ArtifactError(f"{path}: unreadable ({exc})") from None
    return out


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in chunks so large archives stay out of memory."""
    h = hashlib.new(algorithm, usedforsecurity=False)  # integrity checks, not secrets
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
