"""MovieLens-100K: locate, fetch, verify and parse it into columnar records.

Sources are tried in order and the first that works wins:

1. ``data_dir`` (argument or ``MTREC_DATA_DIR``): a GroupLens ``ml-100k`` directory.
   A directory the user named is never skipped silently: its errors are raised.
2. mtrec's cache (``MTREC_CACHE_DIR``, else ``$XDG_CACHE_HOME/mtrec``, else
   ``~/.cache/mtrec``): a normalised ``.npz`` copy that loads in milliseconds.
3. The GroupLens archive ``ml-100k.zip``, verified against a pinned MD5.
4. The PyPI mirror: the ``recbole==1.2.1`` wheel fetched with ``pip download
   --no-deps`` (never installed), verified by a pinned SHA-256, of which only
   ``recbole/dataset_example/ml-100k/*`` is read, each file verified again.

Fetched data is written to the cache atomically, so an interrupted or corrupt
download leaves nothing behind that a later run would trust.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from mtrec.data.download import download
from mtrec.data.interactions import Dataset, Interactions, Items, Users
from mtrec.data.releases import (
    GENRES,
    RELEASES,
    Release,
    member_names,
    parse_release,
    table_ratings,
    table_users,
    year_at_end,
)
from mtrec.data.table import TextTable
from mtrec.errors import ArtifactError, DataError, SourceError
from mtrec.io import atomic_path, file_digest

log = logging.getLogger("mtrec.data")

ML100K = "ml-100k"
GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
GROUPLENS_MD5 = "0e33842e24a9c977be4e0107933c0723"
RECBOLE_REQUIREMENT = "recbole==1.2.1"
RECBOLE_WHEEL = "recbole-1.2.1-py3-none-any.whl"
RECBOLE_WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
RECBOLE_PREFIX = "recbole/dataset_example/ml-100k/"
RECBOLE_FILES = {
    "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
    "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
}
SOURCES = ("dir", "cache", "grouplens", "pypi")
MOVIELENS = tuple(RELEASES)
CACHE_VERSION = 2
"""2: timestamps exact (version 1 caches hold them rounded to float32's precision)."""
DOWNLOAD_TIMEOUT_S = 30.0


def default_cache_dir() -> Path:
    """Where fetched datasets are kept: ``MTREC_CACHE_DIR`` or the user cache directory."""
    if env := os.environ.get("MTREC_CACHE_DIR"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mtrec"


def cache_path(cache_dir: str | Path | None = None, name: str = ML100K) -> Path:
    """The cache file of one dataset."""
    return Path(cache_dir or default_cache_dir()) / f"{name}.v{CACHE_VERSION}.npz"


def load_movielens(
    name: str = ML100K,
    *,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    sources: Sequence[str] = SOURCES,
    grouplens_url: str | None = None,
    grouplens_md5: str | None = None,
) -> Dataset:
    """Load a MovieLens release (ratings with movie, and where published user, metadata).

    Args:
        name: one of :data:`MOVIELENS` (``ml-100k``, ``ml-latest-small``, ``ml-1m``,
            ``ml-10m``, ``ml-20m``, ``ml-25m``, ``ml-32m``).
        data_dir: an unpacked GroupLens directory of that release (default:
            ``MTREC_DATA_DIR``).
        cache_dir: cache location (default: :func:`default_cache_dir`).
        sources: which of ``dir``, ``cache``, ``grouplens``, ``pypi`` to try, in order
            (only 100K has a PyPI mirror).
        grouplens_url: the archive URL (default: ``MTREC_GROUPLENS_URL`` or GroupLens).
        grouplens_md5: the archive's expected checksum, ``md5:``/``sha256:`` or a bare
            MD5 (default: the pinned one).

    Raises:
        DataError: the named ``data_dir`` is malformed (file, line and field named).
        SourceError: no source worked; the message lists each one and why.

    >>> ds = load_movielens()
    >>> len(ds.interactions), len(ds.items), len(ds.users)
    (100000, 1682, 943)
    """
    if name not in RELEASES:
        raise DataError(f"unknown dataset {name!r}; available: {list(RELEASES)}", field="dataset")
    release = RELEASES[name]
    unknown = sorted(set(sources) - set(SOURCES))
    if unknown:
        raise DataError(
            f"unknown source(s) {unknown}; expected some of {list(SOURCES)}", field="sources"
        )
    data_dir = data_dir or os.environ.get("MTREC_DATA_DIR") or None
    cache = cache_path(cache_dir, name)
    url = grouplens_url or os.environ.get("MTREC_GROUPLENS_URL") or release.url
    checksum = grouplens_md5 or release.checksum
    failures: list[tuple[str, str]] = []
    for source in sources:
        if source == "dir":
            if data_dir is None:
                failures.append(("dir", "no directory named (--data-dir or MTREC_DATA_DIR)"))
                continue
            # the user named it: its errors are final
            return dataclasses.replace(
                read_release_dir(release, data_dir), source=f"dir {data_dir}"
            )
        if source == "cache":
            if not cache.exists():
                failures.append(("cache", f"{cache} does not exist yet"))
                continue
            try:
                return dataclasses.replace(read_cache(cache), source=f"cache {cache}")
            except ArtifactError as exc:
                log.warning("ignoring unreadable cache: %s", exc)
                failures.append(("cache", str(exc)))
                continue
        if source == "pypi" and name != ML100K:
            failures.append(("pypi", f"only {ML100K} has a PyPI mirror"))
            continue
        fetch: Callable[[], Dataset] = (
            (lambda: fetch_grouplens(url, checksum, release, cache.parent))
            if source == "grouplens"
            else fetch_pypi_mirror
        )
        try:
            dataset = fetch()
        except (OSError, DataError, zipfile.BadZipFile, subprocess.SubprocessError) as exc:
            failures.append((source, str(exc) or type(exc).__name__))
            continue
        if "cache" in sources:
            write_cache(dataset, cache)
            log.info("cached %s at %s", name, cache)
        where = url if source == "grouplens" else f"PyPI {RECBOLE_REQUIREMENT} wheel"
        return dataclasses.replace(dataset, source=f"{source} {where}")
    raise SourceError(name, failures)


# --- sources -----------------------------------------------------------------------------


def read_release_dir(release: Release, directory: str | Path) -> Dataset:
    """Parse an unpacked GroupLens directory of ``release``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(
            f"not a directory (expected the GroupLens {release.name} layout)", path=directory
        )
    files: dict[str, bytes] = {}
    for fname in member_names(release):
        try:
            files[fname] = (directory / fname).read_bytes()
        except OSError as exc:
            raise DataError(f"cannot read: {exc.strerror or exc}", path=directory / fname) from None
    return parse_release(release, files, str(directory))


def read_grouplens_dir(directory: str | Path) -> Dataset:
    """Parse a GroupLens ``ml-100k`` directory (``u.data``, ``u.item``, ``u.user``)."""
    return read_release_dir(RELEASES[ML100K], directory)


def fetch_grouplens(
    url: str = GROUPLENS_URL,
    checksum: str = GROUPLENS_MD5,
    release: Release | None = None,
    workdir: str | Path | None = None,
) -> Dataset:
    """Download a release's zip (resumable, verified), parse it, and delete the zip.

    The archive is fetched into ``workdir`` (the cache directory), where an interrupted
    download is continued by the next call.
    """
    release = release or RELEASES[ML100K]
    workdir = Path(workdir or default_cache_dir())
    log.info("downloading %s", url)
    archive_path = download(url, workdir / release.archive, checksum, DOWNLOAD_TIMEOUT_S)
    try:
        with zipfile.ZipFile(archive_path) as archive:
            members = {Path(n).name: n for n in archive.namelist() if not n.endswith("/")}
            files: dict[str, bytes] = {}
            for fname in member_names(release):
                if fname not in members:
                    raise DataError(f"archive has no {fname}", path=url)
                files[fname] = archive.read(members[fname])
    finally:
        archive_path.unlink(missing_ok=True)  # the parsed cache replaces it
    return parse_release(release, files, url)


def fetch_pypi_mirror() -> Dataset:
    """Read MovieLens-100K out of the RecBole wheel on PyPI, without installing RecBole."""
    with tempfile.TemporaryDirectory(prefix="mtrec-pypi-") as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--quiet",
            "--dest",
            tmp,
            RECBOLE_REQUIREMENT,
        ]
        log.info("fetching MovieLens-100K through PyPI (%s wheel, no install)", RECBOLE_REQUIREMENT)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        wheel = Path(tmp) / RECBOLE_WHEEL
        if done.returncode != 0 or not wheel.exists():
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise DataError(f"pip download {RECBOLE_REQUIREMENT} failed: {tail[0]}")
        return read_recbole_wheel(wheel)


def read_recbole_wheel(wheel: str | Path, expected_sha256: str = RECBOLE_WHEEL_SHA256) -> Dataset:
    """Parse the ml-100k files inside a verified RecBole wheel."""
    digest = file_digest(wheel)
    if digest != expected_sha256:
        raise DataError(
            f"checksum mismatch: sha256 {digest}, expected {expected_sha256}", path=wheel
        )
    texts: dict[str, str] = {}
    with zipfile.ZipFile(wheel) as archive:
        for fname, sha in RECBOLE_FILES.items():
            payload = archive.read(RECBOLE_PREFIX + fname)
            if hashlib.sha256(payload).hexdigest() != sha:
                raise DataError("checksum mismatch of a member", path=f"{wheel}!{fname}")
            texts[fname] = payload.decode("utf-8")
    return parse_recbole(texts, where=f"{wheel}!{RECBOLE_PREFIX}")


# --- parsing -----------------------------------------------------------------------------


def parse_recbole(texts: dict[str, str], where: str) -> Dataset:
    """Parse RecBole's ``ml-100k.inter/.item/.user`` (tab-separated, typed header line)."""
    ratings = TextTable(texts["ml-100k.inter"], "\t", 4, f"{where}ml-100k.inter", header=True)
    items = TextTable(texts["ml-100k.item"], "\t", 4, f"{where}ml-100k.item", header=True)
    users = TextTable(texts["ml-100k.user"], "\t", 5, f"{where}ml-100k.user", header=True)
    index = {g: j for j, g in enumerate(GENRES)}
    flags = np.zeros((len(items.rows), len(GENRES)), dtype=bool)
    for pos, genres in enumerate(items.column(3)):
        for genre in genres.split():
            if genre not in index:
                raise DataError(
                    f"unknown genre {genre!r}",
                    path=items.path,
                    line=items.lines[pos],
                    field="class",
                )
            flags[pos, index[genre]] = True
    years = np.array([year_at_end(y) for y in items.column(2)], dtype=np.int32)
    # RecBole strips "(year)" from titles; restore the GroupLens display form.
    titles = [f"{t} ({y})" if y else t for t, y in zip(items.column(1), years, strict=True)]
    return Dataset(
        name=ML100K,
        interactions=table_ratings(ratings),
        items=Items(items.ints(0, "item_id"), np.array(titles), years, flags, GENRES),
        users=table_users(users),
    )


# --- cache -------------------------------------------------------------------------------

_CACHE_KEYS = (
    "user",
    "item",
    "rating",
    "timestamp",
    "item_ids",
    "titles",
    "years",
    "genres",
    "genre_names",
    "user_ids",
    "age",
    "gender",
    "occupation",
    "zip_code",
)


_INT, _FLOAT, _STR, _BOOL = "iu", "f", "U", "b"
_CACHE_SCHEMA = {
    "user": (_INT, 1),
    "item": (_INT, 1),
    "rating": (_FLOAT, 1),
    "timestamp": (_INT, 1),
    "item_ids": (_INT, 1),
    "titles": (_STR, 1),
    "years": (_INT, 1),
    "genres": (_BOOL, 2),
    "genre_names": (_STR, 1),
    "user_ids": (_INT, 1),
    "age": (_INT, 1),
    "gender": (_STR, 1),
    "occupation": (_STR, 1),
    "zip_code": (_STR, 1),
}
"""Expected dtype kinds and dimensions of each cached array."""


def write_cache(dataset: Dataset, path: str | Path) -> None:
    """Write a normalised copy (plain arrays, no pickle) atomically."""
    if dataset.items is None:
        raise DataError("only datasets with item metadata are cached", path=path)
    it, ev = dataset.items, dataset.interactions
    us = dataset.users or Users(
        np.zeros(0, np.int64), np.zeros(0, np.int32), *([np.zeros(0, np.str_)] * 3)
    )
    narrow = len(ev) and max(int(ev.user.max()), int(ev.item.max())) < 2**31
    arrays: dict[str, NDArray[Any]] = dict(
        name=np.array(dataset.name),
        has_users=np.array(dataset.users is not None),
        user=ev.user.astype(np.int32) if narrow else ev.user,  # half the size, same ids
        item=ev.item.astype(np.int32) if narrow else ev.item,
        rating=ev.rating,
        timestamp=ev.timestamp,
        item_ids=it.ids,
        titles=it.titles,
        years=it.years,
        genres=it.genres,
        genre_names=np.array(it.genre_names, dtype=np.str_),
        user_ids=us.ids,
        age=us.age,
        gender=us.gender,
        occupation=us.occupation,
        zip_code=us.zip_code,
    )
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]  # stub types allow_pickle here


def read_cache(path: str | Path) -> Dataset:
    """Load a cache file written by :func:`write_cache`; any damage raises ArtifactError."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in _CACHE_KEYS if k not in npz.files]
            if missing:
                raise ArtifactError(f"{path}: unreadable cache, missing arrays {missing}")
            a = {k: npz[k] for k in _CACHE_KEYS}
            name = str(npz["name"]) if "name" in npz.files else ML100K  # v1 files: 100K only
            has_users = bool(npz["has_users"]) if "has_users" in npz.files else True
        for key, (kinds, ndim) in _CACHE_SCHEMA.items():
            if a[key].dtype.kind not in kinds or a[key].ndim != ndim:
                raise ArtifactError(
                    f"{path}: unreadable cache, array {key!r} is {a[key].dtype}"
                    f" with {a[key].ndim} dimension(s)"
                )
        return Dataset(
            name=name,
            interactions=Interactions(
                a["user"].astype(np.int64), a["item"].astype(np.int64), a["rating"], a["timestamp"]
            ),
            items=Items(
                a["item_ids"],
                a["titles"],
                a["years"],
                a["genres"],
                tuple(a["genre_names"].tolist()),
            ),
            users=(
                Users(a["user_ids"], a["age"], a["gender"], a["occupation"], a["zip_code"])
                if has_users
                else None
            ),
        )
    except ArtifactError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError, DataError) as exc:
        raise ArtifactError(f"{path}: unreadable cache ({type(exc).__name__}: {exc})") from None
