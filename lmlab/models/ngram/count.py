"""Stage 1, counting: the raw count of every N-gram of the padded corpus.

As KenLM's ``lm/builder/corpus_count.cc`` does, each sentence ``w1 .. wL`` becomes
``<s>^(N-1) w1 .. wL </s>`` and every window of N ids that ends on a real word or
``</s>`` is one N-gram (a sentence of L words gives L + 1 of them). Windows with
``<s>`` after their first slot (``<s> <s> w1 ...``) are kept here: adjusting counts
(stage 2) turns them into the lower-order n-grams that start with ``<s>``, exactly as
KenLM's ``CollapseStream`` does, and drops them from the highest order.

How it is vectorised, and what memory it takes:

- The corpus arrives as *sentence streams*: int32 word ids with ``</s>`` (2) closing
  every sentence. :func:`padded_ngrams` turns a stream into an ``(m, N)`` int32 table
  of windows with a handful of array operations.
- :func:`suffix_order` sorts n-gram rows in KenLM's suffix order (last word first,
  then the one before, ...; ``lm/builder/sort.hh``, ``SuffixOrder``). Rows are packed
  into int64 keys, as many columns per key as fit (``bits`` per id) beside the row's
  position, the rightmost columns first; each further group of columns is keyed by the
  dense rank of the groups already sorted. The packed keys are sorted with ``np.sort``
  (SIMD, several times faster than ``np.argsort``). Equal neighbours after the sort are
  equal n-grams: unique rows and their counts fall out of one ``np.diff``.
- :class:`Counter` counts each chunk of the stream on its own and merges the sorted
  chunk tables (one more sort of the concatenated tables) whenever the pending ones
  hold as many rows as the merged table, or ``max_pending_rows``. Memory is therefore
  bounded by the number of *distinct* N-grams (about twice, during a merge) plus one
  chunk, not by the corpus: WikiText-2's 5-gram peaks at about 360 MiB in all, ten
  copies of it at about 570 MiB. There is no on-disk merge: the distinct N-grams
  (which is the model's size anyway) must fit in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lmlab.models.ngram.vocabulary import BOS, EOS


def id_bits(vocab_size: int) -> int:
    """Bits needed for one word id below ``vocab_size``."""
    return max(1, int(vocab_size - 1).bit_length())


def sort_keys(keys: np.ndarray, key_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """``(order, keys[order])`` for non-negative int64 ``keys`` below ``2**key_bits``; stable.

    When key and position fit in 63 bits together, the position is packed into the low
    bits and the packed values are sorted with ``np.sort``, which is several times faster
    than ``np.argsort`` (NumPy sorts plain int64 with SIMD); otherwise ``argsort``.
    """
    n = len(keys)
    position_bits = max(1, int(n - 1).bit_length())
    if key_bits + position_bits <= 63:
        packed = keys << position_bits
        packed |= np.arange(n, dtype=np.int64)
        packed.sort()  # in place
        order = packed & ((1 << position_bits) - 1)
        packed >>= position_bits
        return order, packed
    order = np.argsort(keys, kind="stable")
    return order, keys[order]


def suffix_order(rows: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """The permutation putting ``rows`` (n, width) in suffix order, and where sorted rows change.

    Returns ``(order, new)``: ``rows[order]`` is sorted by the last column, then the one
    before it, and so on; ``new[i]`` is True where ``rows[order][i]`` differs from the
    row before it (always True at 0). Each pass sorts by (dense rank of the columns
    sorted so far, as many further columns as fit) with :func:`sort_keys`.
    """
    n, width = rows.shape
    order = np.arange(n)
    new = np.ones(n, bool)
    if n == 0 or width == 0:
        return order, new
    budget = 63 - max(1, int(n - 1).bit_length())  # bits left beside the packed position
    rank = None
    rank_bits = 0
    right = width  # columns right of this one are sorted already
    while right > 0:
        take = min(right, max(1, (budget - rank_bits) // bits))
        key = np.zeros(n, np.int64) if rank is None else rank
        for column in range(right - 1, right - take - 1, -1):  # most significant column first
            values = rows[:, column] if rank is None else rows[order, column]
            key = (key << bits) | values.astype(np.int64)
        moved, key = sort_keys(key, rank_bits + take * bits)
        order = moved if rank is None else order[moved]
        new = np.empty(n, bool)
        new[0] = True
        np.not_equal(key[1:], key[:-1], out=new[1:])
        rank = np.cumsum(new, dtype=np.int64) - 1
        rank_bits = int(rank[-1]).bit_length()
        right -= take
    return order, new


@dataclass
class CountTable:
    """Distinct padded N-grams in suffix order with their raw counts.

    ``rows``: ``(M, N)`` int32 word ids; ``counts``: ``(M,)`` int64.
    """

    rows: np.ndarray
    counts: np.ndarray

    def __len__(self) -> int:
        return len(self.counts)

    @property
    def order(self) -> int:
        return self.rows.shape[1]


def sentence_stream(ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated sentence word ids plus their lengths → a stream with ``</s>`` after each."""
    lengths = np.asarray(lengths, np.int64)
    stream = np.full(len(ids) + len(lengths), EOS, np.int32)
    # Word j of sentence s moves right by s (one </s> per earlier sentence).
    shift = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    stream[np.arange(len(ids), dtype=np.int64) + shift] = ids
    return stream


def padded_ngrams(stream: np.ndarray, order: int) -> np.ndarray:
    """Every window of ``order`` ids ending on a token of ``stream``, with ``<s>`` padding.

    ``stream``: int32 ids, each sentence closed by ``</s>``. Returns ``(len(stream),
    order)`` int32: row i is the N-gram ending at token i of the padded sentence
    ``<s>^(order-1) w1 .. wL </s>``.
    """
    stream = np.asarray(stream, np.int32)
    if len(stream) and stream[-1] != EOS:
        raise ValueError("a sentence stream must end with </s>")
    pad = order - 1
    is_end = stream == EOS
    sentence = np.cumsum(is_end) - is_end  # index of the sentence each token is in
    where = np.arange(len(stream), dtype=np.int64) + pad * (sentence + 1)
    padded = np.full(len(stream) + pad * int(is_end.sum()), BOS, np.int32)
    padded[where] = stream
    rows = np.empty((len(stream), order), np.int32)
    for column in range(order):
        rows[:, column] = padded[where - pad + column]  # (m,): the column-th word of each window
    return rows


def count_stream(stream: np.ndarray, order: int, vocab_size: int) -> CountTable:
    """Distinct padded N-grams of one sentence stream with their counts."""
    rows = padded_ngrams(stream, order)
    moved, new = suffix_order(rows, id_bits(vocab_size))
    starts = np.flatnonzero(new)
    counts = np.diff(np.append(starts, len(rows))).astype(np.int64)
    return CountTable(rows[moved[starts]], counts)


def merge(tables: list[CountTable], vocab_size: int) -> CountTable:
    """One table from several: rows summed where they are the same N-gram."""
    tables = [t for t in tables if len(t)]
    if not tables:
        raise ValueError("nothing to merge")
    if len(tables) == 1:
        return tables[0]
    rows = np.concatenate([t.rows for t in tables])
    counts = np.concatenate([t.counts for t in tables])
    moved, new = suffix_order(rows, id_bits(vocab_size))
    starts = np.flatnonzero(new)
    return CountTable(rows[moved[starts]], np.add.reduceat(counts[moved], starts))


class Counter:
    """Counts padded N-grams of sentence streams fed chunk by chunk (see the module notes)."""

    def __init__(self, order: int, max_pending_rows: int = 1 << 20):
        self.order = order
        self.max_pending_rows = max_pending_rows
        self.merged: CountTable | None = None
        self.pending: list[CountTable] = []
        self.tokens = 0  # words and </s>, as lmplz's "Unigram tokens" counts them
        self.sentences = 0

    def add(self, stream: np.ndarray, vocab_size: int) -> None:
        if not len(stream):
            return
        self.tokens += len(stream)
        self.sentences += int(np.count_nonzero(stream == EOS))
        self.pending.append(count_stream(stream, self.order, vocab_size))
        pending = sum(len(t) for t in self.pending)
        if pending >= max(self.max_pending_rows, len(self.merged) if self.merged else 0):
            self._merge(vocab_size)

    def _merge(self, vocab_size: int) -> None:
        tables = ([self.merged] if self.merged is not None else []) + self.pending
        self.merged = merge(tables, vocab_size)
        self.pending = []

    def finish(self, vocab_size: int) -> CountTable:
        """The merged table of everything added."""
        if self.pending:
            self._merge(vocab_size)
        if self.merged is None:
            return CountTable(np.zeros((0, self.order), np.int32), np.zeros(0, np.int64))
        return self.merged
