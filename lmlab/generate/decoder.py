"""Autoregressive generation with a KV cache, compiled on TensorFlow (XLA) and JAX.

The prompt is run through the model once (prefill) to fill the cache; each
new token then costs one step over a single position. Both are compiled
functions with static shapes; the cache has as many slots as the
generation needs, rounded up to a multiple of :data:`CACHE_STEP` (so few
shapes are compiled) and at most ``block_size``: decoding reads every slot,
so a short generation should not pay for a long context. The
Python loop around the step streams tokens out as they come. When a
sequence would outgrow the context, the cache is rebuilt from the last half
context of tokens (as nanoGPT crops its input). Prompts of different lengths
are generated in groups of equal length. :func:`generate_uncached` is the
reference: a full forward pass for every token.

Task evaluation decodes hundreds of prompts of different lengths one at a time:
there the prefill runs eagerly (``compile_prefill=False``) rather than compiled once
per prompt length, which would spend far more time compiling than decoding; the
tokens that follow come from the same compiled loop. Beam search
(:mod:`lmlab.generate.beam`) uses :meth:`Decoder.prefill_logits` and
:meth:`Decoder.step_log_probs`, which reorder the cache's rows to continue the
surviving beams: a cache is a tensor or nested tensors whose batch axis differs by
family (the RNN's ``(L, S, B, d)``, the gated CNN's ``(L, B, k - 1, d)``, the
Transformer's per-layer keys and values), found by :func:`cache_batch_axes`.
"""

from __future__ import annotations

from typing import Callable, Sequence

import keras
import numpy as np

from lmlab.core.backend import compile_function
from lmlab.core.errors import ConfigError
from lmlab.generate.samplers import SamplerConfig, sample_next


CHUNK = 32  # tokens per compiled decoding call: streaming granularity vs. host round trips
CACHE_STEP = 64  # cache lengths are multiples of this (each length is one compiled shape)


def cache_length(block_size: int, needed: int) -> int:
    """Slots for ``needed`` positions: rounded up to a multiple of :data:`CACHE_STEP`, at most ``block_size``."""
    return min(block_size, -(-needed // CACHE_STEP) * CACHE_STEP)


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


class Decoder:
    """Compiled prefill and multi-token decoding for one model and sampler.

    ``prefill`` runs a prompt through the model and picks the next token.
    ``decode`` then makes up to ``CHUNK`` tokens in one compiled call: the loop
    over tokens runs inside XLA (``keras.ops.while_loop``), so the cache is
    updated in place and nothing returns to Python between tokens. It stops
    early when every row has produced the end token.
    """

    def __init__(self, model, sampler: SamplerConfig, chunk: int = CHUNK, compile_prefill: bool = True):
        if not hasattr(model, "call_with_cache"):
            raise ConfigError("cached decoding needs a neural language model with a cache")
        self.model, self.sampler, self.chunk = model, sampler, int(chunk)
        self.block_size = model.config.block_size
        self._log_probs = None  # beam search's step, compiled on first use
        ops = keras.ops

        def prefill(ids, cache, index, seed):
            logits, cache = model.call_with_cache(ids, cache, index)
            return sample_next(logits[:, -1, :], sampler, seed), cache

        def decode(last, cache, index, seed_base, step, count, eos, finished):
            # last: (B,) the newest tokens, at position `index`; token j of this call uses
            # seed [seed_base, step + j], as one call per token would.
            out = ops.zeros((ops.shape(last)[0], self.chunk), "int32")  # (B, chunk)

            def more(i, last, cache, out, finished):
                return ops.logical_and(i < count, ops.logical_not(ops.all(finished)))

            def one_token(i, last, cache, out, finished):
                logits, cache = model.call_with_cache(last[:, None], cache, index + i)
                token = sample_next(logits[:, -1, :], sampler, ops.stack([seed_base, step + i]))
                out = ops.slice_update(out, [0, i], token[:, None])
                return i + 1, token, cache, out, ops.logical_or(finished, ops.equal(token, eos))

            made, _, cache, out, _ = ops.while_loop(
                more, one_token, (ops.convert_to_tensor(0, "int32"), last, cache, out, finished),
                maximum_iterations=self.chunk)
            return out, made, cache

        self._prefill = compile_function(prefill) if compile_prefill else prefill
        self._decode = compile_function(decode)

    def check_room(self, prompt_length: int, max_new_tokens: int) -> None:
        """Refuse a prompt that, with the tokens asked for, does not fit the context."""
        if prompt_length < 1:
            raise ConfigError("a prompt needs at least one token")
        if prompt_length + max_new_tokens - 1 > self.block_size:
            raise ConfigError(f"a prompt of {prompt_length} tokens and {max_new_tokens} new tokens do not fit "
                              f"the context of {self.block_size}")

    def prefill_logits(self, prompt, rows: int = 1):
        """Run one prompt eagerly; the last position's float32 logits ``(1, V)`` and a full-context cache of
        ``rows`` copies of it (one per beam)."""
        ids = np.asarray([prompt], dtype=np.int32)
        cache = self.model.init_cache(1, self.block_size)
        logits, cache = self.model.call_with_cache(ids, cache, 0)
        if rows > 1:
            axes = cache_batch_axes(self.model)
            cache = map_cache(cache, axes, lambda leaf, axis: keras.ops.repeat(leaf, rows, axis=axis))
        return keras.ops.cast(logits[:, -1, :], "float32"), cache

    def step_log_probs(self, tokens, cache, index: int, parents):
        """Log-probabilities ``(K, V)`` after feeding ``tokens`` ``(K,)`` to rows ``parents`` of the cache."""
        if self._log_probs is None:
            model, axes, ops = self.model, cache_batch_axes(self.model), keras.ops

            def log_probs(ids, cache, index, parents):
                cache = map_cache(cache, axes, lambda leaf, axis: ops.take(leaf, parents, axis=axis))
                logits, cache = model.call_with_cache(ids, cache, index)
                return ops.log_softmax(ops.cast(logits[:, -1, :], "float32"), axis=-1), cache

            self._log_probs = compile_function(log_probs)
        log_probs, cache = self._log_probs(np.asarray(tokens, np.int32)[:, None], cache, np.int32(index),
                                           np.asarray(parents, np.int32))
        return np.asarray(keras.ops.convert_to_numpy(log_probs)), cache

    def prefill(self, ids: np.ndarray, cache, index: int, seed: np.ndarray):
        """Tokens ``ids`` ``(B, t)`` at positions ``index...``; returns the next token ``(B,)`` and the cache."""
        next_ids, cache = self._prefill(ids.astype(np.int32), cache, np.int32(index), seed)
        return np.asarray(keras.ops.convert_to_numpy(next_ids)), cache

    __call__ = prefill  # one step is a prefill of one token

    def decode(self, last: np.ndarray, cache, index: int, seed: int, step: int, count: int, eos_id: int | None,
               finished: np.ndarray):
        """Up to ``count`` (<= ``chunk``) new tokens ``(B, n)`` after ``last`` (at ``index``), and the cache.

        Fewer than ``count`` when every row is ``finished`` or has made ``eos_id``.
        """
        out, made, cache = self._decode(last.astype(np.int32), cache, np.int32(index), np.int32(seed % 2**31),
                                        np.int32(step), np.int32(count), np.int32(-1 if eos_id is None else eos_id),
                                        np.asarray(finished, dtype=bool))
        made = int(keras.ops.convert_to_numpy(made))
        return np.asarray(keras.ops.convert_to_numpy(out))[:, :made], cache


def decoder_for(model, sampler: SamplerConfig, compile_prefill: bool = True) -> Decoder:
    """One compiled decoder per model, sampler settings and prefill policy, reused across calls."""
    decoders = model.__dict__.setdefault("_lmlab_decoders", {})
    key = (sampler, compile_prefill)
    if key not in decoders:
        decoders[key] = Decoder(model, sampler, compile_prefill=compile_prefill)
    return decoders[key]


def step_seed(base: int, step: int) -> np.ndarray:
    return np.array([base % 2**31, step], dtype="int32")


def generate_ids(model, prompts: Sequence[Sequence[int]], max_new_tokens: int, sampler: SamplerConfig | None = None,
                 seed: int = 0, eos_id: int | None = None,
                 on_token: Callable[[int, int], None] | None = None) -> list[list[int]]:
    """New token ids for each prompt (prompt excluded), stopping at ``eos_id`` if given.

    ``on_token(row, token)`` is called for every token as soon as it reaches the host
    (tokens arrive from the compiled loop in chunks of up to :data:`CHUNK`).
    """
    if hasattr(model, "generate_ids"):  # a family with its own decoding (the n-gram samples counts)
        return model.generate_ids(prompts, max_new_tokens, sampler, seed, eos_id, on_token)
    sampler = sampler or SamplerConfig()
    if max_new_tokens < 0:
        raise ConfigError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if any(len(p) == 0 for p in prompts):
        raise ConfigError("every prompt needs at least one token (an empty prompt can start with the end token)")
    decoder = decoder_for(model, sampler)
    outputs: list[list[int]] = [[] for _ in prompts]
    groups: dict[int, list[int]] = {}
    for row, prompt in enumerate(prompts):
        groups.setdefault(len(prompt), []).append(row)
    for rows in groups.values():
        batch = [list(prompts[r]) for r in rows]
        for local, token_list in enumerate(generate_group(decoder, batch, max_new_tokens, seed, eos_id,
                                                           on_token and (lambda i, t: on_token(rows[i], t)))):
            outputs[rows[local]] = token_list
    return outputs


def generate_group(decoder: Decoder, batch: list[list[int]], max_new_tokens: int, seed: int, eos_id,
                    on_token=None) -> list[list[int]]:
    """New tokens for prompts of one length: the compiled prefill, then the compiled loop, chunk by chunk."""
    block = decoder.block_size
    history = [list(p) for p in batch]
    new: list[list[int]] = [[] for _ in batch]
    finished = np.zeros(len(batch), dtype=bool)

    def prefill(step):
        context = np.array([h[-(block // 2 if len(h) >= block else block):] for h in history])  # (B, t)
        # Room for the context and every token still to come (the last one is never fed back).
        slots = cache_length(block, context.shape[1] + max_new_tokens - step)
        cache = decoder.model.init_cache(len(batch), slots)
        ids, cache = decoder.prefill(context, cache, 0, step_seed(seed, step))
        return ids, cache, context.shape[1], slots

    def take(tokens: np.ndarray) -> None:  # (B, n) new tokens, in order
        for column in tokens.T.tolist():
            for row, token in enumerate(column):
                if finished[row]:
                    continue
                new[row].append(token)
                history[row].append(token)
                if on_token:
                    on_token(row, token)
                if eos_id is not None and token == eos_id:
                    finished[row] = True

    if max_new_tokens == 0:
        return new
    ids, cache, index, slots = prefill(0)
    take(ids[:, None])
    made = 1
    while made < max_new_tokens and not finished.all():
        if index >= slots:  # the cache is full (only when it spans the whole context): rebuild it
            ids, cache, index, slots = prefill(made)
            take(ids[:, None])
            made += 1
            continue
        count = min(decoder.chunk, max_new_tokens - made, slots - index)
        tokens, cache = decoder.decode(ids, cache, index, seed, made, count, eos_id, finished)
        take(tokens)
        made += tokens.shape[1]
        index += tokens.shape[1]
        ids = tokens[:, -1]
    return new


def generate_uncached(model, prompt: Sequence[int], max_new_tokens: int) -> list[int]:
    """Greedy decoding with a full forward pass per token: the reference for the cached path."""
    block = model.config.block_size
    ids = list(prompt)
    for _ in range(max_new_tokens):
        context = np.array([ids[-block:]], dtype=np.int32)
        logits = keras.ops.convert_to_numpy(model(context))
        ids.append(int(np.argmax(logits[0, -1])))
    return ids[len(prompt):]


def generate_text(model, tokenizer, prompts: Sequence[str], max_new_tokens: int = 200,
                  sampler: SamplerConfig | None = None, seed: int = 0, stop_at_eos: bool = True,
                  stream: Callable[[str], None] | None = None) -> list[str]:
    """Generate continuations of text prompts; ``stream`` receives the first prompt's text as it grows."""
    encoded = [tokenizer.encode(p) or [tokenizer.eos_id] for p in prompts]
    dropped = {tokenizer.eos_id} if stop_at_eos else set()

    def continuation(prompt: list[int], new: list[int]) -> str:
        # Decode with the prompt so joins come out right (a word tokenizer's spaces, BPE merges).
        before = tokenizer.decode(prompt)
        after = tokenizer.decode(prompt + [t for t in new if t not in dropped])
        return after[len(before):] if after.startswith(before) else tokenizer.decode(new)

    pieces: list[int] = []
    printed = [0]

    def on_token(row: int, token: int) -> None:
        if stream is None or row != 0:
            return
        pieces.append(token)
        text = continuation(encoded[0], pieces)
        if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
            stream(text[printed[0]:])
            printed[0] = len(text)

    ids = generate_ids(model, encoded, max_new_tokens, sampler, seed, tokenizer.eos_id if stop_at_eos else None,
                       on_token)
    # Stopping at the end token drops it; otherwise it stays, as the tokenizer writes it.
    return [continuation(prompt, row) for prompt, row in zip(encoded, ids)]
