"""Words ↔ ids, numbered as KenLM's ``lmplz`` numbers them.

``<unk>`` = 0, ``<s>`` = 1, ``</s>`` = 2, then every other word in the order of its
first appearance in the training text (KenLM ``lm/builder/corpus_count.cc``,
``VocabHandout``: it looks up the three specials first, then hands out ids as words
arrive). Keeping KenLM's numbering makes our suffix-sorted tables, and so our ARPA
files, list n-grams in the same order as ``lmplz``'s.

Encoding a whole chunk of tokens is one C-level pass (``np.fromiter`` over
``dict.__getitem__``); new words get the next id through a ``defaultdict`` whose
factory is its own ``__len__``, so no Python loop runs per token.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Iterable, Sequence

import numpy as np

from lmlab.core.errors import DataError

UNK, BOS, EOS = 0, 1, 2
SPECIALS = ("<unk>", "<s>", "</s>")


class Vocabulary:
    """An append-only word list whose first three entries are ``<unk>``, ``<s>``, ``</s>``."""

    def __init__(self, words: Iterable[str] = SPECIALS):
        index: defaultdict = defaultdict()
        for position, word in enumerate(words):
            if not isinstance(word, str):
                raise DataError(f"vocabulary entry {position} is {type(word).__name__}, not a string")
            if index.setdefault(word, position) != position:
                raise DataError(f"vocabulary word {word!r} appears twice (entries {index[word]} and {position})")
        if tuple(itertools.islice(index, 3)) != SPECIALS:
            raise DataError(f"a vocabulary must start with {', '.join(SPECIALS)}")
        index.default_factory = index.__len__  # a missing word gets the next id
        self._index = index
        self._words = list(index)

    def __len__(self) -> int:
        return len(self._words)

    def __contains__(self, word: str) -> bool:
        return word in self._index

    @property
    def words(self) -> list[str]:
        """Every word, indexed by id (a copy)."""
        return list(self._words)

    def word(self, ident: int) -> str:
        return self._words[ident]

    def id(self, word: str) -> int:
        """The id of ``word``, or ``UNK`` for a word not in the vocabulary."""
        return self._index.get(word, UNK)

    def lookup(self, words: Sequence[str]) -> np.ndarray:
        """int32 ids of ``words``; unknown words map to ``UNK`` (0)."""
        return np.fromiter(map(self._index.get, words, itertools.repeat(UNK)), np.int32, len(words))

    def add(self, words: Sequence[str]) -> np.ndarray:
        """int32 ids of ``words``, giving each new word the next id in order of appearance."""
        before = len(self._index)
        ids = np.fromiter(map(self._index.__getitem__, words), np.int32, len(words))
        if len(self._index) > before:
            self._words.extend(itertools.islice(self._index, before, None))
        return ids


class OutsideIds:
    """Maps token ids of an outside vocabulary (a tokenizer's word list) to ours.

    A word joins our vocabulary the first time one of its ids occurs, so ids follow
    first appearance in the token stream exactly as they would for the same text.
    Vectorised per chunk: ``np.unique`` finds the ids not seen before.
    """

    def __init__(self, vocabulary: Vocabulary, words: Sequence[str]):
        self.vocabulary = vocabulary
        self.words = list(words)
        self.table = np.full(len(self.words), -1, np.int64)  # outside id -> our id, -1 until seen

    def __call__(self, ids) -> np.ndarray:
        ids = np.asarray(ids)
        if ids.dtype.kind not in "iu":
            raise DataError(f"token ids must be integers, not {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= len(self.words)):
            bad = ids[(ids < 0) | (ids >= len(self.words))][0]
            raise DataError(f"token id {int(bad)} is outside the vocabulary of {len(self.words):,} words")
        mapped = self.table[ids]
        unseen = mapped < 0
        if unseen.any():
            fresh, first = np.unique(ids[unseen], return_index=True)
            fresh = fresh[np.argsort(first)]  # in order of first appearance
            self.table[fresh] = self.vocabulary.add([self.words[i] for i in fresh])
            mapped = self.table[ids]
        return mapped.astype(np.int32)
