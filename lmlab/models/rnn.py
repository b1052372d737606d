"""Recurrent language models: stacked LSTM or GRU layers over a token embedding.

What this module holds, top to bottom:

- :class:`RNNConfig`: one frozen, validated, JSON-serialisable config;
- :data:`SHAPES` and :func:`shape`: named shapes, each saying what it follows;
- :func:`count_parameters` and :func:`estimate_flops_per_token`: closed forms from
  the config alone (no weights allocated);
- :class:`RNNLM`: the model, with state-carrying decoding
  (:meth:`RNNLM.init_cache`, :meth:`RNNLM.call_with_cache`);
- :func:`build_rnn`: a deterministic, built model.

References followed:

- Zaremba, Sutskever & Vinyals 2014, "Recurrent Neural Network Regularization":
  dropout on the non-recurrent connections only (the embedding output, between
  layers, before the softmax), none on the recurrent ones.
- Press & Wolf 2017, "Using the Output Embedding to Improve Language Models", and
  Inan et al. 2017: the output layer reuses the input embedding
  (``tie_embeddings=True``), which needs embedding size = hidden size; here both
  are ``d_model``. The softmax keeps its own bias (``output_bias``).
- Merity et al. 2018 (AWD-LSTM) names the three dropouts separately
  (``embedding_dropout``, ``layer_dropout``, ``output_dropout``); here they are
  plain element-wise dropout (not AWD's word-level or locked/variational masks).
- Initialisation: the embedding is normal with standard deviation ``d_model**-0.5``
  and multiplied by ``sqrt(d_model)`` where it enters the first layer (Vaswani et
  al. 2017, §3.4, also with tied weights): the recurrent layers see unit-scale
  inputs, like the one-hot inputs of Karpathy's char-rnn, while the tied output
  layer starts near uniform. Zaremba's uniform [-0.05, 0.05] (tuned for SGD at
  learning rate 1) gives inputs so small that with AdamW at 1e-3 an LSTM sits on
  the unigram plateau for hundreds of steps: on Tiny Shakespeare (the
  ``shakespeare-char`` shape, batch 12, 300 steps) the mean train loss of the
  last 50 steps was 2.67 with it and 2.01 with this scaling. The recurrent layers
  keep Keras's Glorot (input) / orthogonal (recurrent) / unit-forget-bias
  initialisation.

The recurrent layers are ``keras.layers.LSTM`` / ``keras.layers.GRU``, so each
backend's fused kernel is used when its conditions hold: ``tanh`` /
``sigmoid`` activations, a bias, no ``recurrent_dropout``, no ``unroll``, no mask
and, for the GRU, ``reset_after=True`` (all as configured here: this module
never sets recurrent dropout or masks). See :data:`RNNConfig.cudnn` for which
backends get them: TensorFlow's cuDNN op has no XLA kernel, and lmlab compiles
every TensorFlow step with XLA.

The window is the unit, as for the other families: :meth:`RNNLM.call` runs each
``(B, T)`` window from a zero state, and training, evaluation
(:mod:`lmlab.evaluation.perplexity`'s sequential windows) and uncached generation all see
windows of at most ``block_size`` tokens, so an RNN's perplexity is measured
exactly like a Transformer's (no state carried across windows, unlike Zaremba's
truncated BPTT over a continuous stream, which gives somewhat lower perplexity).
:meth:`RNNLM.call` itself accepts any length: nothing in the model depends on
the position.

Model code uses ``keras``/``keras.ops`` only, so it runs on TensorFlow and JAX.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import keras
from keras import ops

from lmlab.core.errors import ConfigError
from lmlab.core.records import is_int, is_real
from lmlab.models.base import (LanguageModel, ModelConfig, OutputHead, Seeds, adaptive_output_parameters,
                               build_adaptive, build_built, check_cache_length, check_output, is_adaptive,
                               output_flop_weights, shape_config)

CELLS = ("lstm", "gru")
CUDNN_MODES = ("auto", "on", "off")
FAMILY = "rnn"
GATES = {"lstm": 4, "gru": 3}  # gate matrices per layer (LSTM: i, f, c, o; GRU: z, r, h)
STATES = {"lstm": 2, "gru": 1}  # state tensors per layer (LSTM: h, c; GRU: h)

# Fields whose None means "derive from the others"; `replace` re-derives them.
_AUTO_FIELDS = ("embedding_dropout", "layer_dropout", "output_dropout")


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RNNConfig(ModelConfig):
    """Everything that fixes an RNN LM's shape and numerics.

    - ``block_size``: the training window, i.e. the truncated-BPTT length; also
      the window of evaluation and the context of generation.
    - ``d_model``: embedding size and hidden size of every layer (equal, so the
      output layer can reuse the embedding).
    - ``dropout``: the default of the three dropouts left ``None``:
      ``embedding_dropout`` (on the embedding output), ``layer_dropout`` (on each
      layer's output but the last), ``output_dropout`` (on the last layer's
      output, before the softmax). :meth:`replace` re-derives those that were
      derived, so ``config.replace(dropout=0.5)`` moves all three.
    - ``cudnn``: whether ``keras.layers.LSTM``/``GRU`` may use the backend's fused
      kernel. ``"auto"`` (default): on JAX (its cuDNN LSTM and its scanned GRU are
      ordinary ``jax.jit``-able functions), off on TensorFlow (its cuDNN op cannot
      be compiled by XLA, and lmlab's steps and decoder are XLA-compiled on
      TensorFlow). ``"on"``: allowed on every backend (for TensorFlow use without
      XLA, e.g. ``model.fit`` with ``jit_compile=False``). ``"off"``: never; the
      generic step loop. The choice changes speed, not the weights.
    - ``output``: ``"softmax"`` (default, the full softmax) or ``"adaptive"``, the adaptive softmax
      (:mod:`lmlab.layers.adaptive_softmax`) with a head of ``cutoffs[0]`` words and tail clusters
      cut at the other ``cutoffs``, each projected to ``d_model / div_value**i``; with
      ``tie_embeddings`` its head's word rows are the embedding's first rows.
    """

    vocab_size: int
    block_size: int = 64
    cell: str = "lstm"
    n_layer: int = 2
    d_model: int = 256
    dropout: float = 0.2
    embedding_dropout: float | None = None
    layer_dropout: float | None = None
    output_dropout: float | None = None
    tie_embeddings: bool = True
    cudnn: str = "auto"
    output: str = "softmax"
    cutoffs: tuple[int, ...] | None = None
    div_value: float = 4.0
    family: str = FAMILY
    _auto: frozenset = field(default=frozenset(), init=False, repr=False, compare=False)

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "d_model"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ConfigError(f"{name} must be a positive integer: {name}={value!r}")
            object.__setattr__(self, name, int(value))  # NumPy integers become plain ints
        if self.cell not in CELLS:
            raise ConfigError(f"cell must be one of {', '.join(CELLS)}: cell={self.cell!r}")
        if self.cudnn not in CUDNN_MODES:
            raise ConfigError(f"cudnn must be one of {', '.join(CUDNN_MODES)}: cudnn={self.cudnn!r}")
        if not isinstance(self.tie_embeddings, bool):
            raise ConfigError(f"tie_embeddings must be true or false: tie_embeddings={self.tie_embeddings!r}")
        if self.family != FAMILY:
            raise ConfigError(f"family must be {FAMILY!r} for an RNNConfig: family={self.family!r}")
        check_output(self)
        for name in ("dropout", *_AUTO_FIELDS):
            value = getattr(self, name)
            if value is None and name in _AUTO_FIELDS:
                continue
            if not is_real(value) or not 0.0 <= value < 1.0:
                raise ConfigError(f"{name} must be in [0, 1): {name}={value!r}")
            object.__setattr__(self, name, float(value))
        auto = frozenset(name for name in _AUTO_FIELDS if getattr(self, name) is None)
        for name in auto:
            object.__setattr__(self, name, self.dropout)
        object.__setattr__(self, "_auto", auto)

    @property
    def n_states(self) -> int:
        """State tensors per layer: 2 for an LSTM (h, c), 1 for a GRU (h)."""
        return STATES[self.cell]


# ---------------------------------------------------------------------------
# Shapes: vocab_size comes from the tokenizer, so every shape needs it as an override.
# ---------------------------------------------------------------------------

SHAPES: dict[str, dict[str, Any]] = {
    # A tiny model for tests and smoke runs; no reference, just small and fast.
    "debug": dict(cell="lstm", n_layer=2, d_model=32, block_size=32, dropout=0.0),
    # Word-level WikiText-2 (33,278-word vocabulary, 2.1M training tokens) on 2 CPU cores.
    # Zaremba's medium model (2 x 650, BPTT 35, dropout 0.5, 39 epochs) costs
    # 6 * (2 * 4 * (2 * 650 * 650) + 33k * 650) ~ 170 MFLOPs per token: 30 minutes would see
    # a fifth of an epoch. Width 256 cuts that to 58 MFLOPs per token (the tied softmax is
    # 85% of it); measured with lmlab's XLA step on 2 cores, batch 20 x 35: ~930 tokens/s,
    # so 30 minutes is ~1.7M tokens, about 0.8 epoch. BPTT 35 as Zaremba; dropout 0.3
    # (between the small model's 0 and the medium's 0.5: data seen about once needs less).
    "wikitext2": dict(cell="lstm", n_layer=2, d_model=256, block_size=35, dropout=0.3),
    # Character-level Tiny Shakespeare, sized like the Transformer's shakespeare-char shape
    # (nanoGPT's CPU recipe: ~0.8M non-embedding weights, block 64, dropout 0.0) so the two
    # compare at equal budget: 2 x 256 LSTM = 2 * 4 * (2 * 256 * 256 + 256) ~ 1.05M weights;
    # Karpathy's char-rnn uses 2-3 layers of 128-512 and sequence length 50-100. The step
    # loop is sequential: ~2.3k tokens/s on 2 cores against the Transformer's ~6.4k.
    "shakespeare-char": dict(cell="lstm", n_layer=2, d_model=256, block_size=64, dropout=0.0),
}


def shape(name: str, **overrides) -> RNNConfig:
    """The config of shape ``name`` with ``overrides``; ``vocab_size`` must be among them."""
    return shape_config(RNNConfig, "rnn", SHAPES, name, overrides)


# ---------------------------------------------------------------------------
# Closed forms from the config alone
# ---------------------------------------------------------------------------


def _recurrent_layer_parameters(cell: str, d: int) -> int:
    gates = GATES[cell]
    # Keras layouts: kernel (d, g*d), recurrent_kernel (d, g*d), bias (g*d,) for the LSTM
    # and (2, g*d) for the GRU (reset_after=True keeps separate input and recurrent biases).
    bias = gates * d * (2 if cell == "gru" else 1)
    return 2 * gates * d * d + bias


def count_parameters(config: RNNConfig, non_embedding: bool = False) -> int:
    """Number of weights :class:`RNNLM` allocates for ``config``, without building it.

    ``non_embedding=True`` leaves out the weights that are only looked up, never
    multiplied: the input embedding when it is untied (a tied embedding is also the
    output layer, so it stays, as nanoGPT keeps its tied ``wte``).
    """
    c = config
    embedding = c.vocab_size * c.d_model
    body = c.n_layer * _recurrent_layer_parameters(c.cell, c.d_model)
    if is_adaptive(c):  # the input embedding is left out even when tied: the output layer counts its own rows
        return (0 if non_embedding else embedding) + body + adaptive_output_parameters(c)
    head = 0 if c.tie_embeddings else c.vocab_size * c.d_model
    total = embedding + body + head + c.vocab_size
    if non_embedding and not c.tie_embeddings:
        total -= embedding
    return total


def estimate_flops_per_token(config: RNNConfig, seq_len: int | None = None,
                             num_parameters: int | None = None) -> int:
    """Training FLOPs per token, ``6*N`` (see :meth:`RNNLM.flops_per_token`); ``seq_len`` is ignored."""
    del seq_len  # an RNN step costs the same at every position
    n = count_parameters(config, non_embedding=True) if num_parameters is None else num_parameters
    return 6 * output_flop_weights(config, n)


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------


def _use_cudnn(mode: str):
    """Keras's ``use_cudnn`` argument for :data:`RNNConfig.cudnn` on the current backend."""
    if mode == "off" or (mode == "auto" and keras.backend.backend() == "tensorflow"):
        return False
    return "auto"  # fused when the backend, the device and the layer settings allow it


@keras.saving.register_keras_serializable(package="lmlab")
class RNNLM(OutputHead, LanguageModel, keras.Model):
    """An LSTM or GRU language model: int32 ``(B, T)`` ids → float32 ``(B, T, V)`` logits.

    Args:
        config: an :class:`RNNConfig` (or its dict).
        seed: base seed for initializers and dropout; ``None`` for random.
        **kwargs: ``keras.Model`` arguments (``name``, ``dtype`` policy, ...).

    Weight paths (Keras ``variable.path``) are stable: ``token_embedding``,
    ``{cell}_{i}/{cell}_cell/{kernel,recurrent_kernel,bias}``, ``lm_head`` (untied
    only) and ``output_bias``, each under the model's name. Logits are float32
    even under a mixed-precision policy.
    """

    config_class = RNNConfig

    def __init__(self, config: RNNConfig | Mapping, seed: int | None = None, **kwargs):
        if not isinstance(config, RNNConfig):
            config = RNNConfig.from_dict(config)
        kwargs.setdefault("name", "rnn_lm")
        super().__init__(**kwargs)
        self.config = config
        self.seed = seed
        c = config
        dtype = self.dtype_policy
        seeds = Seeds(seed)

        # Layers.
        std = c.d_model ** -0.5  # unit scale after the sqrt(d_model) multiplier in _embed
        self.token_embedding = keras.layers.Embedding(
            c.vocab_size, c.d_model, embeddings_initializer=keras.initializers.RandomNormal(stddev=std, seed=seeds()),
            dtype=dtype, name="token_embedding")
        self.embedding_dropout = keras.layers.Dropout(c.embedding_dropout, seed=seeds(), dtype=dtype,
                                                      name="embedding_dropout")
        layer_class = keras.layers.LSTM if c.cell == "lstm" else keras.layers.GRU
        self.recurrent = []
        self.dropouts = []
        for i in range(c.n_layer):
            # No `dropout`/`recurrent_dropout` inside the layer: dropout sits between layers
            # (Zaremba), and recurrent dropout would switch the fused kernels off.
            self.recurrent.append(layer_class(
                c.d_model, return_sequences=True, return_state=True, use_cudnn=_use_cudnn(c.cudnn),
                kernel_initializer=keras.initializers.GlorotUniform(seed=seeds()),
                recurrent_initializer=keras.initializers.Orthogonal(seed=seeds()),
                dtype=dtype, name=f"{c.cell}_{i}"))
            last = i == c.n_layer - 1
            self.dropouts.append(keras.layers.Dropout(
                c.output_dropout if last else c.layer_dropout, seed=seeds(), dtype=dtype,
                name="output_dropout" if last else f"layer_dropout_{i}"))
        self.lm_head = self.adaptive = None
        if is_adaptive(c):
            self.adaptive = build_adaptive(c, std, seeds(), dtype)
        elif not c.tie_embeddings:
            self.lm_head = keras.layers.Dense(
                c.vocab_size, use_bias=False,
                kernel_initializer=keras.initializers.RandomNormal(stddev=std, seed=seeds()),
                dtype=dtype, name="lm_head")

    def build(self, input_shape=None):
        hidden_shape = (None, None, self.config.d_model)
        self.token_embedding.build()
        for layer in self.recurrent:
            layer.build(hidden_shape)
        self.build_output(hidden_shape)

    # -- forward ------------------------------------------------------------

    def call(self, token_ids, training=None, targets=None):
        """Logits for a window run from a zero state (any length ``T``); with ``targets`` ``(B, T)``
        the per-token loss ``(B, T)`` instead (:meth:`~lmlab.models.base.LanguageModel.token_nll`)."""
        hidden = self.hidden_states(token_ids, training)
        return self.logits(hidden) if targets is None else self.token_nll(hidden, targets)

    def hidden_states(self, token_ids, training=None, lengths=None):
        """``(B, T, d)`` states after the last layer: what the output layer and task heads read.

        ``lengths`` is accepted for the common contract (:meth:`~lmlab.models.base.LanguageModel.hidden_states`).
        """
        x = self.embedding_dropout(self._embed(token_ids), training=training)  # (B, T, d)
        for layer, dropout in zip(self.recurrent, self.dropouts):
            x = layer(x, training=training)[0]  # (B, T, d); the final states are dropped
            x = dropout(x, training=training)
        return x

    def _embed(self, token_ids):
        x = self.token_embedding(ops.cast(token_ids, "int32"))  # (B, T, d)
        return x * ops.cast(math.sqrt(self.config.d_model), x.dtype)  # unit-scale inputs (Vaswani §3.4)

    # -- cached decoding ----------------------------------------------------

    def init_cache(self, batch_size: int, max_length: int | None = None):
        """Zero states ``(n_layer, S, B, d_model)`` in the compute dtype; ``S`` = 2 (LSTM h, c) or 1 (GRU h).

        ``max_length`` is accepted for the common contract and checked, but a
        recurrent state does not grow with the length, so it changes nothing.
        """
        c = self.config
        check_cache_length(max_length)
        shape = (c.n_layer, c.n_states, int(batch_size), c.d_model)
        return ops.zeros(shape, dtype=self.compute_dtype)

    def call_with_cache(self, token_ids, cache, index=None):
        """Run ``token_ids`` ``(B, t)`` on from the states in ``cache``.

        ``index`` (the position of ``token_ids[:, 0]``) is accepted for the common
        contract and unused: the state already holds everything before it.
        Returns ``(logits (B, t, V) float32, new_cache)``, the cache holding the
        states after the last token. Shapes are static, so this runs inside
        ``tf.function(jit_compile=True)`` or ``jax.jit``. No dropout is applied.
        """
        del index
        x = self._embed(token_ids)  # (B, t, d)
        states = []
        for i, layer in enumerate(self.recurrent):
            initial = [cache[i, j] for j in range(self.config.n_states)]  # S x (B, d)
            outputs = layer(x, initial_state=initial, training=False)
            x = outputs[0]  # (B, t, d)
            states.append(ops.stack(outputs[1:], axis=0))  # (S, B, d)
        new_cache = ops.cast(ops.stack(states, axis=0), cache.dtype)  # (L, S, B, d)
        return self.logits(x), new_cache

    # -- accounting -----------------------------------------------------------

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs (forward + backward) per token: ``6*N``.

        ``N`` = :meth:`num_parameters` with ``non_embedding=True``: per layer the
        4 (LSTM) or 3 (GRU) gate matrices on the input and on the state, with their
        biases, plus the output layer (the tied embedding, or ``lm_head``) and its
        bias; the adaptive output counts what it computes for every token (its head
        and every tail cluster, :func:`~lmlab.models.base.output_flop_weights`). Each weight costs one multiply-add (2 FLOPs) forward and two backward
        (Kaplan et al. 2020, §2.1). The element-wise gate arithmetic (~10-20 FLOPs
        per unit per token) is left out, as Kaplan leaves out attention's
        non-matmul work. An RNN has no term that grows with the position, so
        ``seq_len`` is accepted for the common contract and ignored.
        """
        return estimate_flops_per_token(self.config, seq_len, self.num_parameters(non_embedding=True))

    # -- config -------------------------------------------------------------


def build_rnn(config: RNNConfig, seed: int | None = None, **kwargs) -> RNNLM:
    """A :class:`RNNLM` with its weights built; the same ``config`` and ``seed`` give the same weights."""
    return build_built(RNNLM, config, seed, **kwargs)


__all__ = [
    "CELLS",
    "SHAPES",
    "RNNConfig",
    "RNNLM",
    "build_rnn",
    "count_parameters",
    "estimate_flops_per_token",
    "shape",
]
