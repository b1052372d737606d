"""The Transformer decoder language model, in GPT-2 and Llama styles.

What this module holds, top to bottom:

- :class:`TransformerConfig`: one frozen, validated, JSON-serialisable config;
- :data:`SHAPES` and :func:`shape`: named shapes, each citing what it mirrors;
- :func:`count_parameters` and :func:`estimate_flops_per_token`: closed forms from
  the config alone (no weights allocated);
- :class:`TransformerBlock` and :class:`TransformerLM`: the model, with KV-cache
  decoding (:meth:`TransformerLM.init_cache`, :meth:`TransformerLM.call_with_cache`);
- :func:`build_transformer`: a deterministic, built model.

References followed:

- ``style="gpt2"``: GPT-2 (Radford et al. 2019) as written in karpathy/nanoGPT
  ``model.py``: learned token and position embeddings, pre-LayerNorm blocks, a
  final LayerNorm, biases, GELU (tanh) MLP, output tied to the token embedding,
  normal(0, 0.02) initialisation with residual projections scaled by
  ``1/sqrt(2 * n_layer)``.
- ``style="llama"``: Llama (Touvron et al. 2023) as written in Hugging Face
  ``transformers/models/llama/modeling_llama.py``: token embedding only, RMSNorm
  pre-norm, rotary positions on q and k, SwiGLU MLP, no biases, a final RMSNorm,
  grouped-query attention, a tied or separate ``lm_head``. Same initialisation as
  GPT-2 here (Hugging Face Llama uses normal(0, 0.02) without the depth scaling).
- Llama-style switches for today's open checkpoints (all off by default, so older configs
  mean what they did): ``head_dim`` apart from ``d_model / n_head`` (Qwen3), biases on q/k/v,
  ``o_proj`` and the MLP set apart (Qwen2: q/k/v only), ``qk_norm`` (Qwen3's per-head RMSNorm of
  queries and keys), ``rope_scaling`` (``linear``, ``dynamic``, ``yarn``, ``llama3``, as
  ``transformers/modeling_rope_utils.py``) and ``sliding_window`` (Mistral).

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
from lmlab.layers.attention import IMPLEMENTATIONS, CausalSelfAttention
from lmlab.layers.mlp import GeluMLP, SwiGLUMLP
from lmlab.layers.normalization import RMSNorm
from lmlab.layers.rotary import check_rope_scaling
from lmlab.models.base import (LanguageModel, ModelConfig, adaptive_output_parameters, build_adaptive, build_built,
                               check_output, is_adaptive, output_flop_weights, shape_config)

STYLES = ("gpt2", "llama")
FAMILY = "transformer"
INIT_STDDEV = 0.02  # GPT-2 / nanoGPT

# Fields whose None means "derive from the others"; `replace` re-derives them.
_AUTO_FIELDS = ("n_kv_head", "d_ff", "bias", "tie_embeddings", "head_dim", "attention_bias", "attention_out_bias",
                "mlp_bias")
_BIAS_FIELDS = ("attention_bias", "attention_out_bias", "mlp_bias")


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TransformerConfig(ModelConfig):
    """Everything that fixes a Transformer LM's shape and numerics.

    Fields left ``None`` are resolved on construction, so reading a config (or
    its :meth:`to_dict`) always shows the values the model uses:

    - ``n_kv_head``: ``n_head`` (plain multi-head attention); smaller values give
      grouped-query attention and must divide ``n_head``.
    - ``d_ff``: gpt2 ``4 * d_model``; llama ``int(8 * d_model / 3)`` rounded up to a
      multiple of ``multiple_of`` (Meta's Llama rule: 4096 → 11008 with 256).
    - ``bias``: True for gpt2, False for llama (linear layers and LayerNorm).
    - ``tie_embeddings``: True (the output layer reuses the token embedding).
    - ``head_dim``: ``d_model // n_head``; another value (llama style) makes q/k/v ``n_head * head_dim`` wide.
    - ``attention_bias`` (q/k/v), ``attention_out_bias`` (``o_proj``), ``mlp_bias``: ``bias``
      (which alone also covers GPT-2's LayerNorm shifts).

    ``qk_norm`` (llama style) RMSNorms each query and key head before the rotation, with ``norm_eps``.
    ``rope_scaling`` (llama style) is ``None`` or a mapping with ``rope_type`` and the keys that type reads
    (:data:`lmlab.layers.rotary.ROPE_KEYS`, named as in ``transformers``). ``sliding_window``: each token
    attends to at most this many (itself included), ``None``: to all before it.

    ``output`` is ``"softmax"`` (default) or ``"adaptive"`` with ``cutoffs`` and ``div_value``
    (:mod:`lmlab.layers.adaptive_softmax`; tied, its head's word rows are the embedding's first rows).

    :meth:`replace` re-derives the fields that were resolved automatically unless
    they are overridden too, so ``shape(...).replace(d_model=64)`` gets a
    ``d_ff`` that fits.
    """

    vocab_size: int
    block_size: int = 256
    n_layer: int = 4
    n_head: int = 4
    n_kv_head: int | None = None
    d_model: int = 128
    d_ff: int | None = None
    multiple_of: int = 32
    style: str = "gpt2"
    dropout: float = 0.0
    bias: bool | None = None
    tie_embeddings: bool | None = None
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    attention: str = "fused"
    output: str = "softmax"
    cutoffs: tuple[int, ...] | None = None
    div_value: float = 4.0
    head_dim: int | None = None
    attention_bias: bool | None = None
    attention_out_bias: bool | None = None
    mlp_bias: bool | None = None
    qk_norm: bool = False
    rope_scaling: dict | None = field(default=None, hash=False)
    sliding_window: int | None = None
    family: str = FAMILY
    _auto: frozenset = field(default=frozenset(), init=False, repr=False, compare=False)

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "d_model", "multiple_of",
                     "n_kv_head", "d_ff", "head_dim"):
            value = getattr(self, name)
            if value is None and name in _AUTO_FIELDS:
                continue
            if not is_int(value) or value < 1:
                raise ConfigError(f"{name} must be a positive integer: {name}={value!r}")
            object.__setattr__(self, name, int(value))  # NumPy integers become plain ints
        for name in ("bias", "tie_embeddings", *_BIAS_FIELDS):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):
                raise ConfigError(f"{name} must be true, false or null, got {name}={value!r}")
        if not isinstance(self.qk_norm, bool):
            raise ConfigError(f"qk_norm must be true or false, got qk_norm={self.qk_norm!r}")
        if self.sliding_window is not None and (not is_int(self.sliding_window) or self.sliding_window < 1):
            raise ConfigError(f"sliding_window must be a positive integer or null: sliding_window={self.sliding_window!r}")
        if self.sliding_window is not None:
            object.__setattr__(self, "sliding_window", int(self.sliding_window))
        try:
            scaling = check_rope_scaling(None if self.rope_scaling is None else dict(self.rope_scaling)
                                         if isinstance(self.rope_scaling, Mapping) else self.rope_scaling)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        object.__setattr__(self, "rope_scaling", scaling)
        if self.style not in STYLES:
            raise ConfigError(f"style must be one of {', '.join(STYLES)}: style={self.style!r}")
        if self.attention not in IMPLEMENTATIONS:
            raise ConfigError(f"attention must be one of {', '.join(IMPLEMENTATIONS)}: "
                              f"attention={self.attention!r}")
        if self.family != FAMILY:
            raise ConfigError(f"family must be {FAMILY!r} for a TransformerConfig: family={self.family!r}")
        if not is_real(self.dropout) or not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1): dropout={self.dropout!r}")
        for name in ("rope_theta", "norm_eps"):
            value = getattr(self, name)
            if not is_real(value) or not value > 0:
                raise ConfigError(f"{name} must be a positive number: {name}={value!r}")
        if self.head_dim is None and self.d_model % self.n_head:
            raise ConfigError(f"n_head must divide d_model: d_model={self.d_model}, n_head={self.n_head}")
        if self.style != "llama":
            for name, value, off in (("head_dim", self.head_dim, None), ("qk_norm", self.qk_norm, False),
                                     ("rope_scaling", self.rope_scaling, None)):
                if value != off and not (name == "head_dim" and value * self.n_head == self.d_model):
                    raise ConfigError(f"{name}={value!r} needs style='llama' (GPT-2 style has none)")
        if self.n_kv_head is not None and self.n_head % self.n_kv_head:
            raise ConfigError(f"n_kv_head must divide n_head: n_head={self.n_head}, "
                              f"n_kv_head={self.n_kv_head}")
        if self.style == "llama" and self.head_dim is not None and self.head_dim % 2:
            raise ConfigError(f"llama style needs an even head_dim for rotary positions: head_dim={self.head_dim}")
        if self.style == "llama" and self.head_dim is None and (self.d_model // self.n_head) % 2:
            raise ConfigError(f"llama style needs an even head size d_model / n_head for rotary positions: "
                              f"d_model={self.d_model}, n_head={self.n_head} give {self.d_model // self.n_head}")

        auto = frozenset(name for name in _AUTO_FIELDS if getattr(self, name) is None)
        bias = self.style == "gpt2" if self.bias is None else self.bias
        resolved = {
            "n_kv_head": self.n_head,
            "d_ff": _default_d_ff(self.style, self.d_model, self.multiple_of),
            "bias": bias,
            "tie_embeddings": True,
            "head_dim": self.d_model // self.n_head,
            **{name: bias for name in _BIAS_FIELDS},
        }
        for name in auto:
            object.__setattr__(self, name, resolved[name])
        if scaling is not None and scaling["rope_type"] == "dynamic" and \
                self.block_size > scaling["original_max_position_embeddings"]:
            raise ConfigError(
                f"rope_scaling.rope_type='dynamic' changes the rotary frequencies with the sequence length past "
                f"original_max_position_embeddings={scaling['original_max_position_embeddings']}, which lmlab does "
                f"not do: block_size={self.block_size} must not exceed it")
        object.__setattr__(self, "dropout", float(self.dropout))
        object.__setattr__(self, "rope_theta", float(self.rope_theta))
        check_output(self)
        object.__setattr__(self, "norm_eps", float(self.norm_eps))
        object.__setattr__(self, "_auto", auto)

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        if d["rope_scaling"] is not None:
            d["rope_scaling"] = dict(d["rope_scaling"])
        return d


def _default_d_ff(style: str, d_model: int, multiple_of: int) -> int:
    if style == "gpt2":
        return 4 * d_model
    hidden = (2 * 4 * d_model) // 3  # Meta's Llama: int(2 * (4 * dim) / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


# ---------------------------------------------------------------------------
# Shapes: vocab_size comes from the tokenizer, so every shape needs it as an override.
# ---------------------------------------------------------------------------

SHAPES: dict[str, dict[str, Any]] = {
    # A tiny model for tests and smoke runs; no reference, just small and fast.
    "debug": dict(style="gpt2", n_layer=2, n_head=2, d_model=32, block_size=32),
    # nanoGPT's README CPU recipe for config/train_shakespeare_char.py:
    # --block_size=64 --n_layer=4 --n_head=4 --n_embd=128 --dropout=0.0 (GPT-2 style, bias on).
    "shakespeare-char": dict(style="gpt2", n_layer=4, n_head=4, d_model=128, block_size=64,
                             dropout=0.0),
    # GPT-2 124M: Hugging Face `gpt2` config.json (n_layer 12, n_head 12, n_embd 768,
    # n_positions 1024, layer_norm_epsilon 1e-5); dropout 0.0 as nanoGPT's train_gpt2.py
    # (the Hugging Face config trains with 0.1).
    "gpt2-small": dict(style="gpt2", n_layer=12, n_head=12, d_model=768, block_size=1024,
                       dropout=0.0),
    # A scaled-down Llama (Hugging Face LlamaConfig layout): 8 layers of width 512, with
    # Llama 3 8B's grouped-query ratio (32 query heads / 8 kv heads = 4), here 8 / 2;
    # d_ff by Meta's rule with multiple_of 32 (1376); rope_theta 10000 as Llama 2.
    "llama-small": dict(style="llama", n_layer=8, n_head=8, n_kv_head=2, d_model=512,
                        block_size=512),
}


def shape(name: str, **overrides) -> TransformerConfig:
    """The config of shape ``name`` with ``overrides``; ``vocab_size`` must be among them."""
    return shape_config(TransformerConfig, "transformer", SHAPES, name, overrides)


# ---------------------------------------------------------------------------
# Closed forms from the config alone
# ---------------------------------------------------------------------------


def count_parameters(config: TransformerConfig, non_embedding: bool = False) -> int:
    """Number of weights :class:`TransformerLM` allocates for ``config``, without building it.

    ``non_embedding=True`` leaves out the position embeddings, as nanoGPT's
    ``get_num_params`` does (a tied token embedding is kept: it is the output layer).
    """
    c = config
    d, f, q, kv = c.d_model, c.d_ff, c.n_head * c.head_dim, c.n_kv_head * c.head_dim
    b, qkv_b, out_b, mlp_b = int(c.bias), int(c.attention_bias), int(c.attention_out_bias), int(c.mlp_bias)
    attention = 2 * d * q + 2 * d * kv + qkv_b * (q + 2 * kv) + out_b * d  # q, o; k, v; biases
    attention += 2 * c.head_dim if c.qk_norm else 0  # q_norm, k_norm scales
    if c.style == "gpt2":
        mlp = 2 * d * f + mlp_b * (f + d)
        norm = d + b * d  # LayerNorm scale (+ shift)
    else:
        mlp = 3 * d * f + mlp_b * (2 * f + d)
        norm = d  # RMSNorm scale
    token = c.vocab_size * d
    position = c.block_size * d if c.style == "gpt2" else 0
    head = 0 if c.tie_embeddings else c.vocab_size * d
    lookup = position  # weights only looked up, left out by non_embedding
    if is_adaptive(c):  # the token embedding too, even when tied: the output layer counts its own rows
        head, lookup = adaptive_output_parameters(c), position + token
    total = token + position + c.n_layer * (attention + mlp + 2 * norm) + norm + head
    return total - lookup if non_embedding else total


def estimate_flops_per_token(config: TransformerConfig, seq_len: int | None = None,
                             num_parameters: int | None = None) -> int:
    """Training FLOPs per token, ``6*N + 12*L*H*Q*T`` (see :meth:`TransformerLM.flops_per_token`)."""
    n = count_parameters(config, non_embedding=True) if num_parameters is None else num_parameters
    t = config.block_size if seq_len is None else int(seq_len)
    return 6 * output_flop_weights(config, n) + 12 * config.n_layer * config.n_head * config.head_dim * t


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------


class _Initializers:
    """Hands out GPT-2 initializers, each with its own seed derived from one base seed.

    Keras initializers with equal integer seeds draw equal values, so each weight
    gets ``seed + k`` (``k`` counts initializers in construction order); with no
    seed they are random.
    """

    def __init__(self, seed: int | None):
        self.seed = seed
        self.count = 0

    def normal(self, stddev: float = INIT_STDDEV):
        seed = None
        if self.seed is not None:
            seed = self.seed + self.count
            self.count += 1
        return keras.initializers.RandomNormal(mean=0.0, stddev=stddev, seed=seed)

    def dropout_seed(self):
        if self.seed is None:
            return None
        self.count += 1
        return self.seed + self.count - 1


def _norm(config: TransformerConfig, name: str, dtype):
    if config.style == "llama":
        return RMSNorm(epsilon=config.norm_eps, dtype=dtype, name=name)
    return keras.layers.LayerNormalization(epsilon=config.norm_eps, center=config.bias, dtype=dtype,
                                           name=name)


@keras.saving.register_keras_serializable(package="lmlab")
class TransformerBlock(keras.layers.Layer):
    """One pre-norm decoder block: ``x += attention(norm(x)); x += mlp(norm(x))``.

    Sublayers: ``attention_norm``, ``attention`` (q/k/v/o_proj), ``mlp_norm``, ``mlp``
    (``fc``/``proj`` for gpt2, ``gate_proj``/``up_proj``/``down_proj`` for llama).
    """

    def __init__(self, config: TransformerConfig | Mapping, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(config, TransformerConfig):
            config = TransformerConfig.from_dict(config)
        self.config = config
        self.seed = seed
        init = _Initializers(seed)
        # Residual projections: std 0.02 / sqrt(2 * n_layer) (GPT-2 paper §2.3; nanoGPT c_proj).
        residual_std = INIT_STDDEV / math.sqrt(2 * config.n_layer)
        dtype = self.dtype_policy
        self.attention_norm = _norm(config, "attention_norm", dtype)
        self.attention = CausalSelfAttention(
            hidden_dim=config.d_model, n_head=config.n_head, n_kv_head=config.n_kv_head,
            use_bias=config.bias, dropout=config.dropout,
            rope_theta=config.rope_theta if config.style == "llama" else None,
            implementation=config.attention, kernel_initializer=init.normal(),
            output_initializer=init.normal(residual_std), seed=init.dropout_seed(),
            head_dim=config.head_dim, qkv_bias=config.attention_bias, output_bias=config.attention_out_bias,
            qk_norm_eps=config.norm_eps if config.qk_norm else None, rope_scaling=config.rope_scaling,
            sliding_window=config.sliding_window, dtype=dtype, name="attention")
        self.mlp_norm = _norm(config, "mlp_norm", dtype)
        mlp_class = SwiGLUMLP if config.style == "llama" else GeluMLP
        self.mlp = mlp_class(
            hidden_dim=config.d_model, intermediate_dim=config.d_ff, use_bias=config.mlp_bias,
            dropout=config.dropout, kernel_initializer=init.normal(),
            output_initializer=init.normal(residual_std), seed=init.dropout_seed(),
            dtype=dtype, name="mlp")

    def build(self, input_shape):
        self.attention_norm.build(input_shape)
        self.attention.build(input_shape)
        self.mlp_norm.build(input_shape)
        self.mlp.build(input_shape)

    def call(self, x, cache=None, cache_index=None, training=None):
        h = self.attention_norm(x)
        if cache is None:
            x = x + self.attention(h, training=training)
        else:
            h, cache = self.attention(h, cache=cache, cache_index=cache_index, training=training)
            x = x + h
        x = x + self.mlp(self.mlp_norm(x), training=training)
        return x if cache is None else (x, cache)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "config": self.config.to_dict(), "seed": self.seed}


@keras.saving.register_keras_serializable(package="lmlab")
class TransformerLM(LanguageModel, keras.Model):
    """A decoder-only Transformer language model: int32 ``(B, T)`` ids → float32 ``(B, T, V)`` logits.

    Args:
        config: a :class:`TransformerConfig` (or its dict).
        seed: base seed for initializers and dropout; ``None`` for random.
        **kwargs: ``keras.Model`` arguments (``name``, ``dtype`` policy, ...).

    Weight paths (Keras ``variable.path``) are stable: ``token_embedding``,
    ``position_embedding`` (gpt2), ``blocks_{i}/attention_norm``,
    ``blocks_{i}/attention/{q,k,v,o}_proj``, ``blocks_{i}/mlp_norm``,
    ``blocks_{i}/mlp/...``, ``final_norm``, ``lm_head`` (untied only), each under
    the model's name. Logits are float32 even under a mixed-precision policy.
    """

    config_class = TransformerConfig

    def __init__(self, config: TransformerConfig | Mapping, seed: int | None = None, **kwargs):
        if not isinstance(config, TransformerConfig):
            config = TransformerConfig.from_dict(config)
        kwargs.setdefault("name", "transformer_lm")
        super().__init__(**kwargs)
        self.config = config
        self.seed = seed
        c = config
        dtype = self.dtype_policy
        init = _Initializers(seed)

        # Layers.
        self.token_embedding = keras.layers.Embedding(
            c.vocab_size, c.d_model, embeddings_initializer=init.normal(), dtype=dtype,
            name="token_embedding")
        self.position_embedding = None
        if c.style == "gpt2":
            self.position_embedding = keras.layers.Embedding(
                c.block_size, c.d_model, embeddings_initializer=init.normal(), dtype=dtype,
                name="position_embedding")
        self.embedding_dropout = keras.layers.Dropout(c.dropout, seed=init.dropout_seed(), dtype=dtype,
                                                      name="embedding_dropout")
        block_seed = None if seed is None else seed + 1000
        self.blocks = [
            TransformerBlock(c, seed=None if seed is None else block_seed + 100 * i, dtype=dtype,
                             name=f"blocks_{i}")
            for i in range(c.n_layer)
        ]
        self.final_norm = _norm(c, "final_norm", dtype)
        self.lm_head = self.adaptive = None
        if is_adaptive(c):
            self.adaptive = build_adaptive(c, INIT_STDDEV, None if seed is None else seed + 50, dtype)
        elif not c.tie_embeddings:
            self.lm_head = keras.layers.Dense(c.vocab_size, use_bias=False,
                                              kernel_initializer=init.normal(), dtype=dtype,
                                              name="lm_head")

    def build(self, input_shape=None):
        hidden_shape = (None, None, self.config.d_model)
        self.token_embedding.build()
        if self.position_embedding is not None:
            self.position_embedding.build()
        for block in self.blocks:
            block.build(hidden_shape)
        self.final_norm.build(hidden_shape)
        if self.lm_head is not None:
            self.lm_head.build(hidden_shape)
        if self.adaptive is not None:
            self.adaptive.build(hidden_shape)

    # -- forward ------------------------------------------------------------

    def call(self, token_ids, training=None, targets=None):
        """Logits ``(B, T, V)``; with ``targets`` ``(B, T)`` the per-token loss ``(B, T)`` instead
        (:meth:`~lmlab.models.base.LanguageModel.token_nll`)."""
        hidden = self.hidden_states(token_ids, training)
        return self.logits(hidden) if targets is None else self.token_nll(hidden, targets)

    def hidden_states(self, token_ids, training=None, lengths=None):
        """``(B, T, d)`` states after the last layer and the final norm: what the output layer and task heads read.

        ``lengths`` is accepted for the common contract (:meth:`~lmlab.models.base.LanguageModel.hidden_states`).
        """
        x = self._embed(token_ids, 0, training)  # (B, T, d)
        for block in self.blocks:
            x = block(x, training=training)
        return self.final_norm(x)

    def _embed(self, token_ids, start, training=None):
        length = token_ids.shape[1]
        if isinstance(length, int) and length > self.config.block_size:
            raise ConfigError(f"sequence length {length} exceeds block_size={self.config.block_size}")
        x = self.token_embedding(ops.cast(token_ids, "int32"))  # (B, T, d)
        if self.position_embedding is not None:
            start = ops.cast(start, "int32")
            per_row = len(start.shape) == 1  # continuous batching: each row at its own position
            positions = ops.arange(ops.shape(token_ids)[1], dtype="int32") + (start[:, None] if per_row else start)
            embedded = self.position_embedding(positions)  # (B, T, d) per row, else (T, d)
            x = x + (embedded if per_row else embedded[None, :, :])
        return self.embedding_dropout(x, training=training)

    def logits(self, x):
        """Float32 logits ``(B, T, V)`` from :meth:`hidden_states` ``(B, T, d)``; the adaptive output's
        are normalised log-probabilities."""
        if self.adaptive is not None:
            return self.adaptive.log_probs(x, self.output_table())
        if self.lm_head is None:
            table = ops.cast(self.token_embedding.embeddings, x.dtype)  # (V, d)
            logits = ops.einsum("btd,vd->btv", x, table)  # (B, T, V); no transposed copy of the table
        else:
            logits = self.lm_head(x)  # (B, T, V)
        return ops.cast(logits, "float32")

    # -- cached decoding ----------------------------------------------------

    def init_cache(self, batch_size: int, max_length: int | None = None):
        """An empty KV cache in the compute dtype: per layer zeros for keys ``(B, n_kv_head, head_dim, max_length)``
        and values ``(B, n_kv_head, max_length, head_dim)`` (the layouts attention reads without transposing).

        ``max_length`` defaults to ``block_size`` and may not exceed it.
        """
        c = self.config
        max_length = c.block_size if max_length is None else int(max_length)
        if not 1 <= max_length <= c.block_size:
            raise ConfigError(f"cache max_length must be in [1, block_size={c.block_size}]: "
                              f"max_length={max_length}")
        keys = (int(batch_size), c.n_kv_head, c.head_dim, max_length)
        values = (int(batch_size), c.n_kv_head, max_length, c.head_dim)
        return tuple((ops.zeros(keys, dtype=self.compute_dtype), ops.zeros(values, dtype=self.compute_dtype))
                     for _ in range(c.n_layer))

    def call_with_cache(self, token_ids, cache, index):
        """Run ``token_ids`` ``(B, t)`` at positions ``index .. index + t - 1`` against ``cache``.

        ``index`` (a scalar int, may be a traced tensor) is the position of
        ``token_ids[:, 0]``; the tokens attend causally to cache slots ``< index + t``.
        ``index`` may also be ``(B,)``, one position per row (continuous batching:
        :mod:`lmlab.generate.batching`), with ``t == 1``.
        Returns ``(logits (B, t, V) float32, new_cache)``. The caller keeps
        ``index + t <= max_length`` (not checked: ``index`` may be traced).
        Shapes are static, so this runs inside ``tf.function(jit_compile=True)``
        or ``jax.jit``. No dropout is applied.
        """
        index = ops.cast(index, "int32")
        x = self._embed(token_ids, index, training=False)  # (B, t, d)
        layer_caches = []
        for i, block in enumerate(self.blocks):
            x, layer_cache = block(x, cache=tuple(cache[i]), cache_index=index, training=False)
            layer_caches.append(layer_cache)  # keys (B, nkv, hd, S), values (B, nkv, S, hd)
        return self.logits(self.final_norm(x)), tuple(layer_caches)

    # -- accounting -----------------------------------------------------------

    def num_parameters(self, non_embedding: bool = False) -> int:
        """Number of weights; ``non_embedding=True`` leaves out position embeddings (nanoGPT), and with the
        adaptive output the token embedding too (its output weights are the layer's own)."""
        total = sum(math.prod(w.shape) for w in self.weights)
        if non_embedding and self.position_embedding is not None:
            total -= math.prod(self.position_embedding.embeddings.shape)
        if non_embedding and self.adaptive is not None:
            total -= math.prod(self.token_embedding.embeddings.shape)
        return int(total)

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs (forward + backward) per token: ``6*N + 12*L*H*Q*T``.

        ``N`` = :meth:`num_parameters` with ``non_embedding=True`` (all weights but the
        position embeddings: exactly nanoGPT's ``estimate_mfu``, which calls
        ``get_num_params()`` with its default ``non_embedding=True``); ``L`` layers,
        ``H`` heads, ``Q`` head size, ``T`` sequence length (default ``block_size``).
        ``6N`` counts the matmuls with weights (2 forward + 4 backward per weight);
        ``12*L*H*Q*T`` the attention scores and weighted sums. The adaptive output
        counts what it computes for every token (:func:`~lmlab.models.base.output_flop_weights`). Source: PaLM
        (Chowdhery et al. 2022), appendix B; nanoGPT ``model.py`` ``estimate_mfu``.
        """
        return estimate_flops_per_token(self.config, seq_len, self.num_parameters(non_embedding=True))

    # -- config -------------------------------------------------------------


def build_transformer(config: TransformerConfig, seed: int | None = None, **kwargs) -> TransformerLM:
    """A :class:`TransformerLM` with its weights built; the same ``config`` and ``seed`` give the same weights."""
    return build_built(TransformerLM, config, seed, **kwargs)


__all__ = [
    "SHAPES",
    "STYLES",
    "TransformerBlock",
    "TransformerConfig",
    "TransformerLM",
    "build_transformer",
    "count_parameters",
    "estimate_flops_per_token",
    "shape",
]
