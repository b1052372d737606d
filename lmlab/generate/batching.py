"""Continuous batching: a fixed set of decoding slots that sequences join and leave between steps.

A server decodes for many requests at once, and they neither start nor end together. Here the
batch is ``slots`` rows of one cache spanning ``context`` positions, allocated once. A new
sequence is prefilled alone (batch 1, eagerly: prompts come in every length, and compiling a
prefill per length would cost more than it saves, as in :mod:`lmlab.generate.search`), its
cache row is copied into a free slot, and from the next step it decodes beside the others.
Each step feeds every slot its newest token at that slot's own position (the Transformer takes
a position per row, ``index`` of shape ``(B,)``; the RNN and the gated CNN keep no positions at
all), in one compiled call of a fixed shape, and returns every row's log-probabilities to the
host, where each sequence samples with its own settings and seed. A free slot is fed a dummy
token at position 0; its output is ignored and its row is overwritten when a sequence joins.

Because the step's shape never changes and rows never mix, a sequence's tokens are the same
whichever others share the batch (the tests hold greedy decoding alone equal to batched).
"""

from __future__ import annotations

import keras
import numpy as np

from lmlab.core.backend import compile_function
from lmlab.core.errors import ConfigError
from lmlab.generate.decoder import cache_batch_axes, map_cache


class SlotBatch:
    """``slots`` decoding rows over one cache of ``context`` positions (default: the model's block)."""

    def __init__(self, model, slots: int, context: int | None = None):
        if not hasattr(model, "call_with_cache"):
            raise ConfigError("continuous batching needs a neural language model with a cache")
        self.model, self.slots = model, int(slots)
        self.context = int(context or model.config.block_size)
        if not 1 <= self.context <= model.config.block_size:
            raise ConfigError(f"context must be in [1, {model.config.block_size}], got {self.context}")
        if self.slots < 1:
            raise ConfigError(f"slots must be >= 1, got {self.slots}")
        self.cache = model.init_cache(self.slots, self.context)
        self.positions = np.zeros(self.slots, np.int32)  # where each slot's next token goes
        self.last = np.zeros(self.slots, np.int32)  # each slot's newest token
        axes, ops = cache_batch_axes(model), keras.ops

        def step(last, cache, positions):
            logits, cache = model.call_with_cache(last[:, None], cache, positions)
            return ops.log_softmax(ops.cast(logits[:, -1, :], "float32"), axis=-1), cache  # (B, V)

        def place(cache, row, slot):
            def put(leaf, axis):
                start = [0] * len(leaf.shape)
                start[axis] = slot
                return ops.slice_update(leaf, start, ops.cast(row_leaves.pop(0), leaf.dtype))

            row_leaves = list(keras.tree.flatten(row))
            return map_cache(cache, axes, put)

        self._step = compile_function(step)
        self._place = compile_function(place)

    def prefill(self, prompt, every_position: bool = False):
        """Run ``prompt`` alone: log-probabilities ``(V,)`` of the next token (``(T, V)`` for every position
        with ``every_position``) and its one-row cache, for :meth:`place`."""
        if not 1 <= len(prompt) <= self.context:
            raise ConfigError(f"a prompt of {len(prompt)} tokens does not fit the context of {self.context}")
        ids = np.asarray([prompt], np.int32)  # (1, T)
        logits, row = self.model.call_with_cache(ids, self.model.init_cache(1, self.context), 0)
        logits = logits[0] if every_position else logits[0, -1]
        log_probs = keras.ops.log_softmax(keras.ops.cast(logits, "float32"), axis=-1)
        return np.asarray(keras.ops.convert_to_numpy(log_probs)), row

    def place(self, slot: int, row, prompt) -> None:
        """Slot ``slot`` holds the prefilled ``prompt`` (its cache ``row``); :meth:`advance` gives the next token."""
        self.cache = self._place(self.cache, row, np.int32(slot))
        self.positions[slot], self.last[slot] = len(prompt) - 1, prompt[-1]  # the newest token, already read

    def release(self, slot: int) -> None:
        self.positions[slot], self.last[slot] = 0, 0

    def step(self) -> np.ndarray:
        """One token for every slot: log-probabilities ``(slots, V)`` of the token after each slot's newest."""
        log_probs, self.cache = self._step(self.last, self.cache, self.positions)
        return np.asarray(keras.ops.convert_to_numpy(log_probs))

    def advance(self, slot: int, token: int) -> None:
        """Slot ``slot`` was fed its newest token; ``token`` comes next."""
        self.positions[slot] += 1
        self.last[slot] = token
