"""Typed, frozen configuration that round-trips through JSON.

``ModelConfig`` is the model's shape (saved with a model so it can be rebuilt before
its weights load); ``TrainConfig`` holds the hyperparameters of one training run;
``RankerConfig`` the ranking stage's. Run options (output paths, verbosity) are not
configuration and live in the CLI.

``fields`` (the configs), ``presets`` (named configurations), ``run`` (a run config
file, the presets and the flags resolved in one place).
"""

from mtrec.config.fields import (
    LIKED,
    LOVED,
    REFIT_MAX_ROWS,
    ModelConfig,
    RankerConfig,
    TrainConfig,
)
from mtrec.config.presets import PRESETS, RANKERS, preset, ranker_preset
from mtrec.config.run import (
    DATA_KEYS,
    INDEX_KEYS,
    SAVED_ONLY,
    RunConfig,
    effective_config,
    holdout_fraction,
    jsonable,
    refuse_preset_on_warm_start,
)

__all__ = [
    "DATA_KEYS",
    "INDEX_KEYS",
    "LIKED",
    "LOVED",
    "PRESETS",
    "RANKERS",
    "REFIT_MAX_ROWS",
    "SAVED_ONLY",
    "ModelConfig",
    "RankerConfig",
    "RunConfig",
    "TrainConfig",
    "effective_config",
    "holdout_fraction",
    "jsonable",
    "preset",
    "ranker_preset",
    "refuse_preset_on_warm_start",
]  # fmt: skip
