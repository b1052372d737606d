"""Stage 4, interpolation: final probabilities and backoff weights; pruned n-grams leave.

Follows KenLM ``lm/builder/interpolate.cc`` (Chen & Goodman's interpolated modified
Kneser-Ney, eq. 25 there)::

    p(w)            = u(w) + gamma() / |V|              |V| = unigrams - 1 (<s> excluded, <unk> in)
    p(w | h)        = u(h w) + gamma(h) p(w | h[1:])    orders k >= 2
    log10 prob      = min(0, log10 p)                   ("Correcting for numerical precision issues")
    log10 backoff   = log10 gamma(g)                    for g a context of the order above,
                    = 0                                 for g ending in <unk> or </s>, and order N

p(w | h[1:]) is the final (interpolated) probability of the k-gram's (k-1)-suffix,
which every k-gram has (the tables are closed under suffixes). With these backoffs
the ARPA file's usual backoff rule gives back exactly the interpolated p for n-grams
the model does not list. Arithmetic is float32 as in KenLM.

Pruned n-grams (stage 2's ``keep``) are dropped only here, after their mass has gone
into their contexts' gamma; the suffix indices of the n-grams that stay are
renumbered with a cumulative sum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lmlab.models.ngram.adjust_counts import Adjusted, OrderCounts
from lmlab.models.ngram.initial_probabilities import Initial, ngram_keys
from lmlab.models.ngram.vocabulary import BOS, EOS, UNK

f32 = np.float32


@dataclass
class Interpolated:
    """The finished model tables, per order k (kept n-grams only, suffix order).

    ``keys[k-1]``: int64 ``index(g[1:]) * V + g[0]`` (unigrams: the word id);
    ``log10_prob[k-1]``, ``log10_backoff[k-1]``: float32 (backoff 0 at the highest order).
    """

    keys: list[np.ndarray]
    log10_prob: list[np.ndarray]
    log10_backoff: list[np.ndarray]


def uniform_probability(unigrams: int) -> np.float32:
    """KenLM: ``1.0 / static_cast<float>(vocab_size)`` with vocab_size = unigrams - 1 (no <s>)."""
    return f32(1.0 / float(f32(unigrams - 1)))


def interpolate_order(u: np.ndarray, gamma: np.ndarray, context: np.ndarray, suffix: np.ndarray,
                      lower: np.ndarray | None) -> np.ndarray:
    """p of one order's n-grams, float32: u + gamma(context) * p(suffix), or the uniform
    distribution below the unigrams (``lower`` None; then ``<s>`` gets gamma 0, so p = 1)."""
    gamma_here = gamma[context]  # gamma of each n-gram's context
    if lower is None:
        gamma_here = gamma_here.copy()
        gamma_here[BOS] = 0.0
        return (u + gamma_here * uniform_probability(len(u))).astype(f32)
    return (u + gamma_here * lower[suffix]).astype(f32)


def log10f(x: np.ndarray) -> np.ndarray:
    """float32 log10 as KenLM takes it (C ``log10f``).

    NumPy's float32 ``log10`` calls the C library's ``log10f`` (unless it has an AVX-512
    kernel for the CPU), which is what ``lmplz`` calls, so the printed digits match
    KenLM's. Rounding a float64 log10 instead would be correctly rounded but differs
    from glibc's ``log10f`` in the last bit for about a third of the backoffs.
    """
    with np.errstate(divide="ignore"):
        return np.log10(np.asarray(x, f32)).astype(f32)


def log10_probabilities(p: np.ndarray) -> np.ndarray:
    return np.minimum(f32(0), log10f(p))


def log10_backoffs(last: np.ndarray, gamma_above: np.ndarray | None, is_context_above: np.ndarray | None
                   ) -> np.ndarray:
    """log10 backoff of each n-gram: its gamma as a context of the order above; 0 for the
    highest order (``gamma_above`` None), for non-contexts and for n-grams ending in
    ``<unk>`` or ``</s>``."""
    if gamma_above is None:
        return np.zeros(len(last), f32)
    gamma = np.where(is_context_above & (last != UNK) & (last != EOS), gamma_above, f32(1))
    return log10f(gamma)


def interpolate(adjusted: Adjusted, initial: Initial, vocab_size: int) -> Interpolated:
    """Stage 4 over every order (see the module notes)."""
    orders = adjusted.orders
    top = len(orders)
    result = Interpolated([], [], [])
    lower = None
    renumber = None
    for k in range(1, top + 1):
        table = orders[k - 1]
        p = interpolate_order(initial.uninterpolated[k - 1], initial.gamma[k - 1], initial.context[k - 1],
                              table.suffix, lower)
        above = (initial.gamma[k], initial.is_context[k]) if k < top else (None, None)
        keys, log_prob, log_backoff, renumber = keep_unpruned(
            table, log10_probabilities(p), log10_backoffs(table.last, *above), renumber, vocab_size)
        result.keys.append(keys)
        result.log10_prob.append(log_prob)
        result.log10_backoff.append(log_backoff)
        lower = p
    return result


def keep_unpruned(table: OrderCounts, log_prob: np.ndarray, log_backoff: np.ndarray, below_renumber, vocab_size,
                  keys: np.ndarray | None = None):
    """Drop pruned n-grams: ``(keys, log_prob, log_backoff, renumber)`` of those kept.

    ``below_renumber``: old -> new index of the order below (None if nothing was pruned
    there); ``renumber`` is the same for this order. ``keys``: this order's keys before
    pruning, if already computed.
    """
    suffix, first = table.suffix, table.first
    pruned = not table.keep.all()
    if not pruned and below_renumber is None and keys is not None:
        return keys, log_prob, log_backoff, None
    if pruned:
        keep = table.keep
        suffix, first, log_prob, log_backoff = suffix[keep], first[keep], log_prob[keep], log_backoff[keep]
    if below_renumber is not None:
        suffix = below_renumber[suffix]
        if (suffix < 0).any():
            raise ValueError("pruning left n-grams without their suffix")
    renumber = np.where(table.keep, np.cumsum(table.keep) - 1, -1) if pruned else None
    return ngram_keys(suffix, first, vocab_size), log_prob, log_backoff, renumber
