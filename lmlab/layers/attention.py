"""Causal self-attention for decoder language models, with a KV cache.

One layer serves both GPT-2 style (Radford et al. 2019; nanoGPT's
``CausalSelfAttention``) and Llama style (Hugging Face ``LlamaAttention`` in
``models/llama/modeling_llama.py``):

- separate ``q_proj``, ``k_proj``, ``v_proj`` and ``o_proj`` projections (Hugging
  Face Llama names; GPT-2's fused ``c_attn`` splits into the first three);
- grouped-query attention (Ainslie et al. 2023): ``n_kv_head`` key/value heads,
  each repeated for ``n_head // n_kv_head`` query heads (Hugging Face ``repeat_kv``
  order: kv head ``j`` serves query heads ``j*g ... j*g + g-1``);
- optional rotary positions on q and k (:mod:`lmlab.layers.rotary`), plain or scaled;
- an explicit head size (Qwen3: ``n_head * head_dim`` may differ from the width), biases on
  q/k/v and on ``o_proj`` set apart (Qwen2 has the first only), RMSNorm of each query and key head
  before the rotation (Qwen3's ``q_norm``/``k_norm``), and sliding-window attention (Mistral:
  query ``i`` sees keys ``j`` with ``i - window < j <= i``, as ``transformers``' ``sliding_window_overlay``),
  cached decoding included;
- two interchangeable attention paths chosen by name, as ``transformers`` does:
  ``"reference"`` (:func:`reference_attention`, plain float32 softmax attention,
  like ``eager_attention_forward``) and ``"fused"`` (``keras.ops.dot_product_attention``,
  which each backend may lower to a faster kernel). A test checks they agree.

Cached decoding keeps a pair of tensors per layer: keys ``(B, n_kv_head, head_dim, S)``
and values ``(B, n_kv_head, S, head_dim)`` (``S`` = the cache's fixed length). New
keys and values are written with ``keras.ops.slice_update`` at a traced index and a
mask hides the slots not yet written, so shapes stay static inside a compiled loop.
The layouts are the ones the two attention matmuls read directly (``q @ K`` and
``p @ V``, no transposes) and keys and values are separate tensors, so a decoding
loop compiled by XLA updates the cache in place instead of copying it every token.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from lmlab.layers.normalization import RMSNorm
from lmlab.layers.rotary import RotaryEmbedding

IMPLEMENTATIONS = ("fused", "reference")


def causal_mask(query_length, key_length, start_index=0, window=None):
    """Boolean ``(T, S)`` mask, ``True`` where attention is allowed.

    Query ``i`` sits at position ``start_index + i`` and sees key ``j`` iff
    ``j <= start_index + i`` (and, with a sliding ``window``, ``j > start_index + i - window``);
    with a cache of ``S`` slots this also hides every slot past the newest token.
    """
    query_positions = ops.arange(query_length, dtype="int32") + ops.cast(start_index, "int32")  # (T,)
    key_positions = ops.arange(key_length, dtype="int32")  # (S,)
    mask = ops.less_equal(key_positions[None, :], query_positions[:, None])  # (T, S)
    if window is not None:
        mask = ops.logical_and(mask, ops.greater(key_positions[None, :], query_positions[:, None] - window))
    return mask


def reference_attention(q, k, v, mask):
    """``softmax(q k^T / sqrt(hd) + mask) v``, computed in float32.

    Args:
        q: ``(B, T, N, hd)`` queries.
        k, v: ``(B, S, N, hd)`` keys and values (kv heads already repeated).
        mask: boolean, broadcastable to ``(T, S)``; ``True`` where attention is allowed.
            Every query row must allow at least one key (a causal mask always does).

    Returns:
        ``(B, T, N, hd)`` in the dtype of ``q``.
    """
    dtype = q.dtype
    head_dim = q.shape[-1]
    q32, k32, v32 = (ops.cast(t, "float32") for t in (q, k, v))
    scores = ops.einsum("btnh,bsnh->bnts", q32, k32) / math.sqrt(head_dim)  # (B, N, T, S)
    scores = ops.where(mask[None, None, :, :], scores, ops.full_like(scores, -1e30))
    scores = scores - ops.max(scores, axis=-1, keepdims=True)
    weights = ops.exp(scores)
    probs = weights / ops.sum(weights, axis=-1, keepdims=True)  # (B, N, T, S)
    out = ops.einsum("bnts,bsnh->btnh", probs, v32)  # (B, T, N, hd)
    return ops.cast(out, dtype)


def _write_rows(k_cache, v_cache, k_new, v_new, positions):
    """The caches with one new key ``(B, nkv, hd, 1)`` and value ``(B, nkv, 1, hd)`` written at each row's own
    slot ``positions`` ``(B,)``: one ``slice_update`` per row (``B`` is static), which XLA does in place, where a
    select against a one-hot of the slot would rewrite the whole cache every token."""
    for row in range(k_cache.shape[0]):
        at = positions[row]
        k_cache = ops.slice_update(k_cache, [row, 0, 0, at], k_new[row:row + 1])  # (B, nkv, hd, S)
        v_cache = ops.slice_update(v_cache, [row, 0, at, 0], v_new[row:row + 1])  # (B, nkv, S, hd)
    return k_cache, v_cache


@keras.saving.register_keras_serializable(package="lmlab")
class CausalSelfAttention(keras.layers.Layer):
    """Multi-head causal self-attention with optional GQA, RoPE and a KV cache.

    Args:
        hidden_dim: model width ``d``; input and output are ``(B, T, d)``.
        n_head: query heads; ``head_dim = hidden_dim // n_head``.
        n_kv_head: key/value heads (``None``: ``n_head``); must divide ``n_head``.
        use_bias: biases on the four projections (GPT-2 yes, Llama no).
        dropout: dropout rate on the output projection (training only).
        rope_theta: rotary base; ``None`` for no rotary positions (GPT-2 style).
        head_dim: the size of each head (``None``: ``hidden_dim // n_head``).
        qkv_bias, output_bias: biases on q/k/v and on ``o_proj`` (``None``: ``use_bias``).
        qk_norm_eps: RMSNorm each query and key head (``q_norm``, ``k_norm``) with this epsilon; ``None``: no norm.
        rope_scaling: a rotary scaling (:func:`lmlab.layers.rotary.check_rope_scaling`); ``None``: plain.
        sliding_window: each query sees this many keys at most (itself included); ``None``: all before it.
        implementation: ``"fused"`` or ``"reference"``.
        kernel_initializer: for q/k/v.
        output_initializer: for ``o_proj`` (GPT-2 scales it down by depth).
        seed: seed for the dropout layer.

    ``call(x, cache=None, cache_index=None, training=None)``: without a cache,
    returns ``(B, T, d)``; with a layer cache ``(keys (B, n_kv_head, head_dim, S),
    values (B, n_kv_head, S, head_dim))`` and the position ``cache_index`` of ``x[:, 0]``, returns ``(output, new_cache)``.
    """

    def __init__(self, hidden_dim: int, n_head: int, n_kv_head: int | None = None,
                 use_bias: bool = True, dropout: float = 0.0, rope_theta: float | None = None,
                 implementation: str = "fused", kernel_initializer="glorot_uniform",
                 output_initializer=None, seed: int | None = None, head_dim: int | None = None,
                 qkv_bias: bool | None = None, output_bias: bool | None = None, qk_norm_eps: float | None = None,
                 rope_scaling=None, sliding_window: int | None = None, **kwargs):
        super().__init__(**kwargs)
        n_kv_head = n_head if n_kv_head is None else n_kv_head
        if (head_dim is None and hidden_dim % n_head) or n_head % n_kv_head:
            raise ValueError(f"bad head counts: hidden_dim={hidden_dim}, n_head={n_head}, "
                             f"n_kv_head={n_kv_head}")
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
        self.hidden_dim = int(hidden_dim)
        self.n_head = int(n_head)
        self.n_kv_head = int(n_kv_head)
        self.head_dim = self.hidden_dim // self.n_head if head_dim is None else int(head_dim)
        self.use_bias = bool(use_bias)
        self.qkv_bias = self.use_bias if qkv_bias is None else bool(qkv_bias)
        self.output_bias = self.use_bias if output_bias is None else bool(output_bias)
        self.qk_norm_eps = None if qk_norm_eps is None else float(qk_norm_eps)
        self.rope_scaling = None if rope_scaling is None else dict(rope_scaling)
        self.sliding_window = None if sliding_window is None else int(sliding_window)
        self.dropout_rate = float(dropout)
        self.rope_theta = None if rope_theta is None else float(rope_theta)
        self.implementation = implementation
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.output_initializer = keras.initializers.get(output_initializer or kernel_initializer)
        self.seed = seed

        def dense(units, name, initializer, bias):
            return keras.layers.Dense(units, use_bias=bias, kernel_initializer=initializer,
                                      bias_initializer="zeros", dtype=self.dtype_policy, name=name)

        kv_width = self.n_kv_head * self.head_dim
        self.q_proj = dense(self.n_head * self.head_dim, "q_proj", self.kernel_initializer, self.qkv_bias)
        self.k_proj = dense(kv_width, "k_proj", self.kernel_initializer, self.qkv_bias)
        self.v_proj = dense(kv_width, "v_proj", self.kernel_initializer, self.qkv_bias)
        self.o_proj = dense(self.hidden_dim, "o_proj", self.output_initializer, self.output_bias)
        self.q_norm = self.k_norm = None
        if self.qk_norm_eps is not None:  # Qwen3: over each head's features, before the rotation
            self.q_norm = RMSNorm(epsilon=self.qk_norm_eps, dtype=self.dtype_policy, name="q_norm")
            self.k_norm = RMSNorm(epsilon=self.qk_norm_eps, dtype=self.dtype_policy, name="k_norm")
        self.rotary = None
        if self.rope_theta is not None:
            self.rotary = RotaryEmbedding(self.head_dim, self.rope_theta, scaling=self.rope_scaling,
                                          dtype=self.dtype_policy, name="rotary")
        self.dropout = keras.layers.Dropout(self.dropout_rate, seed=seed, dtype=self.dtype_policy,
                                            name="dropout")

    def build(self, input_shape):
        for proj in (self.q_proj, self.k_proj, self.v_proj):
            proj.build(input_shape)
        self.o_proj.build(tuple(input_shape[:-1]) + (self.n_head * self.head_dim,))
        if self.q_norm is not None:
            self.q_norm.build((None, None, None, self.head_dim))
            self.k_norm.build((None, None, None, self.head_dim))

    def call(self, x, cache=None, cache_index=None, training=None):
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        q = ops.reshape(self.q_proj(x), (batch, length, self.n_head, self.head_dim))  # (B, T, nh, hd)
        k = ops.reshape(self.k_proj(x), (batch, length, self.n_kv_head, self.head_dim))  # (B, T, nkv, hd)
        v = ops.reshape(self.v_proj(x), (batch, length, self.n_kv_head, self.head_dim))  # (B, T, nkv, hd)
        start = 0 if cache is None else cache_index
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rotary is not None:
            q = self.rotary(q, start_index=start)
            k = self.rotary(k, start_index=start)

        if cache is not None:
            k_cache, v_cache = cache
            k_new = ops.cast(ops.transpose(k, (0, 2, 3, 1)), k_cache.dtype)  # (B, nkv, hd, T)
            v_new = ops.cast(ops.transpose(v, (0, 2, 1, 3)), v_cache.dtype)  # (B, nkv, T, hd)
            y = self._attend_cached(q, k_new, v_new, k_cache, v_cache, cache_index)  # (B, T, nh, hd)
            # The writes depend on the reads (a zero from y), so XLA can order them and update
            # the cache in place inside a compiled loop instead of copying it every token.
            after_reads = ops.cast(y[0, 0, 0, 0] * 0, k_cache.dtype)
            k_new, v_new = k_new + after_reads, v_new + after_reads
            if len(getattr(cache_index, "shape", ())) == 1:  # a position per row (continuous batching)
                k_cache, v_cache = _write_rows(k_cache, v_cache, k_new, v_new, cache_index)
            else:
                k_cache = ops.slice_update(k_cache, [0, 0, 0, cache_index], k_new)  # (B, nkv, hd, S)
                v_cache = ops.slice_update(v_cache, [0, 0, cache_index, 0], v_new)  # (B, nkv, S, hd)
            cache = (k_cache, v_cache)
        else:
            y = self._attend(q, k, v)  # (B, T, nh, hd)
        y = ops.reshape(y, (batch, length, self.n_head * self.head_dim))  # (B, T, d)
        y = self.dropout(self.o_proj(y), training=training)
        return y if cache is None else (y, cache)

    def _attend_cached(self, q, k_new, v_new, k_cache, v_cache, cache_index):
        """Attention of ``q`` ``(B, T, nh, hd)`` at positions ``cache_index...``, in float32.

        Keys are the cache's slots before ``cache_index`` and the ``T`` new ones
        (causally); both parts share one softmax. Reading the cache before it is
        updated (rather than the updated cache) keeps XLA from copying it. Query
        heads are grouped under their kv head (``(B, nkv, g*T, hd)``), so
        grouped-query attention needs no repeated keys and values.
        """
        batch, length = ops.shape(q)[0], ops.shape(q)[1]
        groups = self.n_head // self.n_kv_head
        slots = ops.shape(v_cache)[2]
        scale = 1.0 / math.sqrt(self.head_dim)
        q = ops.transpose(ops.cast(q, "float32"), (0, 2, 1, 3))  # (B, nh, T, hd)
        q = ops.reshape(q, (batch, self.n_kv_head, groups * length, self.head_dim))  # (B, nkv, g*T, hd)

        def grouped(scores, width):  # (B, nkv, g*T, width) -> (B, nkv, g, T, width)
            return ops.reshape(scores, (batch, self.n_kv_head, groups, length, width))

        old = grouped(ops.matmul(q, ops.cast(k_cache, "float32")) * scale, slots)  # (B, nkv, g, T, S)
        index = ops.cast(cache_index, "int32")
        if len(index.shape) == 1:  # one position per row: (B, 1, 1, 1, 1) against (S,)
            index = ops.reshape(index, (-1, 1, 1, 1, 1))
        slot_ids = ops.arange(slots, dtype="int32")
        old_visible = slot_ids < index  # (S,) or (B, 1, 1, 1, S)
        if self.sliding_window is not None:  # query t (at index + t) sees slots > index + t - window
            query_positions = index + ops.arange(length, dtype="int32")[:, None]  # (T, 1) or (B, 1, 1, T, 1)
            old_visible = ops.logical_and(old_visible, slot_ids > query_positions - self.sliding_window)
        old = ops.where(old_visible, old, ops.full_like(old, -1e30))
        new = grouped(ops.matmul(q, ops.cast(k_new, "float32")) * scale, length)  # (B, nkv, g, T, T)
        new = ops.where(causal_mask(length, length, window=self.sliding_window), new, ops.full_like(new, -1e30))
        probs = ops.softmax(ops.concatenate([old, new], axis=-1), axis=-1)  # (B, nkv, g, T, S + T)
        flat = (batch, self.n_kv_head, groups * length)
        y = (ops.matmul(ops.reshape(probs[..., :slots], flat + (slots,)), ops.cast(v_cache, "float32"))
             + ops.matmul(ops.reshape(probs[..., slots:], flat + (length,)), ops.cast(v_new, "float32")))
        y = ops.reshape(y, (batch, self.n_head, length, self.head_dim))  # (B, nh, T, hd)
        return ops.cast(ops.transpose(y, (0, 2, 1, 3)), self.compute_dtype)  # (B, T, nh, hd)

    def _attend(self, q, k, v):
        """Causal attention of ``q`` ``(B, T, nh, hd)`` over ``k``, ``v`` ``(B, T, nkv, hd)``."""
        groups = self.n_head // self.n_kv_head
        if groups > 1:  # grouped-query attention: share each kv head across `groups` query heads
            k = ops.repeat(k, groups, axis=2)  # (B, T, nh, hd)
            v = ops.repeat(v, groups, axis=2)  # (B, T, nh, hd)
        if self.implementation == "reference":
            return reference_attention(q, k, v, causal_mask(ops.shape(q)[1], ops.shape(k)[1],
                                                            window=self.sliding_window))
        if self.sliding_window is not None:
            mask = causal_mask(ops.shape(q)[1], ops.shape(k)[1], window=self.sliding_window)
            return ops.dot_product_attention(q, k, v, mask=mask[None, None, :, :])
        return ops.dot_product_attention(q, k, v, is_causal=True)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_dim": self.hidden_dim,
            "n_head": self.n_head,
            "n_kv_head": self.n_kv_head,
            "use_bias": self.use_bias,
            "dropout": self.dropout_rate,
            "rope_theta": self.rope_theta,
            "implementation": self.implementation,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "output_initializer": keras.initializers.serialize(self.output_initializer),
            "seed": self.seed,
            **({"head_dim": self.head_dim} if self.head_dim * self.n_head != self.hidden_dim else {}),
            **({"qkv_bias": self.qkv_bias} if self.qkv_bias != self.use_bias else {}),
            **({"output_bias": self.output_bias} if self.output_bias != self.use_bias else {}),
            **({"qk_norm_eps": self.qk_norm_eps} if self.qk_norm_eps is not None else {}),
            **({"rope_scaling": self.rope_scaling} if self.rope_scaling is not None else {}),
            **({"sliding_window": self.sliding_window} if self.sliding_window is not None else {}),
        }
