"""Decoding completions for task evaluation: greedy, sampling and beam search, one prompt at a time.

:class:`StepDecoder` compiles a model's one-token step once (``(K, 1)`` ids
against a KV cache or recurrent state) and runs each prompt's prefill
eagerly. :func:`lmlab.generation.generate_ids` compiles its prefill once per
distinct prompt length, which is the right trade for interactive generation
but for a test set of hundreds of prompts of different lengths spends far
more time compiling than decoding; the tests hold greedy decoding here equal
to ``generate_ids``'s. Greedy and sampled tokens are chosen by
:func:`lmlab.samplers.sample_next`; beam search is :mod:`lmlab.tasks.beam`.

A cache is a tensor or a nested structure of tensors whose batch axis differs
by family and layout (the RNN's ``(L, S, B, d)``, the gated CNN's
``(L, B, k - 1, d)``, the Transformer's per-layer keys and values); each
leaf's batch axis is found by comparing the caches of batches of one and
two, so beams are reordered with one ``take`` per leaf for any family.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

from lmlab.errors import ConfigError
from lmlab.samplers import SamplerConfig, sample_next

STRATEGIES = ("greedy", "sample", "beam")


@dataclass(frozen=True)
class DecodeConfig:
    strategy: str = "greedy"
    temperature: float = 1.0  # sample only
    top_k: int = 0
    top_p: float = 1.0
    beam_size: int = 4
    length_penalty: float = 1.0  # beam: scores are log-probability / generated length ** length_penalty
    seed: int = 0

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"decoding must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if not isinstance(self.beam_size, int) or self.beam_size < 1:
            raise ConfigError(f"beam_size must be a positive integer, got {self.beam_size!r}")
        if self.strategy == "sample":
            self.sampler()  # validates temperature, top_k, top_p

    def sampler(self) -> SamplerConfig:
        if self.strategy == "greedy":
            return SamplerConfig(temperature=0.0)
        return SamplerConfig(self.temperature, self.top_k, self.top_p)

    def to_dict(self) -> dict:
        if self.strategy == "greedy":
            return {"strategy": "greedy"}
        if self.strategy == "beam":
            return {"strategy": "beam", "beam_size": self.beam_size, "length_penalty": self.length_penalty}
        return {"strategy": "sample", "temperature": self.temperature, "top_k": self.top_k, "top_p": self.top_p,
                "seed": self.seed}


def cache_batch_axes(model) -> list[int]:
    """The batch axis of every leaf of the model's cache, in ``keras.tree.flatten`` order."""
    one, two = keras.tree.flatten(model.init_cache(1, 1)), keras.tree.flatten(model.init_cache(2, 1))
    axes = []
    for a, b in zip(one, two):
        differ = [i for i, (x, y) in enumerate(zip(a.shape, b.shape)) if x != y]
        if len(differ) != 1:
            raise ConfigError(f"cannot tell the batch axis of a cache of shape {tuple(a.shape)}")
        axes.append(differ[0])
    return axes


def map_cache(cache, axes: list[int], fn):
    """``fn(leaf, batch_axis)`` applied to every leaf of ``cache``, keeping its structure."""
    leaves = keras.tree.flatten(cache)
    return keras.tree.pack_sequence_as(cache, [fn(leaf, axis) for leaf, axis in zip(leaves, axes)])


def _compile(fn):
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True, reduce_retracing=True)
    if backend == "jax":
        import jax

        return jax.jit(fn)
    return fn


class StepDecoder:
    """A model's prefill and compiled one-token steps."""

    def __init__(self, model):
        if not hasattr(model, "call_with_cache"):
            raise ConfigError("task decoding needs a neural language model with a cache")
        self.model = model
        self.block_size = model.config.block_size
        self.batch_axes = axes = cache_batch_axes(model)
        self._samplers: dict = {}

        def log_probs(ids, cache, index, parents):
            cache = map_cache(cache, axes, lambda leaf, axis: ops.take(leaf, parents, axis=axis))  # continue parents
            logits, cache = model.call_with_cache(ids, cache, index)
            return ops.log_softmax(ops.cast(logits[:, -1, :], "float32"), axis=-1), cache

        self._log_probs = _compile(log_probs)

    def check_room(self, prompt_length: int, max_new_tokens: int) -> None:
        if prompt_length < 1:
            raise ConfigError("a prompt needs at least one token")
        if prompt_length + max_new_tokens - 1 > self.block_size:
            raise ConfigError(f"a prompt of {prompt_length} tokens and {max_new_tokens} new tokens do not fit "
                              f"the context of {self.block_size}")

    def prefill(self, prompt, rows: int = 1):
        """Run the prompt; return the last position's float32 logits ``(1, V)`` and a cache for ``rows`` rows."""
        ids = np.asarray([prompt], dtype=np.int32)
        cache = self.model.init_cache(1, self.block_size)
        logits, cache = self.model.call_with_cache(ids, cache, 0)
        if rows > 1:
            cache = map_cache(cache, self.batch_axes, lambda leaf, axis: ops.repeat(leaf, rows, axis=axis))
        return ops.cast(logits[:, -1, :], "float32"), cache

    def step_log_probs(self, tokens, cache, index: int, parents):
        """Log-probabilities ``(K, V)`` after feeding ``tokens`` ``(K,)`` to rows ``parents`` of the cache."""
        log_probs, cache = self._log_probs(np.asarray(tokens, np.int32)[:, None], cache, np.int32(index),
                                           np.asarray(parents, np.int32))
        return np.asarray(ops.convert_to_numpy(log_probs)), cache

    def _sampling_step(self, sampler: SamplerConfig):
        if sampler not in self._samplers:
            model = self.model

            def step(ids, cache, index, seed):
                logits, cache = model.call_with_cache(ids, cache, index)
                return sample_next(logits[:, -1, :], sampler, seed), cache

            self._samplers[sampler] = _compile(step)
        return self._samplers[sampler]

    def sample(self, prompt, max_new_tokens: int, sampler: SamplerConfig, eos_id: int | None, seed: int = 0):
        """Greedy (temperature 0) or sampled continuation of one prompt, stopping after the end token."""
        self.check_room(len(prompt), max_new_tokens)
        if max_new_tokens == 0:
            return []
        logits, cache = self.prefill(prompt)
        token = int(ops.convert_to_numpy(sample_next(logits, sampler, np.array([seed, 0], np.int32)))[0])
        out = [token]
        step = self._sampling_step(sampler)
        index = len(prompt)
        while token != eos_id and len(out) < max_new_tokens:
            ids, cache = step(np.array([[token]], np.int32), cache, np.int32(index),
                              np.array([seed % 2**31, len(out)], np.int32))
            token = int(ops.convert_to_numpy(ids)[0])
            out.append(token)
            index += 1
        return out


def decoder_for(model) -> StepDecoder:
    """One :class:`StepDecoder` per model, reused across calls."""
    decoders = model.__dict__.setdefault("_lmlab_task_decoders", {})
    if "step" not in decoders:
        decoders["step"] = StepDecoder(model)
    return decoders["step"]


def decode(model, prompt, max_new_tokens: int, config: DecodeConfig, eos_id: int | None, seed: int | None = None
           ) -> list[int]:
    """New tokens for one prompt (the end token, if produced, last); ``seed`` overrides the config's."""
    decoder = decoder_for(model)
    if config.strategy == "beam":
        from lmlab.tasks.beam import beam_search

        return beam_search(decoder, prompt, max_new_tokens, config.beam_size, eos_id, config.length_penalty)
    return decoder.sample(prompt, max_new_tokens, config.sampler(), eos_id, config.seed if seed is None else seed)
