"""An n-gram run: the counted model over a tokenizer's ids, scoring splits and sampling like the other families.

Sentences are the runs of tokens between end tokens of a prepared split (so
prepare with ``--unit sentence`` or ``paragraph`` for an n-gram). Each token id
is a word of the n-gram's vocabulary, spelled as the tokenizer spells it,
except the tokenizer's unknown token, which becomes the ordinary word
``<oov>`` (as in the KenLM reference runs): KenLM reserves ``<unk>`` for words
the model never saw. The end token plays ``</s>``.

The scores are comparable with the neural families': every token of the
split and every end token is predicted once (the n-gram also predicts the
split's first token, which the windows of a neural model take as context).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from lmlab.data.shards import TokenSplit
from lmlab.core.errors import DataError
from lmlab.models.ngram.model import NGramLM
from lmlab.models.ngram.vocabulary import EOS, UNK
from lmlab.tokenizers import Tokenizer, load_tokenizer

MODEL_FOLDER = "model"
RESERVED = {"<s>": "<s>_", "</s>": "</s>_", "<unk>": "<oov>"}


def symbols_of(tokenizer: Tokenizer) -> list[str]:
    """The n-gram's spelling of each token id (KenLM's reserved words renamed)."""
    words = [tokenizer.id_to_token(i) for i in range(tokenizer.vocab_size)]
    return ["<oov>" if i == tokenizer.unk_id else RESERVED.get(w, w) for i, w in enumerate(words)]


def sentences_of(split: TokenSplit) -> Iterator[np.ndarray]:
    """Token-id arrays between end tokens (a trailing piece without one counts as a sentence)."""
    for array in split.arrays:
        ends = np.flatnonzero(np.asarray(array) == split.eos_id)
        start = 0
        for end in ends:
            yield np.asarray(array[start:end], dtype=np.int64)
            start = end + 1
        if start < len(array):
            yield np.asarray(array[start:], dtype=np.int64)


class TokenNGram:
    """An :class:`NGramLM` over a tokenizer's ids, with the calls the other families answer."""

    family = "ngram"

    def __init__(self, model, tokenizer: Tokenizer):
        self.model, self.tokenizer = model, tokenizer
        self.symbols = symbols_of(tokenizer)
        self._to_ngram = model.vocabulary.lookup(self.symbols).astype(np.int32)  # tokenizer id -> n-gram id
        self._index = {w: i for i, w in enumerate(self.symbols)}
        # For next-token distributions: the end token is </s>; an id the model has no word for is <unk>.
        self._to_word = self._to_ngram.copy()
        self._to_word[tokenizer.eos_id] = EOS
        self._is_word = self._to_word != UNK
        self._is_word[tokenizer.eos_id] = True

    def next_log_probs(self, history: Sequence[int]) -> np.ndarray:
        """(V,) float32 natural-log p(token | history) over the tokenizer's ids, for decoding with
        :class:`~lmlab.generate.batching.CountSlots`.

        ``history`` is token ids from the document start (an end token); the sentence in progress is what
        follows its last end token, and the end token itself is ``</s>``. Ids that are not words of the model
        (special tokens, words it never counted, which it would score as ``<unk>``) get ``-inf``: they are
        never drawn, as :meth:`NGramLM.generate` never draws ``<unk>``; :meth:`log_prob` scores them."""
        words = self._sentence_words(history)
        probs = self.model.next_word_probabilities(words)[self._to_word]
        with np.errstate(divide="ignore"):
            log_probs = np.log(probs).astype(np.float32)
        log_probs[~self._is_word] = -np.inf
        return log_probs

    def log_prob(self, history: Sequence[int], token: int) -> float:
        """Natural-log p(``token`` | ``history``) exactly as :meth:`sentence_log10` scores it (``<unk>``'s
        probability for an id that is not a word of the model)."""
        words = self._sentence_words(history)
        return math.log(10) * self.model.word_log10(words, int(self._to_word[int(token)]))

    def _sentence_words(self, history: Sequence[int]) -> list[int]:
        ids = [int(i) for i in history]
        ends = [n for n, i in enumerate(ids) if i == self.tokenizer.eos_id]
        return [int(self._to_ngram[i]) for i in ids[ends[-1] + 1 if ends else 0:]]

    def num_parameters(self) -> int:
        return int(sum(self.model.counts) * 2)  # a probability and a backoff per n-gram

    def score_split(self, split: TokenSplit, on_tokens: Callable[[int], None] | None = None) -> tuple[float, int]:
        """Total nats and the number of predicted tokens (words and end tokens); ``on_tokens(n)`` after each batch."""
        total, count = 0.0, 0
        batch: list[np.ndarray] = []
        size = 0

        def flush():
            nonlocal total, count
            lengths = np.array([len(s) for s in batch], dtype=np.int64)
            ids = self._to_ngram[np.concatenate(batch)] if len(batch) else np.zeros(0, np.int32)
            scores = self.model.score_ids(ids, lengths)
            total += -math.log(10) * float(scores.log10.astype(np.float64).sum())
            count += len(scores.log10)
            if on_tokens:
                on_tokens(len(scores.log10))

        for sentence in sentences_of(split):
            batch.append(sentence)
            size += len(sentence) + 1
            if size >= 1 << 20:
                flush()
                batch, size = [], 0
        if batch:
            flush()
        return total, count

    def sentence_log10(self, sentences: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Per-token log10 probabilities of each sentence of token ids: its words after ``<s>``, then ``</s>``
        (the end token), as :meth:`score_split` scores a split's sentences."""
        lengths = np.array([len(s) for s in sentences], dtype=np.int64)
        ids = self._to_ngram[np.concatenate(sentences)] if len(sentences) else np.zeros(0, np.int32)
        scores = self.model.score_ids(ids, lengths)
        return np.split(scores.log10.astype(np.float64), np.cumsum(lengths + 1)[:-1])

    def generate_ids(self, prompts: Sequence[Sequence[int]], max_new_tokens: int, sampler=None, seed: int = 0,
                     eos_id: int | None = None, on_token: Callable[[int, int], None] | None = None):
        """Sample from the model's distribution (temperature and top-k/top-p do not apply to counts)."""
        outputs = []
        for row, prompt in enumerate(prompts):
            context = [self.symbols[i] for i in prompt if i != self.tokenizer.eos_id]
            new: list[int] = []
            while len(new) < max_new_tokens:
                words = self.model.generate(context + [self.symbols[i] for i in new], max_new_tokens - len(new),
                                            seed=seed + row * 1_000_003 + len(new))
                ids = [self._index[w] for w in words]
                for token in ids:
                    new.append(token)
                    if on_token:
                        on_token(row, token)
                if len(new) >= max_new_tokens:
                    break
                new.append(self.tokenizer.eos_id)  # the sentence ended
                if on_token:
                    on_token(row, self.tokenizer.eos_id)
                if eos_id is not None:
                    break
            outputs.append(new[:max_new_tokens])
        return outputs


def load_token_ngram(run_dir) -> TokenNGram:
    run_dir = Path(run_dir)
    if not (run_dir / MODEL_FOLDER).exists():
        raise DataError(f"{run_dir}: the n-gram model folder is missing")
    return TokenNGram(NGramLM.load(run_dir / MODEL_FOLDER), load_tokenizer(run_dir / "tokenizer.json"))
