"""The typed, frozen configs and their JSON round trip: the model's shape, a training run's
hyperparameters, the ranking stage's settings.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from typing import Any, Self

from mtrec.errors import ConfigError
from mtrec.runtime import check_device_spec

LIKED = 0.75
"""Scaled label of a liked item: four stars on 1..5, three quarters up the rating range."""


LOVED = 0.9
"""Scaled labels above this are top ratings: five stars on 1..5."""


class _JsonConfig:
    """Mixin: ``to_dict``/``from_dict`` with unknown keys and wrong types rejected."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload, no-any-return]

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    RENAMED: typing.ClassVar[dict[str, str]] = {}
    """Old key -> new key, read from configs saved before a field was renamed."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
        data = _renamed(cls.__name__, data, cls.RENAMED)
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ConfigError(
                f"{cls.__name__}: unknown key(s) {unknown}; expected some of {sorted(fields)}"
            )
        hints = typing.get_type_hints(cls)
        values = {key: _coerce(cls.__name__, key, hints[key], value) for key, value in data.items()}
        return cls(**values)

    def _check_finite(self) -> None:
        """Every float field finite: ``inf`` passed the range checks (``> 0``) and then
        failed writing config.json after the whole training run."""
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, field.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(
                    f"{type(self).__name__}.{field.name}: expected a finite number, got {value}"
                )

    @classmethod
    def from_json(cls, text: str) -> Self:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{cls.__name__}: invalid JSON: {exc}") from None
        return cls.from_dict(data)


def _renamed(owner: str, data: dict[str, Any], renamed: dict[str, str]) -> dict[str, Any]:
    """``data`` with old keys under their new names; both at once is an error."""
    out = dict(data)
    for old, new in renamed.items():
        if old in out:
            if new in out:
                raise ConfigError(f"{owner}: {old!r} is the old name of {new!r}; give one of them")
            out[new] = out.pop(old)
    return out


def _coerce(owner: str, key: str, hint: Any, value: Any) -> Any:
    """Check one JSON value against a field's type; tuples arrive from JSON as lists."""
    origin = typing.get_origin(hint)
    if origin is tuple:
        (item_type, _ellipsis) = typing.get_args(hint)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{owner}.{key}: expected a list, got {value!r}")
        return tuple(_coerce(owner, key, item_type, v) for v in value)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            if option is type(None) and value is None:
                return None
            if option is not type(None):
                try:
                    return _coerce(owner, key, option, value)
                except ConfigError:
                    continue
        raise ConfigError(f"{owner}.{key}: expected {hint}, got {value!r}")
    if origin is typing.Literal:
        if value not in typing.get_args(hint):
            raise ConfigError(
                f"{owner}.{key}: expected one of {typing.get_args(hint)}, got {value!r}"
            )
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        if value.bit_length() > 1023:  # float() would overflow (a 400-digit integer)
            raise ConfigError(f"{owner}.{key}: expected a finite number, got a huge integer")
        return float(value)
    if isinstance(hint, type) and (
        not isinstance(value, hint) or (isinstance(value, bool) and hint is not bool)
    ):
        raise ConfigError(f"{owner}.{key}: expected {hint.__name__}, got {value!r}")
    return value


MAX_WIDTH = 65_536
"""The widest embedding or head layer a config takes: 256 times the widest measured (a
width of 10^9 was an allocation failure's traceback after the data had loaded)."""


@dataclasses.dataclass(frozen=True)
class ModelConfig(_JsonConfig):
    """Shape of the multi-task model (the reference: 32-d towers, a 256-128-1 rating MLP)."""

    embedding_dim: int = 32
    """Width of the user and item embeddings; the retrieval score is their dot product."""
    head_layers: tuple[int, ...] = (256, 128)
    """Hidden ReLU layers of the rating head, applied to concat(user, item) embeddings."""
    normalize: bool = False
    """L2-normalise both towers' outputs: the retrieval score becomes a cosine."""
    rating_biases: bool = False
    """Add learned user and item biases to the rating head's output."""
    dot_in_head: bool = False
    """Feed the user-item dot product to the rating head as one more input."""
    dropout: float = 0.0
    """Dropout after each hidden layer of the rating head (training only)."""
    history: bool = False
    """The user tower also reads the user's rated items (SVD++'s implicit term, YouTube's
    watch history): a second item table, its rows weighted by 0.5 + the scaled rating and
    summed over the history with a 1 / sqrt(length) scale. In training a row's own item is
    left out of its history (test items are never in it). A user the model never saw is
    embedded from a history alone (``Recommender.recommend_for_history``)."""
    new_user_rate: float = 0.0
    """With ``history``: the share of training rows whose user is embedded as a new user
    is, from the history alone (no user row, side features or rating bias), so that a list
    made from a history alone is as well placed as a known user's."""
    learned_task_weights: bool = False
    """Learn the balance of the two losses (homoscedastic uncertainty, Kendall et al. 2018):
    exp(-s1) L_retrieval + s1 / 2 + exp(-s2) L_rating / 2 + s2 / 2, with s1, s2 trained;
    the configured loss weights still multiply each loss."""
    user_features: tuple[str, ...] = ()
    """Categorical side features added to the user tower (e.g. age, gender, occupation)."""
    item_features: tuple[str, ...] = ()
    """Categorical side features added to the item tower (e.g. genres, year)."""
    feature_sizes: tuple[int, ...] = ()
    """Vocabulary size of each feature, users' then items' (code 0 means none); left empty,
    they are taken from the data when the model is built."""
    feature_widths: tuple[int, ...] = ()
    """Values per row of each feature (1, or more for multi-valued ones like genres)."""

    def __post_init__(self) -> None:
        self._check_finite()
        if not 1 <= self.embedding_dim <= MAX_WIDTH:
            raise ConfigError(
                f"ModelConfig.embedding_dim: expected 1..{MAX_WIDTH}, got {self.embedding_dim}"
            )
        if any(not 1 <= width <= MAX_WIDTH for width in self.head_layers):
            raise ConfigError(
                f"ModelConfig.head_layers: expected widths 1..{MAX_WIDTH}, got {self.head_layers}"
            )
        if not 0.0 <= self.new_user_rate < 1.0:
            raise ConfigError(
                f"ModelConfig.new_user_rate: expected a value in [0, 1), got {self.new_user_rate}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(
                f"ModelConfig.dropout: expected a value in [0, 1), got {self.dropout}"
            )
        n = len(self.user_features) + len(self.item_features)
        given = (len(self.feature_sizes), len(self.feature_widths))
        if given != (0, 0) and given != (n, n):  # empty: filled from the data at build time
            raise ConfigError(
                f"ModelConfig: {n} features need {n} feature_sizes and feature_widths "
                f"(or none, to take them from the data), got {given[0]} and {given[1]}"
            )
        if any(v < 1 for v in (*self.feature_sizes, *self.feature_widths)):
            raise ConfigError("ModelConfig: feature sizes and widths must be >= 1")


@dataclasses.dataclass(frozen=True)
class TrainConfig(_JsonConfig):
    """Hyperparameters of one training run; defaults are the reference protocol's."""

    RENAMED: typing.ClassVar[dict[str, str]] = {"ranking_weight": "rating_weight"}
    """Format-1 models saved before 0.2 call the rating loss's weight ``ranking_weight``."""

    retrieval_weight: float = 1.0
    """Weight of the in-batch softmax loss (summed over the batch, as in the reference)."""
    rating_weight: float = 1.0
    """Weight of the rating MSE loss (averaged over the batch). It was called
    ``ranking_weight``; saved configs with that key still load."""
    epochs: int = 5
    batch_size: int = 1000
    learning_rate: float = 0.1
    optimizer: typing.Literal["adagrad", "adam", "adamw"] = "adagrad"
    """Adagrad with Keras' defaults (initial accumulator 0.1, epsilon 1e-7), as the reference;
    or Adam / AdamW (``torch.optim``)."""
    weight_decay: float = 0.0
    """L2 penalty (Adagrad, Adam) or decoupled weight decay (AdamW)."""
    retrieval_reduction: typing.Literal["sum", "mean"] = "sum"
    """``sum`` over the batch (the reference, so weights mean different things at different
    batch sizes) or ``mean`` (weights mean the same at any batch size)."""
    temperature: float = 1.0
    """Retrieval logits are divided by it (useful with normalised embeddings)."""
    logq_correction: bool = False
    """Subtract each candidate's log sampling probability (its training frequency) from its
    in-batch logit, so popular items are not over-penalised as negatives."""
    remove_accidental_hits: bool = False
    """Drop the logits of other copies of a row's own item in the batch."""
    validation_fraction: float = 0.0
    """Hold out this share of the training rows (never test rows) to pick the best epoch."""
    patience: int = 0
    """Stop after this many epochs without a better validation loss (0: never stop early)."""
    refit: bool = False
    """After a validation run, train again on all training rows for the best epoch count."""
    extra_negatives: int = 0
    """Items drawn uniformly from the catalogue each step, added as negatives for every row
    (a seeded draw per step, so resumed runs see the same ones)."""
    positive_min_rating: float | None = None
    """Only rows rated at least this (scaled; 0.75 = four stars) are retrieval positives;
    the rest still serve as negatives, and the rating head learns from every row."""
    seed: int = 42
    """Seeds initialisation and, with ``shuffle``, the batch order of every epoch."""
    shuffle: bool = False
    """Reshuffle the training rows every epoch; the reference keeps its one shuffled order."""
    sparse_updates: typing.Literal["auto", "on", "off"] = "auto"
    """Row-sparse updates of the per-user and per-item tables: a step then costs O(batch)
    instead of O(users + items). Exact for Adagrad without weight decay (always on there
    under ``auto``); for Adam(W) "lazy" (a row's moments and weight decay move only when a
    batch touches it, as ``torch.optim.SparseAdam``), which ``auto`` turns on only for
    tables of ``LAZY_MIN_ROWS`` rows or more, where the dense step's cost dominates."""
    precision: typing.Literal["auto", "fp32", "bf16"] = "auto"
    """Matmul precision in training. ``bf16``: matmuls in bfloat16 as under
    ``torch.autocast``, with float32 weights, softmax, losses and optimizer state (4x
    faster matmuls on CPUs with native bf16; the metrics stay in the reference bands).
    ``auto``: bf16 only where the CPU has native bf16 instructions *and* a few timed
    training steps at the start show it at least 20% faster than fp32 (on some CPUs with
    AVX512-BF16 it is slower); the choice and the timings are recorded with the run, and a
    saved model's config records the precision that ran. Where the two are within timing
    noise of that margin, two ``auto`` runs may choose differently: give ``fp32`` or
    ``bf16`` for bit-identical reruns. Evaluation always runs in float32."""
    device: str = "auto"
    """Where training runs: ``auto`` (a CUDA GPU where PyTorch sees one, else the CPU),
    ``cpu``, ``cuda``, ``cuda:N`` or ``mps``. A setting of the run, not of the model: it
    is not part of a checkpoint's identity (a run may resume on another device), and the
    trained model comes back on the CPU, where evaluation and serving read it."""

    def __post_init__(self) -> None:
        self._check_finite()
        checks = [
            ("epochs", self.epochs >= 1, ">= 1"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("learning_rate", self.learning_rate > 0, "> 0"),
            ("retrieval_weight", self.retrieval_weight >= 0, ">= 0"),
            ("rating_weight", self.rating_weight >= 0, ">= 0"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("temperature", self.temperature > 0, "> 0"),
            ("extra_negatives", self.extra_negatives >= 0, ">= 0"),
            ("validation_fraction", 0 <= self.validation_fraction < 1, "in [0, 1)"),
            ("patience", self.patience >= 0, ">= 0"),
            ("seed", 0 <= self.seed < 2**32, "in [0, 2**32)"),  # NumPy's seeds
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(
                    f"TrainConfig.{name}: expected {expected}, got {getattr(self, name)!r}"
                )
        if self.retrieval_weight == 0 and self.rating_weight == 0:
            raise ConfigError(
                "TrainConfig: retrieval_weight and rating_weight are both 0; nothing to train"
            )
        try:
            check_device_spec(self.device)
        except ConfigError as error:
            raise ConfigError(f"TrainConfig.{error}") from None


@dataclasses.dataclass(frozen=True)
class RankerConfig(_JsonConfig):
    """The ranking stage: how its candidates are drawn and how its ranker is fitted."""

    candidates: int = 50
    """Candidates drawn from each source (two-tower, item-item) before the ranker orders
    their union. 50, not 100: on ML-100K (seeds 42, 1, 2) the served list is as good
    (recall@10 0.3112 vs 0.3110, NDCG@10 0.4015 vs 0.4014; new users 0.1533/0.1681 vs
    0.1527/0.1678 on seeds 42/1) at about half the ranking stage's cost a request."""
    holdout: float | None = None
    """Share of the training rows carved out, per seed, as the ranker's positives; stage
    one is fitted on the rest. None: 0.2 where a second model serves (``refit``), 0.05
    where stage one serves (it then trains on 95% of the rows)."""
    refit: bool | None = None
    """Serve a second model trained on every training row, beside stage one (True), or
    stage one itself, its user tower then reading every training row (False). None:
    a second model up to ``REFIT_MAX_ROWS`` training rows, where it is cheap, and stage
    one beyond (``resolved``)."""
    item_item: bool = True
    """Use EASE item-item weights as a second source and signal (catalogues of at most
    ``ITEM_ITEM_MAX_ITEMS`` items)."""
    item_item_lambda: float = 500.0
    """EASE's L2 weight."""
    max_users: int = 20_000
    """The ranker and the correction's weight are fitted on the carved-out rows of at most
    this many users (a sample seeded by the run's seed; 0: all of them). Ten weights
    need no more, and every user's candidates cost memory and time: on a 4.7M-row planted
    log (171k such users, each also as a new user) they peaked at 4.3 GB and took 3.5 of
    the run's 8 minutes. Every MovieLens release up to ML-1M has fewer users."""
    steps: int = 300
    learning_rate: float = 0.01
    l2: float = 1e-4
    """Penalty on the squared ranker weights."""
    low_rating_gain: float = 0.0
    """Gain of a carved-out row rated below four stars (liked rows have gain 1)."""
    rating_correction: bool = True
    """Correct the predicted ratings a list shows by the user's own errors on similar items
    (``mtrec.ranking.neighbours``), with a weight fitted on the carved-out rows; on ML-100K (mean
    of seeds 42, 1, 2) the default model's RMSE falls from 0.2260 (the rating head alone)
    to 0.2218. The ranker's ordering does not read it."""

    min_gain: float = 0.005
    """Both models stop training once their stage one's held-out recall has stopped rising
    (``mtrec.pipeline.epochs``): the best of its last three epochs less than this share
    above the best before them; ``TrainConfig.epochs`` is then the most. 0, or a
    ``validation_fraction`` of the training config's own: every epoch runs (or that
    slice decides)."""

    def __post_init__(self) -> None:
        self._check_finite()
        checks = [
            ("candidates", self.candidates >= 1, ">= 1"),
            ("min_gain", self.min_gain >= 0, ">= 0"),
            ("holdout", self.holdout is None or 0 < self.holdout < 1, "in (0, 1)"),
            ("item_item_lambda", self.item_item_lambda > 0, "> 0"),
            ("max_users", self.max_users >= 0, ">= 0"),
            ("steps", self.steps >= 0, ">= 0"),
            ("learning_rate", self.learning_rate > 0, "> 0"),
            ("l2", self.l2 >= 0, ">= 0"),
            ("low_rating_gain", 0 <= self.low_rating_gain <= 1, "in [0, 1]"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(
                    f"RankerConfig.{name}: expected {expected}, got {getattr(self, name)!r}"
                )

    def resolved(self, rows: int) -> RankerConfig:
        """This config for a run on ``rows`` training rows: ``refit`` and ``holdout`` set."""
        refit = rows <= REFIT_MAX_ROWS if self.refit is None else self.refit
        holdout = (0.2 if refit else 0.05) if self.holdout is None else self.holdout
        return dataclasses.replace(self, refit=refit, holdout=holdout)


REFIT_MAX_ROWS = 100_000
"""Training rows up to which ``RankerConfig.refit`` (None) trains a second model to serve.
Measured (2-core AMD EPYC, default preset): on ML-100K (80k training rows; seeds 42, 1,
2) stage one serving gave recall@10 / NDCG@10 0.3100 / 0.4014 against 0.3107 / 0.4001
and new users 0.1500 against 0.1517, at about 0.75x the wall time: within the seeds'
noise but under the 0.31 bar, so a log of that size keeps the second model. On the
planted ML-1M shape (265k training rows, seed 42) stage one serving gave the better list
(0.4529 / 0.5744 against 0.4522 / 0.5736) in 43.0 s and 1.37 GB against 59.6 s and
1.60 GB."""
