"""Masked-language-model batches: BERT's 15% with 80/10/10, drawn anew for every batch.

* Selection (Devlin et al. 2019, §3.1): each token that is not a special token
  is selected with probability ``mask_prob``; of the selected, 80% become the
  mask token, 10% a random token and 10% stay. The loss counts selected tokens only.
* Dynamic masking (RoBERTa, Liu et al. 2019, §4.1): the masks are drawn for
  every batch, not fixed at preparation; batch ``s`` is a pure function of
  ``(seed, s)`` (windows and masks alike), so exact resume still holds.
* Full-sentence packing (RoBERTa's FULL-SENTENCES): each row is a window of
  the token stream, across document boundaries (the end token ``prepare``
  writes between documents separates them), wrapped as ``[CLS] ... [SEP]``
  when the tokenizer has those tokens.
* Sentence-pair packing (``packing="pairs"``; BERT, Devlin et al. 2019, §3.1
  and appendix A.2): each row is ``[CLS] A [SEP] B [SEP]`` with token types 0
  for ``[CLS] A [SEP]`` and 1 for ``B [SEP]``, so the segment embeddings a
  fine-tuning task uses for a question and its passage are trained too. A and
  B are consecutive stretches of the stream, ``block_size - 3`` tokens in
  all, split after a sentence end (:func:`sentence_end_ids`) drawn among
  those inside the window and away from its edges, or at a random point when
  it has none (see :func:`pair_rows`). B is always the text that follows A:
  there is no next-sentence prediction objective, which RoBERTa (Liu et al.
  2019, §4.2) found to match or improve downstream results when removed.
* Whole-word masking (Google's BERT ``--do_whole_word_mask``; Cui et al. 2019 for
  Chinese): a word is selected or not as a unit. Word pieces of one word
  (WordPiece ``##`` continuations; byte-level BPE pieces without a leading ``Ġ``)
  belong together, and runs of single Chinese characters are grouped into
  words by jieba (:func:`lmlab.tokenizers.segment.segment_words`).

* A cap per row (BERT's ``max_predictions_per_seq``): at most
  :func:`max_predictions` tokens of a row are selected (the rare extras are left
  as they were), so the training step can compute the output layer at those
  positions only — over a vocabulary of thousands, most of a small encoder's work.

The tokenizer must have a mask token (``[MASK]`` or ``<mask>``); see
:func:`special_ids`.
"""

from __future__ import annotations

import math

import numpy as np

from lmlab.data.windows import RandomWindows, SequentialWindows
from lmlab.core.errors import ConfigError
from lmlab.tokenizers.specials import (SpecialIds, WordBoundaries,
                                      sentence_end_ids, special_ids)

MASK_SHARE, RANDOM_SHARE = 0.8, 0.1  # of the selected tokens; the rest stay as they are
PAIR_SEED_TAG = 0x50414952  # "PAIR": the split points' draws, apart from the windows' and the masks'

def pair_rows(windows: np.ndarray, rng: np.random.Generator, special: SpecialIds, ends: np.ndarray):
    """``(rows, types)``: each window of ``n + 1`` stream tokens as ``[CLS] A [SEP] B [SEP]`` (``n + 3`` tokens).

    A and B hold ``n`` tokens in all, each at least ``margin = max(1, n // 8)``.
    The split follows a token of ``ends`` chosen uniformly among those that leave
    both that long (a uniform point when a row has none). The window has one
    token more than A and B take: when the chosen end is ``[SEP]`` itself (the
    end token of a BERT or RoBERTa tokenizer, written between documents), it
    becomes the middle ``[SEP]`` instead of being doubled (and an end right
    before a ``[SEP]`` leaves the split to it); otherwise the window's last
    token is left out. Other end tokens stay where they are, as in
    full-sentence packing. ``types`` is 0 up to the middle ``[SEP]`` and 1
    after it.
    """
    windows = np.asarray(windows, np.int32)
    count, n = windows.shape[0], windows.shape[1] - 1
    margin = max(1, n // 8)
    columns = np.arange(n + 1)[None, :]
    is_sep = windows == special.sep
    a_length = np.where(is_sep, columns, columns + 1)  # A's length when the split follows this column
    before_sep = np.zeros_like(is_sep)
    before_sep[:, :-1] = is_sep[:, 1:]  # ". [SEP]": the split belongs to the [SEP], never [SEP] [SEP]
    candidate = np.isin(windows, ends) & (is_sep | ~before_sep) & (a_length >= margin) & (a_length <= n - margin)
    draw = np.where(candidate, rng.random(windows.shape), -1.0)  # the largest draw: a uniform candidate
    at = draw.argmax(axis=1)
    found = candidate[np.arange(count), at]
    fallback = rng.integers(margin, n - margin + 1, count)
    a = np.where(found, a_length[np.arange(count), at], fallback)[:, None]  # (N, 1)
    drop = np.where(found & is_sep[np.arange(count), at], at, n)[:, None]  # the [SEP] split at, else the last
    kept_columns = np.arange(n)[None, :]
    kept = np.take_along_axis(windows, kept_columns + (kept_columns >= drop), axis=1)  # (N, n)
    columns = np.arange(n + 3)[None, :]
    source = np.clip(np.where(columns <= a, columns - 1, columns - 2), 0, n - 1)  # A at 1..a, B at a+2..n+1
    rows = np.take_along_axis(kept, source, axis=1)  # (N, n + 3)
    rows = np.where((columns == 0), special.cls, rows)
    rows = np.where((columns == a + 1) | (columns == n + 2), special.sep, rows).astype(np.int32)
    return rows, (columns >= a + 2).astype(np.int32)


def max_predictions(block_size: int, mask_prob: float) -> int:
    """Most tokens selected in one row: twice the expected count plus a margin, so the cap binds rarely
    (for 64 tokens at 15%, 24 of 64: a row draws more about once in 10^4 rows, more often with whole words)."""
    return min(block_size, math.ceil(2 * mask_prob * block_size) + 4)


def mask_tokens(tokens: np.ndarray, rng: np.random.Generator, special: SpecialIds, vocab_size: int,
                mask_prob: float, boundaries: WordBoundaries | None = None, cap: int | None = None):
    """``(inputs, targets, weights)``: ``tokens`` with the selection masked, the originals, 1.0 where selected.

    ``cap``: at most this many selected tokens per row (the first ones in the row).
    """
    tokens = np.asarray(tokens, np.int32)
    candidates = ~np.isin(tokens, special.all)
    draw = rng.random(tokens.shape)
    columns = np.arange(tokens.shape[1])
    starts = np.ones(tokens.shape, bool)
    if boundaries is not None:  # every token of a word takes the draw of the word's first token
        starts = boundaries.starts(tokens, candidates)
        first = np.maximum.accumulate(np.where(starts, columns, 0), axis=1)
        draw = np.take_along_axis(draw, first, axis=1)
    selected = candidates & (draw < mask_prob)
    if cap is not None:  # whole words only: a word is kept if the count at its last token is within the cap
        ends_word = np.concatenate([starts[:, 1:], np.ones((len(tokens), 1), bool)], axis=1)
        last = np.minimum.accumulate(np.where(ends_word, columns, columns[-1])[:, ::-1], axis=1)[:, ::-1]
        selected &= np.take_along_axis(np.cumsum(selected, axis=1), last, axis=1) <= cap
    share = rng.random(tokens.shape)
    random_ids = rng.integers(0, vocab_size, tokens.shape, dtype=np.int32)
    inputs = tokens.copy()
    inputs[selected & (share < MASK_SHARE)] = special.mask
    swap = selected & (share >= MASK_SHARE) & (share < MASK_SHARE + RANDOM_SHARE)
    inputs[swap] = random_ids[swap]
    return inputs, tokens, selected.astype(np.float32)


class MaskedWindows:
    """Training (or validation) batches for a masked LM from a token split.

    ``batch(step)`` returns ``(inputs, targets, weights)``, each ``(batch_size,
    block_size)``, and with ``packing="pairs"`` a fourth array, the token types;
    a pure function of ``(seed, step)``.
    """

    def __init__(self, split, config, tokenizer, batch_size: int, seed: int = 0):
        self.special = special_ids(tokenizer)
        self.config, self.seed, self.vocab_size = config, seed, tokenizer.vocab_size
        self.pairs = config.packing == "pairs"
        if self.pairs:
            check_pairs(self.special, tokenizer, config.block_size)
            self.ends = sentence_end_ids(tokenizer)
        self.inner = config.block_size - (3 if self.pairs else 2 if self.special.wraps else 0)
        if self.inner < 2:
            raise ConfigError(f"block_size={config.block_size} leaves no room for text between [CLS] and [SEP]")
        # Windows of `inner` stream tokens; a pair takes one more (pair_rows leaves one out).
        self.windows = RandomWindows(split, self.inner if self.pairs else self.inner - 1, batch_size, seed)
        self.boundaries = WordBoundaries(tokenizer) if config.whole_word else None
        self.max_predictions = max_predictions(config.block_size, config.mask_prob)

    def rows(self, step: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The unmasked rows of batch ``step`` and their token types (``None`` for full-sentence rows)."""
        x, y = self.windows.batch(step)
        window = np.concatenate([x, y[:, -1:]], axis=1)
        if not self.pairs:
            return wrap(window, self.special), None
        return pair_rows(window, np.random.default_rng((self.seed, step, PAIR_SEED_TAG)), self.special, self.ends)

    def batch(self, step: int):
        tokens, types = self.rows(step)
        rng = np.random.default_rng((self.seed, step, 0x4D4C4D))  # "MLM": apart from the windows' draws
        masked = mask_tokens(tokens, rng, self.special, self.vocab_size, self.config.mask_prob,
                             self.boundaries, self.max_predictions)
        return masked if types is None else (*masked, types)

    def state(self) -> dict:
        return self.windows.state()

    def restore(self, state: dict) -> None:
        self.windows.restore(state)


def wrap(tokens: np.ndarray, special: SpecialIds) -> np.ndarray:
    """``[CLS] row [SEP]`` for each row, when the tokenizer has both."""
    if not special.wraps:
        return np.asarray(tokens, np.int32)
    rows = tokens.shape[0]
    return np.concatenate([np.full((rows, 1), special.cls, np.int32), np.asarray(tokens, np.int32),
                           np.full((rows, 1), special.sep, np.int32)], axis=1)


def check_pairs(special: SpecialIds, tokenizer, block_size: int) -> None:
    """A clear error where sentence-pair rows cannot be built."""
    if not special.wraps:
        raise ConfigError(f"packing='pairs' builds [CLS] A [SEP] B [SEP] rows, which needs a tokenizer with "
                          f"[CLS] and [SEP] (or <s> and </s>); this {tokenizer.kind} tokenizer's special tokens are "
                          f"{', '.join(sorted(tokenizer.special_tokens))}. Use packing='full' or a BERT or RoBERTa "
                          "tokenizer.json")
    if block_size < 5:
        raise ConfigError(f"packing='pairs' needs block_size >= 5 ([CLS], [SEP], [SEP] and a token in each "
                          f"segment): block_size={block_size}")


def sequential_pairs(split, block_size: int, special: SpecialIds, ends: np.ndarray,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, types)``: the text of ``split`` in order, as sentence-pair rows built as in training.

    Consecutive windows of ``block_size - 2`` tokens, each split by
    :func:`pair_rows` with a generator seeded by ``seed`` (one token a row, the
    dropped [SEP] or last token, is not in any row). A short last window is
    dropped, as it cannot hold the same layout.
    """
    n = block_size - 2
    tokens = SequentialWindows(split, 1).tokens
    full = len(tokens) // n
    windows = np.asarray(tokens[: full * n], np.int32).reshape(full, n)
    return pair_rows(windows, np.random.default_rng((seed, PAIR_SEED_TAG)), special, ends)


def sequential_rows(split, block_size: int, special: SpecialIds) -> np.ndarray:
    """Every token of ``split`` once, in non-overlapping rows wrapped as the training rows are.

    The last row is cut short and padded with the padding id (or dropped if the
    tokenizer has none), so held-out scores cover the text in order.
    """
    inner = block_size - (2 if special.wraps else 0)
    tokens = SequentialWindows(split, 1).tokens
    full = len(tokens) // inner
    rows = [np.asarray(tokens[: full * inner], np.int32).reshape(full, inner)]
    rest = np.asarray(tokens[full * inner:], np.int32)
    if len(rest) and special.pad is not None:
        rows.append(np.concatenate([rest, np.full(inner - len(rest), special.pad, np.int32)])[None, :])
    return wrap(np.concatenate(rows), special)
