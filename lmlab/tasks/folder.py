"""The fine-tuned result: a run-like folder that stands alone.

Layout::

    config.json      task, model config, fine-tuning config, labels or template, base run
    tokenizer.json   the base run's tokenizer
    checkpoints/     step-N/model.safetensors (the language model, keyed as in
                     pre-training checkpoints) or, fine-tuned with LoRA,
                     step-N/adapter.safetensors (only the adapters: the base
                     run's checkpoint holds the rest), step-N/head.safetensors
                     (the classifier head), step-N/state.json; best.json, last.json
    log.jsonl        training losses and validations
    resume/          while training: the last resume checkpoint (lmlab.tasks.finetune)
    valid_metrics.json, results.json

Only the best checkpoint is kept. It is written under a temporary name and
renamed into place before the pointers move, and JSON goes through
:func:`lmlab.core.io.write_json`, so a crash never leaves a half-written
checkpoint behind a pointer. Weights are safetensors, everything else JSON:
loading runs no code. Because the language model is stored as a
pre-training checkpoint is, :func:`lmlab.runs.load.load_run` (so ``lmlab generate``
and ``lmlab eval``) also reads a fine-tuned folder; a LoRA folder needs its base
run, and :func:`merge_lora` turns it into an ordinary one.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from lmlab.core.errors import ConfigError
from lmlab.core.io import read_json, write_json
from lmlab.models import registry
from lmlab.models.lora import adapter_tensors, assign_adapters, enable_lora, lora_layers, merged_tensors
from lmlab.runs.checkpoint import MODEL_FILE, STATE_FILE, load_checkpoint, load_tensors, model_tensors, read_pointed, \
    write_step
from lmlab.runs.load import LoadedRun, load_run
from lmlab.tokenizers import load_tokenizer
from lmlab.tasks.readers.templates import Template

CONFIG = "config.json"
HEAD_FILE = "head.safetensors"
ADAPTER_FILE = "adapter.safetensors"


def lm_files(lm, lora: bool) -> dict:
    """The language model's part of a checkpoint: all its weights, or with ``lora`` only the adapters."""
    return {ADAPTER_FILE: adapter_tensors(lm)} if lora else {MODEL_FILE: model_tensors(lm)}


def save_weights(folder, step: int, files: dict, head=None, state: dict | None = None) -> Path:
    """Write the checkpoint of ``step`` (``files``: :func:`lm_files`, and the optional head) and make it best
    and last."""
    checkpoints = Path(folder) / "checkpoints"
    files = dict(files)
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
    if config.get("task") not in ("classify", "generate", "span", "lm"):
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


def is_lora(config: dict) -> bool:
    return bool((config.get("finetune") or {}).get("lora_rank"))


def _load_lora(folder: Path, config: dict, which: str) -> LoadedRun:
    """The base run's checkpoint that was fine-tuned, with this folder's adapters on it."""
    base = config["base"]
    base_checkpoint = Path(base["run"]) / "checkpoints" / base["checkpoint"]
    if not base_checkpoint.is_dir():
        raise ConfigError(f"{folder} holds LoRA adapters for {base_checkpoint}, which is gone; a LoRA folder needs "
                          f"its base checkpoint (lmlab lora-merge makes a folder that stands alone)")
    found = read_pointed(folder, which, fallback="last", read=lambda path: (
        read_json(path / STATE_FILE, "checkpoint state"), load_tensors(path / ADAPTER_FILE)))
    if found is None:
        raise ConfigError(f"{folder}: no checkpoint yet")
    checkpoint, (state, adapters) = found
    model = registry.build_model(registry.config_from_dict(config["model"]))
    base_state = load_checkpoint(base_checkpoint, model)
    if base_state.get("step") != base.get("step"):
        raise ConfigError(f"{base_checkpoint} is at step {base_state.get('step')}, the adapters were trained on "
                          f"step {base.get('step')}")
    settings = config["finetune"]
    enable_lora(model, settings["lora_rank"], settings["lora_alpha"] or settings["lora_rank"], settings["lora_targets"])
    assign_adapters(model, adapters, checkpoint / ADAPTER_FILE)
    return LoadedRun(folder, config, model, load_tokenizer(folder / "tokenizer.json"), checkpoint, state["step"])


def _load(folder: Path, which: str) -> Finetuned:
    config = read_config(folder)
    run = _load_lora(folder, config, which) if is_lora(config) else load_run(folder, which)
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


def merge_lora(folder, out, which: str = "best") -> dict:
    """Write ``out``, an ordinary fine-tuned folder, from the LoRA folder ``folder``: every adapted
    kernel is ``W + (alpha/r)·A·B``, so every lmlab command (and ``lmlab export --format hf``) reads it."""
    folder, out = Path(folder), Path(out)
    finetuned = load_finetuned(folder, which)
    if not is_lora(finetuned.config):
        raise ConfigError(f"{folder} was not fine-tuned with LoRA: it has nothing to merge")
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} exists and is not empty; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    settings = finetuned.config["finetune"]
    config = {**finetuned.config, "finetune": {**settings, "lora_rank": 0},
              "merged_from": {"folder": str(folder.resolve()), "checkpoint": which, "lora_rank": settings["lora_rank"],
                              "lora_alpha": settings["lora_alpha"], "lora_targets": settings["lora_targets"]}}
    shutil.copy(folder / "tokenizer.json", out / "tokenizer.json")
    for name in ("log.jsonl", "results.json", "valid_metrics.json"):
        if (folder / name).exists():
            shutil.copy(folder / name, out / name)
    state = read_json(Path(folder) / "checkpoints" / f"{which}.json", "checkpoint pointer")
    head = finetuned.classifier.head if finetuned.classifier is not None else None
    save_weights(out, finetuned.step, {MODEL_FILE: merged_tensors(finetuned.lm)}, head,
                 {k: v for k, v in state.items() if k.startswith("val")})
    write_json(out / CONFIG, config)  # last: a folder without it is not a fine-tuned one
    return {"out": str(out), "step": finetuned.step, "merged_layers": len(lora_layers(finetuned.lm))}
