"""Perplexity and bits per byte on held-out text.

``loss`` is the mean negative log-likelihood per predicted token (nats),
``perplexity = exp(loss)``, and ``bits_per_byte = total nats / (ln 2 × UTF-8
bytes of the text)``, which compares models with different tokenizers
fairly. For a prepared split the byte count is the manifest's (each unit's
text plus one byte per end token); the first token, which no model predicts,
is included in it (a difference of a few bytes in millions).

Text longer than the context is scored with sequential windows; with
``stride < block_size`` every window after the first scores only its last
``stride`` targets, so each has at least ``block_size - stride`` tokens of
context (see :class:`lmlab.data.windows.SequentialWindows`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from lmlab.core.errors import ConfigError, DataError
from lmlab.core.io import read_text
from lmlab.core.progress import progress_bar
from lmlab.data.shards import TokenSplit, load_manifest, open_split
from lmlab.data.windows import SequentialWindows
from lmlab.evaluation.masked import evaluate_mlm
from lmlab.models import registry
from lmlab.runs.folder import data_folder
from lmlab.runs.load import load_run, stored_dtype


def score_windows(model, windows: SequentialWindows, progress: bool = False) -> tuple[float, int]:
    """Total nats and number of scored targets over all windows (``progress``: a bar over the windows)."""
    from lmlab.training.steps import Stepper

    stepper = Stepper(model)
    total = count = 0.0
    with progress_bar(progress, "eval", " windows", windows.num_windows) as bar:
        for x, y, mask in windows:
            real = len(x)
            if real < windows.batch_size:  # keep one compiled shape: pad the last batch
                pad = windows.batch_size - real
                x, y = np.pad(x, ((0, pad), (0, 0))), np.pad(y, ((0, pad), (0, 0)))
                mask = np.pad(mask, ((0, pad), (0, 0)))
            nll, n = stepper.evaluate(x, y, mask)
            total, count = total + nll, count + n
            bar.update(real)
    return total, int(count)


def evaluate_tokens(model, split: TokenSplit, utf8_bytes: int, block_size: int | None, batch_size: int = 8,
                    stride: int | None = None, progress: bool = False) -> dict:
    if hasattr(model, "score_split"):  # a count model scores whole sentences, no windows
        with progress_bar(progress, "eval", " tokens", split.tokens) as bar:
            total, count = model.score_split(split, on_tokens=bar.update)
        stride = None
    else:
        windows = SequentialWindows(split, block_size, batch_size, stride)
        total, count = score_windows(model, windows, progress)
        stride = windows.stride
    loss = total / count
    return {"loss": loss, "perplexity": math.exp(loss), "bits_per_byte": total / (math.log(2) * utf8_bytes),
            "tokens": count, "utf8_bytes": utf8_bytes, "nats": total, "block_size": block_size, "stride": stride}


def text_split(tokenizer, text: str, where: str = "the text") -> TokenSplit:
    """``text`` as a one-document split, as ``lmlab eval --text`` scores it; ``where`` names it in the error
    for fewer than 2 tokens."""
    ids = np.array(tokenizer.encode(text), dtype=np.int64)
    if len(ids) < 2:
        raise DataError(f"{where}: needs at least 2 tokens to evaluate, has {len(ids)}")
    return TokenSplit("text", [ids], tokenizer.eos_id, len(text.encode("utf-8")), 1)


def evaluate_run(run_folder, split: str = "test", text_file=None, stride: int | None = None, batch_size: int = 8,
                 checkpoint: str = "best", progress: bool = False, dtype: str | None = None) -> dict:
    """``lmlab eval``: score a run's model on a prepared split or on a text file (``progress``: bars on stderr),
    in inference ``dtype`` (default: what the run holds; :func:`lmlab.runs.load.load_run`)."""

    run = load_run(run_folder, checkpoint, dtype=dtype)
    block = run.config["model"].get("block_size")
    if text_file is not None:
        path = Path(text_file)
        tokens = text_split(run.tokenizer, read_text(path, "text file"), str(path))
        source = str(path)
    else:
        data = data_folder(run_folder, run.config)
        if data is None:  # e.g. a model imported without --data
            raise ConfigError(f"{run_folder} has no prepared data of its own: score a text file with --text FILE")
        manifest = load_manifest(data)
        if manifest["tokenizer"].get("sha256") != run.config["data"].get("tokenizer_sha256"):
            raise ConfigError(f"{data}: its tokenizer is not the one {run_folder} was trained with")
        tokens = open_split(data, split)
        if tokens.tokens < 2:
            raise DataError(f"{data}: the {split} split is empty")
        source = f"{data}:{split}"
    if registry.family(run.config["model"].get("family", "transformer")).objective == "mlm":  # masked tokens
        result = evaluate_mlm(run.model, run.tokenizer, tokens, batch_size, progress=progress)
    else:
        result = evaluate_tokens(run.model, tokens, tokens.utf8_bytes, block, batch_size, stride, progress)
    return {"run": str(run_folder), "checkpoint": run.checkpoint.name, "step": run.step, "source": source,
            "dtype": dtype or stored_dtype(run.config), **result}
