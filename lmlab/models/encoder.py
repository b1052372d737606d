"""The Transformer encoder with a masked-language-model head, in BERT and RoBERTa styles.

What this module holds, top to bottom:

- :class:`EncoderConfig`: one frozen, validated, JSON-serialisable config, with
  the masked-LM pretraining settings (:mod:`lmlab.data.masking` reads them);
- :data:`SHAPES` and :func:`shape`: named shapes, each citing what it mirrors;
- :func:`count_parameters`: the closed form from the config alone;
- :class:`BidirectionalSelfAttention`, :class:`EncoderBlock`, :class:`EncoderMLM`;
- :func:`build_encoder`: a deterministic, built model.

References followed: BERT (Devlin et al. 2019) and RoBERTa (Liu et al. 2019) as
written in Hugging Face ``transformers/models/bert/modeling_bert.py`` and
``models/roberta/modeling_roberta.py``, so imported weights give the same numbers:

- embeddings: token + learned position + token type (segment), then LayerNorm
  (post-LN) and dropout;
- ``norm="post"`` (BERT): ``x = LN(x + attention(x)); x = LN(x + mlp(x))``;
  ``norm="pre"`` (as GPT-2 and most later encoders): ``x += attention(LN(x));
  x += mlp(LN(x))`` with a final LayerNorm and no LayerNorm on the embeddings;
- exact (erf) GELU, biases everywhere;
- the masked-LM head: ``dense → GELU → LayerNorm``, then the token embedding
  (tied) and an output bias, as ``BertLMPredictionHead``;
- RoBERTa positions (``position_offset > 0``): ``padding_idx + 1 + i`` for real
  tokens and ``padding_idx`` for padding (``create_position_ids_from_input_ids``);
  the table holds ``block_size + position_offset`` rows (514 for roberta-base).

Attention sees every token (no causal mask) except padding: when
``pad_token_id`` is set, keys holding it are hidden. Model code uses
``keras``/``keras.ops`` only, so it runs on TensorFlow and JAX.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import keras
from keras import ops

from lmlab.core.errors import ConfigError
from lmlab.core.records import is_int, is_real
from lmlab.layers.rotary import apply_rotary, rotary_cos_sin
from lmlab.models.base import LanguageModel, ModelConfig, build_built, shape_config

FAMILY = "encoder"
NORMS = ("post", "pre")
PACKINGS = ("full", "pairs")  # pretraining rows: RoBERTa's full sentences or BERT's sentence pairs
POSITIONS = ("learned", "rope")  # BERT's learned table, or rotary positions in attention (RoFormer, ModernBERT)
INIT_STDDEV = 0.02  # BERT's initializer_range
_AUTO_FIELDS = ("d_ff",)


@dataclass(frozen=True)
class EncoderConfig(ModelConfig):
    """Everything that fixes an encoder's shape and numerics, and how it is pretrained.

    ``d_ff`` left ``None`` becomes ``4 * d_model``. ``block_size`` is the longest
    input (special tokens included); RoBERTa's position table is ``position_offset``
    rows longer. Pretraining (:mod:`lmlab.data.masking`): ``mask_prob`` of the
    tokens are selected, of those 80% become the mask token, 10% a random token and
    10% stay; ``whole_word`` selects whole words (word pieces of one word together;
    Chinese words from jieba) instead of single tokens. ``packing`` lays out the
    rows: ``"full"`` (RoBERTa's FULL-SENTENCES), ``[CLS] window [SEP]``, all segment
    id 0; ``"pairs"`` (BERT's sentence pairs, without next-sentence prediction),
    ``[CLS] A [SEP] B [SEP]`` with segment ids 0 then 1, which needs
    ``type_vocab_size >= 2`` (and a tokenizer with ``[CLS]`` and ``[SEP]``).
    ``position``: ``"learned"`` (BERT, RoBERTa: a table of absolute positions added to
    the embeddings) or ``"rope"`` (rotary positions applied to queries and keys, as
    RoFormer and ModernBERT do; no position table). Relative positions get a small
    encoder off the masked-LM plateau much sooner: it must otherwise learn from an
    unstructured table that a word's neighbours are the ones that predict it.
    """

    vocab_size: int
    block_size: int = 128
    n_layer: int = 2
    n_head: int = 2
    d_model: int = 64
    d_ff: int | None = None
    norm: str = "post"
    type_vocab_size: int = 2
    position_offset: int = 0
    pad_token_id: int | None = None
    dropout: float = 0.0
    norm_eps: float = 1e-12
    mask_prob: float = 0.15
    whole_word: bool = False
    packing: str = "full"
    position: str = "learned"
    rope_theta: float = 10000.0
    family: str = FAMILY
    _auto: frozenset = field(default=frozenset(), init=False, repr=False, compare=False)

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "d_model", "d_ff", "type_vocab_size"):
            value = getattr(self, name)
            if value is None and name in _AUTO_FIELDS:
                continue
            if not is_int(value) or value < 1:
                raise ConfigError(f"{name} must be a positive integer: {name}={value!r}")
            object.__setattr__(self, name, int(value))
        for name in ("position_offset", "pad_token_id"):
            value = getattr(self, name)
            if value is None and name == "pad_token_id":
                continue
            if not is_int(value) or value < 0:
                raise ConfigError(f"{name} must be an integer >= 0: {name}={value!r}")
            object.__setattr__(self, name, int(value))
        if self.norm not in NORMS:
            raise ConfigError(f"norm must be one of {', '.join(NORMS)}: norm={self.norm!r}")
        if self.family != FAMILY:
            raise ConfigError(f"family must be {FAMILY!r} for an EncoderConfig: family={self.family!r}")
        if not is_real(self.dropout) or not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1): dropout={self.dropout!r}")
        if not is_real(self.norm_eps) or not self.norm_eps > 0:
            raise ConfigError(f"norm_eps must be a positive number: norm_eps={self.norm_eps!r}")
        if not is_real(self.mask_prob) or not 0.0 < self.mask_prob < 1.0:
            raise ConfigError(f"mask_prob must be in (0, 1): mask_prob={self.mask_prob!r}")
        if not isinstance(self.whole_word, bool):
            raise ConfigError(f"whole_word must be true or false: whole_word={self.whole_word!r}")
        if self.packing not in PACKINGS:
            raise ConfigError(f"packing must be one of {', '.join(PACKINGS)}: packing={self.packing!r}")
        if self.position not in POSITIONS:
            raise ConfigError(f"position must be one of {', '.join(POSITIONS)}: position={self.position!r}")
        if not is_real(self.rope_theta) or not self.rope_theta > 0:
            raise ConfigError(f"rope_theta must be a positive number: rope_theta={self.rope_theta!r}")
        if self.packing == "pairs" and self.type_vocab_size < 2:
            raise ConfigError(f"packing='pairs' gives the second segment token type 1, which needs "
                              f"type_vocab_size >= 2: type_vocab_size={self.type_vocab_size} (RoBERTa-style "
                              "models have 1; use packing='full')")
        if self.d_model % self.n_head:
            raise ConfigError(f"n_head must divide d_model: d_model={self.d_model}, n_head={self.n_head}")
        if self.pad_token_id is not None and self.pad_token_id >= self.vocab_size:
            raise ConfigError(f"pad_token_id={self.pad_token_id} is outside the vocabulary of {self.vocab_size}")
        if self.position == "rope" and (self.position_offset or (self.d_model // self.n_head) % 2):
            raise ConfigError(f"position='rope' needs an even head size and no RoBERTa position offset: "
                              f"head size {self.d_model // self.n_head}, position_offset={self.position_offset}")
        if self.position_offset and self.pad_token_id != self.position_offset - 1:
            raise ConfigError(f"RoBERTa positions start after the padding id: position_offset="
                              f"{self.position_offset} needs pad_token_id={self.position_offset - 1}, "
                              f"got {self.pad_token_id}")
        auto = frozenset(name for name in _AUTO_FIELDS if getattr(self, name) is None)
        if "d_ff" in auto:
            object.__setattr__(self, "d_ff", 4 * self.d_model)
        object.__setattr__(self, "dropout", float(self.dropout))
        object.__setattr__(self, "norm_eps", float(self.norm_eps))
        object.__setattr__(self, "mask_prob", float(self.mask_prob))
        object.__setattr__(self, "rope_theta", float(self.rope_theta))
        object.__setattr__(self, "_auto", auto)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    # The Hugging Face name tables ask every model these; an encoder always has both.
    @property
    def bias(self) -> bool:
        return True

    @property
    def tie_embeddings(self) -> bool:
        return True

    @property
    def style(self) -> str:
        return "roberta" if self.position_offset else "bert"


SHAPES: dict[str, dict[str, Any]] = {
    # A tiny model for tests and smoke runs; no reference, just small and fast.
    "debug": dict(n_layer=2, n_head=2, d_model=32, block_size=32),
    # Small enough to pretrain on 2 CPU cores in minutes: BERT-Mini's width (Turc et al. 2019,
    # google-research/bert "BERT-Mini": L=4, H=256, A=4), 128 tokens.
    "small": dict(n_layer=4, n_head=4, d_model=256, block_size=128),
    # bert-base-uncased config.json: 12 layers, hidden 768, 12 heads, intermediate 3072,
    # max_position_embeddings 512, type_vocab_size 2, layer_norm_eps 1e-12, dropout 0.1.
    "bert-base": dict(n_layer=12, n_head=12, d_model=768, d_ff=3072, block_size=512, type_vocab_size=2,
                      norm_eps=1e-12, dropout=0.1),
    # roberta-base config.json: as BERT-base but max_position_embeddings 514 = 512 + padding_idx 1 + 1,
    # type_vocab_size 1, layer_norm_eps 1e-5, pad_token_id 1.
    "roberta-base": dict(n_layer=12, n_head=12, d_model=768, d_ff=3072, block_size=512, type_vocab_size=1,
                         position_offset=2, pad_token_id=1, norm_eps=1e-5, dropout=0.1),
}


def shape(name: str, **overrides) -> EncoderConfig:
    """The config of shape ``name`` with ``overrides``; ``vocab_size`` must be among them."""
    return shape_config(EncoderConfig, "encoder", SHAPES, name, overrides)


def count_parameters(config: EncoderConfig, non_embedding: bool = False) -> int:
    """Number of weights :class:`EncoderMLM` allocates; ``non_embedding`` leaves out positions and types."""
    c = config
    d, f = c.d_model, c.d_ff
    layer = (4 * d * d + 4 * d) + (2 * d * f + f + d) + 2 * 2 * d
    table = (c.block_size + c.position_offset) * d if c.position == "learned" else 0
    positions = table + c.type_vocab_size * d
    head = d * d + d + 2 * d + c.vocab_size
    total = c.vocab_size * d + positions + 2 * d + c.n_layer * layer + head
    return total - positions if non_embedding else total


class _Initializers:
    """Normal(0, 0.02) initializers, each seeded ``seed + k`` (``k`` counts them), or random."""

    def __init__(self, seed: int | None):
        self.seed, self.count = seed, 0

    def next_seed(self):
        if self.seed is None:
            return None
        self.count += 1
        return self.seed + self.count - 1

    def normal(self):
        return keras.initializers.RandomNormal(mean=0.0, stddev=INIT_STDDEV, seed=self.next_seed())


def _dense(units, init, dtype, name):
    return keras.layers.Dense(units, kernel_initializer=init.normal(), bias_initializer="zeros", dtype=dtype,
                              name=name)


def _layer_norm(config, dtype, name):
    return keras.layers.LayerNormalization(epsilon=config.norm_eps, dtype=dtype, name=name)


@keras.saving.register_keras_serializable(package="lmlab")
class BidirectionalSelfAttention(keras.layers.Layer):
    """Multi-head self-attention over every key not hidden by ``key_mask``; float32 softmax.

    ``call(x, key_mask=None, rotary=None)``: ``x`` ``(B, T, d)``; ``key_mask`` boolean
    ``(B, T)``, True for keys that may be attended to; ``rotary``: ``(cos, sin)`` from
    :func:`lmlab.layers.rotary.rotary_cos_sin` to rotate queries and keys by
    (``position="rope"``). Projections ``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``
    (Hugging Face ``query``, ``key``, ``value``, ``output.dense``).
    """

    def __init__(self, hidden_dim: int, n_head: int, dropout: float = 0.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim, self.n_head, self.dropout_rate, self.seed = int(hidden_dim), int(n_head), float(dropout), seed
        self.head_dim = self.hidden_dim // self.n_head
        init = _Initializers(seed)
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (
            _dense(self.hidden_dim, init, self.dtype_policy, f"{p}_proj") for p in "qkvo")
        self.dropout = keras.layers.Dropout(self.dropout_rate, seed=init.next_seed(), dtype=self.dtype_policy,
                                            name="dropout")

    def build(self, input_shape):
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.o_proj):
            proj.build(input_shape)

    def call(self, x, key_mask=None, training=None, rotary=None):
        batch, length = ops.shape(x)[0], ops.shape(x)[1]

        def heads(t, rotate=False):  # (B, T, d) -> (B, nh, T, hd), float32
            t = ops.cast(ops.reshape(t, (batch, length, self.n_head, self.head_dim)), "float32")
            if rotate and rotary is not None:
                t = apply_rotary(t, *rotary)
            return ops.transpose(t, (0, 2, 1, 3))

        q, k, v = heads(self.q_proj(x), True), heads(self.k_proj(x), True), heads(self.v_proj(x))
        scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) / math.sqrt(self.head_dim)  # (B, nh, T, T)
        if key_mask is not None:
            scores = ops.where(key_mask[:, None, None, :], scores, ops.full_like(scores, -1e30))
        probs = ops.softmax(scores, axis=-1)
        y = ops.transpose(ops.matmul(probs, v), (0, 2, 1, 3))  # (B, T, nh, hd)
        y = ops.cast(ops.reshape(y, (batch, length, self.hidden_dim)), self.compute_dtype)
        return self.dropout(self.o_proj(y), training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "hidden_dim": self.hidden_dim, "n_head": self.n_head,
                "dropout": self.dropout_rate, "seed": self.seed}


@keras.saving.register_keras_serializable(package="lmlab")
class EncoderBlock(keras.layers.Layer):
    """One encoder layer, post-LN (BERT) or pre-LN; sublayers ``attention``, ``attention_norm``,
    ``mlp_fc``, ``mlp_proj``, ``mlp_norm``."""

    def __init__(self, config: EncoderConfig | Mapping, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(config, EncoderConfig):
            config = EncoderConfig.from_dict(config)
        self.config, self.seed = config, seed
        init = _Initializers(seed)
        dtype = self.dtype_policy
        self.attention = BidirectionalSelfAttention(config.d_model, config.n_head, config.dropout,
                                                    seed=init.next_seed(), dtype=dtype, name="attention")
        self.attention_norm = _layer_norm(config, dtype, "attention_norm")
        self.mlp_fc = _dense(config.d_ff, init, dtype, "mlp_fc")
        self.mlp_proj = _dense(config.d_model, init, dtype, "mlp_proj")
        self.mlp_norm = _layer_norm(config, dtype, "mlp_norm")
        self.mlp_dropout = keras.layers.Dropout(config.dropout, seed=init.next_seed(), dtype=dtype,
                                                name="mlp_dropout")

    def build(self, input_shape):
        self.attention.build(input_shape)
        self.attention_norm.build(input_shape)
        self.mlp_fc.build(input_shape)
        self.mlp_proj.build(tuple(input_shape[:-1]) + (self.config.d_ff,))
        self.mlp_norm.build(input_shape)

    def _mlp(self, x, training):
        h = ops.gelu(self.mlp_fc(x), approximate=False)  # BERT's "gelu" is the exact erf form
        return self.mlp_dropout(self.mlp_proj(h), training=training)

    def call(self, x, key_mask=None, training=None, rotary=None):
        if self.config.norm == "post":
            x = self.attention_norm(x + self.attention(x, key_mask, training=training, rotary=rotary))
            return self.mlp_norm(x + self._mlp(x, training))
        x = x + self.attention(self.attention_norm(x), key_mask, training=training, rotary=rotary)
        return x + self._mlp(self.mlp_norm(x), training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "config": self.config.to_dict(), "seed": self.seed}


@keras.saving.register_keras_serializable(package="lmlab")
class EncoderMLM(LanguageModel, keras.Model):
    """A Transformer encoder with a masked-LM head: int32 ``(B, T)`` ids → float32 ``(B, T, V)`` logits.

    ``call(token_ids, token_type_ids=None, training=None)``; segment ids default
    to 0. :meth:`hidden_states` returns the hidden states a task head reads. Weight
    paths: ``token_embedding``, ``positions``, ``token_types``, ``embedding_norm``
    (post-LN), ``blocks_{i}/...``, ``final_norm`` (pre-LN), ``head_dense``,
    ``head_norm``, ``head_bias``.
    """

    config_class = EncoderConfig

    def __init__(self, config: EncoderConfig | Mapping, seed: int | None = None, **kwargs):
        if not isinstance(config, EncoderConfig):
            config = EncoderConfig.from_dict(config)
        kwargs.setdefault("name", "encoder_mlm")
        super().__init__(**kwargs)
        self.config, self.seed = config, seed
        c, dtype, init = config, self.dtype_policy, _Initializers(seed)

        def embedding(rows, name):
            return keras.layers.Embedding(rows, c.d_model, embeddings_initializer=init.normal(), dtype=dtype,
                                          name=name)

        self.token_embedding = embedding(c.vocab_size, "token_embedding")
        learned = c.position == "learned"
        self.positions = embedding(c.block_size + c.position_offset, "positions") if learned else None
        self.token_types = embedding(c.type_vocab_size, "token_types")
        self.embedding_norm = _layer_norm(c, dtype, "embedding_norm") if c.norm == "post" else None
        self.embedding_dropout = keras.layers.Dropout(c.dropout, seed=init.next_seed(), dtype=dtype,
                                                      name="embedding_dropout")
        self.blocks = [EncoderBlock(c, seed=None if seed is None else seed + 1000 + 100 * i, dtype=dtype,
                                    name=f"blocks_{i}") for i in range(c.n_layer)]
        self.final_norm = _layer_norm(c, dtype, "final_norm") if c.norm == "pre" else None
        self.head_dense = _dense(c.d_model, init, dtype, "head_dense")
        self.head_norm = _layer_norm(c, dtype, "head_norm")

    def build(self, input_shape=None):
        hidden = (None, None, self.config.d_model)
        for layer in (self.token_embedding, self.positions, self.token_types):
            if layer is not None:
                layer.build()
        for layer in (self.embedding_norm, *self.blocks, self.final_norm, self.head_dense, self.head_norm):
            if layer is not None:
                layer.build(hidden)
        self.head_bias = self.add_weight(name="head_bias", shape=(self.config.vocab_size,), initializer="zeros")

    # -- forward ------------------------------------------------------------

    def key_mask(self, token_ids):
        """Boolean ``(B, T)``: False where the input is padding (``None`` without a padding id)."""
        if self.config.pad_token_id is None:
            return None
        return ops.not_equal(ops.cast(token_ids, "int32"), self.config.pad_token_id)

    def _position_ids(self, token_ids, key_mask):
        c = self.config
        if c.position_offset:  # RoBERTa: padding_idx + 1 + running count of real tokens; padding_idx on padding
            real = ops.cast(key_mask, "int32")
            return ops.cumsum(real, axis=1) * real + c.pad_token_id
        return ops.arange(ops.shape(token_ids)[1], dtype="int32")[None, :]

    def hidden_states(self, token_ids, training=None, lengths=None, token_type_ids=None):
        """``(B, T, d)`` states after the last layer (and the final norm, pre-LN): what the masked-LM
        head and task heads read.

        ``lengths`` ``(B,)``: real tokens per row; the rest (right padding) is hidden from attention.
        ``token_type_ids`` ``(B, T)``: segment ids (0 where not given).
        """
        length = token_ids.shape[1]
        if isinstance(length, int) and length > self.config.block_size:
            raise ConfigError(f"sequence length {length} exceeds block_size={self.config.block_size}")
        token_ids = ops.cast(token_ids, "int32")
        key_mask = self.key_mask(token_ids)
        if lengths is not None:
            real = ops.arange(ops.shape(token_ids)[1], dtype="int32")[None, :] < ops.cast(lengths, "int32")[:, None]
            key_mask = real if key_mask is None else ops.logical_and(key_mask, real)
        x = self.token_embedding(token_ids)
        rotary = None
        if self.positions is not None:
            x = x + self.positions(self._position_ids(token_ids, key_mask))
        else:  # rotary: positions enter attention as rotations of queries and keys
            rotary = rotary_cos_sin(ops.arange(ops.shape(token_ids)[1]), self.config.head_dim,
                                    self.config.rope_theta)
        types = ops.zeros_like(token_ids) if token_type_ids is None else ops.cast(token_type_ids, "int32")
        x = x + self.token_types(types)  # (B, T, d)
        if self.embedding_norm is not None:
            x = self.embedding_norm(x)
        x = self.embedding_dropout(x, training=training)
        for block in self.blocks:
            x = block(x, key_mask, training=training, rotary=rotary)
        return x if self.final_norm is None else self.final_norm(x)

    def logits(self, x):
        """Float32 logits from :meth:`hidden_states` (``(B, T, d)`` or gathered ``(B, M, d)``)."""
        h = self.head_norm(ops.gelu(self.head_dense(x), approximate=False))
        table = ops.cast(self.token_embedding.embeddings, h.dtype)  # (V, d), tied
        logits = ops.einsum("btd,vd->btv", h, table) + ops.cast(self.head_bias, h.dtype)
        return ops.cast(logits, "float32")

    def call(self, token_ids, token_type_ids=None, training=None, masked_positions=None):
        """Logits ``(B, T, V)``; with ``masked_positions`` ``(B, M)`` only there, ``(B, M, V)``."""
        hidden = self.hidden_states(token_ids, training=training, token_type_ids=token_type_ids)
        if masked_positions is not None:  # the output layer only where the loss looks (BERT's gather_indexes)
            hidden = ops.take_along_axis(hidden, ops.cast(masked_positions, "int32")[:, :, None], axis=1)
        return self.logits(hidden)

    def mlm_head_variables(self) -> list:
        """The masked-LM head's own weights (not the tied embedding): a task head on :meth:`hidden_states` leaves
        them unused, so fine-tuning marks them non-trainable (they would get no gradient)."""
        return [*self.head_dense.weights, *self.head_norm.weights, self.head_bias]

    # -- what a decoder has and an encoder does not --------------------------

    def init_cache(self, *args, **kwargs):
        raise ConfigError("an encoder (masked language model) does not generate text left to right; "
                          "use lmlab fill-mask RUN \"text with [MASK]\"")

    call_with_cache = init_cache

    # -- accounting -----------------------------------------------------------

    def num_parameters(self, non_embedding: bool = False) -> int:
        total = sum(math.prod(w.shape) for w in self.weights)
        if non_embedding:
            total -= math.prod(self.token_types.embeddings.shape)
            if self.positions is not None:
                total -= math.prod(self.positions.embeddings.shape)
        return int(total)

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs per token, ``6*N + 12*L*H*Q*T`` (PaLM appendix B, as the decoder)."""
        c = self.config
        t = c.block_size if seq_len is None else int(seq_len)
        return 6 * self.num_parameters(non_embedding=True) + 12 * c.n_layer * c.n_head * c.head_dim * t


def build_encoder(config: EncoderConfig, seed: int | None = None, **kwargs) -> EncoderMLM:
    """A :class:`EncoderMLM` with its weights built; the same ``config`` and ``seed`` give the same weights."""
    return build_built(EncoderMLM, config, seed, dummy_length=2, **kwargs)  # two tokens: a softmax over one key makes Keras warn


__all__ = ["EncoderBlock", "EncoderConfig", "EncoderMLM", "BidirectionalSelfAttention", "SHAPES",
           "build_encoder", "count_parameters", "shape"]
