"""Encoded examples and the padded batches training and evaluation read.

Shapes are kept few, because a new shape is traced (and under JAX compiled) anew: batches
always have ``batch_size`` rows (missing rows are padding with weight 0) and
their length is rounded up to a power of two (at least 8, at most the block
size). Training batches group examples of similar length: a shuffled chunk
of 50 batches' worth is sorted by length, cut into batches, and the batches
shuffled, so padding stays small without a fixed order. Everything is a
function of ``(seed, epoch)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from lmlab.core.errors import ConfigError
from lmlab.models import registry
from lmlab.tokenizers.specials import CLS_TOKENS

CHUNK_BATCHES = 50
MIN_LENGTH = 8


def padded_length(n: int, block_size: int) -> int:
    return min(block_size, max(MIN_LENGTH, 1 << max(n - 1, 0).bit_length()))


@dataclass
class Batch:
    inputs: tuple  # what the model is called with
    targets: np.ndarray
    weights: np.ndarray
    rows: np.ndarray  # which examples (index into the encoded set); -1 for padding rows


def encode_texts(tokenizer, texts: Sequence[str], block_size: int,
                 prefix: Sequence[int] = ()) -> tuple[list[list[int]], int]:
    """Each text's tokens after ``prefix`` (an encoder's [CLS]), cut to fit ``block_size`` with the end token;
    and how many were cut."""
    encoded, cut = [], 0
    room = block_size - 1 - len(prefix)
    for ids in tokenizer.encode_batch(list(texts)):
        if len(ids) > room:
            ids, cut = ids[:room], cut + 1
        encoded.append(list(prefix) + list(ids) + [tokenizer.eos_id])
    return encoded, cut


def batch_orders(lengths: Sequence[int], batch_size: int, shuffle: bool, seed: int, epoch: int) -> list[np.ndarray]:
    n = len(lengths)
    if not shuffle:
        return [np.arange(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n)
    batches = []
    chunk = batch_size * CHUNK_BATCHES
    for start in range(0, n, chunk):
        part = order[start:start + chunk]
        part = part[np.argsort(np.asarray(lengths)[part], kind="stable")]
        batches.extend(part[i:i + batch_size] for i in range(0, len(part), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


class ClassificationData:
    """Encoded texts with label ids and per-example weights (class weights)."""

    def __init__(self, sequences: list[list[int]], labels: Sequence[int], weights: Sequence[float], block_size: int):
        self.sequences, self.block_size = sequences, block_size
        self.labels = np.asarray(labels, dtype=np.int32)
        self.weights = np.asarray(weights, dtype=np.float32)
        self.lengths = [len(s) for s in sequences]

    def __len__(self) -> int:
        return len(self.sequences)

    def batches(self, batch_size: int, shuffle: bool = False, seed: int = 0, epoch: int = 0) -> Iterator[Batch]:
        for rows in batch_orders(self.lengths, batch_size, shuffle, seed, epoch):
            length = padded_length(max(self.lengths[r] for r in rows), self.block_size)
            ids = np.zeros((batch_size, length), dtype=np.int32)
            lengths = np.ones(batch_size, dtype=np.int32)
            targets = np.zeros(batch_size, dtype=np.int32)
            weights = np.zeros(batch_size, dtype=np.float32)
            for i, r in enumerate(rows):
                ids[i, : self.lengths[r]] = self.sequences[r]
                lengths[i], targets[i], weights[i] = self.lengths[r], self.labels[r], self.weights[r]
            padded_rows = np.full(batch_size, -1, dtype=np.int64)
            padded_rows[: len(rows)] = rows
            yield Batch((ids, lengths), targets, weights, padded_rows)

    def steps_per_epoch(self, batch_size: int) -> int:
        return math.ceil(len(self) / batch_size)


class CompletionData:
    """``prompt + completion + end`` sequences; the loss counts only the completion and the end token."""

    def __init__(self, sequences: list[list[int]], prompt_lengths: Sequence[int], block_size: int):
        self.sequences, self.prompt_lengths, self.block_size = sequences, list(prompt_lengths), block_size
        self.lengths = [len(s) - 1 for s in sequences]  # the model reads all but the last token

    def __len__(self) -> int:
        return len(self.sequences)

    def batches(self, batch_size: int, shuffle: bool = False, seed: int = 0, epoch: int = 0) -> Iterator[Batch]:
        for rows in batch_orders(self.lengths, batch_size, shuffle, seed, epoch):
            length = padded_length(max(self.lengths[r] for r in rows), self.block_size)
            x = np.zeros((batch_size, length), dtype=np.int32)
            y = np.zeros((batch_size, length), dtype=np.int32)
            mask = np.zeros((batch_size, length), dtype=np.float32)
            for i, r in enumerate(rows):
                sequence, n = self.sequences[r], self.lengths[r]
                x[i, :n], y[i, :n] = sequence[:-1], sequence[1:]
                mask[i, self.prompt_lengths[r] - 1: n] = 1.0  # targets from the first completion token on
            padded_rows = np.full(batch_size, -1, dtype=np.int64)
            padded_rows[: len(rows)] = rows
            yield Batch((x,), y, mask, padded_rows)

    def steps_per_epoch(self, batch_size: int) -> int:
        return math.ceil(len(self) / batch_size)


def check_neural(model) -> None:
    """Task heads read :meth:`hidden_states`, which the neural families have and the n-gram has not."""
    family = getattr(getattr(model, "config", None), "family", None)
    if family not in registry.FAMILIES or not registry.family(family).neural:
        neural = ", ".join(name for name, spec in registry.FAMILIES.items() if spec.neural)
        raise ConfigError(f"fine-tuning needs a neural language model ({neural}), not {family!r}")


def is_masked_lm(model) -> bool:
    return registry.family(model.config.family).objective == "mlm"


def input_prefix(model, tokenizer) -> list[int]:
    """Token ids a task puts before each text: ``[CLS]`` for a masked LM whose tokenizer has it."""
    if not is_masked_lm(model):
        return []
    return [tokenizer.special_tokens[t] for t in CLS_TOKENS if t in tokenizer.special_tokens][:1]


def held_out_loss(stepper, data, batch_size: int) -> tuple[float, float]:
    """Total and count of the target tokens' losses over every batch of ``data`` (validation of the LM tasks)."""
    total = count = 0.0
    for batch in data.batches(batch_size):
        t, n, _ = stepper.evaluate(batch.inputs, batch.targets, batch.weights)
        total, count = total + t, count + n
    return total, count
