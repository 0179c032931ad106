"""The data stage: raw files -> validated columnar interactions and metadata."""

from mtrec.data.files import ColumnMap, ItemColumns, load_interactions
from mtrec.data.interactions import Dataset, Interactions, Items, Users
from mtrec.data.movielens import load_movielens
from mtrec.data.split import (
    GIVEN,
    SPLITS,
    Split,
    make_split,
    no_holdout,
    random_split,
    split_fingerprint,
    temporal_split,
)
from mtrec.data.synth import synthesize

__all__ = [
    "GIVEN",
    "SPLITS",
    "ColumnMap",
    "Dataset",
    "Interactions",
    "ItemColumns",
    "Items",
    "Split",
    "Users",
    "load_interactions",
    "load_movielens",
    "make_split",
    "no_holdout",
    "random_split",
    "split_fingerprint",
    "synthesize",
    "temporal_split",
]  # fmt: skip
