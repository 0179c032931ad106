"""Experiments built on the pipeline: the reference comparison (``mtrec compare``), the
tasks' trade-off (``mtrec sweep``), and users the model never saw (``new_users``)."""

from mtrec.experiments.compare import compare, compare_seeds, weightings
from mtrec.experiments.new_users import evaluate_new_users, split_new_users
from mtrec.experiments.results import RANKING_KEYS, CompareResult, ModelResult
from mtrec.experiments.sweep import SweepPoint, sweep

__all__ = [
    "RANKING_KEYS", "CompareResult", "ModelResult", "SweepPoint", "compare", "compare_seeds",
    "evaluate_new_users", "split_new_users", "sweep", "weightings",
]  # fmt: skip
