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

import numpy as np

from mtrec.data.cache import cache_path, default_cache_dir, read_cache, write_cache
from mtrec.data.download import download
from mtrec.data.interactions import Dataset, Items
from mtrec.data.releases import (
    GENRES,
    ML100K,
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
from mtrec.io import file_digest

log = logging.getLogger("mtrec.data")

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
DOWNLOAD_TIMEOUT_S = 30.0


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
        if source in ("dir", "cache"):
            local = _local(source, release, data_dir, cache, failures)
            if local is not None:
                return local
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


def _local(
    source: str,
    release: Release,
    data_dir: str | Path | None,
    cache: Path,
    failures: list[tuple[str, str]],
) -> Dataset | None:
    """The release from a directory the user named (its errors are final) or from the
    cache; None, with the reason added to ``failures``, where that source has none."""
    if source == "dir":
        if data_dir is None:
            failures.append(("dir", "no directory named (--data-dir or MTREC_DATA_DIR)"))
            return None
        return dataclasses.replace(read_release_dir(release, data_dir), source=f"dir {data_dir}")
    if not cache.exists():
        failures.append(("cache", f"{cache} does not exist yet"))
        return None
    try:
        return dataclasses.replace(read_cache(cache), source=f"cache {cache}")
    except ArtifactError as exc:
        log.warning("ignoring unreadable cache: %s", exc)
        failures.append(("cache", str(exc)))
        return None


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
