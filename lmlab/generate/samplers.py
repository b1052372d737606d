"""Token samplers for autoregressive generation: greedy, temperature, top-k, top-p.

One step of decoding turns the logits of the next token, ``(B, V)``, into one
token id per row, ``(B,)``. Everything here is written with ``keras.ops`` and
``keras.random`` only, with static shapes and no Python branching on tensor
values, so the same code runs eagerly or inside a compiled decoding loop
(``tf.function(jit_compile=True)`` on TensorFlow, ``jax.jit`` on JAX).

The filters are applied in the usual order (as in Hugging Face ``generate``):

1. temperature: ``logits / T``; ``T = 0`` means greedy (argmax);
2. top-k (Fan, Lewis and Dauphin 2018, "Hierarchical Neural Story Generation",
   https://arxiv.org/abs/1805.04833): every logit below the k-th largest is
   masked to ``-inf``; ties at the k-th value are kept;
3. top-p, nucleus sampling (Holtzman, Buys, Du, Forbes and Choi 2020, "The
   Curious Case of Neural Text Degeneration", ICLR,
   https://arxiv.org/abs/1904.09751): the smallest set of most probable tokens
   whose cumulative probability reaches ``top_p`` is kept (always at least the
   most probable token), on the distribution left after top-k. Computed with a
   sort and a cumulative sum, then mapped back to vocabulary order with the
   inverse permutation, so the set is exact even when probabilities tie.

``filter_logits`` returns the masked float32 logits (for tests and for
callers that want the distribution); ``sample_next`` draws from them with
``keras.random.categorical``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import keras
from keras import ops

from lmlab.core.errors import ConfigError


@dataclass(frozen=True)
class SamplerConfig:
    """How to pick the next token.

    ``temperature`` 0 means greedy decoding; ``top_k`` 0 and ``top_p`` 1.0
    switch those filters off. Validated on construction.
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self):
        t = self.temperature
        if not _is_real(t) or not math.isfinite(t) or t < 0:
            raise ConfigError(f"temperature must be a finite number >= 0 (0 means greedy), got {t!r}")
        k = self.top_k
        if not isinstance(k, numbers.Integral) or isinstance(k, bool) or k < 0:
            raise ConfigError(f"top_k must be an integer >= 0 (0 turns it off), got {k!r}")
        p = self.top_p
        if not _is_real(p) or not 0 < p <= 1:  # also rejects NaN
            raise ConfigError(f"top_p must be in (0, 1] (1.0 turns it off), got {p!r}")

    @property
    def greedy(self) -> bool:
        """True when sampling is deterministic argmax (temperature 0)."""
        return self.temperature == 0


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_logits(logits):
    logits = ops.convert_to_tensor(logits)
    if len(logits.shape) != 2 or logits.shape[-1] is None:
        raise ValueError(f"logits must have shape (batch, vocab) with a static vocab, got {tuple(logits.shape)}")
    return ops.cast(logits, "float32")  # bfloat16 logits would round the cumulative sum badly


def filter_logits(logits, config: SamplerConfig):
    """Apply temperature, top-k and top-p to ``logits`` ``(B, V)``.

    Returns float32 logits of the same shape in which every token that may not
    be sampled is ``-inf``. With a greedy config only the argmax of each row is
    left (the first one when several tie), so sampling from the result is
    greedy decoding too.
    """
    logits = _check_logits(logits)  # (B, V) float32
    vocab = logits.shape[-1]
    neg_inf = ops.full_like(logits, -math.inf)

    if config.greedy:
        best = ops.argmax(logits, axis=-1)  # (B,)
        keep = ops.cast(ops.one_hot(best, vocab), "bool")  # (B, V)
        return ops.where(keep, logits, neg_inf)

    if config.temperature != 1:
        logits = logits / config.temperature

    if 0 < config.top_k < vocab:
        kth = ops.top_k(logits, config.top_k, sorted=True)[0][:, -1:]  # (B, 1): k-th largest
        logits = ops.where(logits < kth, neg_inf, logits)

    if config.top_p < 1:
        order = ops.argsort(-logits, axis=-1)  # (B, V): token ids, most probable first
        sorted_logits = ops.take_along_axis(logits, order, axis=-1)  # (B, V)
        sorted_probs = ops.softmax(sorted_logits, axis=-1)  # (B, V)
        # Probability mass strictly before each token; a token is kept while that
        # is still short of top_p. The first token has 0 before it: always kept.
        before = ops.cumsum(sorted_probs, axis=-1) - sorted_probs  # (B, V)
        keep_sorted = before < config.top_p  # (B, V), sorted order
        inverse = ops.argsort(order, axis=-1)  # (B, V): position of each token in `order`
        keep = ops.take_along_axis(keep_sorted, inverse, axis=-1)  # (B, V), vocabulary order
        logits = ops.where(keep, logits, neg_inf)

    return logits


def sample_next(logits, config: SamplerConfig, seed):
    """Pick the next token id of each row of ``logits`` ``(B, V)``; returns int32 ``(B,)``.

    ``seed`` is one of:

    - a ``keras.random.SeedGenerator``: advanced on every call, so successive
      calls draw differently (under ``jax.jit`` its state must be threaded
      through ``keras.StatelessScope``, as Keras does for any variable);
    - an int: the same draw every time;
    - a ``(2,)`` integer seed tensor, such as ``[base, step]`` passed into a
      compiled step function as an argument: stateless, so a decoding loop
      can change it every step without retracing and without variables.

    It is not used when the config is greedy.
    """
    if config.greedy:
        return ops.cast(ops.argmax(_check_logits(logits), axis=-1), "int32")
    filtered = filter_logits(logits, config)  # (B, V)
    return _categorical(filtered, seed)[:, 0]


_seed_slot: keras.random.SeedGenerator | None = None


def _categorical(logits, seed):
    """``keras.random.categorical(logits, 1)`` for any of the seeds ``sample_next`` takes; (B, 1) int32."""
    if isinstance(seed, keras.random.SeedGenerator):
        return keras.random.categorical(logits, 1, dtype="int32", seed=seed)
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        return keras.random.categorical(logits, 1, dtype="int32", seed=int(seed))
    if seed is None or isinstance(seed, (bool, float, str)) or tuple(ops.shape(ops.convert_to_tensor(seed))) != (2,):
        raise ValueError(f"seed must be a keras.random.SeedGenerator, an int or a (2,) integer tensor, got {seed!r}")
    # keras.random does not take a seed tensor on every backend (TensorFlow
    # rejects one, JAX wants uint32), but a SeedGenerator whose state is
    # replaced by the tensor inside a StatelessScope draws from exactly that
    # seed on all of them; its state update is discarded with the scope.
    global _seed_slot
    if _seed_slot is None:
        _seed_slot = keras.random.SeedGenerator(0, name="lmlab_sampler_seed")
    state = ops.cast(seed, _seed_slot.state.dtype)  # (2,)
    with keras.StatelessScope(state_mapping=[(_seed_slot.state, state)]):
        return keras.random.categorical(logits, 1, dtype="int32", seed=_seed_slot)
