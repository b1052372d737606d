"""A sequence classifier: a pretrained language model with a linear head on pooled hidden states.

Pooling ``last`` reads the state of the last real token — the end token the
encoder appends to every text, which in a causal model has seen the whole
text (as GPT-1 classifies from its final token); ``mean`` averages the
states of the real tokens. The head is a ``Dense`` layer initialised with
normal(0, 0.02). With ``freeze`` the language model's weights stay fixed and
only the head learns.
"""

from __future__ import annotations

import keras
from keras import ops

from lmlab.core.errors import ConfigError
from lmlab.tasks.batching import check_neural

POOLINGS = ("last", "mean", "cls")  # cls: the first token's state, BERT's [CLS] (encoders)


class SequenceClassifier(keras.Model):
    """``(token_ids (B, T) int32, lengths (B,) int32)`` → float32 class logits ``(B, C)``."""

    def __init__(self, backbone, num_classes: int, pooling: str = "last", freeze: bool = False,
                 seed: int | None = None, **kwargs):
        kwargs.setdefault("name", "sequence_classifier")
        super().__init__(**kwargs)
        check_neural(backbone)
        if pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        if num_classes < 2:
            raise ConfigError(f"classification needs at least 2 labels, the training data has {num_classes}")
        self.backbone, self.pooling, self.num_classes = backbone, pooling, num_classes
        self.backbone.trainable = not freeze
        for variable in getattr(backbone, "mlm_head_variables", list)():  # an encoder's MLM head: unused here
            variable.trainable = False
        self.head = keras.layers.Dense(num_classes, kernel_initializer=keras.initializers.RandomNormal(
            stddev=0.02, seed=seed), name="head")
        self.head.build((None, backbone.config.d_model))

    def call(self, token_ids, lengths, training=None):
        lengths = ops.cast(lengths, "int32")
        h = self.backbone.hidden_states(token_ids, training=training, lengths=lengths)  # (B, T, d)
        length = ops.shape(token_ids)[1]
        if self.pooling == "cls":
            pooled = h[:, 0, :]  # (B, d)
        elif self.pooling == "last":
            last = ops.one_hot(ops.maximum(lengths - 1, 0), length, dtype=h.dtype)  # (B, T)
            pooled = ops.einsum("bt,btd->bd", last, h)  # (B, d)
        else:
            mask = ops.cast(ops.arange(length)[None, :] < lengths[:, None], h.dtype)  # (B, T)
            pooled = ops.einsum("bt,btd->bd", mask, h) / ops.maximum(ops.sum(mask, axis=1, keepdims=True), 1.0)
        return ops.cast(self.head(pooled), "float32")  # (B, C)
