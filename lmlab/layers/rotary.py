"""Rotary position embedding (RoPE; Su et al. 2021, "RoFormer").

Uses the layout of Hugging Face ``LlamaRotaryEmbedding`` and ``apply_rotary_pos_emb``
(``models/llama/modeling_llama.py``), so q/k projection weights imported from a
Hugging Face Llama checkpoint give the same attention scores:

- inverse frequencies ``1 / theta ** (arange(0, d, 2) / d)`` in float32, ``d/2`` of them;
- angles ``position * inv_freq``, concatenated with themselves to width ``d``
  (frequency ``i`` sits at feature ``i`` and at ``i + d/2``, not at ``2i, 2i+1``);
- ``x * cos + rotate_half(x) * sin`` with ``rotate_half(x) = [-x2, x1]`` where
  ``x1, x2`` are the two halves of the last axis.

Meta's original Llama code rotates interleaved pairs instead; converting such
weights needs the q/k rows permuted, as Hugging Face's converter does.

Rotary scaling (:func:`scaled_frequencies`) follows ``transformers/modeling_rope_utils.py``:
``linear`` (frequencies divided by ``factor``), ``llama3`` (Llama 3.1's smoothed per-frequency
division), ``yarn`` (YaRN's ramp between interpolated and extrapolated frequencies, with an
attention factor multiplying cos and sin) and ``dynamic`` (NTK: identical to the plain frequencies
up to ``original_max_position_embeddings``, the only lengths it is allowed to run at here).
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

ROPE_TYPES = ("linear", "dynamic", "yarn", "llama3")
# Keys each scaling type reads (besides rope_type), with their transformers defaults; None: required.
ROPE_KEYS = {
    "linear": {"factor": None},
    "dynamic": {"factor": None, "original_max_position_embeddings": None},
    "yarn": {"factor": None, "original_max_position_embeddings": None, "attention_factor": None,
             "beta_fast": 32.0, "beta_slow": 1.0, "mscale": None, "mscale_all_dim": None, "truncate": True},
    "llama3": {"factor": None, "low_freq_factor": None, "high_freq_factor": None,
               "original_max_position_embeddings": None},
}
_OPTIONAL = {"attention_factor", "mscale", "mscale_all_dim"}


def check_rope_scaling(scaling):
    """``scaling`` normalised (a new dict: ``rope_type`` plus every key its type reads), or ``None`` for plain
    rotary positions; ``ValueError`` naming the key that is missing, unknown or out of range."""
    if scaling is None:
        return None
    if not isinstance(scaling, dict):
        raise ValueError(f"rope_scaling must be a mapping or null, got {scaling!r}")
    kind = scaling.get("rope_type")
    if kind not in ROPE_TYPES:
        raise ValueError(f"rope_scaling.rope_type must be one of {', '.join(ROPE_TYPES)}: rope_type={kind!r}")
    keys = ROPE_KEYS[kind]
    unknown = sorted(set(scaling) - set(keys) - {"rope_type"})
    if unknown:
        raise ValueError(f"rope_scaling key(s) {', '.join(unknown)} are not read by rope_type {kind!r}")
    out = {"rope_type": kind}
    for key, default in keys.items():
        value = scaling.get(key, default)
        if value is None and key not in _OPTIONAL:
            raise ValueError(f"rope_scaling.{key} is required for rope_type {kind!r}")
        if key == "truncate":
            if not isinstance(value, bool):
                raise ValueError(f"rope_scaling.truncate must be true or false, got {value!r}")
        elif key == "original_max_position_embeddings":
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"rope_scaling.{key} must be a positive integer, got {value!r}")
            value = int(value)
        elif value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not math.isfinite(value) \
                    or value <= 0:
                raise ValueError(f"rope_scaling.{key} must be a positive number, got {value!r}")
            value = float(value)
        out[key] = value
    if kind == "llama3" and out["high_freq_factor"] <= out["low_freq_factor"]:
        raise ValueError("rope_scaling.high_freq_factor must exceed low_freq_factor")
    return out


def _yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def scaled_frequencies(head_dim: int, theta: float = 10000.0, scaling=None) -> tuple[np.ndarray, float]:
    """``(inverse frequencies (head_dim // 2,) float32, attention factor)`` for a scaling (``None``: plain),
    step by step as ``transformers``' ``ROPE_INIT_FUNCTIONS`` computes them in float32."""
    scaling = check_rope_scaling(scaling)
    plain = inverse_frequencies(head_dim, theta)
    if scaling is None or scaling["rope_type"] == "dynamic":  # dynamic: unchanged up to its original length
        return plain, 1.0
    f32, kind, factor = np.float32, scaling["rope_type"], scaling["factor"]
    if kind == "linear":
        return (plain / f32(factor)).astype(np.float32), 1.0
    if kind == "llama3":
        old = scaling["original_max_position_embeddings"]
        low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
        low_wavelen, high_wavelen = old / low, old / high
        wavelen = (f32(2 * math.pi) / plain).astype(np.float32)
        llama = np.where(wavelen > f32(low_wavelen), plain / f32(factor), plain).astype(np.float32)
        smooth = ((f32(old) / wavelen - f32(low)) / f32(high - low)).astype(np.float32)
        smoothed = ((f32(1) - smooth) * llama / f32(factor) + smooth * llama).astype(np.float32)
        medium = ~(wavelen < f32(high_wavelen)) & ~(wavelen > f32(low_wavelen))
        return np.where(medium, smoothed, llama).astype(np.float32), 1.0
    # yarn
    dim, base, original = head_dim, theta, scaling["original_max_position_embeddings"]
    attention = scaling["attention_factor"]
    if attention is None:
        mscale, mscale_all = scaling["mscale"], scaling["mscale_all_dim"]
        attention = (float(_yarn_mscale(factor, mscale) / _yarn_mscale(factor, mscale_all)) if mscale and mscale_all
                     else _yarn_mscale(factor))

    def correction_dim(rotations):
        return (dim * math.log(original / (rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(scaling["beta_fast"]), correction_dim(scaling["beta_slow"])
    if scaling["truncate"]:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # transformers: prevents a division by zero
    ramp = np.clip((np.arange(dim // 2, dtype=np.float32) - f32(low)) / f32(high - low), 0, 1).astype(np.float32)
    extrapolation_factor = (f32(1) - ramp).astype(np.float32)
    pos_freqs = (f32(base) ** (np.arange(0, dim, 2).astype(np.float32) / f32(dim))).astype(np.float32)
    extrapolation = (f32(1) / pos_freqs).astype(np.float32)
    interpolation = (f32(1) / (f32(factor) * pos_freqs)).astype(np.float32)
    inv_freq = interpolation * (f32(1) - extrapolation_factor) + extrapolation * extrapolation_factor
    return inv_freq.astype(np.float32), float(attention)


def inverse_frequencies(head_dim: int, theta: float = 10000.0) -> np.ndarray:
    """The ``head_dim // 2`` rotation frequencies, float32, as Hugging Face computes them."""
    exponents = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(head_dim)
    return (np.float32(1.0) / (np.float32(theta) ** exponents)).astype(np.float32)


def rotary_cos_sin(positions, head_dim: int, theta: float = 10000.0, scaling=None):
    """Cosines and sines for integer ``positions`` ``(T,)`` (or ``(B, T)``, per row): two float32
    ``(..., T, head_dim)``, times the scaling's attention factor (YaRN's; 1 for the others)."""
    inv_freq, factor = scaled_frequencies(head_dim, theta, scaling)
    inv_freq = ops.convert_to_tensor(inv_freq)  # (hd/2,)
    angles = ops.cast(positions, "float32")[..., None] * inv_freq  # (..., T, hd/2)
    angles = ops.concatenate([angles, angles], axis=-1)  # (T, hd)
    if factor == 1.0:
        return ops.cos(angles), ops.sin(angles)
    return ops.cos(angles) * factor, ops.sin(angles) * factor


def rotate_half(x):
    """``[x1, x2] -> [-x2, x1]`` over the last axis (halves, not interleaved pairs)."""
    half = x.shape[-1] // 2
    return ops.concatenate([ops.negative(x[..., half:]), x[..., :half]], axis=-1)


def apply_rotary(x, cos, sin):
    """Rotate ``x`` of shape ``(B, T, heads, hd)`` by angles for its ``T`` positions.

    ``cos`` and ``sin`` are ``(T, hd)`` float32, or ``(B, T, hd)`` when each row has its own
    positions; they are cast to ``x.dtype`` first, as Hugging Face does.
    """
    cos, sin = ((c[None] if len(c.shape) == 2 else c) for c in (cos, sin))  # (1 or B, T, hd)
    cos = ops.cast(cos, x.dtype)[:, :, None, :]  # (1 or B, T, 1, hd)
    sin = ops.cast(sin, x.dtype)[:, :, None, :]
    return x * cos + rotate_half(x) * sin


def _column(start_index):
    """A scalar start as is; a per-row start ``(B,)`` as ``(B, 1)``, so adding ``arange(T)`` gives ``(B, T)``."""
    start = ops.cast(start_index, "int32")
    return start[:, None] if len(start.shape) == 1 else start


@keras.saving.register_keras_serializable(package="lmlab")
class RotaryEmbedding(keras.layers.Layer):
    """Applies RoPE to ``x`` of shape ``(B, T, heads, head_dim)``; no weights.

    ``call(x, start_index=0)``: the tokens of ``x`` sit at positions
    ``start_index, ..., start_index + T - 1`` (``start_index`` may be a traced
    scalar tensor, for cached decoding inside a compiled loop, or ``(B,)``: one start per row,
    for continuous batching).
    """

    def __init__(self, head_dim: int, theta: float = 10000.0, scaling=None, **kwargs):
        super().__init__(**kwargs)
        if head_dim % 2:
            raise ValueError(f"rotary head_dim must be even, got {head_dim}")
        self.head_dim = int(head_dim)
        self.theta = float(theta)
        self.scaling = check_rope_scaling(None if scaling is None else dict(scaling))

    def call(self, x, start_index=0):
        length = ops.shape(x)[1]
        positions = ops.arange(length, dtype="int32") + _column(start_index)  # (T,) or (B, T)
        cos, sin = rotary_cos_sin(positions, self.head_dim, self.theta, self.scaling)
        return apply_rotary(x, cos, sin)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = {**super().get_config(), "head_dim": self.head_dim, "theta": self.theta}
        if self.scaling is not None:
            config["scaling"] = dict(self.scaling)
        return config
