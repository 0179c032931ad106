"""Stage 5, evaluation: pure metrics, and the protocol that applies them to a model."""

from mtrec.evaluate.metrics import rmse, top_k_hits
from mtrec.evaluate.protocol import EvalReport, evaluate, predict_ratings, top_k_items

__all__ = ["EvalReport", "evaluate", "predict_ratings", "rmse", "top_k_hits", "top_k_items"]
