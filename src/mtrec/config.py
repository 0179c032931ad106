"""Typed, frozen configuration that round-trips through JSON.

``ModelConfig`` is the model's shape (saved with a model so it can be rebuilt before
its weights load); ``TrainConfig`` holds the hyperparameters of one training run.
Run options (output paths, verbosity) are not configuration and live in the CLI.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from pathlib import Path
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
        return float(value)
    if isinstance(hint, type) and (
        not isinstance(value, hint) or (isinstance(value, bool) and hint is not bool)
    ):
        raise ConfigError(f"{owner}.{key}: expected {hint.__name__}, got {value!r}")
    return value


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
        if self.embedding_dim < 1:
            raise ConfigError(f"ModelConfig.embedding_dim: expected >= 1, got {self.embedding_dim}")
        if any(width < 1 for width in self.head_layers):
            raise ConfigError(
                f"ModelConfig.head_layers: expected widths >= 1, got {self.head_layers}"
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
    holdout: float = 0.2
    """Share of the training rows carved out, per seed, as the ranker's positives; stage
    one is fitted on the rest for that, then again on every training row to serve."""
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
    (``mtrec.neighbours``), with a weight fitted on the carved-out rows; on ML-100K (mean
    of seeds 42, 1, 2) the default model's RMSE falls from 0.2260 (the rating head alone)
    to 0.2218. The ranker's ordering does not read it."""

    def __post_init__(self) -> None:
        checks = [
            ("candidates", self.candidates >= 1, ">= 1"),
            ("holdout", 0 < self.holdout < 1, "in (0, 1)"),
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


PRESETS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "reference": ({}, {}),
    "tuned": (
        {
            "embedding_dim": 64,
            "rating_biases": True,
            "dropout": 0.2,
            "user_features": ("age", "gender", "occupation"),
            "item_features": ("genres", "year"),
        },
        {
            "optimizer": "adamw",
            "learning_rate": 0.001,
            "weight_decay": 0.05,
            "epochs": 15,
            "shuffle": True,
            "retrieval_reduction": "mean",
            "logq_correction": True,
            "remove_accidental_hits": True,
            "positive_min_rating": LIKED,
            "retrieval_weight": 2.0,
            "rating_weight": 1.0,
        },
    ),
}
PRESETS["default"] = (
    {**PRESETS["tuned"][0], "history": True, "new_user_rate": 0.2},
    {**PRESETS["tuned"][1], "rating_weight": 3.0, "weight_decay": 0.2},
)
"""Named (ModelConfig, TrainConfig) overrides.

``reference``: the tutorial's setup. ``tuned``: side features (user age, gender,
occupation; movie genres and year), 64-d towers, rating biases, head dropout 0.2, AdamW,
15 shuffled epochs, a mean-reduced retrieval loss with log-Q correction and accidental
hits removed, 4+ star ratings as the only retrieval positives, weights 2 : 1. Chosen on
MovieLens-100K seed 42 and checked on seeds 1 and 2 (numbers in docs/benchmarks.md).
``default`` (what ``mtrec train`` trains): ``tuned`` with a user tower that reads the
user's history (a fifth of the rows trained as new users), weights 2 : 3 and weight decay
0.2, served through the ranking stage
(``RANKERS``); numbers in docs/benchmarks.md."""

RANKERS: dict[str, dict[str, Any]] = {"default": {}}
"""Presets served through the ranking stage, and their ``RankerConfig`` overrides; the
others serve the reference's list (retrieve, then sort by predicted rating)."""


def ranker_preset(name: str) -> RankerConfig | None:
    """The ranking stage of a named preset, or None where it has none."""
    if name not in PRESETS:
        raise ConfigError(f"preset: expected one of {sorted(PRESETS)}, got {name!r}")
    return RankerConfig.from_dict(RANKERS[name]) if name in RANKERS else None


def preset(name: str, **train_overrides: Any) -> tuple[ModelConfig, TrainConfig]:
    """The configs of a named preset, with ``None``-valued overrides ignored.

    Keys of ``train_overrides`` that are ModelConfig fields go to the model config.
    """
    given = {key: value for key, value in train_overrides.items() if value is not None}
    return _configs(name, given)


def _configs(name: str, overrides: dict[str, Any]) -> tuple[ModelConfig, TrainConfig]:
    """A preset's configs with ``overrides`` (None values included: a config file may set
    a field to None) on top, each to the config that has the field."""
    if name not in PRESETS:
        raise ConfigError(f"preset: expected one of {sorted(PRESETS)}, got {name!r}")
    model, train = dict(PRESETS[name][0]), dict(PRESETS[name][1])
    model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    for key, value in overrides.items():
        (model if key in model_fields else train)[key] = value
    return ModelConfig.from_dict(model), TrainConfig.from_dict(train)


DATA_KEYS = (
    "dataset", "data_dir", "cache_dir", "interactions", "user_col", "item_col", "rating_col",
    "timestamp_col", "items_file", "skip_bad_rows", "rating_range", "split", "holdout",
    "holdout_estimate", "test_interactions", "eval_users",
)  # fmt: skip
"""The ``[data]`` keys of a run config: the data flags of ``mtrec train``, same names."""
INDEX_KEYS = ("kind", "options")
"""The ``[index]`` keys: the index kind and its KEY=INT options as a table."""
SAVED_ONLY = ("format_version", "rating_scale", "n_users", "n_items")
"""Keys of a saved model's ``config.json`` that record facts, not settings: ignored."""


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A config file for ``mtrec train --config``: a base preset, then field overrides.

    TOML or JSON::

        preset = "default"          # optional: the named configuration to start from
        ranker = false              # optional: no ranking stage (or a [ranker] table)
        [model]                     # any ModelConfig field
        embedding_dim = 64
        [train]                     # any TrainConfig field
        epochs = 10
        [data]                      # the data flags (DATA_KEYS), e.g. interactions = "log.csv"
        holdout = "none"
        [index]
        kind = "faiss-hnsw"
        options = { m = 32 }

    A saved model's ``config.json`` is one too (its ``model_config`` and ``train_config``
    are complete; its split and index kind are kept), so a model can be trained again
    from what it recorded. Unknown keys and bad values are errors naming the key.
    """

    preset: str | None = None
    model: dict[str, Any] = dataclasses.field(default_factory=dict)
    train: dict[str, Any] = dataclasses.field(default_factory=dict)
    ranker: dict[str, Any] | bool | None = None
    """None: the preset's ranking stage; False: none; a dict: RankerConfig overrides."""
    data: dict[str, Any] = dataclasses.field(default_factory=dict)
    index: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def read(cls, path: str | Path) -> RunConfig:
        """Parse a ``.toml`` or ``.json`` file; its keys are checked, values at ``resolve``."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: unreadable ({exc})") from None
        try:
            if path.suffix.lower() == ".toml":
                document = tomllib.loads(text)
            elif path.suffix.lower() == ".json":
                document = json.loads(text)
            else:
                raise ConfigError(f"{path}: expected a .toml or .json file")
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: invalid {path.suffix[1:].upper()}: {exc}") from None
        if not isinstance(document, dict):
            raise ConfigError(f"{path}: expected a table of settings at the top")
        return cls.from_dict(document, str(path))

    @classmethod
    def from_dict(cls, document: dict[str, Any], where: str = "config") -> RunConfig:
        if "format_version" in document:  # a saved model's config.json
            return cls._from_saved(document, where)
        known = {"preset", "model", "train", "ranker", "data", "index"}
        unknown = sorted(set(document) - known)
        if unknown:
            raise ConfigError(
                f"{where}: unknown key(s) {unknown}; expected some of {sorted(known)}"
            )
        preset_name = document.get("preset")
        if preset_name is not None and preset_name not in PRESETS:
            raise ConfigError(
                f"{where}: preset: expected one of {sorted(PRESETS)}, got {preset_name!r}"
            )
        ranker = document.get("ranker")
        if not (ranker is None or ranker is False or isinstance(ranker, dict)):
            raise ConfigError(f"{where}: ranker: expected a table of RankerConfig fields or false")
        return cls(
            preset_name,
            _section(document, "model", where, {f.name for f in dataclasses.fields(ModelConfig)}),
            _section(document, "train", where, _train_keys()),
            ranker,
            _section(document, "data", where, set(DATA_KEYS)),
            _section(document, "index", where, set(INDEX_KEYS)),
        )

    @classmethod
    def _from_saved(cls, document: dict[str, Any], where: str) -> RunConfig:
        split = (document.get("data") or {}).get("split") or {}
        data: dict[str, Any] = {}
        if split.get("kind") in ("random", "temporal", "temporal-user"):
            data["split"] = split["kind"]
        if isinstance(split.get("test_fraction"), int | float) and split.get("kind") != "given":
            data["holdout"] = split["test_fraction"] or "none"
        ranker = document.get("ranker_config")
        return cls.from_dict(
            {
                "model": document.get("model_config") or {},
                "train": document.get("train_config") or {},
                "ranker": False if "ranker_config" in document and ranker is None else ranker,
                "data": data,
                "index": {"kind": (document.get("index") or {}).get("kind", "exact")},
            },
            where,
        )

    def resolve(
        self, preset_name: str | None = None, **overrides: Any
    ) -> tuple[ModelConfig, TrainConfig, RankerConfig | None]:
        """The effective configs: the preset (``preset_name`` wins over the file's), the
        file's sections over it, then ``overrides`` (flags; None values ignored)."""
        name = preset_name or self.preset or "default"
        given = {key: value for key, value in overrides.items() if value is not None}
        model_config, train_config = _configs(name, {**self.model, **self.train, **given})
        if self.ranker is False:
            return model_config, train_config, None
        base = RANKERS.get(name)
        if base is None and self.ranker is None:
            return model_config, train_config, None
        own = self.ranker if isinstance(self.ranker, dict) else {}
        return model_config, train_config, RankerConfig.from_dict({**(base or {}), **own})


def effective_config(
    model_config: ModelConfig,
    train_config: TrainConfig,
    ranker: RankerConfig | None,
    data: dict[str, Any],
    index: dict[str, Any],
) -> dict[str, Any]:
    """A complete run config (what ``--print-config`` prints): every field spelled out, so
    that fed back as ``--config`` it trains the same model whatever the presets become."""
    return {
        "model": model_config.to_dict(),
        "train": train_config.to_dict(),
        "ranker": False if ranker is None else ranker.to_dict(),
        "data": {key: value for key, value in data.items() if value is not None},
        "index": index,
    }


def _train_keys() -> set[str]:
    return {f.name for f in dataclasses.fields(TrainConfig)} | set(TrainConfig.RENAMED)


def _section(document: dict[str, Any], name: str, where: str, keys: set[str]) -> dict[str, Any]:
    section = document.get(name) or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: {name}: expected a table, got {section!r}")
    unknown = sorted(set(section) - keys)
    if unknown:
        raise ConfigError(
            f"{where}: [{name}] unknown key(s) {unknown}; expected some of {sorted(keys)}"
        )
    return dict(section)
