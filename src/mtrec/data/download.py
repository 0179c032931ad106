"""Downloads that survive interruption: resume with an HTTP Range request, else restart.

The bytes go to ``<dest>.part``; only a file whose checksum matches is renamed to
``dest``, so nothing half-downloaded or corrupt is ever taken for the archive. A ``.part``
left by a killed run is continued by the next one (when the server honours ``Range``;
otherwise the download starts over).
"""

from __future__ import annotations

import http.client
import logging
import os
import socket
import urllib.error
import urllib.request
from pathlib import Path

from mtrec.errors import DataError
from mtrec.io import file_digest

log = logging.getLogger("mtrec.data")

CHUNK = 1 << 20
ATTEMPTS = 4


def parse_checksum(checksum: str) -> tuple[str, str]:
    """``"md5:<hex>"``, ``"sha256:<hex>"`` or a bare MD5 (as GroupLens publishes)."""
    algorithm, _, digest = checksum.rpartition(":")
    algorithm = algorithm or "md5"
    if algorithm not in ("md5", "sha256"):
        raise DataError(f"unknown checksum algorithm {algorithm!r}", field="checksum")
    return algorithm, digest.lower()


def download(url: str, dest: str | Path, checksum: str, timeout: float = 30.0) -> Path:
    """Fetch ``url`` to ``dest`` (verified), resuming a ``.part`` file where one exists.

    Raises ``DataError`` on a checksum mismatch (the partial file is deleted: the next
    run starts clean) and ``OSError`` when the server cannot be reached after retries
    (the partial file is kept for the next run to resume).
    """
    dest = Path(dest)
    algorithm, expected = parse_checksum(checksum)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    error: Exception | None = None
    for attempt in range(1, ATTEMPTS + 1):
        try:
            _fetch(url, part, timeout)
            break
        except (urllib.error.HTTPError, urllib.error.URLError) as exc:
            if isinstance(exc, urllib.error.HTTPError) and exc.code not in (
                408,
                429,
                500,
                502,
                503,
                504,
            ):
                raise  # 404 and the like: retrying will not help
            if _unreachable(exc):  # offline, or no such host: not an interruption
                raise OSError(f"{url} cannot be reached: {exc.reason}") from exc
            error = exc
        except (http.client.IncompleteRead, ConnectionError, TimeoutError) as exc:
            error = exc
        log.warning("download of %s interrupted (attempt %d): %s", url, attempt, error)
    else:
        raise OSError(f"download of {url} failed after {ATTEMPTS} attempts: {error}")
    digest = file_digest(part, algorithm)
    if digest != expected:
        part.unlink()
        raise DataError(f"checksum mismatch: {algorithm} {digest}, expected {expected}", path=url)
    os.replace(part, dest)
    return dest


def _unreachable(error: urllib.error.URLError) -> bool:
    """Whether the host's name does not resolve or it refuses the connection: a retry a
    moment later would only print the same failure again (it did, four times, offline)."""
    return isinstance(error.reason, socket.gaierror | ConnectionRefusedError)


def _fetch(url: str, part: Path, timeout: float) -> None:
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        response = urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=timeout
        )
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing past our end: the .part is whole (or bogus)
            return
        raise
    with response:
        resumed = have and response.status == 206 and _range_start(response) == have
        if have and not resumed:
            log.info("server did not resume %s; starting over", url)
        with open(part, "ab" if resumed else "wb") as fh:
            while block := response.read(CHUNK):
                fh.write(block)
            length = response.headers.get("Content-Length")
            written = fh.tell() - (have if resumed else 0)
        if length is not None and written < int(length):
            raise http.client.IncompleteRead(b"", int(length) - written)


def _range_start(response: http.client.HTTPResponse) -> int | None:
    content_range = response.headers.get("Content-Range", "")  # "bytes 100-199/200"
    try:
        return int(content_range.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None
