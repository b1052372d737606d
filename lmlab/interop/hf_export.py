"""``lmlab export RUN --format hf``: an lmlab Transformer run as a Hugging Face checkpoint folder.

Writes ``config.json`` (GPT-2 or Llama fields, :mod:`lmlab.interop.hf_config`),
``model.safetensors`` (float32, names from :mod:`lmlab.interop.hf_names`),
``tokenizer.json`` with ``tokenizer_config.json`` and ``special_tokens_map.json``
(:mod:`lmlab.interop.hf_tokenizer`) and ``generation_config.json``, so that
``transformers.AutoModelForCausalLM.from_pretrained(DIR)`` and
``AutoTokenizer.from_pretrained(DIR)`` load it without custom code. Every
file is written atomically, ``config.json`` last.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from lmlab.core.errors import ConfigError
from lmlab.core.io import atomic_open, write_json
from lmlab.interop import hf_config, hf_names, hf_tokenizer
from lmlab.interop.weight_files import SINGLE_FILE, write_safetensors
from lmlab.runs.checkpoint import variable_key
from lmlab.runs.load import load_run

OWN_FILES = ("config.json", SINGLE_FILE, "generation_config.json", hf_tokenizer.TOKENIZER_FILE,
             hf_tokenizer.TOKENIZER_CONFIG, hf_tokenizer.SPECIAL_TOKENS_MAP)


def check_output_folder(out, overwrite: bool) -> Path:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"{out} is not empty; choose another --out or give --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    return out


def export_hf(run, out, checkpoint: str = "best", with_tokenizer: bool = True, overwrite: bool = False,
              log=print) -> dict:
    """Export ``run``'s ``best`` (or ``last``) checkpoint to the folder ``out``; return a summary."""

    started = time.perf_counter()
    loaded = load_run(run, checkpoint)
    config = loaded.model.config
    if getattr(config, "output", "softmax") != "softmax":  # GPT-2 and Llama have one full-softmax lm_head
        raise ConfigError(f"{run}: a model with output={config.output!r} (the adaptive softmax) has no Hugging Face "
                          f"GPT-2 or Llama equivalent; only output='softmax' models can be exported")
    arch = hf_config.architecture_for(config)
    imported = loaded.config.get("imported_from", {}).get("tokenizer_config") or None
    backend_json, specials = None, {}
    if with_tokenizer:
        backend_json = hf_tokenizer.tokenizer_json(loaded.tokenizer)  # raises first if it cannot be written
        specials = hf_tokenizer.special_tokens(loaded.tokenizer, imported)
        ids = hf_tokenizer.token_ids(backend_json, specials)
    else:
        ids = {"bos_token_id": loaded.tokenizer.eos_id, "eos_token_id": loaded.tokenizer.eos_id, "pad_token_id": None}
    hf_json = hf_config.to_hf(arch, config, ids)  # raises for what the format cannot hold
    variables = {variable_key(w): w for w in loaded.model.weights}  # weights only: no dropout seed states
    shapes = {key: tuple(w.shape) for key, w in variables.items()}
    layout = hf_names.hf_shapes(arch, config, shapes)  # raises before anything is written
    out = check_output_folder(out, overwrite)
    for name in OWN_FILES:  # a stale file of an earlier export must not sit beside the new ones
        (out / name).unlink(missing_ok=True)
    write_safetensors(out / SINGLE_FILE, hf_names.to_hf(arch, config, shapes, lambda key: variables[key].numpy()),
                      metadata={"format": "pt"}, shapes=layout)
    if with_tokenizer:
        with atomic_open(out / hf_tokenizer.TOKENIZER_FILE, "w", encoding="utf-8") as handle:
            handle.write(backend_json)
        write_json(out / hf_tokenizer.TOKENIZER_CONFIG,
                   hf_tokenizer.tokenizer_config(specials, config.block_size, imported))
        write_json(out / hf_tokenizer.SPECIAL_TOKENS_MAP, specials)
    write_json(out / "generation_config.json", ids)
    write_json(out / "config.json", hf_json)
    summary = {"out": str(out), "architecture": arch.name, "tensors": len(layout),
               "parameters": int(sum(math.prod(shape) for shape in layout.values())), "step": loaded.step,
               "tokenizer": loaded.tokenizer.describe() if with_tokenizer else None,
               "seconds": round(time.perf_counter() - started, 2)}
    log(f"exported {run} (step {loaded.step}) as {arch.name}: {len(layout)} tensors, "
        f"{summary['parameters']:,} parameters{', ' + summary['tokenizer'] if with_tokenizer else ''} -> {out}")
    return summary
