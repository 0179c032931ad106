"""A run config: a preset, a file's sections and the flags, resolved in one place."""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mtrec.config.fields import ModelConfig, RankerConfig, TrainConfig
from mtrec.config.presets import PRESETS, RANKERS, preset_configs
from mtrec.errors import ConfigError, setting

DATA_KEYS = (
    "dataset", "data_dir", "cache_dir", "interactions", "user_col", "item_col", "rating_col",
    "timestamp_col", "items_file", "users_file", "skip_bad_rows", "rating_range", "split",
    "holdout", "holdout_estimate", "test_interactions", "eval_users",
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
        except RecursionError:
            raise ConfigError(f"{path}: invalid: nested too deeply") from None
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
        if preset_name is not None and (
            not isinstance(preset_name, str) or preset_name not in PRESETS
        ):
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

    @classmethod
    def of(
        cls, config: str | Path | RunConfig | None, saved: dict[str, Any] | None = None
    ) -> RunConfig:
        """The settings a run starts from: a config file (or one already read), else a
        warm start's saved model's own config document (``saved``), else none (the preset
        and the overrides alone)."""
        if isinstance(config, RunConfig):
            return config
        if config is not None:
            return cls.read(config)
        if saved is not None:
            return cls.from_dict(saved, "the saved model's config")
        return cls()

    def data_settings(self, flags: dict[str, Any], given: Callable[[str], bool]) -> dict[str, Any]:
        """The data flags' values: a flag ``given`` on the command line wins over the
        file's ``[data]``, which wins over the flag's default (its value in ``flags``)."""
        out = {key: flags[key] for key in DATA_KEYS}
        for key, value in self.data.items():
            if not given(key):
                out[key] = _file_value(key, value)
        return out

    def index_settings(
        self, kind: str, options: dict[str, int], kind_given: bool
    ) -> tuple[str, dict[str, int]]:
        """The index kind and options: the flags' (``kind_given``: on the command line),
        else the file's ``[index]``."""
        if not kind_given and "kind" in self.index:
            kind = self.index["kind"]
        given = self.index.get("options")
        if given is not None and not isinstance(given, dict):
            raise ConfigError(f"config [index] options: expected a table, got {given!r}")
        if not options and isinstance(given, dict):
            options = self.index["options"]
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in options.values()):
                raise ConfigError(f"config [index] options: expected integers, got {options!r}")
        return kind, options

    def resolve(
        self, preset_name: str | None = None, **overrides: Any
    ) -> tuple[ModelConfig, TrainConfig, RankerConfig | None]:
        """The effective configs: the preset (``preset_name`` wins over the file's), the
        file's sections over it, then ``overrides`` (flags; None values ignored)."""
        name = preset_name or self.preset or "default"
        given = {key: value for key, value in overrides.items() if value is not None}
        model_config, train_config = preset_configs(name, {**self.model, **self.train, **given})
        if self.ranker is False:
            return model_config, train_config, None
        base = RANKERS.get(name)
        if base is None and self.ranker is None:
            return model_config, train_config, None
        own = self.ranker if isinstance(self.ranker, dict) else {}
        return model_config, train_config, RankerConfig.from_dict({**(base or {}), **own})


def refuse_preset_on_warm_start(preset: str | None, warm: bool) -> None:
    """A warm start continues the saved model with its own settings, which would override
    every one of a preset's: naming a preset beside it is an error, not a silent no-op."""
    if warm and preset is not None:
        named, warm_from = setting("--preset", "preset"), setting("--init-from", "init_from")
        raise ConfigError(
            f"{named} {preset!r} goes without {warm_from}: a warm start keeps the saved "
            "model's settings (change training ones with flags, overrides or a config)"
        )


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


PATH_KEYS = (
    "data_dir", "cache_dir", "interactions", "items_file", "users_file", "test_interactions"
)  # fmt: skip
"""The ``[data]`` keys that name files or folders."""


def _file_value(key: str, value: Any) -> Any:
    """A ``[data]`` value as its flag would give it; the wrong kind is an error naming it."""
    if key == "holdout" and isinstance(value, int | float) and not isinstance(value, bool):
        return "none" if value == 0 else str(value)
    if key == "holdout_estimate" and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if key == "rating_range" and isinstance(value, list) and len(value) == 2:
        return ",".join(str(v) for v in value)
    if key == "eval_users":
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"config [data] {key}: expected an integer >= 0, got {value!r}")
        return value
    if key == "skip_bad_rows":
        if not isinstance(value, bool):
            raise ConfigError(f"config [data] {key}: expected true or false, got {value!r}")
        return value
    if not isinstance(value, str):
        raise ConfigError(f"config [data] {key}: expected text, got {value!r}")
    return Path(value) if key in PATH_KEYS else value


def jsonable(value: Any) -> Any:
    """A setting as JSON holds it: a path as text."""
    return str(value) if isinstance(value, Path) else value


def holdout_fraction(text: str | None, has_test: bool, flag_given: bool = True) -> float:
    """--holdout as a test fraction: 'none' is 0, as is any run with a test set of its own
    (``has_test``). Both on the command line is an error; a holdout from a config (a warm
    start's saved split, ``--config``) gives way to a test file given as a flag."""
    if has_test:
        if text is not None and flag_given:
            raise ConfigError("--holdout goes without --test-interactions (every row trains)")
        return 0.0
    if text is None:
        return 0.2
    if text.strip().lower() == "none":
        return 0.0
    try:
        fraction = float(text)
    except ValueError:
        fraction = math.nan
    if not 0 < fraction < 1:
        raise ConfigError(f"--holdout: expected 'none' or a share in (0, 1), got {text!r}")
    return fraction
