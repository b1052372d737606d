"""LoRA adapters in PEFT's format: ``adapter_config.json`` + ``adapter_model.safetensors``, both ways.

PEFT (``peft/tuners/lora/layer.py``) stores per module ``lora_A.weight`` ``(r, in)`` and
``lora_B.weight`` ``(out, r)`` under ``base_model.model.<module>``, and adds
``scaling · B·A`` (scaling ``lora_alpha / r``, or ``/ sqrt(r)`` with rsLoRA) to the weight,
transposed for GPT-2's ``Conv1D`` (``fan_in_fan_out``). Keras's ``A`` ``(in, r)`` and ``B``
``(r, out)`` are the transposes: ``A = lora_A.weightᵀ``, ``B = lora_B.weightᵀ``, whatever the layout.

Modules are named by :mod:`lmlab.interop.hf_names`, so an adapter fits the model
``lmlab export --format hf`` writes. GPT-2's ``c_attn`` fuses q, k and v: lmlab's separate
q/k/v adapters are written as one of rank ``Σ r`` (``A`` stacked, ``B`` block-diagonal), and
a ``c_attn`` adapter read back gives q, k and v each the shared ``A`` and their slice of ``B``;
both are exact. What Keras's LoRA cannot hold (DoRA, trained biases, ``modules_to_save``,
embedding adapters) is refused by name.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from lmlab.core.errors import ConfigError
from lmlab.core.io import read_json, write_json
from lmlab.interop.hf_config import architecture_for
from lmlab.interop.hf_names import canonical_name, expand
from lmlab.interop.weight_files import SafetensorsFile, write_safetensors
from lmlab.models.lora import add_adapter, freeze, lora_layers, projections

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PREFIX = "base_model.model."
TENSOR = re.compile(r"base_model\.model\.(.+)\.lora_([AB])\.weight")
REFUSED = {"use_dora": "DoRA", "lora_bias": "LoRA biases", "modules_to_save": "modules_to_save (whole trained "
           "copies of modules)", "trainable_token_indices": "trainable tokens", "target_parameters": "target_parameters"}


def _modules(model):
    """``(Hugging Face module, [lmlab projection keys])`` for every projection the architecture has."""
    arch = architecture_for(model.config)
    layers = projections(model)
    for rule in expand(arch, model.config):
        keys = [key[: -len("/kernel")] for key in rule.ours]
        if rule.hf.endswith(".weight") and all(key in layers for key in keys):
            yield rule.hf[: -len(".weight")], keys


def _scaling(layer) -> float:
    return layer.lora_alpha / layer.lora_rank


def save_peft_adapter(model, out, base_model: str = "") -> dict:
    """Write ``model``'s LoRA adapters to the folder ``out`` for ``peft.PeftModel.from_pretrained``."""
    adapted = lora_layers(model)
    if not adapted:
        raise ConfigError("the model has no LoRA adapters to save")
    arch = architecture_for(model.config)
    layers = projections(model)
    tensors, ranks, alphas, used = {}, {}, {}, set()
    for module, keys in _modules(model):
        parts = [key for key in keys if key in adapted]
        if not parts:
            continue
        scaling = _scaling(adapted[parts[0]])
        # A fused module (c_attn): A stacked over the parts, B block-diagonal, each part's scaling folded into B.
        a = np.concatenate([adapted[key].lora_kernel_a.numpy() for key in parts], axis=1)  # (in, R)
        b = np.zeros((a.shape[1], sum(int(layers[key]._kernel.shape[1]) for key in keys)), np.float32)  # (R, out)
        row = column = 0
        for key in keys:
            width = int(layers[key]._kernel.shape[1])
            if key in adapted:
                part = adapted[key].lora_kernel_b.numpy() * (_scaling(adapted[key]) / scaling)  # (r, width)
                b[row:row + part.shape[0], column:column + width] = part
                row += part.shape[0]
            column += width
        tensors[f"{PREFIX}{module}.lora_A.weight"] = np.ascontiguousarray(a.T)  # (R, in)
        tensors[f"{PREFIX}{module}.lora_B.weight"] = np.ascontiguousarray(b.T)  # (out, R)
        ranks[module], alphas[module] = a.shape[1], scaling * a.shape[1]
        used.update(parts)
    if set(adapted) - used:
        raise ConfigError(f"adapters on {', '.join(sorted(set(adapted) - used)[:3])} have no place in a {arch.name}")
    rank, alpha = _most_common(ranks.values()), _most_common(alphas.values())  # the rest are patterns
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_safetensors(out / WEIGHTS_FILE, tensors, metadata={"format": "pt"})
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM" if arch.family == "transformer" else None,
        "base_model_name_or_path": str(base_model), "r": int(rank), "lora_alpha": float(alpha),
        "target_modules": sorted(ranks), "lora_dropout": 0.0, "bias": "none",
        "fan_in_fan_out": arch.model_type == "gpt2",  # GPT-2's Conv1D holds (in, out) weights
        "rank_pattern": {m: int(r) for m, r in ranks.items() if r != rank},
        "alpha_pattern": {m: float(a) for m, a in alphas.items() if a != alpha},
        "use_rslora": False, "use_dora": False, "modules_to_save": None, "inference_mode": True,
        "init_lora_weights": True,
    }
    write_json(out / CONFIG_FILE, config)
    return {"out": str(out), "modules": len(ranks), "rank": int(rank), "alpha": float(alpha),
            "tensors": len(tensors), "architecture": arch.name}


def _most_common(values):
    values = list(values)
    return min(values, key=lambda v: (-values.count(v), v))  # ties: the smallest, so the output is stable


def _pattern(config: dict, field: str, module: str, default):
    """PEFT's ``get_pattern_key``: a ``rank_pattern``/``alpha_pattern`` key matching the module's end."""
    for key, value in (config.get(field) or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def check_config(config: dict, source) -> None:
    if config.get("peft_type") != "LORA":
        raise ConfigError(f"{source}: a {config.get('peft_type')!r} adapter; lmlab reads LoRA adapters only")
    for field, what in REFUSED.items():
        if config.get(field):
            raise ConfigError(f"{source}: uses {what} ({field}), which Keras's LoRA cannot hold")
    if config.get("bias", "none") != "none":
        raise ConfigError(f"{source}: trains biases (bias={config['bias']!r}); lmlab's LoRA keeps them frozen")


def load_peft_adapter(model, folder) -> dict:
    """Give ``model`` (an lmlab Transformer or encoder) the LoRA adapters PEFT saved in ``folder``; all else frozen."""
    folder = Path(folder)
    config = read_json(folder / CONFIG_FILE, "PEFT adapter config")
    check_config(config, folder / CONFIG_FILE)
    arch = architecture_for(model.config)
    weights = SafetensorsFile(folder / WEIGHTS_FILE)
    pairs: dict[str, dict[str, np.ndarray]] = {}
    written = {}  # canonical module name -> as the file spells it, for messages
    for name in weights.names:
        match = TENSOR.fullmatch(name)
        if not match:
            raise ConfigError(f"{folder / WEIGHTS_FILE}: tensor {name} is not a LoRA A or B matrix of a linear "
                              f"module; lmlab reads adapters on the attention and MLP projections only")
        module = canonical_name(arch, match.group(1))
        written[module] = match.group(1)
        pairs.setdefault(module, {})[match.group(2)] = weights.read(name)
    modules = dict(_modules(model))
    layers = projections(model)
    unknown = sorted(set(pairs) - set(modules))
    if unknown:
        raise ConfigError(f"{folder}: adapts {', '.join(written[m] for m in unknown[:3])}, which is not an attention or MLP projection "
                          f"of this {arch.name}; lmlab's LoRA covers those projections only")
    freeze(model)
    for module, pair in sorted(pairs.items()):
        if set(pair) != {"A", "B"}:
            raise ConfigError(f"{folder}: {module} has lora_{''.join(pair)} without its partner")
        a, b = pair["A"].T, pair["B"].T  # Keras's (in, r) and (r, out)
        rank = int(_pattern(config, "rank_pattern", module, config.get("r", 8)))
        if a.shape[1] != rank:
            raise ConfigError(f"{folder}: {module} has rank {a.shape[1]}, the config says {rank}")
        alpha = float(_pattern(config, "alpha_pattern", module, config.get("lora_alpha", 8)))
        scaling = alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)
        column = 0
        for key in modules[module]:  # a fused module: each part the shared A and its columns of B
            width = int(layers[key]._kernel.shape[1])
            add_adapter(layers[key], a, b[:, column:column + width], scaling)
            column += width
        if column != b.shape[1]:
            raise ConfigError(f"{folder}: {module}'s lora_B has {b.shape[1]} outputs, the model's module {column}")
    weights.close()
    return {"modules": len(pairs), "adapted_layers": len(lora_layers(model)), "rank": config.get("r"),
            "alpha": config.get("lora_alpha"), "rslora": bool(config.get("use_rslora"))}
