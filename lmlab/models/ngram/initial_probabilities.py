"""Stage 3, initial probabilities: discounted probabilities and interpolation weights.

Follows KenLM ``lm/builder/initial_probabilities.cc`` (``AddRight`` sums each
context, ``MergeRight`` divides). For a k-gram ``g = h w`` with context ``h`` (the
first k-1 words) and adjusted count a(g) from stage 2::

    denominator(h) = sum_w a(h w)                                  (pruned n-grams included)
    u(h w)         = (a(h w) - D_k(a(h w))) / denominator(h)       D_k(a) = D_{min(a, 3)}, D_0 = 0
    gamma(h)       = (D1 N1(h •) + D2 N2(h •) + D3+ N3+(h •) + pruned(h)) / denominator(h)

where N_j(h •) counts the kept n-grams ``h w`` with a = j (3+ for j = 3) and pruned(h)
sums the adjusted counts of the pruned ones (KenLM: "Makes model sum to 1 with
pruning"). gamma(h) is the mass the discounts free, given to the lower order in stage
4; it is also h's backoff weight. Unigrams share one empty context, ``<unk>`` has
u = 0 (a zero count interpolated like any other word) and ``<s>`` is given u = 1 with
gamma = 0 (KenLM: "This allows <s> to be explicitly scored ... and computes q
correctly as b(<s>)"), so its log10 probability is written as 0.

All arithmetic is float32 in KenLM's order (accumulate D_j N_j, add the pruned mass,
divide), so stage 4 reproduces ``lmplz``'s numbers to the last bit where ``log10``
rounds alike.

**Finding contexts.** Tables are in suffix order; a k-gram ``g`` is keyed in its
order by ``key(g) = index(g[1:]) * V + g[0]``, strictly increasing. The context
``g[:-1]`` has key ``index(g[1:-1]) * V + g[0]``, and ``g[1:-1]`` is the context of
``g[1:]``: so ``context_k = searchsorted(key_{k-1}, context_{k-1}[suffix_k] * V +
g[0])``, one vectorised search per order (its queries sorted first, so that it walks
the keys once), and per-context sums are ``np.bincount``. KenLM instead re-sorts each
order in context order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lmlab.models.ngram.adjust_counts import Adjusted, OrderCounts
from lmlab.models.ngram.count import sort_keys
from lmlab.models.ngram.vocabulary import BOS

f32 = np.float32


def ngram_keys(suffix: np.ndarray, first_word: np.ndarray, vocab_size: int) -> np.ndarray:
    """key(g) = index of g[1:] in the order below * V + g[0]: increasing in suffix order."""
    return suffix.astype(np.int64) * vocab_size + first_word.astype(np.int64)


def context_index(suffix: np.ndarray, first: np.ndarray, below_context: np.ndarray, below_keys: np.ndarray,
                  vocab_size: int, verify: bool = True) -> np.ndarray:
    """Index of each k-gram's context g[:-1] among the (k-1)-grams.

    ``suffix``/``first``: per k-gram, the index of g[1:] and the word g[0];
    ``below_context``: this function's result for order k-1; ``below_keys``: the
    (k-1)-grams' keys. Raises ValueError if a context is missing.
    """
    wanted = below_context[suffix].astype(np.int64) * vocab_size + first
    # Searching sorted queries walks the keys once instead of jumping about them
    # (several times faster on millions of n-grams, sort included).
    moved, wanted = sort_keys(wanted, int(len(below_context) * vocab_size).bit_length())
    at = np.minimum(np.searchsorted(below_keys, wanted), max(len(below_keys) - 1, 0))
    if verify and len(wanted) and not np.array_equal(below_keys[at], wanted):
        raise ValueError("some n-grams have no context")
    del wanted
    found = np.empty(len(moved), np.int32)
    found[moved] = at
    return found


def context_indices(suffixes: list[np.ndarray], first_words: list[np.ndarray], vocab_size: int
                    ) -> list[np.ndarray]:
    """:func:`context_index` for every order (unigrams: context 0, the empty one)."""
    contexts = [np.zeros(len(first_words[0]), np.int32)]
    for k in range(2, len(suffixes) + 1):
        below_keys = ngram_keys(suffixes[k - 2], first_words[k - 2], vocab_size)
        contexts.append(context_index(suffixes[k - 1], first_words[k - 1], contexts[k - 2], below_keys, vocab_size))
    return contexts


@dataclass
class Initial:
    """Per order k: ``context`` (index of g[:-1] among the (k-1)-grams), ``uninterpolated``
    u(g) (float32) and, per context, ``gamma`` (float32) and ``is_context`` (bool)."""

    context: list[np.ndarray]
    uninterpolated: list[np.ndarray]
    gamma: list[np.ndarray]
    is_context: list[np.ndarray]


def initial_order(table: OrderCounts, discount: np.ndarray, context: np.ndarray, n_contexts: int,
                  unigrams: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(u, gamma, is_context)`` of one order (see the module notes); float32 as KenLM.

    ``discount``: [0, D1, D2, D3+] (float32); ``context``: per n-gram, its context's
    index; ``n_contexts``: how many contexts there can be (the n-grams one order down).
    """
    a = table.adjusted
    denominator = np.bincount(context, weights=a, minlength=n_contexts).astype(np.int64)
    bucket = np.minimum(a, 3).astype(np.int8)
    kept_bucket = np.where(table.keep, bucket, 0) if not table.keep.all() else bucket  # pruned: in no N_j
    gamma = np.zeros(n_contexts, f32)
    for j in (1, 2, 3):  # gamma += D_j * N_j(h .), in this order
        n_j = np.bincount(context[kept_bucket == j], minlength=n_contexts)
        gamma += discount[j] * n_j.astype(f32)
    del n_j, kept_bucket
    if not table.keep.all():
        pruned = np.bincount(context[~table.keep], weights=a[~table.keep], minlength=n_contexts)
        gamma = gamma + pruned.astype(np.int64).astype(f32)
    is_context = denominator > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        gamma = np.where(is_context, gamma / denominator.astype(f32), f32(0)).astype(f32)
    u = ((a.astype(f32) - discount[bucket]) / denominator[context].astype(f32)).astype(f32)
    if unigrams:
        u[BOS] = 1.0
    return u, gamma, is_context


def initial_probabilities(adjusted: Adjusted, vocab_size: int) -> Initial:
    """Stage 3 over every order of ``adjusted`` (see the module notes)."""
    orders = adjusted.orders
    contexts = context_indices([o.suffix for o in orders], [o.first for o in orders], vocab_size)
    result = Initial([], [], [], [])
    for k, table in enumerate(orders, start=1):
        n_contexts = 1 if k == 1 else len(orders[k - 2])
        u, gamma, is_context = initial_order(table, adjusted.discounts[k - 1], contexts[k - 1], n_contexts, k == 1)
        result.context.append(contexts[k - 1])
        result.uninterpolated.append(u)
        result.gamma.append(gamma)
        result.is_context.append(is_context)
    return result
