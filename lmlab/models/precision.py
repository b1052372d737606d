"""Inference precision: the dtype a model's weights are held and computed in when it generates or scores.

- ``float32``: as trained.
- ``bfloat16``: every weight and activation in bfloat16 (Keras's ``"bfloat16"`` policy), with float32
  where rounding would hurt: attention scores and softmax, RMSNorm and LayerNorm statistics, and the
  logits (each layer upcasts there itself).
- ``int8``: weight-only quantization of the Dense layers' matrices with Keras's own int8 path
  (``Int8QuantizationConfig`` without an activation quantizer): per output channel, symmetric,
  ``kernel_scale = 127 / max|w|`` over the input axis, ``w ≈ kernel / kernel_scale``, dequantized
  inside the matmul; activations, embeddings (the tied output table too), norms and biases stay
  float32. Keras has no int8 path for LSTM/GRU cells or Conv1D, so the rnn and gated_cnn families
  take bfloat16 but refuse int8 rather than quantize only their output layer.

A model is quantized in memory from float32 weights (:func:`quantize_int8`), or built quantized from
the start (:func:`prepare_int8`, before the first call builds it), so a saved int8 checkpoint loads
without a float32 copy of its matrices ever existing.
"""

from __future__ import annotations

from lmlab.core.errors import ConfigError

# Keras is imported inside the functions: lmlab.models.registry imports this module, and it stays light.

DTYPES = ("float32", "bfloat16", "int8")
INT8_FAMILIES = ("transformer",)
# How an int8 checkpoint's weights are stored: written to a quantized run's config.json beside its dtype.
INT8_SCHEME = {"layers": "Dense kernels", "weights": "int8, per output channel, symmetric",
               "scales": "kernel_scale float32 (units,) = 127 / max|w| over inputs; w = kernel / kernel_scale",
               "activations": "float32 (weight-only)", "library": "keras int8 quantization"}


def check_dtype(dtype: str, family: str = "transformer") -> str:
    """``dtype`` if a model of ``family`` can run in it, else a :class:`ConfigError` saying what can."""
    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}: dtype={dtype!r}")
    if dtype == "int8" and family not in INT8_FAMILIES:
        raise ConfigError(f"int8 weights are for the {', '.join(INT8_FAMILIES)} family (Keras quantizes Dense "
                          f"layers; a {family} model's recurrent or convolutional layers have no int8 path): "
                          "use dtype bfloat16")
    return dtype


def policy(dtype: str) -> str:
    """The Keras dtype policy a model is built under: int8 computes in float32 around its int8 matrices."""
    return "bfloat16" if dtype == "bfloat16" else "float32"


class InFloat32:
    """``initializer`` drawn in float32 and cast: TensorFlow's QR, which the Orthogonal initializer of LSTM and
    GRU state matrices runs, has no bfloat16 kernel."""

    def __init__(self, initializer):
        self.initializer = initializer

    def __call__(self, shape, dtype=None):
        from keras import ops

        return ops.cast(self.initializer(shape, dtype="float32"), dtype)


def prepare_bfloat16(model):
    """Before a model is built under the bfloat16 policy: every initializer draws in float32 (same weights)."""
    import keras

    for layer in model._flatten_layers(include_self=False):
        for name, value in list(vars(layer).items()):
            if name.endswith("initializer") and isinstance(value, keras.initializers.Initializer):
                setattr(layer, name, InFloat32(value))
    return model


def weight_only_int8():
    """Keras's int8 config with no activation quantizer: weight-only (its default quantizes inputs too)."""
    import keras

    return keras.quantizers.Int8QuantizationConfig(weight_quantizer=None, activation_quantizer=None)


def quantized_layers(model) -> list:
    """The layers int8 quantizes: Dense ones (q/k/v/o projections, MLP, an untied ``lm_head``), never an
    embedding or a norm."""
    import keras

    return [layer for layer in model._flatten_layers(include_self=False) if isinstance(layer, keras.layers.Dense)]


def quantize_int8(model):
    """Quantize a built float32 model's Dense matrices in place (Keras's ``quantize``); returns the model."""
    chosen = {id(layer) for layer in quantized_layers(model)}
    model.quantize(config=weight_only_int8(), filters=lambda layer: id(layer) in chosen)
    return model


def prepare_int8(model):
    """Before a model is built: make its Dense layers build int8 kernels and scales instead of float32 ones."""
    for layer in quantized_layers(model):
        layer.quantization_config = weight_only_int8()
        layer.dtype_policy = "int8_from_float32"
    return model


def weight_bytes(model) -> dict[str, int]:
    """Bytes of the model's variables by dtype name: what decoding reads from memory, give or take the lookups."""
    import keras

    totals: dict[str, int] = {}
    for variable in model.variables:
        dtype = keras.backend.standardize_dtype(variable.dtype)
        size = 1
        for dim in variable.shape:
            size *= int(dim)
        totals[dtype] = totals.get(dtype, 0) + size * ITEM_BYTES[dtype]
    return totals


ITEM_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "int8": 1, "int32": 4, "int64": 8, "bool": 1}
