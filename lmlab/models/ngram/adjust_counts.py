"""Stage 2, adjusting counts: continuation counts, counts of counts, discounts, pruning marks.

Follows KenLM ``lm/builder/adjust_counts.cc`` (Heafield et al. 2013, "Scalable
Modified Kneser-Ney Language Model Estimation", section 3.2).

**Which n-grams exist.** A *valid* n-gram has ``<s>`` nowhere but possibly in its
first slot. Order N holds the valid padded N-grams of stage 1 (those with ``<s>``
after the first slot are dropped, as ``CollapseStream`` drops them); order k < N
holds every valid k-gram of the padded corpus, i.e. every valid k-suffix of a padded
N-gram.

**Adjusted counts** a(g) (Chen & Goodman 1998, section 3 / Kneser & Ney 1995):

- order N: a(g) = c(g), the raw count;
- order k < N, g starting with ``<s>``: a(g) = c(g) (KenLM: "Anything that begins
  with <s> has full non adjusted count" - nothing but ``<s>`` padding can precede it);
- otherwise a(g) = N1+(• g) = |{x : x g is a valid (k+1)-gram}|, the number of
  distinct words seen before g (``<s>`` included);
- ``<unk>`` and ``<s>`` are unigrams with a = 0 (``<s>`` is never predicted).

**Counts of counts** n_j(k) = |{k-grams g : a(g) = j}| for j = 1..4, over all
n-grams, pruned or not (with one KenLM detail kept, see
:data:`KENLM_LAST_NGRAMS_USE_RAW_COUNTS`). **Discounts** (Chen & Goodman eq. 26), per order::

    Y   = n1 / (n1 + 2 n2)
    D_j = j - (j + 1) Y n_{j+1} / n_j        for j = 1, 2, 3  (D3 is D3+)

computed in float32 in KenLM's order of operations so that probabilities match its
output to the last bit where possible.

**Pruning** (``lmplz --prune``): a k-gram (k >= 2) is marked when its raw count
c(g) <= threshold_k (for k < N the raw count sums the padded N-grams ending in g).
Marked n-grams still count in n_j and in the denominators of stage 3.

**Vectorised.** The padded N-grams arrive in suffix order, so every k-gram's rows are
contiguous and nested inside its (k-1)-suffix's rows. ``new_k[i]`` says row i starts
a new k-suffix; the k-grams are the rows where ``new_k`` is set (and the k-suffix is
valid), raw counts and extension counts are ``np.add.reduceat`` over those starts,
and a k-gram's (k-1)-suffix is found by a cumulative sum: no sort beyond stage 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lmlab.core.errors import DataError
from lmlab.models.ngram.count import CountTable
from lmlab.models.ngram.vocabulary import BOS, UNK

# KenLM (from 2015's adjust_counts.cc) adds the n-grams still open when the input ends
# (the suffixes of the last padded N-gram in suffix order) to the counts of counts with
# their raw count rather than their adjusted count. We do the same to match its
# discounts exactly; the effect is at most one n-gram per order (usually none: that
# last N-gram ends in the newest word, whose counts are 1 either way).
KENLM_LAST_NGRAMS_USE_RAW_COUNTS = True

LMPLZ_DISCOUNT_FALLBACK = (0.5, 1.0, 1.5)  # lmplz --discount_fallback's default


@dataclass
class OrderCounts:
    """The k-grams of one order, in suffix order.

    ``first``/``last``: (M,) int32 first and last word of each k-gram; ``suffix``: (M,)
    int32 index of each k-gram's (k-1)-suffix g[1:] in the order below (zeros for
    unigrams), so the words of g are ``first`` followed by the suffix's words (see
    :meth:`Adjusted.grams`); ``adjusted``/``raw``: (M,) int64; ``keep``: (M,) bool,
    False where pruning marked the n-gram.
    """

    first: np.ndarray
    last: np.ndarray
    adjusted: np.ndarray
    raw: np.ndarray
    suffix: np.ndarray
    keep: np.ndarray

    def __len__(self) -> int:
        return len(self.first)


@dataclass
class Adjusted:
    """Everything stage 2 produces: per-order tables, counts of counts and discounts.

    ``counts_of_counts[k-1, j]`` = n_j for order k (j = 0..4; n_0 is unused);
    ``discounts[k-1, j]`` = D_j for order k (float32, D_0 = 0).
    """

    orders: list[OrderCounts]
    counts_of_counts: np.ndarray
    discounts: np.ndarray
    fallback_orders: list[int] = field(default_factory=list)

    @property
    def order(self) -> int:
        return len(self.orders)

    def grams(self, k: int) -> np.ndarray:
        """(M, k) int32 word ids of the k-grams (built from the suffix links)."""
        words = self.orders[0].first[:, None]
        for j in range(2, k + 1):
            table = self.orders[j - 1]
            words = np.concatenate([table.first[:, None], words[table.suffix]], axis=1)
        return words


def _starts_new(column: np.ndarray) -> np.ndarray:
    """(M,) bool: row i's value differs from row i-1's (True for row 0)."""
    new = np.empty(len(column), bool)
    if len(column):
        new[0] = True
        np.not_equal(column[1:], column[:-1], out=new[1:])
    return new


class Levels:
    """What every order needs to know about the suffix-sorted padded N-grams.

    ``new[k-1][i]``: row i starts a new k-suffix; ``leading_bos[i]``: how many ``<s>``
    pad row i (its k-suffix is a valid k-gram when ``leading_bos <= N - k + 1``).
    """

    def __init__(self, table: CountTable):
        if len(table) == 0:
            raise DataError("no text to count: the corpus has no sentences")
        self.table = table
        self.order = table.order
        rows = table.rows
        self.leading_bos = np.count_nonzero(rows[:, : self.order - 1] == BOS, axis=1).astype(np.int8)
        self.new = []
        new = np.zeros(len(table), bool)
        for k in range(1, self.order + 1):
            new = new | _starts_new(rows[:, self.order - k])
            self.new.append(new)

    def valid(self, k: int) -> np.ndarray:
        """(rows,) bool: the row's k-suffix is a valid k-gram."""
        return self.leading_bos <= self.order - k + 1


def adjust_order(levels: Levels, k: int, vocab_size: int, threshold: int = 0, below_group=None):
    """The k-grams with adjusted and raw counts, and per row the index of its k-suffix.

    ``below_group``: what this returned for order k-1 (None for unigrams).
    """
    rows, counts, order = levels.table.rows, levels.table.counts, levels.order
    valid = levels.valid(k)
    is_start = levels.new[k - 1] & valid
    starts = np.flatnonzero(is_start)
    first = rows[starts, order - k]
    raw = np.add.reduceat(np.where(valid, counts, 0), starts)  # rows of invalid k-suffixes add 0
    if k == order:
        adjusted = raw.copy()
    else:
        extends = levels.new[k] & levels.valid(k + 1)  # row starts a distinct valid (k+1)-gram
        adjusted = np.add.reduceat(extends.astype(np.int32), starts).astype(np.int64)
        begins_bos = first == BOS
        adjusted[begins_bos] = raw[begins_bos]
    last = rows[starts, order - 1]
    if k == 1:
        first, adjusted, raw = _add_unk_and_bos(first, adjusted, raw, vocab_size)
        suffix = np.zeros(len(first), np.int32)
        group = rows[:, order - 1]  # unigram index = word id
        return OrderCounts(first, first, adjusted, raw, suffix, np.ones(len(first), bool)), group
    suffix = below_group[starts]
    group = np.cumsum(is_start, dtype=np.int32) - 1  # per row: index of its k-suffix among the k-grams
    return OrderCounts(first, last, adjusted, raw, suffix, raw > threshold), group


def order_counts_of_counts(levels: Levels, table: OrderCounts, k: int) -> np.ndarray:
    """n_0..n_4 of order k (n_0 is unused), with KenLM's raw count for the last open n-gram."""
    n = np.bincount(np.minimum(table.adjusted, 5), minlength=6)[:5]
    highest_open = min(levels.order - 1, levels.order - int(levels.leading_bos[-1]) + 1)
    if KENLM_LAST_NGRAMS_USE_RAW_COUNTS and k <= highest_open:
        for value, sign in ((table.adjusted[-1], -1), (table.raw[-1], +1)):
            if value < 5:
                n[value] += sign
    return n


def adjust_counts(table: CountTable, vocab_size: int, prune=(), discount_fallback=None) -> Adjusted:
    """Stage 2 on the suffix-sorted padded N-grams of stage 1, every order at once.

    ``prune``: one raw-count threshold per order (missing orders repeat the last);
    ``discount_fallback``: (D1, D2, D3+) used for an order whose discounts cannot be
    estimated (too little data), as ``lmplz --discount_fallback``; None raises DataError.
    (:mod:`pipeline` runs the same functions one order at a time to save memory.)
    """
    levels = Levels(table)
    order = levels.order
    thresholds = list(prune) + [prune[-1] if len(prune) else 0] * (order - len(prune))
    orders: list[OrderCounts] = []
    group = None
    counts_of_counts = np.zeros((order, 5), np.int64)
    for k in range(1, order + 1):
        table_k, group = adjust_order(levels, k, vocab_size, thresholds[k - 1], group)
        orders.append(table_k)
        counts_of_counts[k - 1] = order_counts_of_counts(levels, table_k, k)
    discounts, fallback_orders = compute_discounts(counts_of_counts, discount_fallback)
    return Adjusted(orders, counts_of_counts, discounts, fallback_orders)


def _add_unk_and_bos(words, adjusted, raw, vocab_size):
    """Unigrams are every word id in order: prepend <unk> (0) and <s> (1) with count 0."""
    if len(words) != vocab_size - 2 or (len(words) and (words[0] != 2 or words[-1] != vocab_size - 1)):
        raise ValueError("the vocabulary holds words the counts never saw")
    zeros = np.zeros(2, np.int64)
    words = np.concatenate([np.array([UNK, BOS], np.int32), words])
    return words, np.concatenate([zeros, adjusted]), np.concatenate([zeros, raw])


def compute_discounts(counts_of_counts: np.ndarray, fallback=None) -> tuple[np.ndarray, list[int]]:
    """D_1, D_2, D_3+ per order from n_1..n_4 (Chen & Goodman eq. 26), in float32 as KenLM.

    Returns ``(discounts, fallback_orders)``; ``discounts[k-1] = [0, D1, D2, D3+]``.
    """
    discounts = np.zeros((len(counts_of_counts), 4), np.float32)
    fallback_orders = []
    for k, n in enumerate(counts_of_counts, start=1):
        discounts[k - 1], fell_back = order_discounts(n, k, fallback)
        if fell_back:
            fallback_orders.append(k)
    return discounts, fallback_orders


def order_discounts(n: np.ndarray, k: int, fallback=None) -> tuple[np.ndarray, bool]:
    """``([0, D1, D2, D3+], used_fallback)`` for order k from its n_0..n_4."""
    f32 = np.float32
    discount = np.zeros(4, np.float32)
    problem = None
    for j in (1, 2, 3):
        if n[j] == 0:
            problem = (f"cannot estimate Kneser-Ney discounts for {k}-grams: none has adjusted count {j} "
                       f"(needed for D{j}); is the corpus too small? (set discount_fallback)")
            break
    if problem is None:
        y = f32(n[1]) / f32(float(n[1]) + 2.0 * float(n[2]))  # KenLM: the sum in double, then float
        for j in (1, 2, 3):
            discount[j] = f32(j) - f32(j + 1) * y * f32(n[j + 1]) / f32(n[j])
            if not 0.0 <= discount[j] <= j:
                problem = (f"{k}-gram discount D{j} = {discount[j]:.4g} is out of range [0, {j}] "
                           f"(counts of counts {list(map(int, n[1:]))}); set discount_fallback")
                break
    if problem is None:
        return discount, False
    if fallback is None:
        raise DataError(problem)
    return np.array([0.0, *fallback], np.float32), True
