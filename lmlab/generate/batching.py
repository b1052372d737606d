"""Continuous batching: a fixed set of decoding slots that sequences join and leave between steps.

A server decodes for many requests at once, and they neither start nor end together. Here the
batch is ``slots`` rows of one cache spanning ``context`` positions, allocated once. A new
sequence is prefilled alone (batch 1), its cache row is copied into a free slot, and from the
next step it decodes beside the others. Prompts come in every length, and compiling a prefill
per length would cost more than it saves (as in :mod:`lmlab.generate.search`); so a Transformer's
prompt is padded at its end to a power of two and that width compiled once (the padding's keys
sit at positions the sequence has not reached, never read and overwritten as it goes), while the
RNN's and the gated CNN's, whose state would read the padding, are prefilled eagerly.

:meth:`SlotBatch.step` makes up to ``chunk`` tokens for every slot in one compiled call: the loop
over tokens runs inside XLA (``keras.ops.while_loop``, as :class:`~lmlab.generate.decoder.Decoder`
does), so nothing returns to Python between tokens. Each iteration feeds every slot its newest
token at that slot's own position (the Transformer takes a position per row, ``index`` of shape
``(B,)``; the RNN and the gated CNN keep no positions at all) and picks each row's next token on
the device with that row's own temperature, top-k and top-p (:func:`pick_rows`, the rules of
:func:`~lmlab.generate.samplers.filter_logits` per row). Randomness comes from the host: each
sequence has its own ``numpy.random.Generator`` (seeded by the request) and hands the step one
uniform per token, drawn by inverse CDF, so a seeded sequence gets the same tokens whatever else
shares the batch. A row stops at its end token or its budget; a free or finished row is fed its
last token again and its output ignored (its row is overwritten when a sequence joins).

Because the step's shape never changes and rows never mix, a sequence's tokens are the same
whichever others share the batch (the tests hold greedy decoding alone equal to batched).

A counted model (the n-gram) has no cache and nothing to compile: :class:`CountSlots` answers the
same calls, each row's history on the host and its next-token distribution from the counts
(``model.next_log_probs``), picked by the same :func:`pick_rows` with the same draws.
:func:`slots_for` chooses between the two.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from lmlab.core.backend import compile_function
from lmlab.core.errors import ConfigError
from lmlab.generate.decoder import cache_batch_axes, map_cache

CHUNK = 16  # tokens per compiled call: fewer host round trips vs. how long a waiting request waits
TOP = 20  # alternatives returned per token (OpenAI's bound on logprobs)
PREFILL_MIN = 16  # the shortest padded prefill
COUNT_CONTEXT = 4096  # a counted model's default bound on prompt + new tokens (it has no window)


def filter_rows(log_probs, temperature, top_k, top_p):
    """Each row of ``log_probs`` ``(B, V)`` filtered by its own ``temperature``, ``top_k``, ``top_p`` ``(B,)``.

    :func:`~lmlab.generate.samplers.filter_logits`' rules with settings that are tensors rather than one
    config: temperature (0 is read as 1 here; greedy rows are picked apart), top-k keeping ties at the
    k-th value (0 or >= V: off), then top-p on what is left (1: off). Returns float32 ``(B, V)`` logits
    with ``-inf`` where a token may not be drawn.
    """
    ops = keras.ops
    vocab = log_probs.shape[-1]
    neg_inf = ops.full_like(log_probs, -math.inf)
    x = log_probs / ops.where(temperature > 0, temperature, 1.0)[:, None]  # (B, V)
    k = ops.where(ops.logical_and(top_k > 0, top_k < vocab), top_k, vocab)  # (B,)
    descending = -ops.sort(-x, axis=-1)  # (B, V)
    kth = ops.take_along_axis(descending, (k - 1)[:, None], axis=-1)  # (B, 1): each row's k-th largest
    x = ops.where(x < kth, neg_inf, x)
    order = ops.argsort(-x, axis=-1)  # (B, V): token ids, most probable first
    sorted_probs = ops.softmax(ops.take_along_axis(x, order, axis=-1), axis=-1)  # (B, V)
    before = ops.cumsum(sorted_probs, axis=-1) - sorted_probs  # mass strictly before each token
    keep = ops.take_along_axis(before < top_p[:, None], ops.argsort(order, axis=-1), axis=-1)  # vocabulary order
    return ops.where(keep, x, neg_inf)


def pick_rows(log_probs, temperature, top_k, top_p, uniform):
    """The next token ``(B,)`` int32 of each row: the argmax where ``temperature`` is 0, else the token whose
    cumulative probability (in vocabulary order) first reaches ``uniform`` ``(B,)`` in (0, 1]."""
    ops = keras.ops
    greedy = ops.cast(ops.argmax(log_probs, axis=-1), "int32")  # (B,)

    def sampled():
        probs = ops.softmax(filter_rows(log_probs, temperature, top_k, top_p), axis=-1)  # (B, V)
        cdf = ops.cumsum(probs, axis=-1)  # (B, V)
        below = ops.sum(ops.cast(cdf < uniform[:, None] * cdf[:, -1:], "int32"), axis=-1)  # (B,)
        vocab = probs.shape[-1]
        last_kept = vocab - 1 - ops.cast(ops.argmax(ops.flip(probs > 0, axis=-1), axis=-1), "int32")  # rounding
        return ops.where(temperature > 0, ops.minimum(below, last_kept), greedy)

    return ops.cond(ops.any(temperature > 0), sampled, lambda: greedy)


class Slots:
    """What every kind of slots holds per row: its budget, end token, sampling settings and draws."""

    def __init__(self, model, slots: int, context: int, chunk: int = CHUNK):
        self.model, self.slots, self.chunk, self.context = model, int(slots), int(chunk), int(context)
        if self.slots < 1 or self.chunk < 1:
            raise ConfigError(f"slots and chunk must be >= 1, got {self.slots} and {self.chunk}")
        self.left = np.zeros(self.slots, np.int32)  # tokens each slot may still make (0: free or done)
        self.eos = np.full(self.slots, -1, np.int32)  # the token that ends each slot (-1: none)
        self.temperature = np.zeros(self.slots, np.float32)
        self.top_k = np.zeros(self.slots, np.int32)
        self.top_p = np.ones(self.slots, np.float32)
        self.rngs: list[np.random.Generator | None] = [None] * self.slots
        self.spare = [np.zeros(0, np.float32)] * self.slots  # each slot's drawn uniforms not yet used
        self._pick = compile_function(pick_rows)

    def pick(self, log_probs: np.ndarray, sampler, rng: np.random.Generator) -> int:
        """The first token after a prefill (``log_probs`` ``(V,)``), by the rules and draws of :meth:`step`."""
        token = self._pick(log_probs[None].astype(np.float32), np.float32([sampler.temperature]),
                           np.int32([sampler.top_k]), np.float32([sampler.top_p]), np.float32([draw(rng, 1)[0]]))
        return int(keras.ops.convert_to_numpy(token)[0])

    def settle(self, slot: int, left: int, sampler, rng, eos: int | None) -> None:
        """Slot ``slot`` may make ``left`` more tokens with ``sampler``'s settings and ``rng``'s draws."""
        self.left[slot], self.eos[slot] = left, -1 if eos is None else eos
        self.temperature[slot], self.top_k[slot], self.top_p[slot] = sampler.temperature, sampler.top_k, sampler.top_p
        self.rngs[slot], self.spare[slot] = rng, np.zeros(0, np.float32)

    def release(self, slot: int) -> None:
        self.left[slot], self.rngs[slot] = 0, None

    def uniforms(self) -> np.ndarray:
        """``(slots, chunk)`` draws for the next step; token j of a sequence uses its j-th draw however the calls
        fall (the draws a step does not use wait in :attr:`spare`, see :meth:`used`)."""
        uniforms = np.ones((self.slots, self.chunk), np.float32)
        for slot, rng in enumerate(self.rngs):
            if rng is not None and self.left[slot] > 0 and self.temperature[slot] > 0:
                spare = self.spare[slot]
                self.spare[slot] = np.concatenate([spare, draw(rng, self.chunk - len(spare))])
                uniforms[slot] = self.spare[slot]
        return uniforms

    def used(self, made: int) -> None:
        self.spare = [spare[made:] for spare in self.spare]


class SlotBatch(Slots):
    """``slots`` decoding rows over one cache of ``context`` positions (default: the model's block)."""

    def __init__(self, model, slots: int, context: int | None = None, chunk: int = CHUNK):
        if not hasattr(model, "call_with_cache"):
            raise ConfigError("continuous batching needs a neural language model with a cache")
        super().__init__(model, slots, int(context or model.config.block_size), chunk)
        if not 1 <= self.context <= model.config.block_size:
            raise ConfigError(f"context must be in [1, {model.config.block_size}], got {self.context}")
        self.cache = model.init_cache(self.slots, self.context)
        self.padded_prefill = positional_cache(model)
        self.positions = np.zeros(self.slots, np.int32)  # where each slot's newest token goes
        self.last = np.zeros(self.slots, np.int32)  # each slot's newest token, not yet read
        self.recompile()

    def recompile(self) -> None:
        """(Re)build the compiled calls: on JAX they hold the weights they were traced with."""
        self._step = compile_function(self._decode_fn(self.model))
        self._place = compile_function(self._place_fn(self.model))
        if self.padded_prefill:
            model, context, ops = self.model, self.context, keras.ops

            def prefill_all(ids):  # (1, W) -> (W, V) log-probabilities and the row
                logits, row = model.call_with_cache(ids, model.init_cache(1, context), 0)
                return ops.log_softmax(ops.cast(logits[0], "float32"), axis=-1), row

            def prefill_last(ids, last):  # the log-probabilities (V,) after position `last` only
                log_probs, row = prefill_all(ids)
                return ops.take(log_probs, last, axis=0), row

            self._prefill_all, self._prefill_last = compile_function(prefill_all), compile_function(prefill_last)

    def _decode_fn(self, model):
        ops, slots, chunk, context = keras.ops, self.slots, self.chunk, self.context

        def decode(last, cache, positions, left, eos, temperature, top_k, top_p, uniforms, count, hurry):
            # uniforms: (B, chunk); hurry: end the call as soon as a row finishes (a request waits for a slot)
            free_before = ops.sum(ops.cast(left == 0, "int32"))
            outs = (ops.zeros((slots, chunk), "int32"), ops.zeros((slots, chunk), "float32"),
                    ops.zeros((slots, chunk, TOP), "int32"), ops.zeros((slots, chunk, TOP), "float32"))

            def more(i, last, cache, left, *outs):
                freed = ops.sum(ops.cast(left == 0, "int32")) > free_before
                return ops.logical_and(ops.logical_and(i < count, ops.any(left > 0)),
                                       ops.logical_not(ops.logical_and(hurry, freed)))

            def one_token(i, last, cache, left, tokens, chosen, top_ids, top_values):
                at = ops.minimum(positions + i, context - 1)  # a finished row must not run off the cache
                logits, cache = model.call_with_cache(last[:, None], cache, at)
                log_probs = ops.log_softmax(ops.cast(logits[:, -1, :], "float32"), axis=-1)  # (B, V)
                token = pick_rows(log_probs, temperature, top_k, top_p, ops.take(uniforms, i, axis=1))  # (B,)
                values, ids = ops.top_k(log_probs, min(TOP, log_probs.shape[-1]))  # (B, TOP)
                pad = TOP - ids.shape[-1]  # a vocabulary smaller than TOP
                if pad:
                    ids = ops.pad(ids, [[0, 0], [0, pad]])
                    values = ops.pad(values, [[0, 0], [0, pad]], constant_values=-math.inf)
                tokens = ops.slice_update(tokens, [0, i], token[:, None])
                chosen = ops.slice_update(chosen, [0, i], ops.take_along_axis(log_probs, token[:, None], axis=-1))
                top_ids = ops.slice_update(top_ids, [0, i, 0], ops.cast(ids, "int32")[:, None, :])
                top_values = ops.slice_update(top_values, [0, i, 0], values[:, None, :])
                left = ops.where(token == eos, 0, ops.maximum(left - 1, 0))
                return i + 1, token, cache, left, tokens, chosen, top_ids, top_values

            made, _, cache, left, *outs = ops.while_loop(
                more, one_token, (ops.convert_to_tensor(0, "int32"), last, cache, left, *outs),
                maximum_iterations=chunk)
            return made, left, cache, *outs

        return decode

    def _place_fn(self, model):
        axes, ops = cache_batch_axes(model), keras.ops

        def place(cache, row, slot):
            leaves = list(keras.tree.flatten(row))

            def put(leaf, axis):
                start = [0] * len(leaf.shape)
                start[axis] = slot
                return ops.slice_update(leaf, start, ops.cast(leaves.pop(0), leaf.dtype))

            return map_cache(cache, axes, put)

        return place

    def prefill(self, prompt, every_position: bool = False):
        """Run ``prompt`` alone: log-probabilities ``(V,)`` of the next token (``(T, V)`` for every position
        with ``every_position``) and its one-row cache, for :meth:`place`."""
        if not 1 <= len(prompt) <= self.context:
            raise ConfigError(f"a prompt of {len(prompt)} tokens does not fit the context of {self.context}")
        if not self.padded_prefill:  # the state reads every token fed: no padding, so eager (any length)
            ids = np.asarray([prompt], np.int32)  # (1, T)
            logits, row = self.model.call_with_cache(ids, self.model.init_cache(1, self.context), 0)
            logits = logits[0] if every_position else logits[0, -1]
            log_probs = keras.ops.log_softmax(keras.ops.cast(logits, "float32"), axis=-1)
            return np.asarray(keras.ops.convert_to_numpy(log_probs)), row
        ids = np.zeros((1, prefill_width(len(prompt), self.context)), np.int32)  # (1, W): the prompt, then 0s
        ids[0, :len(prompt)] = prompt
        if every_position:
            log_probs, row = self._prefill_all(ids)
            return np.asarray(keras.ops.convert_to_numpy(log_probs))[:len(prompt)], row
        log_probs, row = self._prefill_last(ids, np.int32(len(prompt) - 1))
        return np.asarray(keras.ops.convert_to_numpy(log_probs)), row

    def place(self, slot: int, row, length: int, token: int, left: int, sampler, rng, eos: int | None) -> None:
        """Slot ``slot`` holds a prefilled prompt of ``length`` tokens (its cache ``row``) followed by ``token``,
        and may make ``left`` more tokens, ending at ``eos`` (None: only at ``left``)."""
        self.cache = self._place(self.cache, row, np.int32(slot))
        self.positions[slot], self.last[slot] = length, token
        self.settle(slot, left, sampler, rng, eos)

    def release(self, slot: int) -> None:
        super().release(slot)
        self.positions[slot], self.last[slot] = 0, 0

    def step(self, hurry: bool = False):
        """Up to ``chunk`` tokens for every slot still making some: ``(tokens, logprobs, top_ids, top_logprobs)``,
        ``(slots, n)`` and ``(slots, n, TOP)`` NumPy arrays of the same ``n`` columns. A row that ended (its end
        token or its budget) within them holds junk after that; the others made all ``n``. With ``hurry`` the
        call ends as soon as a row ends, to let a waiting sequence in."""
        made, left, self.cache, *outs = self._step(
            self.last, self.cache, self.positions, self.left, self.eos, self.temperature, self.top_k, self.top_p,
            self.uniforms(), np.int32(self.chunk), np.bool_(hurry))
        made = int(keras.ops.convert_to_numpy(made))
        tokens, chosen, top_ids, top_values = (np.asarray(keras.ops.convert_to_numpy(o))[:, :made] for o in outs)
        live = self.left > 0
        self.used(made)
        self.left = np.asarray(keras.ops.convert_to_numpy(left), np.int32)
        self.positions = np.where(live, self.positions + made, self.positions).astype(np.int32)
        if made:
            self.last = np.where(live, tokens[:, -1], self.last).astype(np.int32)
        return tokens, chosen, top_ids, top_values


class CountSlots(Slots):
    """``slots`` rows decoded from a counted model's next-token distributions (``model.next_log_probs(history)``,
    the n-gram's :class:`~lmlab.runs.ngram.TokenNGram`), with :class:`SlotBatch`'s calls and sampling.

    A row's state is its token history from the document start; there is no window, so ``context`` only bounds
    what a request may ask for (prompt and new tokens). A step runs on the host, one token at a time for every
    live row; the pick is :func:`pick_rows` on the rows' distributions with the rows' own draws."""

    def __init__(self, model, slots: int, context: int | None = None, chunk: int = CHUNK):
        if not hasattr(model, "next_log_probs"):
            raise ConfigError("counted-model slots need a model with next-token distributions (an n-gram run)")
        super().__init__(model, slots, int(context or COUNT_CONTEXT), chunk)
        if self.context < 1:
            raise ConfigError(f"context must be >= 1, got {self.context}")
        self.histories: list[list[int]] = [[] for _ in range(self.slots)]
        self.vocab_size = int(model.tokenizer.vocab_size)

    def recompile(self) -> None:
        """Nothing is compiled from the model's weights (counts have no reload)."""

    def prefill(self, prompt, every_position: bool = False):
        """As :meth:`SlotBatch.prefill`; the row is the prompt itself. With ``every_position``, row ``t`` holds the
        exact probability of the prompt's token ``t + 1`` even where the distribution would never draw it (a word
        the model scores as ``<unk>``), so echoed prompts score as ``lmlab score`` scores them."""
        if not 1 <= len(prompt) <= self.context:
            raise ConfigError(f"a prompt of {len(prompt)} tokens does not fit the context of {self.context}")
        prompt = [int(i) for i in prompt]
        if not every_position:
            return self.model.next_log_probs(prompt), prompt
        rows = np.stack([self.model.next_log_probs(prompt[:t + 1]) for t in range(len(prompt))])
        for t, token in enumerate(prompt[1:]):
            if rows[t, token] == -np.inf:
                rows[t, token] = self.model.log_prob(prompt[:t + 1], token)
        return rows, prompt

    def place(self, slot: int, row, length: int, token: int, left: int, sampler, rng, eos: int | None) -> None:
        """As :meth:`SlotBatch.place`: the row's history is the prompt ``row`` and ``token``."""
        self.histories[slot] = [*row[:length], int(token)]
        self.settle(slot, left, sampler, rng, eos)

    def release(self, slot: int) -> None:
        super().release(slot)
        self.histories[slot] = []

    def step(self, hurry: bool = False):
        """As :meth:`SlotBatch.step`, on the host."""
        uniforms, free_before = self.uniforms(), int(np.sum(self.left == 0))
        tokens = np.zeros((self.slots, self.chunk), np.int32)
        chosen = np.zeros((self.slots, self.chunk), np.float32)
        top_ids = np.zeros((self.slots, self.chunk, TOP), np.int32)
        top_values = np.full((self.slots, self.chunk, TOP), -np.inf, np.float32)
        made, k = 0, min(TOP, self.vocab_size)
        while made < self.chunk and np.any(self.left > 0) and not (hurry and np.sum(self.left == 0) > free_before):
            live = np.flatnonzero(self.left > 0)
            log_probs = np.zeros((self.slots, self.vocab_size), np.float32)  # a finished row's output is ignored
            for slot in live:
                log_probs[slot] = self.model.next_log_probs(self.histories[slot])
            token = np.asarray(keras.ops.convert_to_numpy(self._pick(
                log_probs, self.temperature, self.top_k, self.top_p, uniforms[:, made])), np.int32)
            best = np.argpartition(-log_probs, k - 1, axis=-1)[:, :k]
            best = np.take_along_axis(best, np.argsort(-np.take_along_axis(log_probs, best, -1), axis=-1), -1)
            tokens[:, made], chosen[:, made] = token, log_probs[np.arange(self.slots), token]
            top_ids[:, made, :k], top_values[:, made, :k] = best, np.take_along_axis(log_probs, best, -1)
            for slot in live:
                self.histories[slot].append(int(token[slot]))
            self.left = np.where(token == self.eos, 0, np.maximum(self.left - 1, 0)).astype(np.int32)
            made += 1
        self.used(made)
        return tokens[:, :made], chosen[:, :made], top_ids[:, :made], top_values[:, :made]


def slots_for(model, slots: int, context: int | None = None, chunk: int = CHUNK) -> Slots:
    """The slots that decode ``model``: :class:`SlotBatch` for a cached neural model, :class:`CountSlots` for a
    counted one."""
    kind = CountSlots if hasattr(model, "next_log_probs") and not hasattr(model, "call_with_cache") else SlotBatch
    return kind(model, slots, context, chunk)


def positional_cache(model) -> bool:
    """Whether the model's cache holds one entry per position (the Transformer's keys and values), read only
    below the position being decoded: then a prompt padded at its end leaves the same state as the prompt."""
    one, two = keras.tree.flatten(model.init_cache(1, 1)), keras.tree.flatten(model.init_cache(1, 2))
    return any(tuple(a.shape) != tuple(b.shape) for a, b in zip(one, two))


def prefill_width(length: int, context: int) -> int:
    """The padded length a prompt of ``length`` is prefilled at: a power of two from :data:`PREFILL_MIN`, at most
    ``context`` (each width is one compiled shape; padding wastes at most half)."""
    width = PREFILL_MIN
    while width < length:
        width *= 2
    return min(width, context)


def draw(rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` uniforms in (0, 1]: one per token (0 would pick a token of probability 0)."""
    return (1.0 - rng.random(count)).astype(np.float32)
