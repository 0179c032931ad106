"""A saved model measured again: on its own rebuilt split, or on a test set of its own."""

from __future__ import annotations

import dataclasses

from mtrec.artifact import SavedModel
from mtrec.data import Dataset
from mtrec.data.split import GIVEN, make_split, split_fingerprint
from mtrec.errors import ConfigError, DataError
from mtrec.evaluate import EvalReport, ListReport, sample_users
from mtrec.features import EncodedInteractions, Unseen
from mtrec.pipeline.metrics import _list_reports, held_out_report, served_ratings
from mtrec.pipeline.prepare import evaluated_rows, held_out_rows, trained_items
from mtrec.ranking import TwoStage


def evaluate_saved(saved: SavedModel, dataset: Dataset) -> EvalReport:
    """Re-evaluate a saved model on its own split, rebuilt from ``dataset``.

    Raises ``DataError`` when the rebuilt test rows differ from those the model was
    evaluated on at training time (other data, or another version of it).
    """
    test = _rebuilt_test(saved, dataset)
    return _saved_report(saved, test, saved.data.get("has_ratings", True), saved.two_stage())


def _known(saved: SavedModel, test: EncodedInteractions) -> EncodedInteractions:
    """The rows of users the model knows (the others are answered by the fallback list)."""
    return test.subset(test.user < len(saved.vocabs.users))


def _lists(
    saved: SavedModel, two: TwoStage | None, test: EncodedInteractions, k: int
) -> list[ListReport]:
    recent = (saved.data.get("recency") or {}).get("half_life_days") is not None
    counts = saved.popularity
    return _list_reports(saved.model, two, saved.seen, test, k, 500.0, "cpu", counts, recent)


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
    return report, _lists(saved, two, test, k)


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
    where = test.source or test.name
    known, new_users, unseen = held_out_rows(test.interactions, saved.vocabs, saved.scale, where)
    if not len(known):
        raise DataError("no test row has a user and an item seen in training", path=where)
    encoded = evaluated_rows(known, new_users)
    unseen = unseen.with_cold(encoded.item.numpy(), trained_items(saved.seen, saved.model.n_items))
    rated = saved.data.get("has_ratings", True) and test.has_ratings
    two = saved.two_stage()
    report = _saved_report(saved, encoded, rated, two)
    return Evaluation(report, _lists(saved, two, encoded, k), unseen)


def _saved_report(
    saved: SavedModel, test: EncodedInteractions, rated: bool, two: TwoStage | None
) -> EvalReport:
    """A saved model's metrics on ``test``'s rows of users it knows, its rating errors
    those of the ratings it shows."""
    known = _known(saved, test)
    report = held_out_report(saved.model, known, saved.scale, rated)
    return served_ratings(report, two, saved.seen, known, saved.scale)


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
    known, new_users, _ = held_out_rows(split.test, saved.vocabs, saved.scale, "the test split")
    return _same_users(saved, evaluated_rows(known, new_users))
