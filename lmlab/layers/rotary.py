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
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops


def inverse_frequencies(head_dim: int, theta: float = 10000.0) -> np.ndarray:
    """The ``head_dim // 2`` rotation frequencies, float32, as Hugging Face computes them."""
    exponents = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(head_dim)
    return (np.float32(1.0) / (np.float32(theta) ** exponents)).astype(np.float32)


def rotary_cos_sin(positions, head_dim: int, theta: float = 10000.0):
    """Cosines and sines for integer ``positions`` ``(T,)`` (or ``(B, T)``, per row): two float32
    ``(..., T, head_dim)``."""
    inv_freq = ops.convert_to_tensor(inverse_frequencies(head_dim, theta))  # (hd/2,)
    angles = ops.cast(positions, "float32")[..., None] * inv_freq  # (..., T, hd/2)
    angles = ops.concatenate([angles, angles], axis=-1)  # (T, hd)
    return ops.cos(angles), ops.sin(angles)


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

    def __init__(self, head_dim: int, theta: float = 10000.0, **kwargs):
        super().__init__(**kwargs)
        if head_dim % 2:
            raise ValueError(f"rotary head_dim must be even, got {head_dim}")
        self.head_dim = int(head_dim)
        self.theta = float(theta)

    def call(self, x, start_index=0):
        length = ops.shape(x)[1]
        positions = ops.arange(length, dtype="int32") + _column(start_index)  # (T,) or (B, T)
        cos, sin = rotary_cos_sin(positions, self.head_dim, self.theta)
        return apply_rotary(x, cos, sin)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "head_dim": self.head_dim, "theta": self.theta}
