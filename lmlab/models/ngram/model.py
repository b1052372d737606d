"""The n-gram language model: config, training pipeline, scoring, generation, files.

:class:`NGramLM` runs KenLM's ``lmplz`` pipeline stage by stage (count →
adjust_counts → initial_probabilities → interpolate; see each module) and answers
queries the way KenLM's ``query`` does (:mod:`query`).

Training input, two forms (:meth:`NGramLM.train`):

- ``sentences``: an iterable of lists of words (strings), one list per sentence,
  e.g. ``read_sentences("train.txt")`` or ``(line.split() for line in f)``;
- token shards: an iterable of 1-D integer arrays, one per sentence, plus
  ``vocabulary=``, the word list those ids index (a tokenizer's vocabulary). Ids map
  to words, so the model is the same as training on the words themselves.

Either way words are numbered in order of first appearance, the stream is cut into
chunks of about ``config.chunk_tokens`` tokens, and each chunk is counted with
array operations (:mod:`count`). The reserved words ``<s>``, ``</s>`` and ``<unk>``
may not appear in the training text (``lmplz`` refuses them too).

On disk (:meth:`NGramLM.save`), a folder::

    config.json          family, config, vocabulary size, counts, statistics (discounts, ...)
    vocabulary.json      the words, indexed by id (<unk>, <s>, </s> first)
    model.safetensors    per order k: keys.k (int64), log10_prob.k, log10_backoff.k (float32)
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from lmlab.core.errors import ConfigError, DataError
from lmlab.core.io import atomic_open, read_json, write_json
from lmlab.core.records import Record, is_int, is_real
from lmlab.models.ngram import arpa, query
from lmlab.models.ngram.count import Counter, sentence_stream
from lmlab.models.ngram.pipeline import estimate
from lmlab.models.ngram.vocabulary import BOS, EOS, SPECIALS, UNK, OutsideIds, Vocabulary

FAMILY = "ngram"
MAX_ORDER = 6
FORMAT_VERSION = 1
CONFIG_FILE, VOCABULARY_FILE, ARRAYS_FILE = "config.json", "vocabulary.json", "model.safetensors"


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class NGramConfig(Record):
    """How to estimate an interpolated modified Kneser-Ney model (``lmplz`` options).

    - ``order``: n-gram order, 1 to 6 (``lmplz -o``);
    - ``prune``: raw-count thresholds per order, n-grams counted at most this often are
      dropped (``lmplz --prune``): the first must be 0 (no unigram pruning), they may
      not decrease, and missing orders repeat the last, e.g. ``(0, 0, 1)``;
    - ``discount_fallback``: (D1, D2, D3+) for orders whose discounts cannot be
      estimated from too little data (``lmplz --discount_fallback``, which defaults to
      ``(0.5, 1.0, 1.5)``); None (the default, as ``lmplz``) makes that an error;
    - ``chunk_tokens``: tokens counted at a time (memory, not results).
    """

    record_name = "n-gram config"

    order: int = 5
    prune: tuple[int, ...] = ()
    family: str = FAMILY
    discount_fallback: tuple[float, float, float] | None = None
    chunk_tokens: int = 1 << 22

    def __post_init__(self):
        if self.family != FAMILY:
            raise ConfigError(f"family: expected {FAMILY!r}, got {self.family!r}")
        if not is_int(self.order) or not 1 <= self.order <= MAX_ORDER:
            raise ConfigError(f"order: must be an integer from 1 to {MAX_ORDER}, got {self.order!r}")
        if isinstance(self.prune, (str, bytes)) or not isinstance(self.prune, Iterable):
            raise ConfigError(f"prune: must be a list of counts, one per order, got {self.prune!r}")
        prune = tuple(self.prune)
        if not all(is_int(p) and p >= 0 for p in prune):
            raise ConfigError(f"prune: thresholds must be non-negative integers, got {list(prune)!r}")
        if len(prune) > self.order:
            raise ConfigError(f"prune: {len(prune)} thresholds for an order-{self.order} model")
        if prune and prune[0] != 0:
            raise ConfigError(f"prune: the unigram threshold must be 0 (unigram pruning is not supported), "
                              f"got {list(prune)!r}")
        if any(b < a for a, b in zip(prune, prune[1:])):
            raise ConfigError(f"prune: thresholds may not decrease with the order, got {list(prune)!r}")
        object.__setattr__(self, "prune", tuple(int(p) for p in prune))
        if self.discount_fallback is not None:
            fallback = self.discount_fallback
            if isinstance(fallback, (str, bytes)) or not isinstance(fallback, Iterable):
                raise ConfigError(f"discount_fallback: must be three numbers (D1, D2, D3+), got {fallback!r}")
            fallback = tuple(fallback)
            if len(fallback) != 3 or not all(is_real(d) for d in fallback) or not all(
                    0 <= d <= j for j, d in enumerate(fallback, 1)):
                raise ConfigError(f"discount_fallback: must be three numbers with 0 <= D_j <= j, got {fallback!r}")
            object.__setattr__(self, "discount_fallback", tuple(float(d) for d in fallback))
        if not is_int(self.chunk_tokens) or self.chunk_tokens < 1:
            raise ConfigError(f"chunk_tokens: must be a positive integer, got {self.chunk_tokens!r}")
        object.__setattr__(self, "order", int(self.order))  # NumPy integers become plain ints (JSON)
        object.__setattr__(self, "chunk_tokens", int(self.chunk_tokens))

    def thresholds(self) -> tuple[int, ...]:
        """One pruning threshold per order (missing orders repeat the last)."""
        prune = self.prune or (0,)
        return prune + (prune[-1],) * (self.order - len(prune))

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["prune"] = list(self.prune)
        if self.discount_fallback is not None:
            data["discount_fallback"] = list(self.discount_fallback)
        return data


# ---------------------------------------------------------------------------
# Training input
# ---------------------------------------------------------------------------


def _id_chunks(sentences, vocabulary: Vocabulary, outside: OutsideIds | None, chunk_tokens: int):
    """(ids, lengths) per chunk of about ``chunk_tokens`` words, ids numbered as KenLM's.

    Sentences are encoded a few thousand at a time, so only int32 ids (not Python
    strings) pile up until a chunk is full.
    """
    encode_tokens = min(chunk_tokens, 1 << 16)
    pieces: list = []  # (ids, lengths) of encoded batches
    batch: list = []
    size = chunk_size = 0
    first = 0  # number of the first sentence in the batch
    for sentence in itertools.chain(sentences, [None]):
        if sentence is not None:
            batch.append(sentence)
            size += len(sentence) + 1
        if batch and (sentence is None or size >= encode_tokens):
            pieces.append(_encode(batch, vocabulary, outside, first))
            first += len(batch)
            chunk_size += size
            batch, size = [], 0
        if pieces and (sentence is None or chunk_size >= chunk_tokens):
            yield np.concatenate([p[0] for p in pieces]), np.concatenate([p[1] for p in pieces])
            pieces, chunk_size = [], 0


def _encode(batch: list, vocabulary: Vocabulary, outside: OutsideIds | None, first: int):
    lengths = np.fromiter(map(len, batch), np.int64, len(batch))
    if outside is None:
        bad = next((i for i, s in enumerate(batch) if isinstance(s, (str, bytes, np.ndarray))), None)
        if bad is not None:
            kind = "a string" if isinstance(batch[bad], (str, bytes)) else "an array"
            raise DataError(f"sentence {first + bad + 1} is {kind}: pass lists of words (e.g. line.split()), "
                            f"or token arrays with vocabulary=")
        words = list(itertools.chain.from_iterable(batch))
        before = len(vocabulary)
        try:
            ids = vocabulary.add(words)
            bad_word = next((w for w in vocabulary.words[before:] if not isinstance(w, str)), None)
        except TypeError:  # an unhashable "word"
            bad_word = next(w for w in words if not isinstance(w, str))
        if bad_word is not None:
            position = next(i for i, w in enumerate(words) if w is bad_word)
            raise DataError(f"sentence {_sentence_of(lengths, position) + first + 1}: word "
                            f"{bad_word!r} is not a string")
    else:
        arrays = [np.asarray(s) for s in batch]
        if any(a.ndim != 1 for a in arrays):
            bad = next(i for i, a in enumerate(arrays) if a.ndim != 1)
            raise DataError(f"sentence {first + bad + 1}: token ids must be a 1-D array, got shape {arrays[bad].shape}")
        joined = np.concatenate(arrays) if arrays else np.zeros(0, np.int64)
        ids = outside(joined.astype(np.int64) if joined.dtype.kind in "iu" else joined)
    reserved = np.flatnonzero(ids <= EOS)
    if len(reserved):
        word = SPECIALS[ids[reserved[0]]]
        raise DataError(f"sentence {_sentence_of(lengths, reserved[0]) + first + 1} contains the reserved word "
                        f"{word!r} (lmplz refuses it too; rename it, e.g. {word} -> <oov>)")
    return ids, lengths


def _sentence_of(lengths: np.ndarray, position: int) -> int:
    return int(np.searchsorted(np.cumsum(lengths), position, side="right"))


# ---------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------


class NGramLM:
    """An interpolated modified Kneser-Ney back-off model (see the module notes).

    Arrays per order k (suffix order): ``keys[k-1]`` (int64, ``index(g[1:]) * V +
    g[0]``), ``log10_prob[k-1]`` and ``log10_backoff[k-1]`` (float32).
    """

    family = FAMILY

    def __init__(self, config: NGramConfig, words: Sequence[str], keys, log10_prob, log10_backoff,
                 statistics: Mapping[str, Any] | None = None):
        self.config = config
        self.vocabulary = Vocabulary(words)
        self.tables = query.Tables(len(self.vocabulary), list(keys), list(log10_prob), list(log10_backoff))
        self.statistics = dict(statistics or {})
        if self.tables.order != config.order:
            raise ValueError(f"{self.tables.order} orders of arrays for an order-{config.order} config")

    # -- properties --------------------------------------------------------

    @property
    def order(self) -> int:
        return self.config.order

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary)

    @property
    def counts(self) -> list[int]:
        """Listed n-grams per order (as in the ARPA header)."""
        return [int(np.count_nonzero(~np.isnan(p))) for p in self.tables.log10_prob]

    def get_config(self) -> dict[str, Any]:
        return self.config.to_dict()

    def __repr__(self) -> str:
        return f"NGramLM(order={self.order}, vocab_size={self.vocab_size:,}, counts={self.counts})"

    # -- training ------------------------------------------------------------

    @classmethod
    def train(cls, sentences: Iterable, config: NGramConfig | None = None,
              vocabulary: Sequence[str] | None = None) -> "NGramLM":
        """Estimate a model from ``sentences`` as ``lmplz`` would (see the module notes).

        ``sentences``: lists of words; or, with ``vocabulary`` (a word list), 1-D integer
        arrays of ids into it.
        """
        config = NGramConfig() if config is None else config
        if not isinstance(config, NGramConfig):
            raise ConfigError(f"config: expected an NGramConfig, got {type(config).__name__}")
        vocab = Vocabulary()
        outside = None
        if vocabulary is not None:
            if isinstance(vocabulary, (str, bytes)) or not all(isinstance(w, str) for w in vocabulary):
                raise ConfigError("vocabulary: must be a list of words (strings) that the token ids index")
            outside = OutsideIds(vocab, vocabulary)
        counter = Counter(config.order)
        for ids, lengths in _id_chunks(sentences, vocab, outside, config.chunk_tokens):
            counter.add(sentence_stream(ids, lengths), len(vocab))
        table = counter.finish(len(vocab))
        del counter
        final, stats = estimate(table, len(vocab), config.thresholds(), config.discount_fallback)
        statistics = {"tokens": int(table.counts.sum()), "sentences": int(table.counts[table.rows[:, -1] == EOS].sum()),
                      **dataclasses.asdict(stats)}
        return cls(config, vocab.words, final.keys, final.log10_prob, final.log10_backoff, statistics)

    # -- scoring -------------------------------------------------------------

    def _ids(self, words: Sequence[str]) -> np.ndarray:
        if isinstance(words, str):
            raise DataError(f"expected a list of words, got the string {words[:40]!r} (use .split())")
        return self.vocabulary.lookup(list(words))

    def log10_prob(self, word: str, context: Sequence[str] = ()) -> float:
        """log10 p(word | context); ``context`` is the words before it, oldest first.

        Start the context with ``<s>`` for the beginning of a sentence.
        """
        tokens = np.append(self._ids(context), self.vocabulary.id(word)).astype(np.int32)
        return float(query.score(self.tables, tokens, np.arange(len(tokens)))[-1])

    def score(self, sentences: Iterable[Sequence[str]], bos: bool = True, eos: bool = True) -> "Scores":
        """Score every word of a batch of sentences at once (KenLM ``query`` semantics).

        Each sentence is scored after ``<s>`` (if ``bos``) and followed by ``</s>`` (if
        ``eos``); words not in the vocabulary are scored as ``<unk>``.
        """
        sentences = list(sentences)
        if any(isinstance(s, str) for s in sentences):
            raise DataError("a sentence is a string: pass lists of words (e.g. line.split())")
        lengths = np.fromiter(map(len, sentences), np.int64, len(sentences))
        ids = self._ids(list(itertools.chain.from_iterable(sentences))) if sentences else np.zeros(0, np.int32)
        return self.score_ids(ids, lengths, bos, eos)

    def score_ids(self, ids: np.ndarray, lengths: np.ndarray, bos: bool = True, eos: bool = True) -> "Scores":
        """:meth:`score` for sentences already given as our word ids: ``ids`` (all sentences'
        words concatenated, int) and ``lengths`` (words per sentence)."""
        ids = np.asarray(ids)
        lengths = np.asarray(lengths, np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise DataError(f"word ids must be in [0, {self.vocab_size}), got {int(ids.min())}..{int(ids.max())}")
        if int(lengths.sum()) != len(ids):
            raise DataError(f"sentence lengths add up to {int(lengths.sum()):,} words, but {len(ids):,} ids were given")
        extra = int(bos) + int(eos)
        span = lengths + extra  # tokens per sentence, <s> and </s> included
        total = int(span.sum())
        starts = np.cumsum(span) - span
        sentence = np.repeat(np.arange(len(lengths)), span)
        position = np.arange(total) - starts[sentence]
        tokens = np.full(total, EOS, np.int32)
        if bos:
            tokens[starts] = BOS
        word_at = np.flatnonzero((position >= int(bos)) & (position < int(bos) + lengths[sentence]))
        tokens[word_at] = ids
        scored = position >= int(bos)  # <s> is context only
        log10 = query.score(self.tables, tokens, position)
        is_word = np.zeros(total, bool)
        is_word[word_at] = True
        return Scores(log10[scored], sentence[scored], (tokens == UNK)[scored] & is_word[scored], len(lengths))

    def score_sentence(self, words: Sequence[str], bos: bool = True, eos: bool = True) -> float:
        """Total log10 probability of one sentence (KenLM ``query``'s per-line ``Total``)."""
        return float(self.score([words], bos, eos).sentence_totals()[0])

    def sentence_log10(self, sentences: Iterable[Sequence[str]], bos: bool = True, eos: bool = True) -> np.ndarray:
        """Per-sentence totals for a batch, as :meth:`score_sentence` gives them."""
        return self.score(sentences, bos, eos).sentence_totals()

    def perplexity(self, sentences: Iterable[Sequence[str]], batch_tokens: int = 1 << 20) -> dict[str, Any]:
        """Perplexity as KenLM's ``query -v summary`` reports it.

        With T tokens (words and one ``</s>`` per sentence), total log10 L, and the OOV
        words (not in the vocabulary, scored as ``<unk>``) numbering O with total L_oov::

            perplexity                = 10^(-L / T)
            perplexity_excluding_oov  = 10^(-(L - L_oov) / (T - O))
        """
        total = oov_total = 0.0
        tokens = oov = count = 0
        batch: list = []
        size = 0
        for sentence in itertools.chain(sentences, [None]):
            if sentence is not None:
                batch.append(sentence)
                size += len(sentence) + 1
            if batch and (sentence is None or size >= batch_tokens):
                scores = self.score(batch)
                total += float(scores.sentence_totals().sum())  # float32 per line, double overall
                oov_total += float(scores.log10[scores.oov].astype(np.float64).sum())
                tokens += len(scores.log10)
                oov += int(scores.oov.sum())
                count += len(batch)
                batch, size = [], 0
        if tokens == 0:
            raise DataError("no sentences to compute a perplexity on")
        excluding = _power_of_ten(-(total - oov_total) / (tokens - oov)) if tokens > oov else float("nan")
        return {"perplexity": _power_of_ten(-total / tokens), "perplexity_excluding_oov": excluding, "oov": oov,
                "tokens": tokens, "sentences": count, "log10_total": total}

    # -- generation ------------------------------------------------------------

    def next_word_probabilities(self, context_ids: Sequence[int], bos: bool = True) -> np.ndarray:
        """(V,) float64 p(w | context) over the model's word ids, by the back-off rule; ``context_ids`` are
        word ids (:attr:`vocabulary`) of the sentence so far (``bos``: it starts the sentence)."""
        return query.next_word_distribution(self.tables, ([BOS] if bos else []) + [int(i) for i in context_ids])

    def word_log10(self, context_ids: Sequence[int], word_id: int, bos: bool = True) -> float:
        """log10 p(word | context) over word ids, as :meth:`score` scores the word there (float32, KenLM's)."""
        tokens = np.array(([BOS] if bos else []) + [int(i) for i in context_ids] + [int(word_id)], np.int32)
        return float(query.score(self.tables, tokens, np.arange(len(tokens)))[-1])

    def generate(self, context: Sequence[str] = (), max_words: int = 50, seed: int = 0,
                 bos: bool = True) -> list[str]:
        """Sample words after ``context`` until ``</s>`` or ``max_words``; deterministic per seed.

        Each word is drawn from the model's full distribution p(w | last N-1 words)
        (the back-off rule over the whole vocabulary), never ``<s>`` or ``<unk>``; the
        ``</s>`` that ends a sentence is not returned. ``bos``: the context starts a sentence.
        """
        if not is_int(max_words) or max_words < 0:
            raise ConfigError(f"max_words: must be a non-negative integer, got {max_words!r}")
        if not is_int(seed):
            raise ConfigError(f"seed: must be an integer, got {seed!r}")
        rng = np.random.default_rng(seed)
        history = ([BOS] if bos else []) + self._ids(context).tolist()
        out: list[str] = []
        for _ in range(max_words):
            word = query.sample_next(self.tables, history, rng)
            if word == EOS:
                break
            out.append(self.vocabulary.word(word))
            history.append(word)
        return out

    # -- files -----------------------------------------------------------------

    def save(self, folder) -> Path:
        """Write the model to ``folder`` (created if needed): JSON plus safetensors, atomically."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {}
        for k in range(1, self.order + 1):
            arrays[f"keys.{k}"] = np.ascontiguousarray(self.tables.keys[k - 1], np.int64)
            arrays[f"log10_prob.{k}"] = np.ascontiguousarray(self.tables.log10_prob[k - 1], np.float32)
            arrays[f"log10_backoff.{k}"] = np.ascontiguousarray(self.tables.log10_backoff[k - 1], np.float32)
        _write_safetensors(folder / ARRAYS_FILE, arrays, {"format": "lmlab-ngram", "version": str(FORMAT_VERSION)})
        write_json(folder / VOCABULARY_FILE, self.vocabulary.words, indent=None)
        write_json(folder / CONFIG_FILE, {"family": FAMILY, "format_version": FORMAT_VERSION,
                                          "config": self.config.to_dict(), "vocab_size": self.vocab_size,
                                          "counts": self.counts, "statistics": self.statistics})
        return folder

    @classmethod
    def load(cls, folder) -> "NGramLM":
        """Read a model written by :meth:`save`; a damaged folder raises DataError naming the file."""
        from safetensors.numpy import load_file

        folder = Path(folder)
        meta = _read_json(folder / CONFIG_FILE)
        if not isinstance(meta, dict) or meta.get("family") != FAMILY:
            raise DataError(f"{folder / CONFIG_FILE}: not an n-gram model (family {meta.get('family')!r})"
                            if isinstance(meta, dict) else f"{folder / CONFIG_FILE}: not an n-gram model")
        if meta.get("format_version") != FORMAT_VERSION:
            raise DataError(f"{folder / CONFIG_FILE}: format_version {meta.get('format_version')!r} "
                            f"is not {FORMAT_VERSION}")
        try:
            config = NGramConfig.from_dict(meta.get("config", {}))
        except ConfigError as error:
            raise DataError(f"{folder / CONFIG_FILE}: config: {error}") from None
        words = _read_json(folder / VOCABULARY_FILE)
        if not isinstance(words, list) or len(words) != meta.get("vocab_size"):
            raise DataError(f"{folder / VOCABULARY_FILE}: expected a list of {meta.get('vocab_size')} words")
        path = folder / ARRAYS_FILE
        if not path.is_file():
            raise DataError(f"{path}: not found")
        try:
            arrays = load_file(path)
        except Exception as error:  # safetensors raises its own error types for bad headers
            raise DataError(f"{path}: not a readable safetensors file ({error})") from None
        keys, probs, backoffs = [], [], []
        for k in range(1, config.order + 1):
            names = (f"keys.{k}", f"log10_prob.{k}", f"log10_backoff.{k}")
            missing = [n for n in names if n not in arrays]
            if missing:
                raise DataError(f"{path}: array {missing[0]!r} is missing")
            key, prob, backoff = (arrays[n] for n in names)
            if key.dtype != np.int64 or prob.dtype != np.float32 or backoff.dtype != np.float32 or not (
                    key.ndim == prob.ndim == backoff.ndim == 1 and len(key) == len(prob) == len(backoff)):
                raise DataError(f"{path}: the order-{k} arrays have wrong types or lengths")
            below = len(words) if k == 1 else len(keys[-1]) * len(words)
            if k == 1 and len(key) != len(words):
                raise DataError(f"{path}: keys.1 lists {len(key):,} unigrams for {len(words):,} words")
            if len(key) and (np.any(np.diff(key) <= 0) or key[0] < 0 or key[-1] >= below):
                raise DataError(f"{path}: keys.{k} are not increasing n-gram keys of this vocabulary")
            keys.append(key)
            probs.append(prob)
            backoffs.append(backoff)
        try:
            return cls(config, words, keys, probs, backoffs, meta.get("statistics"))
        except DataError as error:
            raise DataError(f"{folder / VOCABULARY_FILE}: {error}") from None

    def to_arpa(self, path) -> Path:
        """Write the model as an ARPA file (gzip if the name ends in ``.gz``) that KenLM and SRILM read."""
        arpa.write_arpa(path, self.vocabulary.words, self.tables.keys, self.tables.log10_prob,
                        self.tables.log10_backoff)
        return Path(path)

    @classmethod
    def from_arpa(cls, path) -> "NGramLM":
        """Read an ARPA file (ours, KenLM's, SRILM's; gzip allowed). Scores as KenLM scores it."""
        listed = arpa.read_arpa(path)
        order = len(listed.grams)
        if order > MAX_ORDER:
            raise DataError(f"{path}: order {order} is above the highest order lmlab supports ({MAX_ORDER})")
        words, keys, probs, backoffs = arpa.tables_from_ngrams(listed, path)
        return cls(NGramConfig(order=order), words, keys, probs, backoffs, {"source": str(path)})


def _power_of_ten(exponent: float) -> float:
    """10 ** exponent, infinite past float range (a model read from an ARPA file may give -1e30 log10)."""
    try:
        return 10.0 ** exponent
    except OverflowError:
        return math.inf


_SAFETENSORS_DTYPES = {np.dtype(np.int64): "I64", np.dtype(np.float32): "F32"}


def _write_safetensors(path: Path, arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> None:
    """A safetensors file written array by array (``safetensors.numpy.save`` would first
    build the whole file as one bytes object, doubling the memory a large model needs).

    Layout (the safetensors format): an 8-byte little-endian header size, a JSON header
    (padded with spaces to a multiple of 8) giving each tensor's dtype, shape and byte
    range, then the tensors' little-endian bytes back to back.
    """
    header: dict[str, Any] = {"__metadata__": dict(metadata)}
    offset = 0
    for name, array in arrays.items():
        header[name] = {"dtype": _SAFETENSORS_DTYPES[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with atomic_open(path, "wb") as handle:
        handle.write(len(text).to_bytes(8, "little"))
        handle.write(text)
        for array in arrays.values():
            handle.write(memoryview(np.ascontiguousarray(array.astype(array.dtype.newbyteorder("<"), copy=False))))


def _read_json(path: Path):
    try:
        return read_json(path)
    except Exception as error:
        raise DataError(str(error)) from None


@dataclass
class Scores:
    """Per-token results of :meth:`NGramLM.score`: ``log10`` (float32), ``sentence``
    (index of the sentence each token is in), ``oov`` (the word was not in the vocabulary)."""

    log10: np.ndarray
    sentence: np.ndarray
    oov: np.ndarray
    sentences: int

    def sentence_totals(self) -> np.ndarray:
        """Total log10 of each sentence, summed in float32 word by word as KenLM's ``query``
        sums its per-line ``Total`` (a long line's total differs from an exact sum by ~1e-4)."""
        lengths = np.bincount(self.sentence, minlength=self.sentences)
        starts = np.cumsum(lengths) - lengths
        longest_first = np.argsort(-lengths, kind="stable")
        starts_sorted = starts[longest_first]
        longer_than = np.bincount(lengths, minlength=1)[::-1].cumsum()[::-1]  # sentences with length >= i
        totals = np.zeros(self.sentences, np.float32)
        for i in range(int(lengths.max()) if self.sentences else 0):
            n = int(longer_than[i + 1]) if i + 1 < len(longer_than) else 0  # sentences longer than i
            totals[:n] += self.log10[starts_sorted[:n] + i]
        out = np.empty(self.sentences, np.float64)
        out[longest_first] = totals
        return out
