"""Small generated datasets with known structure, written in the exact GroupLens formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mtrec.data.movielens import GENRES


def planted_ratings(
    n_users: int = 60, n_items: int = 40, per_user: int = 20, seed: int = 0
) -> np.ndarray:
    """(n, 4) int rows of user, item, rating, timestamp (ids from 1) with two planted clusters.

    Users and items each fall in two halves. A user mostly rates items of their own half
    (4 of 5 picks), giving them 4 or 5 stars, and the other half 1 or 2: both who rates
    what (retrieval) and how (rating) carry the planted structure.
    """
    rng = np.random.default_rng(seed)
    rows = []
    half = n_items // 2
    for user in range(1, n_users + 1):
        own, other = (np.arange(1, half + 1), np.arange(half + 1, n_items + 1))
        if user > n_users // 2:
            own, other = other, own
        n_own = per_user * 4 // 5
        items = np.concatenate(
            [
                rng.choice(own, size=n_own, replace=False),
                rng.choice(other, size=per_user - n_own, replace=False),
            ]
        )
        for item in rng.permutation(items):
            same = (user <= n_users // 2) == (item <= n_items // 2)
            rating = rng.integers(4, 6) if same else rng.integers(1, 3)
            rows.append((user, item, rating, 880_000_000 + len(rows)))
    return np.array(rows, dtype=np.int64)


def write_grouplens(
    directory: Path, ratings: np.ndarray, n_users: int | None = None, n_items: int | None = None
) -> Path:
    """Write ``u.data`` (tab), ``u.item`` (pipe, Latin-1), ``u.user`` (pipe) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    n_users = n_users or int(ratings[:, 0].max())
    n_items = n_items or int(ratings[:, 1].max())
    (directory / "u.data").write_text(
        "".join("\t".join(map(str, r)) + "\n" for r in ratings.tolist())
    )
    item_lines = []
    for item in range(1, n_items + 1):
        title = (
            f"Café Müller ({1950 + item})" if item == 1 else f"Movie {item} ({1950 + item % 50})"
        )
        flags = ["0"] * len(GENRES)
        flags[1 + item % (len(GENRES) - 1)] = "1"
        date = f"01-Jan-{1950 + item % 50}"
        item_lines.append("|".join([str(item), title, date, "", f"http://x/{item}", *flags]))
    (directory / "u.item").write_bytes(("\n".join(item_lines) + "\n").encode("latin-1"))
    occupations = ("student", "engineer", "artist")
    user_lines = [
        f"{u}|{20 + u % 40}|{'MF'[u % 2]}|{occupations[u % 3]}|{10000 + u}"
        for u in range(1, n_users + 1)
    ]
    (directory / "u.user").write_text("\n".join(user_lines) + "\n")
    return directory
