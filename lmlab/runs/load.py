"""Loading a finished (or running) training run for evaluation and generation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lmlab.core.backend import check_backend
from lmlab.core.errors import ConfigError
from lmlab.models import registry
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


def load_run(folder, which: str = "best") -> LoadedRun:
    """The model of a run at its ``best`` (default) or ``last`` checkpoint, with its tokenizer.

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
    if not registry.family(config["model"].get("family", "transformer")).neural:  # counted: its own folder
        model = load_token_ngram(folder)
        return LoadedRun(folder, config, model, model.tokenizer, folder / MODEL_FOLDER, 0)
    check_backend()
    model_config = registry.config_from_dict(config["model"])
    # Read whole before building the model (a damaged file fails in a moment), and safe while the run trains:
    # a checkpoint rotated away mid-read is read again from where the pointer moved (read_pointed).
    found = read_pointed(folder, which, fallback="last")
    if found is None:
        raise ConfigError(f"{folder}: the run has no checkpoint yet")
    checkpoint, read = found
    model = registry.build_model(model_config)
    state = load_checkpoint(checkpoint, model, read=read)
    return LoadedRun(folder, config, model, load_tokenizer(folder / "tokenizer.json"), checkpoint, state["step"])
