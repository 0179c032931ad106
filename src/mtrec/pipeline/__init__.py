"""One pipeline for every run: prepare the data, build a model, fit it, evaluate it.

``prepare`` does what every run needs before training (split, vocabularies, rating
scale, encoded rows, each user's seen items, and the configs adjusted to the data:
side features it has no metadata for dropped, the rating task off without ratings);
``fit_and_evaluate`` trains one model and measures it under both protocols.
``train_model`` (``mtrec train``), ``compare`` and ``sweep`` are all built on these two.

The files follow a run: ``prepare``, ``fit``, ``stages`` (the ranking stage fitted on
training rows and assembled), ``metrics`` (held-out measures), ``run`` (``train_model``
in named steps), ``saved`` (a saved model measured again).
"""

from mtrec.pipeline.fit import Fitted, fit_and_evaluate, fit_prepared, fit_side_by_side
from mtrec.pipeline.metrics import held_out_report, served_lists, served_ratings, served_summary
from mtrec.pipeline.prepare import Prepared, build_model, held_out_rows, prepare
from mtrec.pipeline.run import PHASE_LOG, train_model
from mtrec.pipeline.saved import (
    Evaluation,
    evaluate_saved,
    evaluate_saved_on,
    evaluate_saved_with_lists,
)
from mtrec.pipeline.stages import (
    ITEM_ITEM_MAX_ITEMS,
    SIDE_BY_SIDE_MAX_ROWS,
    carve,
    fit_ranker_beside,
    fit_stage_one,
    stage_one,
    two_stage,
)

__all__ = [
    "ITEM_ITEM_MAX_ITEMS", "PHASE_LOG", "SIDE_BY_SIDE_MAX_ROWS", "Evaluation", "Fitted", "Prepared",
    "build_model", "carve", "evaluate_saved", "evaluate_saved_on", "evaluate_saved_with_lists",
    "fit_and_evaluate", "fit_prepared", "fit_ranker_beside",
    "fit_side_by_side", "fit_stage_one", "held_out_report", "held_out_rows", "prepare",
    "served_lists", "served_ratings", "served_summary", "stage_one", "train_model", "two_stage",
]  # fmt: skip
