"""Writing a model that was not trained here as an lmlab run folder.

The layout is the trainer's (:mod:`lmlab.training.trainer`): ``config.json``
(train config, model config, data reference), ``tokenizer.json`` and
``checkpoints/step-000000`` with the ``last`` and ``best`` pointers, so
``lmlab eval``, ``lmlab generate`` and :func:`lmlab.runs.load_run` read it like
any run. With an optimizer (fresh AdamW state, built from the train config as
the trainer builds it) and a data folder, ``lmlab train --resume`` continues
training it from step 0: fine-tuning. ``config.json`` is written last, so an
interrupted write leaves no folder that looks like a run.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from lmlab.errors import ConfigError
from lmlab.io import write_json
from lmlab.training.trainer import RUN_CONFIG


def check_new_run_folder(out) -> Path:
    out = Path(out)
    if (out / RUN_CONFIG).exists():
        raise ConfigError(f"{out} already holds a run; choose another --out")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} exists and is not an empty folder; choose another --out")
    return out


def write_run(out, model, tokenizer, train_config, data: dict | None, optimizer=None, extra: dict | None = None) -> Path:
    """Save ``model`` (built, weights set) with ``tokenizer`` as a run folder at step 0."""
    from lmlab.training.checkpoint import save_checkpoint

    out = check_new_run_folder(out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        save_checkpoint(out, 0, model, optimizer, {"source": (extra or {}).get("imported_from", {}).get("format", "")},
                        best=True, keep=train_config.keep_checkpoints)
        tokenizer.save(out / "tokenizer.json")
        write_json(out / RUN_CONFIG, {
            "train": train_config.to_dict(), "model": model.config.to_dict(), "data": data,
            "parameters": int(model.num_parameters()), "flops_per_token": int(model.flops_per_token()),
            **(extra or {}),
        })
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
