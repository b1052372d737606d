"""A finished run of a sweep as one JSON record: what it cost, what it reached, its validation curve.

The record is written atomically to ``RUN/done.json`` after the run is trained
and evaluated; a sweep skips every run that has one. It holds everything the
tables, plots and written report need, so a report can be rebuilt from the
records alone.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path

from lmlab.core.io import read_json

DONE = "done.json"  # the run is trained and evaluated: the sweep skips it
TRAINED = "trained.json"  # the trainer's results plus the sweep's timing, written before evaluation
EVALUATED = "evaluated.json"  # the evaluation, kept so a fine-tuning cut short does not evaluate again
# What a record keeps of the evaluation: always these (None for an encoder's next-token ones) ...
EVAL_KEYS = ("loss", "perplexity", "bits_per_byte", "tokens", "utf8_bytes", "checkpoint", "step", "source")
MLM_KEYS = ("masked_loss", "masked_accuracy", "masked_tokens", "pseudo_perplexity")  # ... and an encoder's, if any


def read_history(folder, tokens_per_step: int = 0) -> list[dict]:
    """Validation points from ``log.jsonl``: step, tokens, elapsed seconds (None if not logged), loss.

    A resumed run logs again the steps after its checkpoint: the last line of a step wins.
    """
    path = Path(folder) / "log.jsonl"
    if not path.exists():
        return []
    points: dict[int, dict] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill
            continue
        if "val_loss" in entry:
            step = int(entry["step"])
            points[step] = {"step": step, "tokens": int(entry.get("tokens", step * tokens_per_step)),
                            "elapsed_s": entry.get("elapsed_s"), "val_loss": float(entry["val_loss"])}
    return [points[s] for s in sorted(points)]


def train_rate(folder) -> float | None:
    """Median logged training tokens/s, leaving out the first interval (compilation)."""
    path = Path(folder) / "log.jsonl"
    if not path.exists():
        return None
    rates = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if entry.get("tokens_per_s"):
            rates.append(float(entry["tokens_per_s"]))
    rates = rates[1:] or rates
    return statistics.median(rates) if rates else None


def read_record(path) -> dict:
    """A ``done.json`` record; one written before ``preset`` was renamed ``shape`` is read with ``shape``."""
    record = read_json(path, "run record")
    if isinstance(record, dict) and "preset" in record and "shape" not in record:
        record = {("shape" if k == "preset" else k): v for k, v in record.items()}
    return record


def make_record(experiment: str, planned, folder, trained: dict, evaluation: dict,
                finetuned: dict | None = None) -> dict:
    """The ``done.json`` record of one run (``finetuned``: the finetune stage's record, if any)."""
    folder = Path(folder)
    config = read_json(folder / "config.json", "run config")
    spec = planned.spec
    neural = planned.neural
    if neural:
        tokens = int(trained["tokens_seen"])
        wall = float(trained.get("elapsed_s") or 0.0)
        history = read_history(folder, planned.tokens_per_step)
        shape = planned.config.shape
    else:  # counted once over the training split: one validation point
        tokens = int(trained["tokens_seen"])
        wall = float(trained["wall_s"])
        history = [{"step": 0, "tokens": tokens, "elapsed_s": wall, "val_loss": trained["val_loss"]}] \
            if trained.get("val_loss") is not None else []
        shape = f"order {config['model'].get('order', 5)}"
    flops_per_token = int(config.get("flops_per_token", 0))
    return {
        "experiment": experiment, "id": spec.id, "key": spec.key, "name": spec.name, "family": planned.config.family,
        "shape": shape, "seed": spec.seed, "grid": spec.grid, "budget": spec.budget.describe(),
        "parameters": int(trained.get("parameters") or config.get("parameters") or 0),
        "flops_per_token": flops_per_token, "steps": int(trained.get("step", 0)),
        "tokens_per_step": planned.tokens_per_step, "tokens_seen": tokens, "training_flops": flops_per_token * tokens,
        "wall_s": wall, "tokens_per_s": tokens / wall if wall > 0 else None,
        "train_tokens_per_s": train_rate(folder) if neural else None,  # steady training steps alone
        "best_val_loss": _number(trained.get("best_val_loss")), "final_val_loss": _number(trained.get("val_loss")),
        "stopped": trained.get("stopped", "max_steps" if neural else "counted"),
        "eval": {k: evaluation.get(k) for k in EVAL_KEYS} | {k: evaluation[k] for k in MLM_KEYS if k in evaluation}
                | {"split": evaluation.get("split")},
        **({"finetune": finetuned} if finetuned is not None else {}),
        "history": history,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _number(value):
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None
