"""Every MovieLens release format, parsed from files written here in the exact GroupLens
layout, and the resumable download against a local HTTP server that honours Range."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from mtrec.data.download import download
from mtrec.data.movielens import cache_path, load_movielens
from mtrec.data.releases import RELEASES
from mtrec.errors import DataError, SourceError

RATINGS = [(1, 10, 5.0, 978300760), (1, 20, 3.5, 978302109), (2, 10, 0.5, 978301968)]
DAT_MOVIES_1M = "10::Café Society (1995)::Comedy|Drama\n20::Heat (1995)::Action|Crime|Thriller\n"
USERS_1M = "1::F::1::10::48067\n2::M::56::16::70072\n"
CSV_MOVIES = (
    "movieId,title,genres\n"
    '10,"American President, The (1995)",Comedy|Drama|Romance\n'
    "20,Babylon 5 ,(no genres listed)\n"
)


def _dat_ratings() -> str:
    return "".join(f"{u}::{i}::{r:g}::{t}\n" for u, i, r, t in RATINGS)


def _csv_ratings() -> str:
    return "userId,movieId,rating,timestamp\n" + "".join(
        f"{u},{i},{r:g},{t}\n" for u, i, r, t in RATINGS
    )


def _write(directory: Path, files: dict[str, str], encoding: str = "utf-8") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_bytes(text.encode(encoding))
    return directory


def _check_ratings(ds_interactions: object) -> None:
    ev = ds_interactions
    assert ev.user.tolist() == [1, 1, 2]  # type: ignore[attr-defined]
    assert ev.item.tolist() == [10, 20, 10]  # type: ignore[attr-defined]
    assert ev.rating.tolist() == [5.0, 3.5, 0.5]  # type: ignore[attr-defined]
    assert ev.timestamp.tolist() == [978300760, 978302109, 978301968]  # type: ignore[attr-defined]


def test_ml1m_dat_with_latin1_titles_and_users(tmp_path: Path) -> None:
    d = _write(
        tmp_path / "ml-1m",
        {"ratings.dat": _dat_ratings(), "movies.dat": DAT_MOVIES_1M, "users.dat": USERS_1M},
        encoding="latin-1",
    )
    ds = load_movielens("ml-1m", data_dir=d, sources=("dir",))
    _check_ratings(ds.interactions)
    assert ds.name == "ml-1m" and ds.items is not None and ds.users is not None
    assert ds.items.titles.tolist() == ["Café Society (1995)", "Heat (1995)"]
    assert ds.items.years.tolist() == [1995, 1995]
    assert ds.items.genres_of(1) == ["Action", "Crime", "Thriller"]
    assert ds.users.occupation.tolist() == ["K-12 student", "self-employed"]
    assert ds.users.age.tolist() == [1, 56] and ds.users.gender.tolist() == ["F", "M"]


def test_ml10m_dat_utf8_without_users(tmp_path: Path) -> None:
    movies = "10::Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)::Comedy|Romance\n"
    movies += "20::Heat (1995)::Action\n"
    d = _write(tmp_path / "ml-10M100K", {"ratings.dat": _dat_ratings(), "movies.dat": movies})
    ds = load_movielens("ml-10m", data_dir=d, sources=("dir",))
    _check_ratings(ds.interactions)
    assert ds.users is None and ds.items is not None
    assert ds.items.titles[0].startswith("Amélie") and ds.items.years.tolist() == [2001, 1995]


@pytest.mark.parametrize("name", ["ml-latest-small", "ml-20m", "ml-25m", "ml-32m"])
def test_csv_releases_quoted_titles_and_no_genres(tmp_path: Path, name: str) -> None:
    d = _write(tmp_path / name, {"ratings.csv": _csv_ratings(), "movies.csv": CSV_MOVIES})
    ds = load_movielens(name, data_dir=d, sources=("dir",))
    _check_ratings(ds.interactions)
    assert ds.items is not None
    assert ds.items.titles.tolist() == ["American President, The (1995)", "Babylon 5"]
    assert ds.items.years.tolist() == [1995, 0]
    assert ds.items.genre_names == ("Comedy", "Drama", "Romance")
    assert ds.items.genres.sum(axis=1).tolist() == [3, 0]


@pytest.mark.parametrize(
    ("name", "files", "message"),
    [
        ("ml-1m", {"ratings.dat": "1::10::5\n"}, r"ratings\.dat:1: expected 4 '::'-separated"),
        ("ml-1m", {"ratings.dat": "1::10::5::9\n1::x::4::9\n"}, r"ratings\.dat:2, field 'movieId'"),
        ("ml-1m", {"ratings.dat": "1::10::5::9\n1::10::7::9\n"}, r":2, field 'rating'.*got 7"),
        (  # the earliest bad line, whichever column it is in
            "ml-1m",
            {"ratings.dat": "1::10::5::9\n1::10::x::9\n1::y::4::9\n"},
            r"ratings\.dat:2, field 'rating': expected a number, got 'x'",
        ),
        ("ml-1m", {"users.dat": "1::F::1::99::48067\n"}, r"users\.dat:1, field 'Occupation'"),
        ("ml-1m", {"movies.dat": "10::Heat (1995)\n"}, r"movies\.dat:1: expected 3"),
        ("ml-25m", {"ratings.csv": "user,item\n1,2\n"}, r"ratings\.csv:1: expected the header"),
        (
            "ml-25m",
            {"ratings.csv": "userId,movieId,rating,timestamp\n1,2,4,5\n1,2,four,5\n"},
            r"ratings\.csv:3, field 'rating': expected a number, got 'four'",
        ),
        ("ml-25m", {"movies.csv": "movieId,name\n1,x\n"}, r"movies\.csv:1: missing columns"),
    ],
)
def test_malformed_files_name_file_line_and_field(
    tmp_path: Path, name: str, files: dict[str, str], message: str
) -> None:
    good = (
        {"ratings.dat": _dat_ratings(), "movies.dat": DAT_MOVIES_1M, "users.dat": USERS_1M}
        if name == "ml-1m"
        else {"ratings.csv": _csv_ratings(), "movies.csv": CSV_MOVIES}
    )
    d = _write(tmp_path / name, {**good, **files}, encoding="latin-1")
    with pytest.raises(DataError, match=message):
        load_movielens(name, data_dir=d, sources=("dir",))


def test_every_release_has_a_pinned_checksum_and_grouplens_url() -> None:
    assert set(RELEASES) == {
        "ml-100k", "ml-latest-small", "ml-1m", "ml-10m", "ml-20m", "ml-25m", "ml-32m"
    }  # fmt: skip
    for release in RELEASES.values():
        algorithm, _, digest = release.checksum.partition(":")
        assert algorithm in ("md5", "sha256")
        assert len(digest) == (32 if algorithm == "md5" else 64) and int(digest, 16) >= 0
        assert release.url == f"https://files.grouplens.org/datasets/movielens/{release.archive}"


class RangeServer(http.server.ThreadingHTTPServer):
    """Serves one payload; honours ``Range: bytes=N-``; can cut the first response short."""

    def __init__(self, payload: bytes, cut_after: int | None, ranges: bool = True) -> None:
        self.payload, self.cut_after, self.ranges = payload, cut_after, ranges
        self.requests: list[str | None] = []
        super().__init__(("127.0.0.1", 0), _RangeHandler)


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    server: RangeServer

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        server = self.server
        header = self.headers.get("Range")
        server.requests.append(header)
        start = int(header.split("=")[1].rstrip("-")) if header and server.ranges else 0
        body = server.payload[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(server.payload) - 1}/*")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if server.cut_after is not None:
            body, server.cut_after = body[: server.cut_after], None  # drop the link once
            self.wfile.write(body)
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def range_server() -> Iterator[callable]:  # type: ignore[valid-type]
    servers: list[RangeServer] = []

    def start(payload: bytes, cut_after: int | None = None, ranges: bool = True) -> RangeServer:
        server = RangeServer(payload, cut_after, ranges)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _url(server: RangeServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/ml-25m.zip"


def test_interrupted_download_resumes_with_range(range_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    payload = bytes(range(256)) * 4000
    server = range_server(payload, cut_after=300_000)
    dest = tmp_path / "ml-25m.zip"
    got = download(_url(server), dest, "md5:" + hashlib.md5(payload).hexdigest())
    assert got.read_bytes() == payload and not (tmp_path / "ml-25m.zip.part").exists()
    assert server.requests == [None, "bytes=300000-"]


def test_partial_file_from_a_killed_run_is_continued(range_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    payload = b"movielens" * 10_000
    (tmp_path / "ml-25m.zip.part").write_bytes(payload[:12_345])
    server = range_server(payload)
    download(_url(server), tmp_path / "ml-25m.zip", "sha256:" + hashlib.sha256(payload).hexdigest())
    assert (tmp_path / "ml-25m.zip").read_bytes() == payload
    assert server.requests == ["bytes=12345-"]


def test_server_without_range_support_restarts_cleanly(range_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    payload = b"abc" * 50_000
    (tmp_path / "ml-25m.zip.part").write_bytes(b"stale bytes from another file")
    server = range_server(payload, ranges=False)
    download(_url(server), tmp_path / "ml-25m.zip", hashlib.md5(payload).hexdigest())
    assert (tmp_path / "ml-25m.zip").read_bytes() == payload


def test_checksum_mismatch_deletes_the_partial_file(range_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = range_server(b"not the archive")
    with pytest.raises(DataError, match="checksum mismatch: md5"):
        download(_url(server), tmp_path / "ml-25m.zip", "md5:" + "0" * 32)
    assert list(tmp_path.iterdir()) == []


def _release_zip(top: str, files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, text in files.items():
            archive.writestr(f"{top}/{name}", text.encode())
    return buf.getvalue()


def test_grouplens_source_downloads_parses_caches_and_drops_the_zip(  # type: ignore[no-untyped-def]
    range_server, tmp_path: Path
) -> None:
    payload = _release_zip("ml-25m", {"ratings.csv": _csv_ratings(), "movies.csv": CSV_MOVIES})
    server = range_server(payload, cut_after=100)
    cache_dir = tmp_path / "cache"
    ds = load_movielens(
        "ml-25m",
        cache_dir=cache_dir,
        sources=("cache", "grouplens"),
        grouplens_url=_url(server),
        grouplens_md5=hashlib.md5(payload).hexdigest(),
    )
    _check_ratings(ds.interactions)
    assert sorted(p.name for p in cache_dir.iterdir()) == [cache_path(cache_dir, "ml-25m").name]
    again = load_movielens("ml-25m", cache_dir=cache_dir, sources=("cache",))
    assert again.name == "ml-25m" and again.users is None and again.items is not None
    assert np.array_equal(again.interactions.rating, ds.interactions.rating)
    assert again.items.titles.tolist() == ds.items.titles.tolist()  # type: ignore[union-attr]


def test_pypi_mirror_is_only_for_100k(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"\[pypi\] only ml-100k has a PyPI mirror"):
        load_movielens("ml-1m", cache_dir=tmp_path, sources=("cache", "pypi"))


def test_compare_runs_on_another_release(tmp_path: Path) -> None:
    from synthetic import planted_ratings
    from typer.testing import CliRunner

    from mtrec.cli import app

    ratings = planted_ratings()
    movies = "".join(f"{i}::Movie {i} (19{50 + i % 40})::Drama\n" for i in range(1, 41))
    users = "".join(f"{u}::M::25::{u % 21}::00000\n" for u in range(1, 61))
    lines = "".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in ratings)
    d = _write(tmp_path / "ml-1m", {"ratings.dat": lines, "movies.dat": movies, "users.dat": users})
    result = CliRunner().invoke(
        app,
        ["compare", "--dataset", "ml-1m", "--data-dir", str(d), "-o", str(tmp_path / "out"),
         "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    assert doc["dataset"] == "ml-1m" and len(doc["models"]) == 3
