"""Typed, frozen configuration that round-trips through JSON.

``ModelConfig`` is the model's shape (saved with a model so it can be rebuilt before
its weights load); ``TrainConfig`` holds the hyperparameters of one training run.
Run options (output paths, verbosity) are not configuration and live in the CLI.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, Self

from mtrec.errors import ConfigError


class _JsonConfig:
    """Mixin: ``to_dict``/``from_dict`` with unknown keys and wrong types rejected."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload, no-any-return]

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
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

    def __post_init__(self) -> None:
        if self.embedding_dim < 1:
            raise ConfigError(f"ModelConfig.embedding_dim: expected >= 1, got {self.embedding_dim}")
        if any(width < 1 for width in self.head_layers):
            raise ConfigError(
                f"ModelConfig.head_layers: expected widths >= 1, got {self.head_layers}"
            )


@dataclasses.dataclass(frozen=True)
class TrainConfig(_JsonConfig):
    """Hyperparameters of one training run; defaults are the reference protocol's."""

    retrieval_weight: float = 1.0
    """Weight of the in-batch softmax loss (summed over the batch, as in the reference)."""
    ranking_weight: float = 1.0
    """Weight of the rating MSE loss (averaged over the batch)."""
    epochs: int = 5
    batch_size: int = 1000
    learning_rate: float = 0.1
    optimizer: typing.Literal["adagrad"] = "adagrad"
    """Adagrad with Keras' defaults (initial accumulator 0.1, epsilon 1e-7), as the reference."""
    seed: int = 42
    """Seeds initialisation and, with ``shuffle``, the batch order of every epoch."""
    shuffle: bool = False
    """Reshuffle the training rows every epoch; the reference keeps its one shuffled order."""
    precision: typing.Literal["auto", "fp32", "bf16"] = "auto"
    """Matmul precision in training. ``bf16``: matmuls in bfloat16 as under
    ``torch.autocast``, with float32 weights, softmax, losses and optimizer state (4x
    faster matmuls on CPUs with native bf16; the metrics stay in the reference bands).
    ``auto``: bf16 where the CPU has native bf16 instructions, else fp32. Evaluation
    always runs in float32."""

    def __post_init__(self) -> None:
        checks = [
            ("epochs", self.epochs >= 1, ">= 1"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("learning_rate", self.learning_rate > 0, "> 0"),
            ("retrieval_weight", self.retrieval_weight >= 0, ">= 0"),
            ("ranking_weight", self.ranking_weight >= 0, ">= 0"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(
                    f"TrainConfig.{name}: expected {expected}, got {getattr(self, name)!r}"
                )
        if self.retrieval_weight == 0 and self.ranking_weight == 0:
            raise ConfigError(
                "TrainConfig: retrieval_weight and ranking_weight are both 0; nothing to train"
            )


PRESETS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "reference": ({}, {}),
}
"""Named (ModelConfig, TrainConfig) overrides; ``reference`` is the tutorial's setup."""


def preset(name: str, **train_overrides: Any) -> tuple[ModelConfig, TrainConfig]:
    """The configs of a named preset, with ``None``-valued overrides ignored.

    Keys of ``train_overrides`` that are ModelConfig fields go to the model config.
    """
    if name not in PRESETS:
        raise ConfigError(f"preset: expected one of {sorted(PRESETS)}, got {name!r}")
    model, train = dict(PRESETS[name][0]), dict(PRESETS[name][1])
    model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    for key, value in train_overrides.items():
        if value is not None:
            (model if key in model_fields else train)[key] = value
    return ModelConfig.from_dict(model), TrainConfig.from_dict(train)
