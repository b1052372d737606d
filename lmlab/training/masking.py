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
* Whole-word masking (Google's BERT ``--do_whole_word_mask``; Cui et al. 2019 for
  Chinese): a word is selected or not as a unit. Word pieces of one word
  (WordPiece ``##`` continuations; byte-level BPE pieces without a leading ``Ġ``)
  belong together, and runs of single Chinese characters are grouped into
  words by jieba (:func:`lmlab.data.segment.segment_words`).

* A cap per row (BERT's ``max_predictions_per_seq``): at most
  :func:`max_predictions` tokens of a row are selected (the rare extras are left
  as they were), so the training step can compute the output layer at those
  positions only — over a vocabulary of thousands, most of a small encoder's work.

The tokenizer must have a mask token (``[MASK]`` or ``<mask>``); see
:func:`special_ids`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lmlab.data.loader import RandomWindows, SequentialWindows
from lmlab.errors import ConfigError

MASK_TOKENS = ("[MASK]", "<mask>")
CLS_TOKENS = ("[CLS]", "<s>")
SEP_TOKENS = ("[SEP]", "</s>")
PAD_TOKENS = ("[PAD]", "<pad>")
MASK_SHARE, RANDOM_SHARE = 0.8, 0.1  # of the selected tokens; the rest stay as they are


@dataclass(frozen=True)
class SpecialIds:
    mask: int
    cls: int | None
    sep: int | None
    pad: int | None
    all: tuple[int, ...]  # never selected for masking
    mask_token: str

    @property
    def wraps(self) -> bool:
        return self.cls is not None and self.sep is not None


def _first(specials: dict, names) -> tuple[str | None, int | None]:
    for name in names:
        if name in specials:
            return name, specials[name]
    return None, None


def special_ids(tokenizer) -> SpecialIds:
    """The mask, [CLS], [SEP] and padding ids of ``tokenizer``; a clear error without a mask token."""
    specials = tokenizer.special_tokens
    mask_token, mask = _first(specials, MASK_TOKENS)
    if mask is None:
        raise ConfigError(f"masked-LM training needs a tokenizer with a mask token ({' or '.join(MASK_TOKENS)}); "
                          f"this {tokenizer.kind} tokenizer's special tokens are {', '.join(sorted(specials))}. "
                          "Prepare the data with --tokenizer FILE, a tokenizer.json that has one (a BERT or RoBERTa "
                          "tokenizer, or lmlab.mlm_tokenizer.train_wordpiece)")
    cls, sep, pad = (_first(specials, names)[1] for names in (CLS_TOKENS, SEP_TOKENS, PAD_TOKENS))
    return SpecialIds(mask, cls, sep, pad, tuple(sorted(set(specials.values()))), mask_token)


def _is_cjk(text: str) -> bool:
    return len(text) == 1 and ("\u4e00" <= text <= "\u9fff" or "\u3400" <= text <= "\u4dbf"
                               or "\uf900" <= text <= "\ufaff")


class WordBoundaries:
    """Where words start in a row of token ids, for whole-word masking."""

    def __init__(self, tokenizer):
        texts = [tokenizer.id_to_token(i) or "" for i in range(tokenizer.vocab_size)]
        self.texts = texts
        if any(t.startswith("##") for t in texts):  # WordPiece
            continues = [t.startswith("##") for t in texts]
        elif any(t.startswith("\u0120") for t in texts):  # byte-level BPE: "Ġ" marks a leading space
            continues = [not t.startswith("\u0120") and t[:1].isalnum() for t in texts]
        else:  # characters or words: every token is a word (Chinese characters are grouped below)
            continues = [False] * len(texts)
        self.continues = np.array(continues, bool)
        self.cjk = np.array([_is_cjk(t) for t in texts], bool)

    def starts(self, tokens: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Boolean like ``tokens``: True where a word starts (special tokens are words of their own)."""
        starts = ~self.continues[tokens] | ~candidates
        starts[:, 1:] |= ~candidates[:, :-1]
        cjk = self.cjk[tokens] & candidates
        if cjk.any():
            self._group_chinese(tokens, cjk, starts)
        return starts

    def _group_chinese(self, tokens, cjk, starts):
        from lmlab.data.segment import segment_words

        for row in range(tokens.shape[0]):
            column, width = 0, tokens.shape[1]
            while column < width:
                if not cjk[row, column]:
                    column += 1
                    continue
                end = column
                while end < width and cjk[row, end]:
                    end += 1
                text = "".join(self.texts[i] for i in tokens[row, column:end])
                position = column
                for word in segment_words(text):  # one token per character, so lengths line up
                    starts[row, position + 1:position + len(word)] = False
                    position += len(word)
                column = end


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
    block_size)``; a pure function of ``(seed, step)``.
    """

    def __init__(self, split, config, tokenizer, batch_size: int, seed: int = 0):
        self.special = special_ids(tokenizer)
        self.config, self.seed, self.vocab_size = config, seed, tokenizer.vocab_size
        self.inner = config.block_size - (2 if self.special.wraps else 0)
        if self.inner < 2:
            raise ConfigError(f"block_size={config.block_size} leaves no room for text between [CLS] and [SEP]")
        self.windows = RandomWindows(split, self.inner - 1, batch_size, seed)  # windows of `inner` tokens
        self.boundaries = WordBoundaries(tokenizer) if config.whole_word else None
        self.max_predictions = max_predictions(config.block_size, config.mask_prob)

    def tokens(self, step: int) -> np.ndarray:
        x, y = self.windows.batch(step)
        return wrap(np.concatenate([x, y[:, -1:]], axis=1), self.special)

    def batch(self, step: int):
        rng = np.random.default_rng((self.seed, step, 0x4D4C4D))  # "MLM": apart from the windows' draws
        return mask_tokens(self.tokens(step), rng, self.special, self.vocab_size, self.config.mask_prob,
                           self.boundaries, self.max_predictions)

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
