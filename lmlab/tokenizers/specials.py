"""Special tokens (BERT's and RoBERTa's spellings), word boundaries and sentence ends of a tokenizer.

What a masked LM, fill-mask and the task heads need to know about a tokenizer's vocabulary:
which ids are ``[MASK]``, ``[CLS]``, ``[SEP]`` and ``[PAD]`` (:func:`special_ids`), where words
start (:class:`WordBoundaries`: WordPiece ``##`` pieces, byte-level BPE ``Ġ``, jieba for Chinese)
and which ids end a sentence (:func:`sentence_end_ids`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lmlab.core.errors import ConfigError
from lmlab.tokenizers.segment import segment_words

MASK_TOKENS = ("[MASK]", "<mask>")
CLS_TOKENS = ("[CLS]", "<s>")
SEP_TOKENS = ("[SEP]", "</s>")
PAD_TOKENS = ("[PAD]", "<pad>")
SENTENCE_ENDS = (".", "!", "?", "\u3002", "\uff01", "\uff1f")  # . ! ? and the full-width 。！？


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
                          "tokenizer, or lmlab.tokenizers.wordpiece.train_wordpiece)")
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


def sentence_end_ids(tokenizer) -> np.ndarray:
    """Ids of the tokens after which a sentence-pair row may split: ``. ! ? 。 ！ ？`` (alone, or after a
    byte-level BPE ``Ġ`` or SentencePiece ``▁``) and the end token ``prepare`` writes after each document."""
    ids = [i for i in range(tokenizer.vocab_size)
           if (tokenizer.id_to_token(i) or "").lstrip("\u0120\u2581") in SENTENCE_ENDS]
    return np.array(sorted(set(ids) | {tokenizer.eos_id}), np.int32)
