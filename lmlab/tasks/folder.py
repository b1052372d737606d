"""The fine-tuned result: a run-like folder that stands alone.

Layout::

    config.json      task, model config, fine-tuning config, labels or template, base run
    tokenizer.json   the base run's tokenizer
    checkpoints/     step-N/model.safetensors (the language model, keyed as in
                     pre-training checkpoints), step-N/head.safetensors (the
                     classifier head), step-N/state.json; best.json, last.json
    log.jsonl        training losses and validations
    valid_metrics.json, results.json

Only the best checkpoint is kept. It is written under a temporary name and
renamed into place before the pointers move, and JSON goes through
:func:`lmlab.core.io.write_json`, so a crash never leaves a half-written
checkpoint behind a pointer. Weights are safetensors, everything else JSON:
loading runs no code. Because the language model is stored as a
pre-training checkpoint is, :func:`lmlab.runs.load.load_run` (so ``lmlab generate``
and ``lmlab eval``) also reads a fine-tuned folder.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from lmlab.core.errors import ConfigError
from lmlab.core.io import read_json, write_json
from lmlab.runs.checkpoint import MODEL_FILE, load_tensors, model_tensors, write_step
from lmlab.runs.load import load_run
from lmlab.tasks.readers.templates import Template

CONFIG = "config.json"
HEAD_FILE = "head.safetensors"


def save_weights(folder, step: int, lm, head=None, state: dict | None = None) -> Path:
    """Write the checkpoint of ``step`` (the language model and optional head) and make it best and last."""
    checkpoints = Path(folder) / "checkpoints"
    files = {MODEL_FILE: model_tensors(lm)}
    if head is not None:
        files[HEAD_FILE] = {"kernel": np.asarray(head.kernel.numpy()), "bias": np.asarray(head.bias.numpy())}
    name = write_step(checkpoints, step, files, state or {})
    pointer = {"checkpoint": name, "step": step, **{k: v for k, v in (state or {}).items() if k.startswith("val")}}
    write_json(checkpoints / "best.json", pointer)
    write_json(checkpoints / "last.json", pointer)
    for old in checkpoints.glob("step-*"):
        if old.name != name and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    return checkpoints / name


@dataclass
class Finetuned:
    folder: Path
    config: dict
    task: str
    tokenizer: object
    lm: object
    classifier: object | None
    step: int

    @property
    def labels(self) -> list[str]:
        return self.config["classify"]["labels"]

    @property
    def template(self):
        return Template.from_dict(self.config["generate"]["template"])

    @cached_property
    def classifier_stepper(self):
        """The classifier's compiled evaluation step, built once per load (loads are cached, so are steps)."""
        from lmlab.training.steps import TaskStepper  # Keras and a backend: not for light commands

        return TaskStepper(self.classifier)


def read_config(folder) -> dict:
    folder = Path(folder)
    if not (folder / CONFIG).exists():
        raise ConfigError(f"{folder}: not a fine-tuned folder (no {CONFIG})")
    config = read_json(folder / CONFIG, "fine-tuned config")
    if config.get("task") not in ("classify", "generate", "span"):
        raise ConfigError(f"{folder}: not a fine-tuned folder (its {CONFIG} names no task); "
                          f"fine-tune a run with lmlab finetune first")
    return config


# The last few loads, so that predicting again from the same folder (in a loop, or several
# commands in one process) reuses the built model and its compiled steps instead of redoing both.
_LOADED: dict = {}
CACHED_LOADS = 2


def _restore_head(head, path) -> None:
    """The task head's ``kernel`` and ``bias`` from ``path``, each checked against the built layer's shape."""
    tensors = load_tensors(path)
    for name, variable in (("kernel", head.kernel), ("bias", head.bias)):
        if name not in tensors or tuple(tensors[name].shape) != tuple(variable.shape):
            raise ConfigError(f"{path}: {name} missing or of the wrong shape (expected {tuple(variable.shape)})")
        variable.assign(tensors[name].astype(variable.dtype))


def load_finetuned(folder, which: str = "best") -> Finetuned:
    """The fine-tuned model of ``folder``: the language model, and for classification its classifier.

    A folder loaded before is returned from memory while its checkpoint pointer is unchanged.
    """
    folder = Path(folder)
    pointer = folder / "checkpoints" / f"{which}.json"
    stamp = (pointer.stat().st_mtime_ns, pointer.read_bytes()) if pointer.exists() else None
    key = (str(folder.resolve()), which)
    if stamp is not None and key in _LOADED and _LOADED[key][0] == stamp:
        return _LOADED[key][1]
    finetuned = _load(folder, which)
    if stamp is not None:
        _LOADED.pop(key, None)
        _LOADED[key] = (stamp, finetuned)
        while len(_LOADED) > CACHED_LOADS:
            _LOADED.pop(next(iter(_LOADED)))
    return finetuned


def _load(folder: Path, which: str) -> Finetuned:
    config = read_config(folder)
    run = load_run(folder, which)
    classifier = None
    if config["task"] == "classify":
        from lmlab.tasks.classifier import SequenceClassifier

        settings = config["finetune"]
        classifier = SequenceClassifier(run.model, len(config["classify"]["labels"]), settings["pooling"],
                                        settings["freeze"])
        classifier(np.zeros((1, 1), np.int32), np.ones(1, np.int32))  # built, as Keras's stateless calls need
        _restore_head(classifier.head, run.checkpoint / HEAD_FILE)
    if config["task"] == "span":  # extractive QA: the start/end head (lmlab.tasks.span)
        from lmlab.tasks.span import SpanExtractor

        classifier = SpanExtractor(run.model)
        classifier(np.zeros((1, 1), np.int32), np.zeros((1, 1), np.int32), np.ones(1, np.int32))
        _restore_head(classifier.head, run.checkpoint / HEAD_FILE)
    return Finetuned(folder, config, config["task"], run.tokenizer, run.model, classifier, run.step)
