"""Querying a back-off model: vectorised scoring and next-word distributions.

The scoring rule is the ARPA back-off rule KenLM's ``query`` applies (``lm/ngram_query.hh``,
``lm/model.cc``): for word w after context h (at most N-1 words, cut at the sentence's
``<s>``), with ``P`` and ``b`` the listed log10 probabilities and backoffs::

    log10 p(w | h) = P(h_m w) + b(h_m') + ... + b(h_{N-1})      summed over contexts longer than h_m

where ``h_m w`` is the longest listed n-gram ending in w and ``h_j`` the last j words of
h; a context not listed has backoff 0. Words not in the vocabulary are ``<unk>``.

Vectorised over every token of a batch: the k-gram ending at each token is found
from the (k-1)-gram ending there with one ``np.searchsorted`` per order (n-grams are
keyed by ``index(g[1:]) * V + g[0]``, see :mod:`initial_probabilities`), so scoring
costs N searches over the batch and no Python loop per token.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lmlab.models.ngram.initial_probabilities import context_indices
from lmlab.models.ngram.vocabulary import BOS, UNK


@dataclass
class Tables:
    """A model's arrays: per order k, ``keys`` (int64, increasing), ``log10_prob``
    (float32; NaN marks a blank entry that is only a context or suffix) and
    ``log10_backoff`` (float32)."""

    vocab_size: int
    keys: list[np.ndarray]
    log10_prob: list[np.ndarray]
    log10_backoff: list[np.ndarray]
    _by_context: dict = field(default_factory=dict, repr=False)
    _last_word: list = field(default_factory=list, repr=False)

    @property
    def order(self) -> int:
        return len(self.keys)


def find(keys: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Index of each wanted key in the sorted ``keys``, or -1."""
    if not len(keys):
        return np.full(len(wanted), -1, np.int64)
    found = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    return np.where(keys[found] == wanted, found, -1)


def ngram_indices(tables: Tables, tokens: np.ndarray, position: np.ndarray) -> list[np.ndarray]:
    """For k = 1..N: (T,) index of the k-gram ending at each token, -1 if not listed.

    ``tokens``: (T,) word ids; ``position``: (T,) index of each token in its sentence
    (n-grams never reach back past position 0).
    """
    tokens = tokens.astype(np.int64)
    indices = [tokens.copy()]  # unigrams are indexed by word id
    for k in range(2, tables.order + 1):
        previous = indices[-1]
        here = np.full(len(tokens), -1, np.int64)
        live = np.flatnonzero((position >= k - 1) & (previous >= 0))
        if len(live):
            wanted = previous[live] * tables.vocab_size + tokens[live - (k - 1)]
            here[live] = find(tables.keys[k - 1], wanted)
        indices.append(here)
    return indices


def score(tables: Tables, tokens: np.ndarray, position: np.ndarray) -> np.ndarray:
    """(T,) float32 log10 p of each token given the tokens before it in its sentence.

    float32 like KenLM's ``FullScore`` (the probability, then each backoff added in
    order of context length), so totals can be summed exactly as ``query`` sums them.
    """
    indices = ngram_indices(tables, tokens, position)
    log10 = tables.log10_prob[0][indices[0]].astype(np.float32)
    matched = np.ones(len(tokens), np.int64)  # order of the longest listed n-gram
    for k in range(2, tables.order + 1):
        at = np.flatnonzero(indices[k - 1] >= 0)
        prob = tables.log10_prob[k - 1][indices[k - 1][at]]
        real = ~np.isnan(prob)
        log10[at[real]] = prob[real]
        matched[at[real]] = k
    for j in range(1, tables.order):  # backoffs of the contexts longer than the match
        context = np.full(len(tokens), -1, np.int64)
        context[1:] = indices[j - 1][:-1]  # the j-gram ending just before each token
        charge = np.flatnonzero((position >= 1) & (context >= 0) & (matched <= j))
        log10[charge] += tables.log10_backoff[j - 1][context[charge]]
    return log10


def _context_groups(tables: Tables, k: int):
    """For order k: k-gram indices sorted by context, and where each context's run starts."""
    if k not in tables._by_context:
        if not tables._by_context:
            contexts = context_indices([key // tables.vocab_size for key in tables.keys],
                                       [key % tables.vocab_size for key in tables.keys], tables.vocab_size)
            for order in range(2, tables.order + 1):
                moved = np.argsort(contexts[order - 1], kind="stable")
                starts = np.searchsorted(contexts[order - 1][moved], np.arange(len(tables.keys[order - 2]) + 1))
                tables._by_context[order] = (moved, starts)
    return tables._by_context[k]


def _last_words(tables: Tables, k: int) -> np.ndarray:
    """The last word id of every k-gram (the first word of its 1-word suffix)."""
    if not tables._last_word:
        last = tables.keys[0]
        tables._last_word.append(last)
        for order in range(2, tables.order + 1):
            last = last[tables.keys[order - 1] // tables.vocab_size]
            tables._last_word.append(last)
    return tables._last_word[k - 1]


def next_word_distribution(tables: Tables, history: list[int]) -> np.ndarray:
    """(V,) float64 p(w | history) for every word w by the back-off rule.

    p(w | h_j) = 10^P(h_j w) if h_j w is listed, else 10^b(h_j) p(w | h_{j-1}): start
    from the unigrams and, for each longer context that is listed, scale by its backoff
    and overwrite the words it lists.
    """
    probs = np.power(10.0, tables.log10_prob[0].astype(np.float64))
    history = list(history)[-(tables.order - 1):] if tables.order > 1 else []
    index = -1
    for j in range(1, len(history) + 1):
        word = history[-j]
        index = word if j == 1 else int(find(tables.keys[j - 1], np.array([index * tables.vocab_size + word]))[0])
        if index < 0:
            break
        probs *= 10.0 ** float(tables.log10_backoff[j - 1][index])
        moved, starts = _context_groups(tables, j + 1)
        listed = moved[starts[index]:starts[index + 1]]
        prob = tables.log10_prob[j][listed]
        real = ~np.isnan(prob)
        probs[_last_words(tables, j + 1)[listed[real]]] = np.power(10.0, prob[real].astype(np.float64))
    return probs


def sample_next(tables: Tables, history: list[int], rng: np.random.Generator) -> int:
    """One word drawn from p(w | history), never ``<s>`` or ``<unk>``."""
    probs = next_word_distribution(tables, history)
    probs[BOS] = 0.0
    probs[UNK] = 0.0
    total = probs.sum()
    return int(rng.choice(len(probs), p=probs / total))
