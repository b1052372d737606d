"""``lmlab import``: a Hugging Face GPT-2 or Llama checkpoint folder becomes an lmlab run.

Reads ``config.json`` (:mod:`lmlab.interop.hf_config`), the safetensors weights
(:mod:`lmlab.interop.weight_files`; pickles refused), maps every tensor through
the name tables (:mod:`lmlab.interop.hf_names`) and the tokenizer
(:mod:`lmlab.interop.hf_tokenizer`), and writes a run folder at step 0
(:mod:`lmlab.runs.folder`).

Given ``data`` (a folder prepared with this checkpoint's tokenizer, e.g.
``lmlab prepare ... --tokenizer DIR/tokenizer.json``), the run also gets a fresh
optimizer state and a fine-tuning config, so ``lmlab train --resume RUN``
fine-tunes it. The fine-tuning defaults below can be changed with ``--set``,
as can the model's ``dropout``, ``attention`` and (smaller) ``block_size``.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from lmlab.core.errors import ConfigError
from lmlab.core.io import read_json
from lmlab.data.shards import load_manifest
from lmlab.interop import hf_config, hf_names
from lmlab.interop.hf_tokenizer import load_hf_tokenizer, same_tokenizer
from lmlab.interop.weight_files import CheckpointTensors, refuse_pickles
from lmlab.models import registry
from lmlab.runs.checkpoint import variable_key
from lmlab.runs.folder import check_new_run_folder, write_run
from lmlab.tokenizers import load_tokenizer
from lmlab.training.config import build_config
from lmlab.training.optimizer import build_optimizer

# Fine-tuning starts from trained weights: a tenth of the from-scratch learning rate, a short warm-up.
FINETUNE_DEFAULTS = dict(max_steps=200, learning_rate=1e-4, min_learning_rate=1e-5, warmup_steps=10,
                         eval_interval=50)
# Model fields that may differ from the checkpoint's: they change no weight's shape or meaning.
ADJUSTABLE = ("dropout", "attention", "block_size")
SHAPE = {"gpt2": "gpt2-small", "llama": "llama-small", "bert": "bert-base", "roberta": "roberta-base"}


def _train_config(model_config, data, settings):
    model = {k: v for k, v in model_config.to_dict().items() if k != "family"}
    config = build_config(None, settings, data=str(Path(data).resolve()) if data else "",
                          family=model_config.family, shape=SHAPE[model_config.style], model=model,
                          **FINETUNE_DEFAULTS)
    changed = sorted(k for k in set(model) | set(config.model) if config.model.get(k) != model.get(k))
    fixed = [k for k in changed if k not in ADJUSTABLE]
    if fixed:
        raise ConfigError(f"model.{fixed[0]} comes from the checkpoint's config.json; only "
                          f"{', '.join('model.' + k for k in ADJUSTABLE)} can be set on import")
    return config, model_config.replace(**{k: config.model[k] for k in changed})


def _data_reference(data, tokenizer):
    """The data's tokenizer (it must encode as the checkpoint's) and the run's data reference."""

    manifest = load_manifest(data)
    data_tokenizer = load_tokenizer(Path(data) / "tokenizer.json")
    if not same_tokenizer(data_tokenizer, tokenizer):
        raise ConfigError(f"{data} was prepared with another tokenizer than the checkpoint's; prepare it with "
                          "--tokenizer DIR/tokenizer.json (DIR: the Hugging Face folder)")
    return data_tokenizer, {"folder": str(Path(data).resolve()), "fingerprint": manifest.get("fingerprint"),
                            "tokenizer_sha256": manifest["tokenizer"].get("sha256")}


def _weight_shapes(model, source_config) -> dict[str, tuple]:
    """The lmlab weight shapes the checkpoint must fill (its own position table, if cut on import)."""

    shapes = {variable_key(w): tuple(w.shape) for w in model.weights}
    if "position_embedding/embeddings" in shapes:
        shapes["position_embedding/embeddings"] = (source_config.block_size, source_config.d_model)
    return shapes


def import_hf(folder, out, data=None, settings=(), tokenizer=None, log=print) -> dict:
    """Import the Hugging Face checkpoint in ``folder`` as an lmlab run at ``out``; return a summary.

    ``settings``: ``key=value`` strings as ``lmlab train --set`` takes them.
    ``tokenizer``: a tokenizer file to use when the folder has no ``tokenizer.json``.
    """
    started = time.perf_counter()
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such folder (a Hugging Face checkpoint folder with config.json)")
    out = check_new_run_folder(out)
    if not (folder / "config.json").exists():
        refuse_pickles(folder)
        raise ConfigError(f"{folder}: no config.json; not a Hugging Face checkpoint folder")
    hf = read_json(folder / "config.json", "Hugging Face config")
    arch, source_config = hf_config.from_hf(hf, str(folder / "config.json"))
    CheckpointTensors.open(folder).close()  # refuses pickles and unreadable weights before anything else
    tok, tokenizer_config = load_hf_tokenizer(folder, hf, tokenizer)
    if tok.vocab_size > source_config.vocab_size:
        raise ConfigError(f"{folder}: the tokenizer has {tok.vocab_size:,} tokens, the model only "
                          f"{source_config.vocab_size:,}")
    train_config, model_config = _train_config(source_config, data, settings)
    if model_config.style == "gpt2" and model_config.block_size > source_config.block_size:
        raise ConfigError(f"model.block_size={model_config.block_size}: this GPT-2 learned positions for "
                          f"{source_config.block_size} tokens only")
    data_ref = None
    if data:
        tok, data_ref = _data_reference(data, tok)
    import keras  # TensorFlow loads here, once the folder has passed the checks above

    from lmlab.training.precision import resolve_precision

    # Chosen now, so the saved config (what `lmlab train --resume` fine-tunes with) never says auto.
    precision, why = resolve_precision(train_config.precision, model_config.d_model,
                                       train_config.batch_size * model_config.block_size)
    if train_config.precision == "auto":
        train_config = dataclasses.replace(train_config, precision=precision)
        log(f"precision: {precision} ({why})")
    tensors = CheckpointTensors.open(folder)
    try:
        keras.config.set_dtype_policy("float32" if train_config.precision == "float32" else train_config.precision)
        model = registry.build_model(model_config, seed=train_config.seed)
        try:
            weights = hf_names.to_lmlab(arch, source_config, tensors, _weight_shapes(model, source_config),
                                        str(folder))
            dtypes = sorted(tensors.dtypes())
        finally:
            tensors.close()
        if "position_embedding/embeddings" in weights:  # GPT-2 given a smaller block: its first positions
            weights["position_embedding/embeddings"] = weights["position_embedding/embeddings"][:model_config.block_size]
        for weight in model.weights:
            weight.assign(weights.pop(variable_key(weight)))
        optimizer = None
        if data:  # fresh AdamW moments, as the trainer builds them: `lmlab train --resume` restores them
            optimizer, _ = build_optimizer(train_config, model)
        write_run(out, model, tok, train_config, data_ref, optimizer, extra={"imported_from": {
            "format": "huggingface", "folder": str(folder.resolve()), "architecture": arch.name,
            "dtypes": dtypes, "tokenizer_config": tokenizer_config}})
    finally:
        keras.config.set_dtype_policy("float32")
    summary = {"run": str(out), "architecture": arch.name, "style": model_config.style,
               "parameters": int(model.num_parameters()), "vocab_size": model_config.vocab_size,
               "block_size": model_config.block_size, "weights_dtype": "/".join(dtypes),
               "tokenizer": tok.describe(), "finetune_ready": bool(data),
               "seconds": round(time.perf_counter() - started, 2)}
    log(f"imported {arch.name} from {folder}: {summary['parameters']:,} parameters ({summary['weights_dtype']} "
        f"read as float32), {tok.describe()} -> {out}")
    if not data:
        log("to fine-tune it, import again with --data DIR (prepared with --tokenizer "
            f"{folder / 'tokenizer.json'}), then lmlab train --resume RUN")
    return summary
