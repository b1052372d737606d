"""Character- and word-level tokenizers over an explicit vocabulary.

Both keep the vocabulary as a list of strings: special tokens first (``<eos>``,
``<unk>``), then symbols by descending training frequency (ties by text, so the
result is deterministic). Symbols below ``min_freq``, or past ``vocab_size``,
become ``<unk>``.

* character level: one token per Unicode code point, right for Chinese;
  encoding is vectorised (UTF-32 code points looked up with ``searchsorted``).
* word level: whitespace-separated words, or jieba words for Chinese
  (``segmenter="jieba"``); decoding joins with a space or with nothing.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Sequence

import numpy as np

from lmlab.core.errors import ConfigError, DataError
from lmlab.tokenizers.base import FORMAT_KEY, FORMAT_VERSION, Tokenizer
from lmlab.tokenizers.segment import segment_words

EOS = "<eos>"
UNK = "<unk>"
SEGMENTERS = ("whitespace", "jieba")


def select_vocabulary(counts: Counter, specials: list[str], vocab_size: int, min_freq: int) -> list[str]:
    if vocab_size and vocab_size <= len(specials):
        raise ConfigError(
            f"--vocab-size {vocab_size} is too small: the special tokens {', '.join(specials)} alone take {len(specials)}"
        )
    if min_freq < 1:
        raise ConfigError(f"--min-freq must be >= 1, got {min_freq}")
    ranked = sorted((item for item in counts.items() if item[1] >= min_freq and item[0] not in specials),
                    key=lambda item: (-item[1], item[0]))
    symbols = [symbol for symbol, _ in ranked]
    if vocab_size:
        symbols = symbols[: vocab_size - len(specials)]
    return specials + symbols


class VocabularyTokenizer(Tokenizer):
    """Shared parts of the char and word tokenizers."""

    def __init__(self, vocab: Sequence[str], eos_token: str = EOS, unk_token: str = UNK):
        vocab = list(vocab)
        if len(set(vocab)) != len(vocab):
            raise DataError("tokenizer vocabulary has duplicate entries")
        if any(not isinstance(v, str) or not v for v in vocab):
            raise DataError("tokenizer vocabulary entries must be non-empty strings")
        for token in (eos_token, unk_token):
            if token not in vocab:
                raise DataError(f"tokenizer vocabulary lacks its special token {token!r}")
        self.vocab = vocab
        self.index = {token: i for i, token in enumerate(vocab)}
        self._eos, self._unk = eos_token, unk_token

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def special_tokens(self) -> dict[str, int]:
        return {self._eos: self.index[self._eos], self._unk: self.index[self._unk]}

    @property
    def eos_token(self) -> str:
        return self._eos

    @property
    def unk_id(self) -> int:
        return self.index[self._unk]

    def id_to_token(self, index: int) -> str:
        return self.vocab[index]

    def _symbols(self, ids: Sequence[int], skip_special: bool) -> list[str]:
        specials = set(self.special_tokens.values())
        return [self.vocab[i] for i in ids if not (skip_special and i in specials)]

    def to_dict(self) -> dict:
        return {FORMAT_KEY: FORMAT_VERSION, "kind": self.kind, "eos_token": self._eos,
                "unk_token": self._unk, "vocab": self.vocab}


class CharTokenizer(VocabularyTokenizer):
    kind = "char"

    def __init__(self, vocab: Sequence[str], eos_token: str = EOS, unk_token: str = UNK):
        super().__init__(vocab, eos_token, unk_token)
        specials = {eos_token, unk_token}
        if any(len(t) != 1 for t in self.vocab if t not in specials):
            raise DataError("character tokenizer vocabulary holds an entry longer than one character")
        chars = [(ord(t), i) for i, t in enumerate(self.vocab) if t not in specials]
        chars.sort()
        self._codepoints = np.array([c for c, _ in chars], dtype=np.uint32)
        self._ids = np.array([i for _, i in chars], dtype=np.int64)

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 0, min_freq: int = 1) -> "CharTokenizer":
        counts: Counter = Counter()
        for text in texts:
            counts.update(text)
        return cls(select_vocabulary(counts, [EOS, UNK], vocab_size, min_freq))

    def encode_array(self, text: str) -> np.ndarray:
        codepoints = np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype="<u4")
        if not len(self._codepoints):
            return np.full(len(codepoints), self.unk_id, dtype=np.int64)
        position = np.minimum(np.searchsorted(self._codepoints, codepoints), len(self._codepoints) - 1)
        found = self._codepoints[position] == codepoints
        return np.where(found, self._ids[position], self.unk_id)

    def encode(self, text: str) -> list[int]:
        return self.encode_array(text).tolist()

    def decode(self, ids: Sequence[int], skip_special: bool = False) -> str:
        return "".join(self._symbols(ids, skip_special))


class WordTokenizer(VocabularyTokenizer):
    kind = "word"

    def __init__(self, vocab: Sequence[str], segmenter: str = "whitespace", eos_token: str = EOS, unk_token: str = UNK):
        if segmenter not in SEGMENTERS:
            raise ConfigError(f"unknown segmenter {segmenter!r}: expected {' or '.join(SEGMENTERS)}")
        super().__init__(vocab, eos_token, unk_token)
        self.segmenter = segmenter

    def words(self, text: str) -> list[str]:
        if self.segmenter == "jieba":
            return segment_words(text)
        return text.split()

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 0, min_freq: int = 1,
              segmenter: str = "whitespace") -> "WordTokenizer":
        probe = cls([EOS, UNK], segmenter)  # validates the segmenter before the long count
        counts: Counter = Counter()
        for text in texts:
            counts.update(probe.words(text))
        return cls(select_vocabulary(counts, [EOS, UNK], vocab_size, min_freq), segmenter)

    def encode(self, text: str) -> list[int]:
        index, unk = self.index, self.unk_id
        return [index.get(word, unk) for word in self.words(text)]

    def decode(self, ids: Sequence[int], skip_special: bool = False) -> str:
        joiner = "" if self.segmenter == "jieba" else " "
        return joiner.join(self._symbols(ids, skip_special))

    def to_dict(self) -> dict:
        return {**super().to_dict(), "segmenter": self.segmenter}
