"""LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models") on lmlab's projections.

The adapters are Keras 3's own (``keras.layers.Dense.enable_lora``): a projection's
kernel ``W`` ``(in, out)`` stays frozen and the layer computes ``x · (W + (alpha / r) · A · B)``
with ``A`` ``(in, r)`` (He-uniform) and ``B`` ``(r, out)`` (zeros, so training starts from the
base model). :func:`enable_lora` freezes every weight of the language model first, so only
``A`` and ``B`` (and a task head outside it) train; :func:`adapter_tensors` is what a LoRA
checkpoint stores and :func:`merged_tensors` the plain model's weights with ``W + (alpha/r)·A·B``
folded in, for export and for folders every lmlab command reads.

Targets are short names for the projections of the decoder (``lmlab.layers.attention``,
``lmlab.layers.mlp``) and encoder (``lmlab.models.encoder``) blocks.
"""

from __future__ import annotations

import math

from lmlab.core.errors import ConfigError
from lmlab.core.records import is_int, is_real

# Short name -> the end of the projection's path inside a block (decoder, encoder spellings).
TARGETS = {
    "q": ("attention/q_proj",), "k": ("attention/k_proj",), "v": ("attention/v_proj",),
    "o": ("attention/o_proj",),
    "fc": ("mlp/fc", "mlp_fc"), "proj": ("mlp/proj", "mlp_proj"),  # GPT-2 and encoder MLPs
    "gate": ("mlp/gate_proj",), "up": ("mlp/up_proj",), "down": ("mlp/down_proj",),  # Llama's SwiGLU
}
DEFAULT_TARGETS = "q,v"  # the paper's choice (section 7.1) and PEFT's default for Llama
ADAPTER_WEIGHTS = ("lora_kernel_a", "lora_kernel_b")  # Keras's names for A and B


def parse_targets(spec: str) -> tuple[str, ...]:
    """``"q,v"`` -> ``("q", "v")``; ``"all"`` is every name; unknown or no names are an error."""
    names = [part.strip() for part in str(spec).split(",") if part.strip()]
    if names == ["all"]:
        return tuple(TARGETS)
    unknown = [name for name in names if name not in TARGETS]
    if unknown or not names:
        raise ConfigError(f"unknown LoRA target(s) {', '.join(unknown) or repr(spec)}: expected names from "
                          f"{', '.join(TARGETS)} (or all), comma-separated")
    return tuple(dict.fromkeys(names))


def check_settings(rank, alpha) -> None:
    if not is_int(rank) or rank < 1:
        raise ConfigError(f"the LoRA rank must be an integer >= 1, got {rank!r}")
    if not is_real(alpha) or alpha <= 0:
        raise ConfigError(f"the LoRA alpha must be a number > 0, got {alpha!r}")


def layer_key(layer) -> str:
    """A projection's path without the model's own name, e.g. ``blocks_0/attention/q_proj``."""
    path = layer._kernel.path.rsplit("/", 1)[0]
    return path.split("/", 1)[1] if "/" in path else path


def projections(model) -> dict[str, object]:
    """Every Dense-like layer with a LoRA switch in ``model``, by :func:`layer_key`."""
    return {layer_key(layer): layer for layer in model._flatten_layers()
            if hasattr(layer, "enable_lora") and getattr(layer, "_kernel", None) is not None}


def target_of(key: str) -> str | None:
    for name, suffixes in TARGETS.items():
        if any(key.endswith("/" + suffix) or key == suffix for suffix in suffixes):
            return name
    return None


def targeted(model, targets, strict: bool = True) -> dict[str, object]:
    """The projections of ``model`` that ``targets`` name; with ``strict``, a name this model lacks is an error."""
    found = {key: layer for key, layer in projections(model).items() if target_of(key) in targets}
    present = {target_of(key) for key in projections(model)} - {None}
    missing = [name for name in targets if name not in present]
    if missing and strict:
        raise ConfigError(f"this model has no {', '.join(missing)} projection(s); its LoRA targets are "
                          f"{', '.join(name for name in TARGETS if name in present)}")
    return found


def enable_lora(model, rank: int, alpha: float | None = None, targets=DEFAULT_TARGETS, seed: int = 0) -> dict:
    """Freeze ``model`` and give the ``targets`` projections rank-``rank`` adapters; returns a summary.

    ``alpha`` defaults to the rank (scaling 1). Call it after any wrapper has set ``trainable``
    (Keras's setter resets every variable below it).
    """
    import keras  # here, not at the top: config checks import this module without a backend

    alpha = rank if alpha is None else alpha
    check_settings(rank, alpha)
    every = isinstance(targets, str) and targets.strip() == "all"  # all that this model has
    names = parse_targets(targets if isinstance(targets, str) else ",".join(targets))
    layers = targeted(model, names, strict=not every)
    names = tuple(name for name in names if any(target_of(key) == name for key in layers))
    freeze(model)
    for i, (key, layer) in enumerate(sorted(layers.items())):
        # A fixed seed per layer, so the same settings give the same adapters on every backend.
        layer.enable_lora(rank, lora_alpha=alpha, a_initializer=keras.initializers.HeUniform(seed=seed + i))
    return summary(model, rank, alpha, names)


def freeze(model) -> None:
    """Every weight of ``model`` fixed (biases, norms and embeddings too: PEFT's ``bias="none"``)."""
    if lora_layers(model):
        raise ConfigError("this model already has LoRA adapters")
    for variable in model.weights:
        variable.trainable = False


def add_adapter(layer, a, b, scaling: float) -> None:
    """Give one projection the adapter ``A`` ``(in, r)``, ``B`` ``(r, out)`` with ``scaling`` = alpha / r."""
    rank = int(a.shape[1])
    if tuple(a.shape) != (layer._kernel.shape[0], rank) or tuple(b.shape) != (rank, layer._kernel.shape[1]):
        raise ConfigError(f"{layer_key(layer)}: adapter shapes {tuple(a.shape)} and {tuple(b.shape)} do not fit "
                          f"its kernel {tuple(layer._kernel.shape)}")
    layer.enable_lora(rank, lora_alpha=scaling * rank)
    layer.lora_kernel_a.assign(a.astype("float32"))
    layer.lora_kernel_b.assign(b.astype("float32"))


def summary(model, rank, alpha, names) -> dict:
    trainable = sum(math.prod(v.shape) for v in model.trainable_weights)
    total = sum(math.prod(v.shape) for v in model.weights if v.name not in ADAPTER_WEIGHTS)
    return {"rank": rank, "alpha": alpha, "targets": list(names), "adapted_layers": len(lora_layers(model)),
            "trainable": trainable, "base_parameters": total, "percent": round(100.0 * trainable / total, 4)}


def lora_layers(model) -> dict[str, object]:
    return {key: layer for key, layer in projections(model).items() if layer.lora_enabled}


def adapter_tensors(model) -> dict:
    """``{"blocks_0/attention/q_proj/lora_kernel_a": (in, r), ".../lora_kernel_b": (r, out), ...}`` as NumPy."""
    from keras import ops

    tensors = {}
    for key, layer in lora_layers(model).items():
        tensors[f"{key}/lora_kernel_a"] = ops.convert_to_numpy(layer.lora_kernel_a)
        tensors[f"{key}/lora_kernel_b"] = ops.convert_to_numpy(layer.lora_kernel_b)
    return tensors


def assign_adapters(model, tensors: dict, source) -> None:
    """Load :func:`adapter_tensors` output into a model that has the same adapters; name any mismatch."""
    layers = lora_layers(model)
    expected = {f"{key}/{name}": getattr(layer, name) for key, layer in layers.items() for name in ADAPTER_WEIGHTS}
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    shapes = [k for k in set(expected) & set(tensors) if tuple(tensors[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or shapes:
        raise ConfigError(f"{source} does not match the model's adapters: missing {missing[:3]}, unexpected "
                          f"{unexpected[:3]}, wrong shape {sorted(shapes)[:3]}")
    for key, variable in expected.items():
        variable.assign(tensors[key].astype("float32"))


def merged_tensors(model) -> dict:
    """The weights of the model without adapters, keyed as a checkpoint is, each kernel ``W + (alpha/r)·A·B``.

    Keras's ``Dense.kernel`` already returns the merged kernel when LoRA is on, so this is
    the checkpoint of the plain model: :func:`lmlab.runs.checkpoint.assign_model` loads it.
    """
    from keras import ops

    merged = {f"{key}/kernel": ops.convert_to_numpy(layer.kernel) for key, layer in lora_layers(model).items()}
    tensors = {}
    for variable in model.variables:
        key = variable.path.split("/", 1)[1] if "/" in variable.path else variable.path
        if variable.name in ADAPTER_WEIGHTS:
            continue
        tensors[key] = merged[key] if key in merged else ops.convert_to_numpy(variable)
    return tensors
