"""The run folder's ``config.json``, and writing a model that was not trained here as a run folder.

The layout is the trainer's (:mod:`lmlab.training.trainer`): ``config.json``
(train config, model config, data reference), ``tokenizer.json`` and
``checkpoints/step-000000`` with the ``last`` and ``best`` pointers, so
``lmlab eval``, ``lmlab generate`` and :func:`lmlab.runs.load.load_run` read it like
any run. With an optimizer (fresh AdamW state, built from the train config as
the trainer builds it) and a data folder, ``lmlab train --resume`` continues
training it from step 0: fine-tuning. ``config.json`` is written last, so an
interrupted write leaves no folder that looks like a run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from lmlab.core.errors import ConfigError
from lmlab.core.io import read_json, write_json
from lmlab.runs.checkpoint import save_checkpoint

RUN_CONFIG = "config.json"


def read_run_config(run_dir) -> dict:
    """A run folder's ``config.json``, checked to hold the ``train`` and ``model`` sections."""
    path = Path(run_dir) / RUN_CONFIG
    saved = read_json(path, "run config")
    if not isinstance(saved, dict) or not all(isinstance(saved.get(k), dict) for k in ("train", "model")):
        raise ConfigError(f"{path}: not an lmlab run config (no train and model sections)")
    family_name = saved["model"].get("family", "transformer")
    if not isinstance(family_name, str):
        raise ConfigError(f"{path}: model family must be a string, got {family_name!r:.40}")
    return saved


def data_reference(run_dir, data_folder, manifest: dict) -> dict:
    """The ``data`` section of ``config.json``: which prepared data the run was trained on.

    The folder is kept both absolute and relative to the run, so a project copied or moved
    as a whole (runs beside their data) still finds it; :func:`data_folder` reads it back.
    """
    folder = Path(data_folder).resolve()
    try:
        relative = os.path.relpath(folder, Path(run_dir).resolve())
    except ValueError:  # another drive on Windows
        relative = None
    return {"folder": str(folder), "relative_folder": relative, "fingerprint": manifest.get("fingerprint"),
            "tokenizer_sha256": manifest["tokenizer"].get("sha256")}


def data_folder(run_dir, config: dict) -> Path | None:
    """The data folder a run's ``config.json`` names: relative to the run when that exists, else absolute."""
    data = config.get("data") or {}
    if data.get("relative_folder"):
        beside = Path(run_dir) / data["relative_folder"]
        if beside.is_dir():
            return beside.resolve()
    return Path(data["folder"]) if data.get("folder") else None


def write_run_config(run_dir, train_config, model, data: dict | None, extra: dict | None = None) -> None:
    """Write ``config.json``: the one place its keys are spelled (the trainer and :func:`write_run` call it)."""
    write_json(Path(run_dir) / RUN_CONFIG, {
        "train": train_config.to_dict(), "model": model.config.to_dict(), "data": data,
        "parameters": int(model.num_parameters()), "flops_per_token": int(model.flops_per_token()),
        **(extra or {}),
    })


def check_new_run_folder(out) -> Path:
    out = Path(out)
    if (out / RUN_CONFIG).exists():
        raise ConfigError(f"{out} already holds a run; choose another --out")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} exists and is not an empty folder; choose another --out")
    return out


def write_run(out, model, tokenizer, train_config, data: dict | None, optimizer=None, extra: dict | None = None) -> Path:
    """Save ``model`` (built, weights set) with ``tokenizer`` as a run folder at step 0."""
    out = check_new_run_folder(out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        save_checkpoint(out, 0, model, optimizer, {"source": (extra or {}).get("imported_from", {}).get("format", "")},
                        best=True, keep=train_config.keep_checkpoints)
        tokenizer.save(out / "tokenizer.json")
        write_run_config(out, train_config, model, data, extra)
    except BaseException:  # leave no half-written run behind: the folder was new or empty
        for path in out.iterdir():
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        if created:
            out.rmdir()
        raise
    return out
