"""``lmlab export --format run --dtype D``: a run's model saved as a new run folder in inference dtype ``D``.

The copy is an ordinary run folder (``config.json``, ``tokenizer.json``, ``checkpoints/`` with ``last`` and
``best``), so ``lmlab generate`` and ``eval`` and :func:`lmlab.runs.load.load_run` read it like any run.
``config.json`` gains ``"inference": {"dtype": D, ...}`` saying how its weights are stored; with ``int8`` the
checkpoint holds each Dense layer's int8 ``kernel`` and float32 ``kernel_scale``
(:data:`lmlab.models.precision.INT8_SCHEME`), loaded as they are, without a float32 copy. It is for
inference: ``lmlab train --resume`` on it is refused.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from lmlab.core.io import write_json
from lmlab.models import precision
from lmlab.runs.checkpoint import save_checkpoint
from lmlab.runs.folder import RUN_CONFIG, check_new_run_folder
from lmlab.runs.load import load_run


def export_run(run, out, dtype: str, checkpoint: str = "best", overwrite: bool = False, log=print) -> dict:
    """Write ``run``'s model in ``dtype`` as a run folder at ``out``; returns a summary (what the CLI prints)."""
    loaded = load_run(run, checkpoint, dtype=dtype)
    out = Path(out)
    if overwrite and out.exists():
        shutil.rmtree(out)
    out = check_new_run_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        save_checkpoint(out, loaded.step, loaded.model, None, {"source": f"export of {run} in {dtype}"}, best=True)
        loaded.tokenizer.save(out / "tokenizer.json")
        inference = {"dtype": dtype, "exported_from": str(run), "checkpoint": loaded.checkpoint.name}
        if dtype == "int8":
            inference["quantization"] = precision.INT8_SCHEME
        write_json(out / RUN_CONFIG, {**loaded.config, "inference": inference})  # last: only a whole copy is a run
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    weights = precision.weight_bytes(loaded.model)
    log(f"wrote {out}: {dtype} weights, {sum(weights.values()) / 1e6:.2f} MB")
    return {"run": str(run), "out": str(out), "dtype": dtype, "step": loaded.step, "weight_bytes": weights}
