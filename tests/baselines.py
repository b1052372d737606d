"""The trivial baselines a trained model's held-out numbers must beat, computed from the data itself.

* :func:`uniform_loss`: guessing every token of a vocabulary of ``V`` alike scores ``log V``
  nats a token.
* :func:`unigram_entropy`: the training tokens' unigram entropy, what predicting each token
  by its training frequency scores on the training data.
* :func:`unigram_cross_entropy`: that unigram model (add-one smoothed, so a token unseen in
  training still has a probability) scored on held-out tokens: the bar a model's validation
  loss has to clear before it has learnt anything beyond character or word frequencies.
* :func:`majority_rate`: the share of the most frequent label, the accuracy to beat.
"""

from __future__ import annotations

import math

import numpy as np


def split_tokens(folder, split: str) -> np.ndarray:
    """Every token of a prepared split (all its shards, in order)."""
    from lmlab.data.shards import open_split

    arrays = open_split(folder, split).arrays
    return np.concatenate(arrays).astype(np.int64) if arrays else np.zeros(0, np.int64)


def uniform_loss(vocab_size: int) -> float:
    return math.log(vocab_size)


def unigram_entropy(train: np.ndarray, vocab_size: int) -> float:
    """Entropy (nats) of the training tokens' unigram distribution."""
    counts = np.bincount(train, minlength=vocab_size).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def unigram_cross_entropy(train: np.ndarray, held_out: np.ndarray, vocab_size: int) -> float:
    """Mean nats a token of the add-one smoothed training unigram on ``held_out``."""
    counts = np.bincount(train, minlength=vocab_size).astype(np.float64) + 1.0
    return float(-np.log(counts / counts.sum())[held_out].mean())


def majority_rate(labels) -> float:
    """The accuracy of always answering the most frequent label."""
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    return float(counts.max() / counts.sum())
