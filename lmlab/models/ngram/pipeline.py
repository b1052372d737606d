"""The estimation pipeline, one order at a time (KenLM ``lm/builder/pipeline.cc``).

Stages 2 to 4 (:mod:`adjust_counts`, :mod:`initial_probabilities`,
:mod:`interpolate`) each have a function that handles every order at once, which is
the easiest way to inspect them. Order k only needs order k-1, though: its adjusted
counts come from the padded N-grams and the (k-1)-suffix index, its discounts from its
own counts of counts, its contexts from the (k-1)-grams' keys, its probabilities from
the (k-1)-grams' probabilities, and the (k-1)-grams' backoffs are the k-th order's
gammas. :func:`estimate` therefore walks the orders upwards and keeps only the order
below plus the finished arrays, which roughly halves peak memory on WikiText-2's
5-gram. A test checks it gives the same arrays as the stage-by-stage functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lmlab.models.ngram.adjust_counts import Levels, adjust_order, order_counts_of_counts, order_discounts
from lmlab.models.ngram.count import CountTable
from lmlab.models.ngram.initial_probabilities import context_index, initial_order, ngram_keys
from lmlab.models.ngram.interpolate import (Interpolated, interpolate_order, keep_unpruned, log10_backoffs,
                                            log10_probabilities)


@dataclass
class Statistics:
    """What ``lmplz`` prints while estimating: n-grams per order, counts of counts, discounts."""

    counts_before_pruning: list[int] = field(default_factory=list)
    counts_of_counts: list[list[int]] = field(default_factory=list)  # n1..n4 per order
    discounts: list[list[float]] = field(default_factory=list)  # D1, D2, D3+ per order
    discount_fallback_orders: list[int] = field(default_factory=list)


@dataclass
class _Below:
    """The order below the one being estimated, kept until its backoffs are known."""

    table: object  # OrderCounts without its counts, which are no longer needed
    context: np.ndarray
    keys: np.ndarray
    prob: np.ndarray
    log_prob: np.ndarray


def estimate(table: CountTable, vocab_size: int, thresholds, discount_fallback=None
             ) -> tuple[Interpolated, Statistics]:
    """Stages 2-4 on stage 1's table: the finished model arrays and the statistics."""
    levels = Levels(table)
    top = levels.order
    result = Interpolated([], [], [])
    stats = Statistics()
    below: _Below | None = None
    group = None
    renumber = None  # old -> new index of the last finished order, if pruning removed some

    def finish(done: _Below, gamma_above, is_context_above):
        nonlocal renumber
        log_backoff = log10_backoffs(done.table.last, gamma_above, is_context_above)
        keys, log_prob, log_backoff, renumber = keep_unpruned(done.table, done.log_prob, log_backoff, renumber,
                                                               vocab_size, done.keys)
        result.keys.append(keys)
        result.log10_prob.append(log_prob)
        result.log10_backoff.append(log_backoff)

    for k in range(1, top + 1):
        counts, group = adjust_order(levels, k, vocab_size, thresholds[k - 1], group)
        n = order_counts_of_counts(levels, counts, k)
        discount, fell_back = order_discounts(n, k, discount_fallback)
        stats.counts_before_pruning.append(len(counts))
        stats.counts_of_counts.append([int(x) for x in n[1:]])
        stats.discounts.append([float(d) for d in discount[1:]])
        if fell_back:
            stats.discount_fallback_orders.append(k)
        if k == 1:
            context = np.zeros(len(counts), np.int64)
            n_contexts = 1
        else:
            context = context_index(counts.suffix, counts.first, below.context, below.keys, vocab_size,
                                    verify=False)  # contexts of counted n-grams were counted too
            n_contexts = len(below.table)
        u, gamma, is_context = initial_order(counts, discount, context, n_contexts, unigrams=k == 1)
        prob = interpolate_order(u, gamma, context, counts.suffix, None if below is None else below.prob)
        del u
        if below is not None:
            finish(below, gamma, is_context)
        del gamma, is_context
        counts.adjusted = counts.raw = None
        below = _Below(counts, context, ngram_keys(counts.suffix, counts.first, vocab_size), prob,
                       log10_probabilities(prob))
    finish(below, None, None)
    return result, stats
