"""mtrec: one model trained jointly to retrieve candidates and to rank them.

>>> import mtrec
>>> ds = mtrec.load_movielens()
>>> split = mtrec.random_split(ds.interactions, seed=42)
>>> vocabs = mtrec.Vocabs.from_dataset(ds)
>>> model = mtrec.MultiTaskModel(len(vocabs.users), len(vocabs.items), mtrec.ModelConfig(), seed=42)
>>> mtrec.train(model, mtrec.encode(split.train, vocabs), mtrec.TrainConfig())
>>> mtrec.evaluate(model, mtrec.encode(split.test, vocabs))

Saved models (``mtrec train``) are served by ``mtrec.Recommender.load(directory)``.

The public API is what ``__all__`` below names: the notebook entry point (``fit``,
``load_model``, ``Model``), the pipeline's steps (``load_movielens``,
``load_interactions``, the splits, ``Vocabs``/``encode``, ``MultiTaskModel``, ``train``,
``evaluate``, ``prepare``, ``train_model``, ``evaluate_saved``, ``compare``), the
index, the ``Recommender`` and its records, the configs and the errors. Those names keep
working across releases (an old name stays as an alias, as ``History`` for
``TrainingRecord``); the modules under ``mtrec.*`` are the implementation, laid out as
the pipeline (see docs/guide.md, "Layout"), and may move.
"""

from mtrec.config import ModelConfig, TrainConfig
from mtrec.data import (
    ColumnMap,
    Dataset,
    Interactions,
    Split,
    load_interactions,
    load_movielens,
    random_split,
    temporal_split,
)
from mtrec.errors import ArtifactError, ConfigError, DataError, MtrecError, UnknownIdError
from mtrec.estimator import Model, fit
from mtrec.estimator import load as load_model
from mtrec.evaluate import EvalReport, evaluate
from mtrec.experiments import compare
from mtrec.features import RatingScale, Vocabs, encode
from mtrec.index import ExactIndex, FaissIndex, Index, build_index, load_index
from mtrec.model import MultiTaskModel
from mtrec.pipeline import evaluate_saved, fit_and_evaluate, prepare, train_model
from mtrec.recommend import (
    Recommendation,
    Recommendations,
    Recommender,
    SimilarItem,
    recommend_reference,
    to_frame,
)
from mtrec.train import History, TrainingRecord, train
from mtrec.vocab import Vocab

__version__ = "0.1.0"

__all__ = [
    "ArtifactError",
    "ColumnMap",
    "ConfigError",
    "DataError",
    "Dataset",
    "EvalReport",
    "ExactIndex",
    "FaissIndex",
    "History",
    "Index",
    "Interactions",
    "Model",
    "ModelConfig",
    "MtrecError",
    "MultiTaskModel",
    "RatingScale",
    "Recommendation",
    "Recommendations",
    "Recommender",
    "SimilarItem",
    "Split",
    "TrainConfig",
    "TrainingRecord",
    "UnknownIdError",
    "Vocab",
    "Vocabs",
    "__version__",
    "build_index",
    "compare",
    "encode",
    "evaluate",
    "evaluate_saved",
    "fit",
    "fit_and_evaluate",
    "load_index",
    "load_interactions",
    "load_model",
    "load_movielens",
    "prepare",
    "random_split",
    "recommend_reference",
    "temporal_split",
    "to_frame",
    "train",
    "train_model",
]  # fmt: skip
