"""Named configurations: reference (the tutorial's), tuned, and default (what ``mtrec train``
trains).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from mtrec.config.fields import LIKED, ModelConfig, RankerConfig, TrainConfig
from mtrec.errors import ConfigError

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
    if not isinstance(name, str) or name not in PRESETS:
        raise ConfigError(f"preset: expected one of {sorted(PRESETS)}, got {name!r}")
    return RankerConfig.from_dict(RANKERS[name]) if name in RANKERS else None


def preset(name: str, **train_overrides: Any) -> tuple[ModelConfig, TrainConfig]:
    """The configs of a named preset, with ``None``-valued overrides ignored.

    Keys of ``train_overrides`` that are ModelConfig fields go to the model config.
    """
    given = {key: value for key, value in train_overrides.items() if value is not None}
    return preset_configs(name, given)


def preset_configs(name: str, overrides: dict[str, Any]) -> tuple[ModelConfig, TrainConfig]:
    """A preset's configs with ``overrides`` (None values included: a config file may set
    a field to None) on top, each to the config that has the field."""
    if not isinstance(name, str) or name not in PRESETS:
        raise ConfigError(f"preset: expected one of {sorted(PRESETS)}, got {name!r}")
    model, train = dict(PRESETS[name][0]), dict(PRESETS[name][1])
    model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    for key, value in overrides.items():
        (model if key in model_fields else train)[key] = value
    return ModelConfig.from_dict(model), TrainConfig.from_dict(train)
