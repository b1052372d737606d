"""RMSNorm: root-mean-square layer normalisation (Zhang & Sennrich 2019).

Follows Hugging Face ``LlamaRMSNorm`` (``models/llama/modeling_llama.py``) step by
step so imported weights give the same numbers: normalise in float32, cast back
to the input dtype, then multiply by the learned scale. There is no mean
subtraction and no bias.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="lmlab")
class RMSNorm(keras.layers.Layer):
    """``x / sqrt(mean(x**2) + epsilon) * scale`` over the last axis.

    Args:
        epsilon: added to the mean square before the square root.

    The one weight is ``scale`` (shape ``(d,)``, initialised to ones); Hugging
    Face calls it ``weight``.
    """

    def __init__(self, epsilon: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        dtype = x.dtype
        x32 = ops.cast(x, "float32")
        variance = ops.mean(ops.square(x32), axis=-1, keepdims=True)  # (..., 1)
        x32 = x32 * ops.rsqrt(variance + self.epsilon)
        return ops.cast(self.scale, dtype) * ops.cast(x32, dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}
