"""The run configuration: one validated, JSON-serialisable record of a training run.

Sources, later ones winning: the defaults below, a YAML or TOML file, then
``--set key=value`` overrides (``model.n_layer=6`` reaches into the model's
own overrides). Every bad value raises :class:`ConfigError` naming the field.
The defaults are nanoGPT's CPU Shakespeare recipe.
"""

from __future__ import annotations

import json
import math
import reprlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lmlab.core.errors import ConfigError
from lmlab.core.records import Record
from lmlab.models.registry import ALIASES, family
from lmlab.training.distribute.mesh import check as check_distribute

PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")  # auto: lmlab.training.precision
COMPILE_MODES = ("auto", "xla", "graph")  # how TensorFlow compiles the step (lmlab.training.steps.use_xla)


@dataclass(frozen=True)
class TrainConfig(Record):
    record_name = "training config"

    data: str = ""  # a folder made by lmlab prepare
    family: str = "transformer"  # transformer | rnn | gated_cnn (see lmlab.models.registry)
    shape: str = "shakespeare-char"  # the family's named model shape, randomly initialised (not a checkpoint)
    model: dict = field(default_factory=dict)  # overrides of the shape's fields
    batch_size: int = 12
    grad_accum: int = 1  # micro-batches per optimizer step
    max_steps: int = 2000
    learning_rate: float = 1e-3
    min_learning_rate: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # global norm; 0 turns clipping off
    precision: str = "auto"  # mixed_bfloat16 where this machine's bfloat16 path is faster, else float32
    compile: str = "auto"  # TensorFlow: xla | graph | auto (XLA, but graph mode for bfloat16 on a CPU)
    eval_interval: int = 250
    eval_batches: int = 20  # batches of random validation windows per evaluation
    early_stopping: int = 0  # evaluations without improvement before stopping; 0: never
    log_interval: int = 10
    seed: int = 1337
    keep_checkpoints: int = 2
    max_seconds: float = 0.0  # wall-clock limit of the training loop; 0: none (stops, checkpoints, says why)
    skip_bad_batches: bool = False  # a batch with a NaN/inf loss or gradient: skip it (no update) instead of stopping
    distribute: str = "none"  # none | data | model: across devices and processes (docs/distributed.md)
    mesh: str = ""  # distribute=model: "batch=B,model=M"; empty: batch=1, model=every device

    def __post_init__(self):
        for name in ("data", "family", "shape", "precision", "compile"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"{name} must be a string, got {_show(getattr(self, name))}")
        positive = ("batch_size", "grad_accum", "max_steps", "eval_interval", "eval_batches", "log_interval",
                    "keep_checkpoints")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {_show(value)}")
        for name in ("warmup_steps", "early_stopping", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{name} must be an integer >= 0, got {_show(value)}")
        for name in ("learning_rate", "min_learning_rate", "weight_decay", "grad_clip", "max_seconds"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < math.inf:
                raise ConfigError(f"{name} must be a finite number >= 0, got {_show(value)}")
        if self.learning_rate <= 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate!r}")
        if self.min_learning_rate > self.learning_rate:
            raise ConfigError(f"min_learning_rate ({self.min_learning_rate}) must not exceed learning_rate "
                              f"({self.learning_rate})")
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ConfigError(f"{name} must be in [0, 1), got {_show(value)}")
        if not isinstance(self.skip_bad_batches, bool):
            raise ConfigError(f"skip_bad_batches must be true or false, got {_show(self.skip_bad_batches)}")

        check_distribute(self.distribute, self.mesh)
        if self.warmup_steps >= self.max_steps:
            raise ConfigError(f"warmup_steps ({self.warmup_steps}) must be less than max_steps ({self.max_steps})")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.compile not in COMPILE_MODES:
            raise ConfigError(f"compile must be one of {', '.join(COMPILE_MODES)}, got {self.compile!r}")

        family(self.family)  # raises for an unknown family
        if self.family in ALIASES:
            object.__setattr__(self, "family", ALIASES[self.family])
        if not isinstance(self.model, dict) or not all(isinstance(key, str) for key in self.model):
            raise ConfigError(f"model must be a mapping of model field names to values, got {_show(self.model)}")

    @classmethod
    def from_dict(cls, data):
        """As :meth:`Record.from_dict`, reading the old name ``preset`` as ``shape`` (run folders made before it)."""
        return super().from_dict(upgrade_fields(data))


RENAMED = {"preset": "shape"}  # old training field name -> new; old config files and run folders still read


def upgrade_fields(data, place: str = ""):
    """``data`` (a mapping of training fields) with old field names read as the new ones (``preset`` as ``shape``).

    Anything not a mapping passes through for the caller's own check. Both names with different values
    is a :class:`ConfigError` naming both; the same value under both is that value.
    """
    if not isinstance(data, Mapping) or not any(old in data for old in RENAMED):
        return data
    data = dict(data)
    for old, new in RENAMED.items():
        if old not in data:
            continue
        value = data.pop(old)
        if new in data and data[new] != value:
            raise ConfigError(f"{place + ': ' if place else ''}{old} ({_show(value)}) and {new} ({_show(data[new])}) "
                              f"disagree; {old} is the old name of {new}: give {new} alone")
        data[new] = value
    return data


def _show(value) -> str:
    """A bounded repr for messages (a YAML alias can make a value's full repr astronomically long)."""
    return reprlib.repr(value)


def _parse_value(text: str):
    """A command-line value: JSON when it parses (numbers, true, lists), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def load_config_file(path) -> dict:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read config file: {error}") from None
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text) or {}
    except Exception as error:  # yaml and toml both raise their own error types
        raise ConfigError(f"{path}: not valid {'TOML' if path.suffix == '.toml' else 'YAML'}: "
                          f"{(str(error).splitlines() or [type(error).__name__])[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must hold a mapping of fields")
    return data


def build_config(file=None, overrides=(), **fields) -> TrainConfig:
    """Defaults ← file ← keyword fields ← ``key=value`` overrides.

    Each source may use an old field name (``preset`` for ``shape``): it is read as the new one there,
    so a later source overrides it as usual; one source giving both, differently, is a :class:`ConfigError`.
    """
    data = upgrade_fields(load_config_file(file), str(file)) if file else {}
    data.update(upgrade_fields({k: v for k, v in fields.items() if v is not None}))
    model = data.get("model") or {}
    if not isinstance(model, dict):
        raise ConfigError(f"model must be a mapping of model fields, got {_show(model)}")
    model = dict(model)
    settings = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        if key.startswith("model."):
            model[key.removeprefix("model.")] = _parse_value(value)
        else:
            settings[key] = _parse_value(value)
    data.update(upgrade_fields(settings, "--set"))
    if model:
        data["model"] = model
    return TrainConfig.from_dict(data)
