"""The gated convolutional language model (Dauphin et al. 2017, "Language Modeling with
Gated Convolutional Networks").

What this module holds, top to bottom:

- :class:`GatedCNNConfig`: one frozen, validated, JSON-serialisable config;
- :data:`SHAPES` and :func:`shape`: named shapes, each saying what it follows;
- :func:`count_parameters` and :func:`estimate_flops_per_token`: closed forms from
  the config alone (no weights allocated);
- :class:`GatedConvBlock` and :class:`GatedCNNLM`: the model, with cached decoding
  (:meth:`GatedCNNLM.init_cache`, :meth:`GatedCNNLM.call_with_cache`);
- :func:`build_gated_cnn`: a deterministic, built model.

The model: token embedding → ``n_layer`` residual blocks → final norm → output
layer tied to the embedding (plus a bias). One block is::

    h = norm(x)                                   # pre-norm (see ``norm``)
    a, b = split(causal_conv(h))                  # Conv1D, d_model → 2·d_model channels
    x = x + dropout(a * sigmoid(b))               # gated linear unit, residual add

"Causal" means the convolution sees ``kernel_size - 1`` zeros of left padding and
no right padding, so position ``t`` depends on positions ``t - R + 1 .. t`` only,
with a receptive field ``R = n_layer * (kernel_size - 1) + 1`` (positions before
the start are the zeros, in :meth:`~GatedCNNLM.call` and in cached decoding
alike).

Where this follows the paper and where it does not:

- the gated linear unit ``(X*W + b) ⊗ σ(X*V + c)`` in residual blocks and the
  left-zero-padded convolution (paper §2–3) are as published; so is the Kaiming
  (He) initialisation of the convolutions (paper §5.1);
- the paper normalises with weight normalisation and bottleneck blocks and uses
  an adaptive softmax; here one plain convolution per block, a pre-norm
  (LayerNorm by default, RMSNorm or none) and a full softmax tied to the input
  embedding, the pre-norm residual layout of GPT-2 / nanoGPT, which trains stably
  without weight normalisation and with the same optimiser as the other families.

Model code uses ``keras``/``keras.ops`` only, so it runs on TensorFlow and JAX.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import keras
from keras import ops

from lmlab.core.errors import ConfigError
from lmlab.core.records import is_int, is_real
from lmlab.layers.normalization import RMSNorm
from lmlab.models.base import (LanguageModel, ModelConfig, OutputHead, Seeds, adaptive_output_parameters,
                               build_adaptive, build_built, check_cache_length, check_output, is_adaptive,
                               output_flop_weights, shape_config)

NORMS = ("layernorm", "rmsnorm", "none")
FAMILY = "gated_cnn"
EMBEDDING_STDDEV = 0.02  # GPT-2 / nanoGPT, for the tied input/output embedding


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class GatedCNNConfig(ModelConfig):
    """Everything that fixes a gated CNN LM's shape and numerics.

    - ``block_size``: the training window (also evaluation's window and
      generation's context); the model itself accepts any length.
    - ``kernel_size``: taps of each causal convolution (at least 2: one tap would
      see only the current token); the receptive field is
      :attr:`receptive_field` = ``n_layer * (kernel_size - 1) + 1`` tokens.
    - ``norm``: the pre-norm of each block and the final norm: ``"layernorm"``
      (default), ``"rmsnorm"`` or ``"none"``.
    - ``dropout``: on the embedding output and on each block's GLU output (before
      the residual add).
    - ``tie_embeddings``: the output layer reuses the token embedding.
    - ``output``: ``"softmax"`` (default) or ``"adaptive"`` with ``cutoffs`` and ``div_value``
      (:mod:`lmlab.layers.adaptive_softmax`; as :class:`lmlab.models.rnn.RNNConfig`).
    """

    vocab_size: int
    block_size: int = 64
    n_layer: int = 4
    d_model: int = 128
    kernel_size: int = 4
    dropout: float = 0.0
    norm: str = "layernorm"
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    output: str = "softmax"
    cutoffs: tuple[int, ...] | None = None
    div_value: float = 4.0
    family: str = FAMILY

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "d_model", "kernel_size"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ConfigError(f"{name} must be a positive integer: {name}={value!r}")
            object.__setattr__(self, name, int(value))  # NumPy integers become plain ints
        if self.kernel_size < 2:
            raise ConfigError(f"kernel_size must be at least 2 (1 would see only the current token): "
                              f"kernel_size={self.kernel_size}")
        if self.norm not in NORMS:
            raise ConfigError(f"norm must be one of {', '.join(NORMS)}: norm={self.norm!r}")
        if not isinstance(self.tie_embeddings, bool):
            raise ConfigError(f"tie_embeddings must be true or false: tie_embeddings={self.tie_embeddings!r}")
        if self.family != FAMILY:
            raise ConfigError(f"family must be {FAMILY!r} for a GatedCNNConfig: family={self.family!r}")
        if not is_real(self.dropout) or not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1): dropout={self.dropout!r}")
        if not is_real(self.norm_eps) or not self.norm_eps > 0:
            raise ConfigError(f"norm_eps must be a positive number: norm_eps={self.norm_eps!r}")
        object.__setattr__(self, "dropout", float(self.dropout))
        object.__setattr__(self, "norm_eps", float(self.norm_eps))
        check_output(self)

    @property
    def receptive_field(self) -> int:
        """Tokens that position ``t``'s logits depend on: ``t - R + 1 .. t``."""
        return self.n_layer * (self.kernel_size - 1) + 1


# ---------------------------------------------------------------------------
# Shapes: vocab_size comes from the tokenizer, so every shape needs it as an override.
# ---------------------------------------------------------------------------

SHAPES: dict[str, dict[str, Any]] = {
    # A tiny model for tests and smoke runs; no reference, just small and fast.
    "debug": dict(n_layer=2, d_model=32, kernel_size=3, block_size=32),
    # Word-level WikiText-2 on 2 CPU cores, at the budget of the rnn `wikitext2` shape
    # (width 256, tied 33k-word softmax, which dominates the 64 MFLOPs per token):
    # 4 blocks of kernel 4 = 4 * 4 * 256 * 512 ~ 2.1M convolution weights and a
    # 13-word receptive field (Dauphin's WikiText-103 models, GCNN-8 and GCNN-14, are deeper
    # and wider; this is what the budget allows). Measured ~1.2k tokens/s on 2 cores (batch
    # 12 x 64), ~2.2M tokens (one epoch) in 30 minutes. Dropout 0.2 against WikiText-2's size.
    "wikitext2": dict(n_layer=4, d_model=256, kernel_size=4, block_size=64, dropout=0.2),
    # Character-level Tiny Shakespeare, sized like the Transformer's shakespeare-char shape
    # (nanoGPT's CPU recipe: ~0.8M non-embedding weights, block 64, dropout 0.0): 8 blocks of
    # kernel 4 at width 128 = 8 * 4 * 128 * 256 ~ 1.05M weights and a 25-character
    # receptive field, a few words, which is what a convolution without dilation buys here.
    # ~6.9k tokens/s on 2 cores; 400 steps of batch 12 reach a validation loss of ~1.94.
    "shakespeare-char": dict(n_layer=8, d_model=128, kernel_size=4, block_size=64, dropout=0.0),
}


def shape(name: str, **overrides) -> GatedCNNConfig:
    """The config of shape ``name`` with ``overrides``; ``vocab_size`` must be among them."""
    return shape_config(GatedCNNConfig, "gated_cnn", SHAPES, name, overrides)


# ---------------------------------------------------------------------------
# Closed forms from the config alone
# ---------------------------------------------------------------------------


def count_parameters(config: GatedCNNConfig, non_embedding: bool = False) -> int:
    """Number of weights :class:`GatedCNNLM` allocates for ``config``, without building it.

    ``non_embedding=True`` leaves out the weights that are only looked up, never
    multiplied: the input embedding when it is untied (a tied embedding is also the
    output layer, so it stays, as nanoGPT keeps its tied ``wte``).
    """
    c = config
    d = c.d_model
    norm = {"layernorm": 2 * d, "rmsnorm": d, "none": 0}[c.norm]
    conv = c.kernel_size * d * 2 * d + 2 * d  # kernel (k, d, 2d) and bias (2d,)
    embedding = c.vocab_size * d
    body = c.n_layer * (norm + conv) + norm
    if is_adaptive(c):  # the input embedding is left out even when tied: the output layer counts its own rows
        return (0 if non_embedding else embedding) + body + adaptive_output_parameters(c)
    head = 0 if c.tie_embeddings else c.vocab_size * d
    total = embedding + body + head + c.vocab_size
    if non_embedding and not c.tie_embeddings:
        total -= embedding
    return total


def estimate_flops_per_token(config: GatedCNNConfig, seq_len: int | None = None,
                             num_parameters: int | None = None) -> int:
    """Training FLOPs per token, ``6*N`` (see :meth:`GatedCNNLM.flops_per_token`); ``seq_len`` is ignored."""
    del seq_len  # a convolution costs the same at every position
    n = count_parameters(config, non_embedding=True) if num_parameters is None else num_parameters
    return 6 * output_flop_weights(config, n)


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------


def _norm(config: GatedCNNConfig, name: str, dtype):
    if config.norm == "layernorm":
        return keras.layers.LayerNormalization(epsilon=config.norm_eps, dtype=dtype, name=name)
    if config.norm == "rmsnorm":
        return RMSNorm(epsilon=config.norm_eps, dtype=dtype, name=name)
    return keras.layers.Identity(dtype=dtype, name=name)


@keras.saving.register_keras_serializable(package="lmlab")
class GatedConvBlock(keras.layers.Layer):
    """One pre-norm residual block: ``x += dropout(GLU(causal_conv(norm(x))))``.

    Sublayers: ``norm``, ``conv`` (``Conv1D`` with ``2 * d_model`` filters and
    ``kernel_size`` taps, no padding of its own), ``dropout``. With ``cache`` (the
    last ``kernel_size - 1`` normalised inputs, ``(B, k - 1, d)``) the new inputs
    are appended to it instead of to zeros, and the updated cache is returned too.
    """

    def __init__(self, config: GatedCNNConfig | Mapping, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(config, GatedCNNConfig):
            config = GatedCNNConfig.from_dict(config)
        self.config = config
        self.seed = seed
        seeds = Seeds(seed)
        dtype = self.dtype_policy
        self.norm = _norm(config, "norm", dtype)
        self.conv = keras.layers.Conv1D(
            2 * config.d_model, config.kernel_size, padding="valid",
            kernel_initializer=keras.initializers.HeNormal(seed=seeds()), dtype=dtype, name="conv")
        self.dropout = keras.layers.Dropout(config.dropout, seed=seeds(), dtype=dtype, name="dropout")

    def build(self, input_shape):
        self.norm.build(input_shape)
        self.conv.build(input_shape)

    def call(self, x, cache=None, training=None):
        context = self.config.kernel_size - 1
        h = self.norm(x)  # (B, T, d)
        if cache is None:
            padded = ops.pad(h, ((0, 0), (context, 0), (0, 0)))  # (B, k - 1 + T, d): zeros before the start
        else:
            padded = ops.concatenate([ops.cast(cache, h.dtype), h], axis=1)  # (B, k - 1 + t, d)
            cache = padded[:, -context:, :]  # (B, k - 1, d): the newest k - 1 inputs
        a, b = ops.split(self.conv(padded), 2, axis=-1)  # 2 x (B, T, d)
        x = x + self.dropout(a * ops.sigmoid(b), training=training)
        return x if cache is None else (x, cache)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "config": self.config.to_dict(), "seed": self.seed}


@keras.saving.register_keras_serializable(package="lmlab")
class GatedCNNLM(OutputHead, LanguageModel, keras.Model):
    """A gated convolutional language model: int32 ``(B, T)`` ids → float32 ``(B, T, V)`` logits.

    Args:
        config: a :class:`GatedCNNConfig` (or its dict).
        seed: base seed for initializers and dropout; ``None`` for random.
        **kwargs: ``keras.Model`` arguments (``name``, ``dtype`` policy, ...).

    Weight paths (Keras ``variable.path``) are stable: ``token_embedding``,
    ``blocks_{i}/norm``, ``blocks_{i}/conv/{kernel,bias}``, ``final_norm``,
    ``lm_head`` (untied only) and ``output_bias``, each under the model's name.
    Logits are float32 even under a mixed-precision policy.
    """

    config_class = GatedCNNConfig

    def __init__(self, config: GatedCNNConfig | Mapping, seed: int | None = None, **kwargs):
        if not isinstance(config, GatedCNNConfig):
            config = GatedCNNConfig.from_dict(config)
        kwargs.setdefault("name", "gated_cnn_lm")
        super().__init__(**kwargs)
        self.config = config
        self.seed = seed
        c = config
        dtype = self.dtype_policy
        seeds = Seeds(seed)

        # Layers.
        self.token_embedding = keras.layers.Embedding(
            c.vocab_size, c.d_model,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=EMBEDDING_STDDEV, seed=seeds()),
            dtype=dtype, name="token_embedding")
        self.embedding_dropout = keras.layers.Dropout(c.dropout, seed=seeds(), dtype=dtype,
                                                      name="embedding_dropout")
        block_seed = None if seed is None else seed + 1000
        self.blocks = [
            GatedConvBlock(c, seed=None if seed is None else block_seed + 100 * i, dtype=dtype,
                           name=f"blocks_{i}")
            for i in range(c.n_layer)
        ]
        self.final_norm = _norm(c, "final_norm", dtype)
        self.lm_head = self.adaptive = None
        if is_adaptive(c):
            self.adaptive = build_adaptive(c, EMBEDDING_STDDEV, seeds(), dtype)
        elif not c.tie_embeddings:
            self.lm_head = keras.layers.Dense(
                c.vocab_size, use_bias=False,
                kernel_initializer=keras.initializers.RandomNormal(stddev=EMBEDDING_STDDEV, seed=seeds()),
                dtype=dtype, name="lm_head")

    def build(self, input_shape=None):
        hidden_shape = (None, None, self.config.d_model)
        self.token_embedding.build()
        for block in self.blocks:
            block.build(hidden_shape)
        self.final_norm.build(hidden_shape)
        self.build_output(hidden_shape)

    # -- forward ------------------------------------------------------------

    def call(self, token_ids, training=None, targets=None):
        """Logits for a window whose first token sees only zero padding before it (any length ``T``);
        with ``targets`` ``(B, T)`` the per-token loss ``(B, T)`` instead
        (:meth:`~lmlab.models.base.LanguageModel.token_nll`)."""
        hidden = self.hidden_states(token_ids, training)
        return self.logits(hidden) if targets is None else self.token_nll(hidden, targets)

    def hidden_states(self, token_ids, training=None, lengths=None):
        """``(B, T, d)`` states after the last layer and the final norm: what the output layer and task heads read.

        ``lengths`` is accepted for the common contract (:meth:`~lmlab.models.base.LanguageModel.hidden_states`).
        """
        x = self.embedding_dropout(self._embed(token_ids), training=training)  # (B, T, d)
        for block in self.blocks:
            x = block(x, training=training)
        return self.final_norm(x)

    def _embed(self, token_ids):
        return self.token_embedding(ops.cast(token_ids, "int32"))  # (B, T, d)

    # -- cached decoding ----------------------------------------------------

    def init_cache(self, batch_size: int, max_length: int | None = None):
        """Zeros ``(n_layer, B, kernel_size - 1, d_model)`` in the compute dtype: each block's last inputs.

        Zeros are exactly the left padding :meth:`call` uses, so decoding from an
        empty cache matches a full pass. ``max_length`` is accepted for the common
        contract and checked, but the cache does not grow with the length.
        """
        c = self.config
        check_cache_length(max_length)
        shape = (c.n_layer, int(batch_size), c.kernel_size - 1, c.d_model)
        return ops.zeros(shape, dtype=self.compute_dtype)

    def call_with_cache(self, token_ids, cache, index=None):
        """Run ``token_ids`` ``(B, t)`` (any ``t >= 1``) after the inputs held in ``cache``.

        ``index`` (the position of ``token_ids[:, 0]``) is accepted for the common
        contract and unused: the cache already holds the receptive field before it.
        Returns ``(logits (B, t, V) float32, new_cache)``. Shapes are static, so
        this runs inside ``tf.function(jit_compile=True)`` or ``jax.jit``. No
        dropout is applied.
        """
        del index
        x = self._embed(token_ids)  # (B, t, d)
        layer_caches = []
        for i, block in enumerate(self.blocks):
            x, layer_cache = block(x, cache=cache[i], training=False)
            layer_caches.append(layer_cache)  # (B, k - 1, d)
        new_cache = ops.cast(ops.stack(layer_caches, axis=0), cache.dtype)  # (L, B, k - 1, d)
        return self.logits(self.final_norm(x)), new_cache

    # -- accounting -----------------------------------------------------------

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs (forward + backward) per token: ``6*N``.

        ``N`` = :meth:`num_parameters` with ``non_embedding=True``: each block's
        convolution (``kernel_size * d * 2d`` weights, each used once per token), its
        norm, the final norm and the output layer with its bias (the adaptive output:
        what it computes for every token, :func:`~lmlab.models.base.output_flop_weights`). Each weight costs
        one multiply-add (2 FLOPs) forward and two backward (Kaplan et al. 2020,
        §2.1); the GLU's element-wise work is left out. A causal convolution costs
        the same at every position, so ``seq_len`` is accepted for the common
        contract and ignored.
        """
        return estimate_flops_per_token(self.config, seq_len, self.num_parameters(non_embedding=True))

    # -- config -------------------------------------------------------------


def build_gated_cnn(config: GatedCNNConfig, seed: int | None = None, **kwargs) -> GatedCNNLM:
    """A :class:`GatedCNNLM` with its weights built; the same ``config`` and ``seed`` give the same weights."""
    return build_built(GatedCNNLM, config, seed, **kwargs)


__all__ = [
    "NORMS",
    "SHAPES",
    "GatedCNNConfig",
    "GatedCNNLM",
    "GatedConvBlock",
    "build_gated_cnn",
    "count_parameters",
    "estimate_flops_per_token",
    "shape",
]
