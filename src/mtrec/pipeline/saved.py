"""A saved model measured again: on its own rebuilt split, or on a test set of its own."""

from __future__ import annotations

import dataclasses

from mtrec.artifact import SavedModel
from mtrec.data import Dataset
from mtrec.data.split import GIVEN, make_split, split_fingerprint
from mtrec.errors import ConfigError, DataError
from mtrec.evaluate import EvalReport, ListReport, sample_users
from mtrec.features import EncodedInteractions, Unseen, encode
from mtrec.pipeline.metrics import _list_reports, held_out_report, served_ratings
from mtrec.pipeline.prepare import scorable_rows
from mtrec.ranking import TwoStage


def evaluate_saved(saved: SavedModel, dataset: Dataset) -> EvalReport:
    """Re-evaluate a saved model on its own split, rebuilt from ``dataset``.

    Raises ``DataError`` when the rebuilt test rows differ from those the model was
    evaluated on at training time (other data, or another version of it).
    """
    test = _rebuilt_test(saved, dataset)
    return _saved_report(saved, test, saved.data.get("has_ratings", True), saved.two_stage())


def _same_users(saved: SavedModel, test: EncodedInteractions) -> EncodedInteractions:
    """The test users the model was measured on at training time (its seeded sample)."""
    said = saved.metrics.get("evaluated_users") or {}
    if said.get("seed") is None:
        return test
    return sample_users(test, said["users"], said["seed"])[0]


def evaluate_saved_with_lists(
    saved: SavedModel, dataset: Dataset, *, k: int = 10
) -> tuple[EvalReport, list[ListReport]]:
    """``evaluate_saved`` and the served list beside retrieval alone, popularity and EASE
    at ``k`` on the same rebuilt split (rebuilt once, the ranking stage built once)."""
    test = _rebuilt_test(saved, dataset)
    two = saved.two_stage()
    report = _saved_report(saved, test, saved.data.get("has_ratings", True), two)
    return report, _list_reports(saved.model, two, saved.seen, test, k, 500.0)


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """A saved model measured on a test set of its own: both protocols' errors, the lists,
    and the test rows it could not score (a user or item it never saw)."""

    report: EvalReport
    lists: list[ListReport]
    unseen: Unseen


def evaluate_saved_on(saved: SavedModel, test: Dataset, *, k: int = 10) -> Evaluation:
    """Evaluate a saved model on other data (next week's log, a published test file);
    its own training items stay excluded from the lists, as when it serves."""
    saved.scale.check_fits(test, "the test data")
    kept, unseen = scorable_rows(test, saved.vocabs)
    encoded = encode(kept, saved.vocabs, saved.scale)
    rated = saved.data.get("has_ratings", True) and test.has_ratings
    two = saved.two_stage()
    report = _saved_report(saved, encoded, rated, two)
    lists = _list_reports(saved.model, two, saved.seen, encoded, k, 500.0)
    return Evaluation(report, lists, unseen)


def _saved_report(
    saved: SavedModel, test: EncodedInteractions, rated: bool, two: TwoStage | None
) -> EvalReport:
    """A saved model's metrics on ``test``, its rating errors those of the ratings it shows."""
    report = held_out_report(saved.model, test, saved.scale, rated)
    return served_ratings(report, two, saved.seen, test, saved.scale)


def _rebuilt_test(saved: SavedModel, dataset: Dataset) -> EncodedInteractions:
    """The test rows the model was measured on at training time, rebuilt from ``dataset``."""
    split_info = saved.data.get("split", {})
    if split_info.get("kind") == GIVEN or split_info.get("test_fraction") == 0:
        source = split_info.get("test_source")
        what = f"on its own test set ({source})" if source else "on every row (holdout none)"
        raise ConfigError(
            f"this model was trained {what}: there is no split to rebuild; evaluate it on a "
            "test file of its own (--test-interactions FILE)"
        )
    split = make_split(
        dataset.interactions,
        split_info.get("kind", "random"),
        split_info.get("test_fraction", 0.2),
        split_info.get("seed", 42),
    )
    if split_fingerprint(split.test) != split_info.get("test_fingerprint"):
        raise DataError(
            f"the test split rebuilt from {dataset.source or dataset.name} differs from the one "
            "this model was evaluated on; evaluate it on the data it was trained with",
            field="split",
        )
    return _same_users(saved, encode(split.test, saved.vocabs, saved.scale))
