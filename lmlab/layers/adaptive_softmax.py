"""The adaptive softmax: an exact, cheaper output layer for large word vocabularies.

Grave, Joulin, Cissé, Grangier & Jégou 2017, "Efficient softmax approximation for GPUs", as in
PyTorch's ``nn.AdaptiveLogSoftmaxWithLoss``. The vocabulary, in id order, is cut at
``cutoffs = [c_1, ..., c_n]`` into a head ``[0, c_1)`` and tail clusters ``[c_i, c_{i+1})``
(the last one ends at the vocabulary size). The head is a softmax over its ``c_1`` words plus one
entry per tail cluster; tail cluster ``i`` (from 1) projects the hidden state down to
``d / div_value**i`` dimensions before its own softmax. The probabilities are exact, not sampled:

    log p(w) = log p_head(w)                               for w in the head,
    log p(w) = log p_head(cluster i) + log p_i(w)           for w in tail cluster i,

so they sum to 1 over the vocabulary. The ids must put the frequent words first: lmlab's char
and word tokenizers number symbols by descending training frequency after their special tokens
(:mod:`lmlab.tokenizers.vocab`), so their ids need no permutation.

Two outputs:

- :meth:`AdaptiveSoftmax.log_probs` ``(B, T, V)``: the full-vocabulary log-probabilities, for
  what reads logits (generation, scoring, evaluation): ``log_softmax(log p) = log p``, so they
  are valid logits everywhere a softmax or log-softmax is applied to them;
- :meth:`AdaptiveSoftmax.token_nll` ``(B, T)``: ``-log p(target)`` without the ``(B, T, V)``
  tensor: the head and each cluster's log-normaliser, plus the target's own logit.

Every token computes the head and every tail cluster (static shapes, which XLA and ``jax.jit``
need); PyTorch instead gathers the tokens of each cluster, which saves more when the tail is rare
but has data-dependent shapes. :func:`adaptive_macs` counts what is computed here.

With ``tied_table`` (the ``(V, d)`` input embedding) the head's word rows are the embedding's
first ``c_1`` rows (Press & Wolf 2017 for the head; the tails stay untied, unlike Baevski & Auli's
adaptive inputs). Logits are cast to float32 before any normalisation, so mixed bfloat16 keeps
float32 log-probabilities. ``keras.ops`` only.
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops


def cluster_bounds(vocab_size: int, cutoffs: Sequence[int]) -> list[int]:
    """``[0, c_1, ..., c_n, V]``: the start of the head and of each cluster, then the end."""
    return [0, *[int(c) for c in cutoffs], int(vocab_size)]


def tail_dims(d_model: int, n_clusters: int, div_value: float) -> list[int]:
    """Projection size of each tail cluster: ``max(1, int(d / div_value**i))`` for ``i = 1..n`` (as PyTorch)."""
    return [max(1, int(d_model // (div_value ** (i + 1)))) for i in range(n_clusters)]


def adaptive_parameters(vocab_size: int, d_model: int, cutoffs: Sequence[int], div_value: float,
                        tied: bool = False) -> int:
    """Weights the layer allocates: head kernel and bias (the word rows left out when ``tied``), each
    tail's projection, output kernel and bias."""
    bounds = cluster_bounds(vocab_size, cutoffs)
    n, head = len(cutoffs), bounds[1]
    total = (n if tied else head + n) * d_model + head + n
    for i, dim in enumerate(tail_dims(d_model, n, div_value)):
        size = bounds[i + 2] - bounds[i + 1]
        total += d_model * dim + dim * size + size
    return total


def adaptive_macs(vocab_size: int, d_model: int, cutoffs: Sequence[int], div_value: float) -> int:
    """Multiply-adds (weights used once) per token, counting biases as one each, as ``6*N`` does:
    the head ``(c_1 + n)`` logits and every tail's projection and logits, computed for every token."""
    return adaptive_parameters(vocab_size, d_model, cutoffs, div_value, tied=False)


class AdaptiveSoftmax(keras.layers.Layer):
    """Hidden states ``(B, T, d)`` → exact log-probabilities over ``vocab_size`` ids.

    Weights (Keras paths under the layer's name): ``head_kernel`` ``(d, c_1 + n)`` (only the ``n``
    cluster columns when ``tied``), ``head_bias``, and per tail ``i``: ``tail_{i}_projection``
    ``(d, d_i)``, ``tail_{i}_kernel`` ``(d_i, size_i)``, ``tail_{i}_bias``.
    """

    def __init__(self, vocab_size: int, d_model: int, cutoffs: Sequence[int], div_value: float = 4.0,
                 tied: bool = False, stddev: float = 0.02, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.d_model = int(vocab_size), int(d_model)
        self.cutoffs, self.div_value, self.tied = [int(c) for c in cutoffs], float(div_value), bool(tied)
        self.stddev, self.seed = float(stddev), seed
        self.bounds = cluster_bounds(self.vocab_size, self.cutoffs)
        self.n_clusters = len(self.cutoffs)
        self.head_size = self.bounds[1]
        self.dims = tail_dims(self.d_model, self.n_clusters, self.div_value)

    def build(self, input_shape=None):
        d, n, head = self.d_model, self.n_clusters, self.head_size
        seed = [self.seed]

        def init(stddev):
            if seed[0] is None:
                return keras.initializers.RandomNormal(stddev=stddev)
            seed[0] += 1
            return keras.initializers.RandomNormal(stddev=stddev, seed=seed[0] - 1)

        self.head_kernel = self.add_weight(shape=(d, n if self.tied else head + n), initializer=init(self.stddev),
                                           name="head_kernel")
        self.head_bias = self.add_weight(shape=(head + n,), initializer="zeros", name="head_bias")
        self.tails = []
        for i, dim in enumerate(self.dims):
            size = self.bounds[i + 2] - self.bounds[i + 1]
            # The projection keeps the output's scale: unit-variance inputs give unit-variance projections.
            projection = self.add_weight(shape=(d, dim), initializer=init(d ** -0.5), name=f"tail_{i}_projection")
            kernel = self.add_weight(shape=(dim, size), initializer=init(self.stddev), name=f"tail_{i}_kernel")
            bias = self.add_weight(shape=(size,), initializer="zeros", name=f"tail_{i}_bias")
            self.tails.append((projection, kernel, bias))

    # -- logits of each part ------------------------------------------------

    def _head_logits(self, x, tied_table=None):
        """Float32 (float64 in a float64 layer) ``(B, T, c_1 + n)``: the head's words, then one logit per tail cluster."""
        kernel = ops.cast(self.head_kernel, x.dtype)
        if self.tied:
            words = ops.cast(tied_table[: self.head_size], x.dtype)  # (c_1, d)
            logits = ops.concatenate([ops.einsum("btd,vd->btv", x, words), ops.matmul(x, kernel)], axis=-1)
        else:
            logits = ops.matmul(x, kernel)  # (B, T, c_1 + n)
        logits = _at_least_float32(logits)
        return logits + ops.cast(self.head_bias, logits.dtype)

    def _tail_logits(self, x, i):
        """Float32 ``(B, T, size_i)`` of tail cluster ``i`` (from 0)."""
        projection, kernel, bias = self.tails[i]
        low = ops.matmul(x, ops.cast(projection, x.dtype))  # (B, T, d_i)
        logits = ops.matmul(low, ops.cast(kernel, x.dtype))  # (B, T, size_i)
        logits = _at_least_float32(logits)
        return logits + ops.cast(bias, logits.dtype)

    def _check(self, tied_table):
        if self.tied and tied_table is None:
            raise ValueError("a tied AdaptiveSoftmax needs the embedding table (tied_table)")

    # -- outputs -------------------------------------------------------------

    def log_probs(self, x, tied_table=None):
        """Float32 ``(B, T, V)`` log-probabilities (each row's exponentials sum to 1)."""
        self._check(tied_table)
        head = self.head_size
        head_lp = ops.log_softmax(self._head_logits(x, tied_table), axis=-1)  # (B, T, c_1 + n)
        parts = [head_lp[..., :head]]
        for i in range(self.n_clusters):
            cluster_lp = head_lp[..., head + i: head + i + 1]  # (B, T, 1)
            parts.append(ops.log_softmax(self._tail_logits(x, i), axis=-1) + cluster_lp)
        return ops.concatenate(parts, axis=-1)  # (B, T, V)

    def token_nll(self, x, targets, tied_table=None):
        """Float32 ``(B, T)`` ``-log p(targets)``, without the ``(B, T, V)`` tensor.

        ``-log p(w) = lse(head) - head[j]`` with ``j`` = ``w`` in the head or its cluster's entry,
        plus ``lse(tail_i) - tail_i[w - c_i]`` when ``w`` is in tail ``i``.
        """
        self._check(tied_table)
        targets = ops.cast(targets, "int32")
        head = self.head_size
        head_logits = self._head_logits(x, tied_table)  # (B, T, c_1 + n)
        # Which head entry each target reads: itself in the head, else its cluster's column.
        entry = targets
        for i in range(self.n_clusters):
            entry = ops.where(targets >= self.bounds[i + 1], head + i, entry)
        nll = ops.logsumexp(head_logits, axis=-1) - _pick(head_logits, entry)  # (B, T)
        for i in range(self.n_clusters):
            low, high = self.bounds[i + 1], self.bounds[i + 2]
            inside = ops.logical_and(targets >= low, targets < high)
            logits = self._tail_logits(x, i)  # (B, T, size_i)
            local = ops.clip(targets - low, 0, high - low - 1)
            tail_nll = ops.logsumexp(logits, axis=-1) - _pick(logits, local)
            nll = nll + ops.where(inside, tail_nll, ops.zeros_like(tail_nll))
        return nll

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.vocab_size)

    def call(self, x, tied_table=None):
        return self.log_probs(x, tied_table)

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size, "d_model": self.d_model,
                "cutoffs": list(self.cutoffs), "div_value": self.div_value, "tied": self.tied,
                "stddev": self.stddev, "seed": self.seed}


def _at_least_float32(x):
    """``x`` in float32, or float64 if it is (a float64 layer, e.g. for gradient checks)."""
    return x if keras.backend.standardize_dtype(x.dtype) == "float64" else ops.cast(x, "float32")


def _pick(logits, index):
    """``logits[b, t, index[b, t]]`` ``(B, T)``."""
    return ops.take_along_axis(logits, index[..., None], axis=-1)[..., 0]


__all__ = ["AdaptiveSoftmax", "adaptive_macs", "adaptive_parameters", "cluster_bounds", "tail_dims"]
