"""Loading a finished (or running) training run for evaluation and generation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lmlab.core.backend import check_backend
from lmlab.core.errors import ConfigError
from lmlab.models import precision, registry
from lmlab.runs.checkpoint import load_checkpoint, read_pointed
from lmlab.runs.folder import RUN_CONFIG, read_run_config
from lmlab.runs.ngram import MODEL_FOLDER, load_token_ngram
from lmlab.tokenizers import Tokenizer, load_tokenizer


@dataclass
class LoadedRun:
    folder: Path
    config: dict
    model: object
    tokenizer: Tokenizer
    checkpoint: Path
    step: int


def stored_dtype(config: dict) -> str:
    """The dtype a run's checkpoints hold: ``float32`` for a trained run, else what ``lmlab export --dtype`` wrote."""
    return (config.get("inference") or {}).get("dtype", "float32")


def load_run(folder, which: str = "best", dtype: str | None = None) -> LoadedRun:
    """The model of a run at its ``best`` (default) or ``last`` checkpoint, with its tokenizer.

    ``dtype`` (``float32``, ``bfloat16`` or ``int8``; default: what the run holds) is the inference precision
    (:mod:`lmlab.models.precision`). A float run is read as float32 and cast or quantized; a run exported with
    ``--dtype int8`` is built with int8 kernels and its int8 weights and scales assigned as they are.

    The run may be training meanwhile: the checkpoint is read whole, surviving rotation
    (:func:`~lmlab.runs.checkpoint.read_pointed`). A Keras backend lmlab does not run on is an
    :class:`~lmlab.core.backend.UnsupportedBackend` error.
    """

    folder = Path(folder)
    if which not in ("best", "last"):
        raise ConfigError(f"checkpoint must be best or last, got {which!r}")
    if not (folder / RUN_CONFIG).exists():
        raise ConfigError(f"{folder}: not a run folder (no {RUN_CONFIG})")
    config = read_run_config(folder)
    family = registry.family(config["model"].get("family", "transformer"))
    stored = stored_dtype(config)
    dtype = stored if dtype is None else dtype
    if not family.neural:  # counted: its own folder
        if dtype != "float32":
            raise ConfigError(f"{folder}: an n-gram model holds counts, not weights; it has no dtype {dtype!r}")
        model = load_token_ngram(folder)
        return LoadedRun(folder, config, model, model.tokenizer, folder / MODEL_FOLDER, 0)
    precision.check_dtype(dtype, family.name)
    if stored == "int8" and dtype != "int8":
        raise ConfigError(f"{folder} holds int8 weights: load it with dtype int8, or load the run it was exported from")
    check_backend()
    model_config = registry.config_from_dict(config["model"])
    # Read whole before building the model (a damaged file fails in a moment), and safe while the run trains:
    # a checkpoint rotated away mid-read is read again from where the pointer moved (read_pointed).
    found = read_pointed(folder, which, fallback="last")
    if found is None:
        raise ConfigError(f"{folder}: the run has no checkpoint yet")
    checkpoint, read = found
    # Float weights quantize after loading (Keras's own quantize); int8 ones load into int8 kernels directly.
    quantize_after = dtype == "int8" and stored != "int8"
    model = registry.build_model(model_config, dtype="float32" if quantize_after else dtype)
    state = load_checkpoint(checkpoint, model, read=read)
    if quantize_after:
        precision.quantize_int8(model)
    return LoadedRun(folder, config, model, load_tokenizer(folder / "tokenizer.json"), checkpoint, state["step"])
