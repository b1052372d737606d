"""The position-wise feed-forward blocks of decoder Transformers.

- :class:`GeluMLP`: GPT-2 (Radford et al. 2019; nanoGPT's ``MLP``): ``fc`` to
  ``d_ff``, GELU with the tanh approximation (GPT-2's ``gelu_new``), ``proj`` back.
- :class:`SwiGLUMLP`: Llama (Shazeer 2020, "GLU Variants Improve Transformer";
  Hugging Face ``LlamaMLP``): ``down_proj(silu(gate_proj(x)) * up_proj(x))``.

Both end with dropout on the output (training only). The output projection has
its own initializer because GPT-2 scales residual projections down by depth.
"""

from __future__ import annotations

import keras
from keras import ops


class _FeedForward(keras.layers.Layer):
    def __init__(self, hidden_dim: int, intermediate_dim: int, use_bias: bool = True,
                 dropout: float = 0.0, kernel_initializer="glorot_uniform",
                 output_initializer=None, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim = int(hidden_dim)
        self.intermediate_dim = int(intermediate_dim)
        self.use_bias = bool(use_bias)
        self.dropout_rate = float(dropout)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.output_initializer = keras.initializers.get(output_initializer or kernel_initializer)
        self.seed = seed
        self.dropout = keras.layers.Dropout(self.dropout_rate, seed=seed, dtype=self.dtype_policy,
                                            name="dropout")

    def _dense(self, units, name, initializer):
        return keras.layers.Dense(units, use_bias=self.use_bias, kernel_initializer=initializer,
                                  bias_initializer="zeros", dtype=self.dtype_policy, name=name)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_dim": self.hidden_dim,
            "intermediate_dim": self.intermediate_dim,
            "use_bias": self.use_bias,
            "dropout": self.dropout_rate,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "output_initializer": keras.initializers.serialize(self.output_initializer),
            "seed": self.seed,
        }


@keras.saving.register_keras_serializable(package="lmlab")
class GeluMLP(_FeedForward):
    """GPT-2's MLP: ``proj(gelu_tanh(fc(x)))``, then dropout."""

    def __init__(self, hidden_dim: int, intermediate_dim: int, **kwargs):
        super().__init__(hidden_dim, intermediate_dim, **kwargs)
        self.fc = self._dense(self.intermediate_dim, "fc", self.kernel_initializer)
        self.proj = self._dense(self.hidden_dim, "proj", self.output_initializer)

    def build(self, input_shape):
        self.fc.build(input_shape)
        self.proj.build(tuple(input_shape[:-1]) + (self.intermediate_dim,))

    def call(self, x, training=None):
        h = ops.gelu(self.fc(x), approximate=True)  # (B, T, d_ff)
        return self.dropout(self.proj(h), training=training)


@keras.saving.register_keras_serializable(package="lmlab")
class SwiGLUMLP(_FeedForward):
    """Llama's MLP: ``down_proj(silu(gate_proj(x)) * up_proj(x))``, then dropout."""

    def __init__(self, hidden_dim: int, intermediate_dim: int, **kwargs):
        super().__init__(hidden_dim, intermediate_dim, **kwargs)
        self.gate_proj = self._dense(self.intermediate_dim, "gate_proj", self.kernel_initializer)
        self.up_proj = self._dense(self.intermediate_dim, "up_proj", self.kernel_initializer)
        self.down_proj = self._dense(self.hidden_dim, "down_proj", self.output_initializer)

    def build(self, input_shape):
        self.gate_proj.build(input_shape)
        self.up_proj.build(input_shape)
        self.down_proj.build(tuple(input_shape[:-1]) + (self.intermediate_dim,))

    def call(self, x, training=None):
        h = ops.silu(self.gate_proj(x)) * self.up_proj(x)  # (B, T, d_ff)
        return self.dropout(self.down_proj(h), training=training)
