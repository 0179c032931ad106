"""The GroupLens MovieLens releases: where they live and how they are laid out.

* ``ml-100k``: tab-separated ``u.data``, ``|``-separated ``u.item`` (Latin-1, 19 genre
  flags) and ``u.user``; parsed with line-numbered tables (``table_ratings``), as is
  RecBole's copy of it.

* ``ml-1m``, ``ml-10m``: ``::``-separated ``ratings.dat`` and ``movies.dat`` (1M also
  ``users.dat``; 1M's movie titles are Latin-1).
* ``ml-20m``, ``ml-25m``, ``ml-32m``, ``ml-latest-small``: CSV with a header,
  ``ratings.csv`` (userId,movieId,rating,timestamp) and ``movies.csv``
  (movieId,title,genres; titles quoted where they hold commas).

Ratings are parsed by pyarrow in one multi-threaded pass (32M rows in seconds) and checked
vectorised; a malformed file is then re-read line by line only to name the first bad line.
"""

from __future__ import annotations

import dataclasses
import io
import re
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from mtrec.data.interactions import Dataset, Interactions, Items, Users
from mtrec.data.table import TextTable
from mtrec.errors import DataError

GROUPLENS_BASE = "https://files.grouplens.org/datasets/movielens/"
GENRE_ORDER = (
    "Action", "Adventure", "Animation", "Children's", "Children", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "IMAX", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
"""Genres in the order GroupLens' READMEs list them; others found in a file follow, sorted."""
OCCUPATIONS_1M = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
)  # fmt: skip
"""``users.dat`` of ML-1M codes occupations 0..20; these are the names its README gives."""

ML100K = "ml-100k"
"""The release mtrec reads by default, and the one with a PyPI mirror."""


@dataclasses.dataclass(frozen=True)
class Release:
    """One GroupLens archive: its checksum (``md5:`` or ``sha256:``) and file layout."""

    name: str
    archive: str
    checksum: str
    layout: str
    """``100k`` (u.data/u.item/u.user), ``dat`` (``::``-separated) or ``csv``."""
    encoding: str = "utf-8"
    """Of the movie titles."""

    @property
    def url(self) -> str:
        return GROUPLENS_BASE + self.archive


RELEASES: dict[str, Release] = {
    r.name: r
    for r in (
        Release("ml-100k", "ml-100k.zip", "md5:0e33842e24a9c977be4e0107933c0723", "100k"),
        # GroupLens republishes "latest" archives; this is the sha256 of the current one as a
        # public dataset card records it. A newer one fails the check: pass its checksum.
        Release(
            "ml-latest-small",
            "ml-latest-small.zip",
            "sha256:696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
            "csv",
        ),
        Release("ml-1m", "ml-1m.zip", "md5:c4d9eecfca2ab87c1945afe126590906", "dat", "latin-1"),
        Release("ml-10m", "ml-10m.zip", "md5:ce571fd55effeba0271552578f2648bd", "dat"),
        Release("ml-20m", "ml-20m.zip", "md5:cd245b17a1ae2cc31bb14903e1204af3", "csv"),
        Release("ml-25m", "ml-25m.zip", "md5:6b51fb2759a8657d3bfcbfc42b592ada", "csv"),
        Release("ml-32m", "ml-32m.zip", "md5:d472be332d4daa821edc399621853b57", "csv"),
    )
}

FILES = {
    "100k": ("u.data", "u.item", "u.user"),
    "dat": ("ratings.dat", "movies.dat"),
    "csv": ("ratings.csv", "movies.csv"),
}


def member_names(release: Release) -> tuple[str, ...]:
    """The files a release needs (1M adds ``users.dat``)."""
    names = FILES[release.layout]
    return (*names, "users.dat") if release.name == "ml-1m" else names


def parse_release(release: Release, files: dict[str, bytes], where: str) -> Dataset:
    """Parse the member files of a release (any layout)."""
    base = where.rstrip("/")
    if release.layout == "100k":  # u.item is Latin-1; the others ASCII, decoded the same
        return parse_grouplens({k: v.decode("latin-1") for k, v in files.items()}, where=base)
    if release.layout == "dat":
        ratings = _ratings(files["ratings.dat"], f"{base}/ratings.dat", sep="::", header=False)
        items = _movies_dat(files["movies.dat"], f"{base}/movies.dat", release.encoding)
        users = (
            _users_dat(files["users.dat"], f"{base}/users.dat") if "users.dat" in files else None
        )
    else:
        ratings = _ratings(files["ratings.csv"], f"{base}/ratings.csv", sep=",", header=True)
        items = _movies_csv(files["movies.csv"], f"{base}/movies.csv")
        users = None
    return Dataset(name=release.name, interactions=ratings, items=items, users=users)


GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)


def table_ratings(table: TextTable) -> Interactions:
    """Ratings of the 100K layout (u.data, RecBole's .inter): user, item, rating, time."""
    user = table.ints(0, "user_id")
    item = table.ints(1, "item_id")
    rating = table.floats(2, "rating")
    table.check_range(rating, 2, 1, 5, "rating")
    table.check_range(user, 0, 1, np.iinfo(np.int32).max, "user_id")
    table.check_range(item, 1, 1, np.iinfo(np.int32).max, "item_id")
    timestamp = table.seconds(3, "timestamp")
    return Interactions(user, item, rating, timestamp)


def year_at_end(text: str) -> int:
    """The year a 100K release date ("01-Jan-1995") or a RecBole year column ends with."""
    digits = text.strip()[-4:]
    return int(digits) if digits.isdigit() else 0


def parse_grouplens(texts: dict[str, str], where: str | Path) -> Dataset:
    """Parse the text of GroupLens ``u.data``, ``u.item`` and ``u.user``."""
    base = str(where).rstrip("/")
    ratings = TextTable(texts["u.data"], "\t", 4, f"{base}/u.data")
    items = TextTable(texts["u.item"], "|", 5 + len(GENRES), f"{base}/u.item")
    users = TextTable(texts["u.user"], "|", 5, f"{base}/u.user")
    flags = np.array([row[5:] for row in items.rows])
    if not np.isin(flags, ("0", "1")).all():
        pos = int(np.flatnonzero(~np.isin(flags, ("0", "1")).all(axis=1))[0])
        raise DataError(
            "expected genre flags 0 or 1", path=items.path, line=items.lines[pos], field="genres"
        )
    titles = items.column(1)
    years = [
        year_at_end(date) or year_at_end(title.rstrip(")"))
        for date, title in zip(items.column(2), titles, strict=True)
    ]
    return Dataset(
        name="ml-100k",
        interactions=table_ratings(ratings),
        items=Items(
            items.ints(0, "item_id"),
            np.array(titles),
            np.array(years, dtype=np.int32),
            flags == "1",
            GENRES,
        ),
        users=table_users(users),
    )


def table_users(table: TextTable) -> Users:
    return Users(
        table.ints(0, "user_id"),
        table.ints(1, "age").astype(np.int32),
        np.array(table.column(2)),
        np.array(table.column(3)),
        np.array(table.column(4)),
    )


RATING_COLUMNS = ("userId", "movieId", "rating", "timestamp")


def _ratings(data: bytes, path: str, sep: str, header: bool) -> Interactions:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if header:
        first = data[: data.find(b"\n")].decode("utf-8", "replace").strip()
        if first.split(",") != list(RATING_COLUMNS):
            raise DataError(
                f"expected the header {','.join(RATING_COLUMNS)}, got {first[:80]!r}",
                path=path,
                line=1,
            )
    body = data.replace(b"::", b"\t") if sep == "::" else data
    try:
        table = pacsv.read_csv(
            io.BytesIO(body),
            read_options=pacsv.ReadOptions(
                column_names=list(RATING_COLUMNS), skip_rows=int(header)
            ),
            parse_options=pacsv.ParseOptions(delimiter="\t" if sep == "::" else ","),
            convert_options=pacsv.ConvertOptions(
                column_types={
                    "userId": pa.int64(),
                    "movieId": pa.int64(),
                    "rating": pa.float32(),
                    "timestamp": pa.int64(),
                }
            ),
        )
    except pa.ArrowInvalid:
        _first_bad_line(data, path, sep, header)
        raise  # _first_bad_line always raises; this keeps type checkers content
    columns = [table.column(c).to_numpy() for c in RATING_COLUMNS]
    if any(table.column(c).null_count for c in RATING_COLUMNS):
        _first_bad_line(data, path, sep, header)
    user, item, rating, timestamp = columns
    _check_ranges(path, 1 + int(header), rating=rating, userId=user, movieId=item)
    return Interactions(user, item, rating.astype(np.float32), timestamp)


def _check_ranges(path: str, offset: int, **columns: NDArray[Any]) -> None:
    """Ratings in [0.5, 5] and ids in [1, int32 max], or an error naming the first bad
    line (row 0 is on line ``offset``) and the field."""
    for field, values in columns.items():
        lo, hi = (0.5, 5.0) if field == "rating" else (1, np.iinfo(np.int32).max)
        bad = np.flatnonzero((values < lo) | (values > hi))
        if len(bad):
            raise DataError(
                f"expected a value in [{lo:g}, {hi:g}], got {values[bad[0]]:g}"
                + (f" ({len(bad)} such rows)" if len(bad) > 1 else ""),
                path=path,
                line=int(bad[0]) + offset,
                field=field,
            )


def _first_bad_line(data: bytes, path: str, sep: str, header: bool) -> None:
    """Name the first line that does not parse (the slow path, taken only on bad input)."""
    table = TextTable(data.decode("utf-8", "replace"), sep, 4, path, header=header)
    errors: list[DataError] = []
    for index, (field, parse) in enumerate(
        zip(RATING_COLUMNS, (table.ints, table.ints, table.floats, table.ints), strict=True)
    ):
        try:
            parse(index, field)
        except DataError as exc:
            errors.append(exc)
    if errors:  # each column's first bad line: the earliest of them
        raise min(errors, key=lambda exc: exc.line or 0)
    raise DataError("unparsable ratings file", path=path)


_YEAR = re.compile(r"\((\d{4})(?:[-–]\d{0,4})?\)\s*$")


def _year_of(title: str) -> int:
    found = _YEAR.search(title)
    return int(found.group(1)) if found else 0


def catalogue_items(
    ids: NDArray[Any], titles: list[str], genres: list[str], years: NDArray[Any] | None = None
) -> Items:
    """Items from per-item titles and ``|``-separated genre lists (GroupLens' known genres
    first, in its order; others after, sorted). Without ``years``, a trailing ``(1995)``
    (or ``(1995-2000)``) in the title gives the year, 0 where there is none."""
    lists = [[g for g in text.split("|") if g and g != "(no genres listed)"] for text in genres]
    found = {g for gs in lists for g in gs}
    names = tuple(g for g in GENRE_ORDER if g in found) + tuple(sorted(found - set(GENRE_ORDER)))
    column = {g: j for j, g in enumerate(names)}
    flags = np.zeros((len(ids), len(names)), dtype=bool)
    for row, gs in enumerate(lists):
        flags[row, [column[g] for g in gs]] = True
    if years is None:
        years = np.array([_year_of(title) for title in titles], dtype=np.int32)
    stripped = np.array([t.strip() for t in titles], dtype=np.str_)
    return Items(ids, stripped, years.astype(np.int32), flags, names)


def _movies_dat(data: bytes, path: str, encoding: str) -> Items:
    table = TextTable(data.decode(encoding, "replace"), "::", 3, path)
    return catalogue_items(table.ints(0, "MovieID"), table.column(1), table.column(2))


def _users_dat(data: bytes, path: str) -> Users:
    table = TextTable(data.decode("latin-1", "replace"), "::", 5, path)
    codes = table.ints(3, "Occupation")
    table.check_range(codes, 3, 0, len(OCCUPATIONS_1M) - 1, "Occupation")
    return Users(
        table.ints(0, "UserID"),
        table.ints(2, "Age").astype(np.int32),
        np.array(table.column(1), dtype=np.str_),
        np.array(OCCUPATIONS_1M, dtype=np.str_)[codes],
        np.array(table.column(4), dtype=np.str_),
    )


def _movies_csv(data: bytes, path: str) -> Items:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    try:
        table = pacsv.read_csv(
            io.BytesIO(data),
            convert_options=pacsv.ConvertOptions(
                column_types={"movieId": pa.int64(), "title": pa.string(), "genres": pa.string()}
            ),
        )
    except pa.ArrowInvalid as exc:
        raise DataError(f"malformed: {str(exc).splitlines()[0]}", path=path) from None
    missing = [c for c in ("movieId", "title", "genres") if c not in table.column_names]
    if missing:
        raise DataError(f"missing columns {missing}", path=path, line=1)
    ids = table.column("movieId")
    if ids.null_count:
        row = int(np.flatnonzero(ids.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataError("missing movie id", path=path, line=row + 2, field="movieId")
    titles = [t or "" for t in table.column("title").to_pylist()]
    genres = [g or "" for g in table.column("genres").to_pylist()]
    return catalogue_items(ids.to_numpy(), titles, genres)
