"""The evaluation stage: pure metrics, the protocols that apply them, and the lists compared."""

from mtrec.evaluate.lists import SERVED, user_lists
from mtrec.evaluate.metrics import mae, ranking_metrics, rmse, top_k_hits
from mtrec.evaluate.protocol import (
    EvalProtocol,
    EvalReport,
    ListReport,
    evaluate,
    list_reports,
    predict_ratings,
    ranking_report,
    rating_report,
    top_k_items,
)
from mtrec.evaluate.sample import EVAL_USERS, EvaluatedUsers, sample_users

__all__ = [
    "EVAL_USERS",
    "SERVED",
    "EvalProtocol",
    "EvalReport",
    "EvaluatedUsers",
    "ListReport",
    "evaluate",
    "list_reports",
    "mae",
    "predict_ratings",
    "ranking_metrics",
    "ranking_report",
    "rating_report",
    "rmse",
    "sample_users",
    "top_k_hits",
    "top_k_items",
    "user_lists",
]  # fmt: skip
