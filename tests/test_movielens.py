"""MovieLens parsing, errors, cache and the download path, on files the tests write."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from synthetic import planted_ratings

from mtrec.data.movielens import (
    cache_path,
    load_movielens,
    read_cache,
    read_grouplens_dir,
    read_recbole_wheel,
    write_cache,
)
from mtrec.errors import ArtifactError, DataError, SourceError

NO_NETWORK = ("dir", "cache", "grouplens")


def test_parses_grouplens_layout_with_latin1_titles(tiny_dir: Path) -> None:
    ds = read_grouplens_dir(tiny_dir)
    ratings = planted_ratings()
    assert len(ds.interactions) == len(ratings)
    assert np.array_equal(ds.interactions.user, ratings[:, 0])
    assert np.array_equal(ds.interactions.rating, ratings[:, 2].astype(np.float32))
    assert ds.interactions.timestamp.dtype == np.int64
    assert ds.items is not None and ds.users is not None
    assert ds.items.titles[0] == "Café Müller (1951)"
    assert ds.items.years[0] == 1951 and ds.items.years[1] == 1952
    assert ds.items.genres.shape == (40, 19) and ds.items.genres.sum(axis=1).tolist() == [1] * 40
    assert ds.users.occupation[0] == "engineer" and ds.users.age[0] == 21
    assert len(ds.user_ids()) == 60 and len(ds.item_ids()) == 40


def _corrupt(path: Path, line: int, text: str) -> None:
    lines = path.read_bytes().decode("latin-1").splitlines()
    lines[line - 1] = text
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))


@pytest.mark.parametrize(
    ("fname", "line", "text", "message"),
    [
        ("u.data", 7, "1\t2\t3", r"u\.data:7: expected 4 tab-separated fields, got 3"),
        (
            "u.data",
            9,
            "1\t2\tx\t880000000",
            r"u\.data:9, field 'rating': expected a number, got 'x'",
        ),
        (
            "u.data",
            3,
            "1\t2\t6\t880000000",
            r"u\.data:3, field 'rating': expected a value in \[1, 5\], got 6",
        ),
        ("u.data", 4, "1\t2\t0\t880000000", r"u\.data:4, field 'rating'"),
        (
            "u.data",
            5,
            "a\t2\t3\t880000000",
            r"u\.data:5, field 'user_id': expected an integer, got 'a'",
        ),
        ("u.item", 2, "2|Two|01-Jan-1990", r"u\.item:2: expected 24 pipe-separated fields, got 3"),
        ("u.user", 4, "4|x|M|student|1", r"u\.user:4, field 'age': expected an integer"),
    ],
)
def test_malformed_files_name_file_line_and_field(
    tiny_dir: Path, fname: str, line: int, text: str, message: str
) -> None:
    _corrupt(tiny_dir / fname, line, text)
    with pytest.raises(DataError, match=message) as info:
        read_grouplens_dir(tiny_dir)
    assert "\n" not in str(info.value)
    assert info.value.path is not None and info.value.path.endswith(fname)


def test_missing_file_is_named(tiny_dir: Path) -> None:
    (tiny_dir / "u.user").unlink()
    with pytest.raises(DataError, match=r"u\.user: cannot read"):
        read_grouplens_dir(tiny_dir)
    with pytest.raises(DataError, match="not a directory"):
        read_grouplens_dir(tiny_dir / "nope")


def test_named_directory_wins_and_its_errors_are_final(tiny_dir: Path, tmp_path: Path) -> None:
    ds = load_movielens(data_dir=tiny_dir, cache_dir=tmp_path / "cache")
    assert len(ds.interactions) == 1200 and ds.source == f"dir {tiny_dir}"
    assert not (tmp_path / "cache").exists()  # a user's own directory is not copied
    _corrupt(tiny_dir / "u.data", 2, "bad")
    with pytest.raises(DataError, match=r"u\.data:2"):
        load_movielens(data_dir=tiny_dir, cache_dir=tmp_path / "cache")


def test_cache_round_trip_and_unreadable_cache(tiny_dir: Path, tmp_path: Path) -> None:
    ds = read_grouplens_dir(tiny_dir)
    path = tmp_path / "c.npz"
    write_cache(ds, path)
    again = read_cache(path)
    assert np.array_equal(again.interactions.item, ds.interactions.item)
    assert again.items is not None and again.items.titles[0] == "Café Müller (1951)"
    assert again.items.genre_names == ds.items.genre_names  # type: ignore[union-attr]
    path.write_bytes(path.read_bytes()[:500])  # truncated
    with pytest.raises(ArtifactError, match=r"c\.npz: unreadable cache"):
        read_cache(path)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left


def test_unreadable_cache_is_reported_when_no_other_source_works(tmp_path: Path) -> None:
    cache = cache_path(tmp_path)
    cache.write_bytes(b"garbage")
    with pytest.raises(SourceError) as info:
        load_movielens(cache_dir=tmp_path, sources=("cache",))
    assert str(cache) in str(info.value) and "unreadable cache" in str(info.value)


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A static file server on 127.0.0.1 (port chosen by the OS) over a fresh folder."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


def _grouplens_zip(directory: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for fname in ("u.data", "u.item", "u.user", "README"):
            data = (directory / fname).read_bytes() if fname != "README" else b"readme"
            archive.writestr(f"ml-100k/{fname}", data)
    return buf.getvalue()


def test_download_with_good_checksum_is_cached(
    http_server: tuple[str, Path], tiny_dir: Path, tmp_path: Path
) -> None:
    url, root = http_server
    payload = _grouplens_zip(tiny_dir)
    (root / "ml-100k.zip").write_bytes(payload)
    md5 = hashlib.md5(payload).hexdigest()
    cache_dir = tmp_path / "cache"
    ds = load_movielens(
        cache_dir=cache_dir,
        sources=NO_NETWORK,
        grouplens_url=f"{url}/ml-100k.zip",
        grouplens_md5=md5,
    )
    assert len(ds.interactions) == 1200
    assert ds.source == f"grouplens {url}/ml-100k.zip"
    assert cache_path(cache_dir).exists()
    (root / "ml-100k.zip").unlink()  # the next load must come from the cache
    again = load_movielens(
        cache_dir=cache_dir, sources=NO_NETWORK, grouplens_url=f"{url}/ml-100k.zip"
    )
    assert np.array_equal(again.interactions.user, ds.interactions.user)
    assert again.source == f"cache {cache_path(cache_dir)}"


def test_download_with_bad_checksum_caches_nothing(
    http_server: tuple[str, Path], tiny_dir: Path, tmp_path: Path
) -> None:
    url, root = http_server
    (root / "ml-100k.zip").write_bytes(_grouplens_zip(tiny_dir))
    cache_dir = tmp_path / "cache"
    with pytest.raises(SourceError, match="checksum mismatch") as info:
        load_movielens(
            cache_dir=cache_dir,
            sources=NO_NETWORK,
            grouplens_url=f"{url}/ml-100k.zip",
            grouplens_md5="0" * 32,
        )
    message = str(info.value)
    assert "[dir]" in message and "[cache]" in message and "[grouplens]" in message
    assert not cache_dir.exists() or list(cache_dir.iterdir()) == []


def test_every_source_failing_lists_each(http_server: tuple[str, Path], tmp_path: Path) -> None:
    url, _root = http_server
    with pytest.raises(SourceError) as info:
        load_movielens(
            cache_dir=tmp_path / "c", sources=NO_NETWORK, grouplens_url=f"{url}/missing.zip"
        )
    text = str(info.value)
    assert "no directory named" in text and "does not exist yet" in text and "404" in text


def test_wheel_with_wrong_checksum_is_refused(tmp_path: Path) -> None:
    wheel = tmp_path / "recbole-1.2.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("recbole/dataset_example/ml-100k/ml-100k.inter", "user_id:token\n")
    with pytest.raises(DataError, match="checksum mismatch: sha256"):
        read_recbole_wheel(wheel)


def test_unknown_dataset_or_source_is_an_error() -> None:
    with pytest.raises(DataError, match="unknown dataset"):
        load_movielens("ml-7k")
    with pytest.raises(DataError, match="unknown source"):
        load_movielens(sources=("ftp",))


@pytest.mark.slow
def test_real_movielens_100k(ml100k) -> None:  # type: ignore[no-untyped-def]
    ds = ml100k
    assert len(ds.interactions) == 100_000
    assert len(ds.user_ids()) == 943 and len(ds.item_ids()) == 1682
    assert ds.items.titles[0] == "Toy Story (1995)"
    assert ds.items.genres_of(0) == ["Animation", "Children's", "Comedy"]
    assert set(np.unique(ds.interactions.rating).tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert ds.interactions.user[0] == 196 and ds.interactions.item[0] == 242  # u.data order


def test_timestamps_are_read_exactly(tmp_path: Path) -> None:
    # float32 once rounded ML-100K's first timestamp, 881250949, to 881250944
    from synthetic import write_grouplens

    rows = np.array([[1, 1, 3, 881250949], [1, 2, 4, 891717742], [2, 1, 5, 2**33 + 1]])
    ds = read_grouplens_dir(write_grouplens(tmp_path / "ml", rows))
    assert ds.interactions.timestamp.tolist() == [881250949, 891717742, 2**33 + 1]


def test_a_host_that_cannot_be_reached_fails_at_once_without_warnings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offline, GroupLens's name does not resolve: that is no interrupted download to try
    four times, each with a warning, before the next source; one attempt, one reason."""
    import socket

    from mtrec.data import download as downloads

    with socket.socket() as probe:  # a port nothing listens on: the connection is refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    calls: list[str] = []
    real = downloads._fetch
    monkeypatch.setattr(downloads, "_fetch", lambda *args: calls.append("x") or real(*args))
    caplog.set_level("WARNING", logger="mtrec.data")
    with pytest.raises(OSError, match="cannot be reached"):
        downloads.download(f"http://127.0.0.1:{port}/ml-100k.zip", tmp_path / "a.zip", "0" * 32)
    assert calls == ["x"] and not caplog.records
