"""Scoring text line by line: total log-probability, token count and perplexity of each line, any family.

What a line's score is, by family (``method`` in :func:`scorer_for`):

* **decoders** (``transformer``, ``rnn``, ``gated_cnn``; ``chain``): the chain rule over the tokens
  ``eos t1 .. tn eos``. ``lmlab prepare`` writes the end token after every document, paragraph or
  sentence, so in training a text starts right after an end token: a line is scored given that
  end token as its only context, and its own end token is predicted too. ``tokens`` is ``n + 1``
  (the line's tokens and its end token), ``logprob`` the sum of their log-probabilities (nats).
  This is exactly what ``lmlab eval --text`` reports (``-nats``) for a file holding
  ``eos line eos``. A line longer than the context is scored with ``eval``'s sliding windows
  (stride: the block size unless given); its record says ``"windows": k``.
* **n-gram** (``backoff``): KenLM's ``query`` semantics: the words after ``<s>`` and ``</s>``
  (the end token) by the model's interpolated back-off probabilities, log10 × ln 10.
* **masked LMs** (``encoder``; ``pll``): the pseudo-log-likelihood of Salazar et al. 2020:
  ``[CLS] t1 .. tn [SEP]``, each token masked alone and scored with the rest visible, summed. No end
  token is predicted (``tokens`` is ``n``); ``perplexity`` is the pseudo-perplexity, comparable only
  between masked LMs with the same tokenizer. A line longer than the block is cut into consecutive
  rows of ``block - 2`` tokens, each wrapped (as ``eval``'s rows are); the record says ``windows``.

``perplexity = exp(-logprob / tokens)``. Lines are read and scored lazily in chunks and written as
they are scored, so memory stays constant over any number of lines. Bad lines are never dropped:
each gets a record with ``error`` (and no score) in its place: invalid UTF-8 (with the byte
offset), an empty or whitespace-only line, a JSONL line that is not JSON or lacks ``--field``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

import numpy as np

from lmlab.core.backend import compile_function
from lmlab.core.errors import ConfigError
from lmlab.core.progress import progress_bar
from lmlab.data.shards import TokenSplit
from lmlab.data.windows import SequentialWindows
from lmlab.evaluation.masked import token_pseudo_log_likelihoods
from lmlab.models import registry
from lmlab.runs.load import LoadedRun, load_run
from lmlab.tokenizers.specials import special_ids

CHUNK_LINES = 256  # lines read, scored and written at a time


@dataclass
class Line:
    """One input line: its number (from 1) and its text, or why it cannot be scored."""

    number: int
    text: str | None
    error: str | None = None


# ---------------------------------------------------------------- reading


def read_lines(handle: BinaryIO, field: str | None = None) -> Iterator[Line]:
    """The lines of a binary stream, decoded lazily; ``field``: each line is a JSON object, score this field."""
    for number, raw in enumerate(handle, 1):
        raw = raw.rstrip(b"\n").rstrip(b"\r")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            yield Line(number, None, f"invalid UTF-8 at byte {error.start}")
            continue
        if field is not None and text.strip():
            try:
                record = json.loads(text)
            except ValueError as error:
                yield Line(number, None, f"not JSON: {error}")
                continue
            value = record.get(field) if isinstance(record, dict) else None
            if not isinstance(value, str):
                yield Line(number, None, f"no string field {field!r}")
                continue
            text = value
        yield Line(number, text, None if text.strip() else "empty line")


def count_lines(path) -> int:
    with open(path, "rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b"")) + (
            1 if Path(path).stat().st_size and not _ends_with_newline(path) else 0)


def _ends_with_newline(path) -> bool:
    with open(path, "rb") as handle:
        handle.seek(-1, 2)
        return handle.read(1) == b"\n"


# ---------------------------------------------------------------- the family scorers


class CausalScorer:
    """Decoders: ``log p(t_i | eos t_1 .. t_{i-1})`` for every token and the end token."""

    method = "chain"

    def __init__(self, model, tokenizer, batch_size: int = 32, stride: int | None = None):
        from lmlab.training.steps import model_token_loss

        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.block = model.config.block_size
        self.stride = stride or self.block
        if not 1 <= self.stride <= self.block:
            raise ConfigError(f"stride must be in [1, {self.block}], got {self.stride}")
        # An adaptive-softmax model scores its targets without the (B, T, V) log-probabilities.
        self._log_probs = compile_function(lambda x, y: -model_token_loss(model, x, y, False))

    def width(self, length: int) -> int:
        """Row length for ``length`` inputs: a power of two from 16, at most the block (few compiled shapes)."""
        return min(self.block, 1 << max(4, (length - 1).bit_length()))

    def score(self, sequences: list[np.ndarray]) -> list[tuple[np.ndarray, int]]:
        eos = self.tokenizer.eos_id
        rows = []  # (line, first target of the window, x, y, mask)
        windows_of = []
        for i, ids in enumerate(sequences):
            full = np.concatenate([[eos], ids, [eos]]).astype(np.int32)
            if len(full) - 1 <= self.block:  # one window, as short as the line allows
                n = len(full) - 1
                width = self.width(n)
                x, y, mask = (np.zeros(width, np.int32) for _ in range(3))
                x[:n], y[:n], mask[:n] = full[:-1], full[1:], 1
                rows.append((i, 0, x, y, mask))
                windows_of.append(1)
                continue
            windows = SequentialWindows(TokenSplit("line", [full], eos, 0, 1), self.block, 1, self.stride)
            for w in range(windows.num_windows):  # eval's windows: each target scored once
                rows.append((i, w * self.stride, *windows.window(w)))
            windows_of.append(windows.num_windows)
        out = [np.zeros(len(ids) + 1, np.float64) for ids in sequences]
        rows.sort(key=lambda row: len(row[2]))
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start:start + self.batch_size]
            width = max(len(row[2]) for row in chunk)
            x = np.zeros((self.batch_size, width), np.int32)  # (B, T): full batches, one shape per width
            y = np.zeros((self.batch_size, width), np.int32)
            for b, row in enumerate(chunk):
                x[b, :len(row[2])], y[b, :len(row[3])] = row[2], row[3]
            values = np.asarray(self._log_probs(x, y), np.float64)  # (B, T)
            for b, (i, first, _, _, mask) in enumerate(chunk):
                where = np.flatnonzero(mask)
                out[i][first + where] = values[b, where]
        return list(zip(out, windows_of))


class NGramScorer:
    """n-gram runs: KenLM ``query``'s per-word scores after ``<s>``, ``</s>`` included, in nats."""

    method = "backoff"

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer

    def score(self, sequences: list[np.ndarray]) -> list[tuple[np.ndarray, int]]:
        return [(log10 * math.log(10), 1) for log10 in self.model.sentence_log10(sequences)]


class PseudoScorer:
    """Masked LMs: the pseudo-log-likelihood of ``[CLS] tokens [SEP]`` (Salazar et al. 2020)."""

    method = "pll"

    def __init__(self, model, tokenizer, batch_size: int = 32):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.special = special_ids(tokenizer)
        self.inner = model.config.block_size - (2 if self.special.wraps else 0)

    def wrap(self, ids: np.ndarray) -> list[np.ndarray]:
        pieces = [ids[i:i + self.inner] for i in range(0, len(ids), self.inner)] or [ids]
        if not self.special.wraps:
            return [np.asarray(p, np.int32) for p in pieces]
        return [np.concatenate([[self.special.cls], p, [self.special.sep]]).astype(np.int32) for p in pieces]

    def score(self, sequences: list[np.ndarray]) -> list[tuple[np.ndarray, int]]:
        rows, owner = [], []
        for i, ids in enumerate(sequences):
            for row in self.wrap(np.asarray(ids, np.int32)):
                rows.append(row)
                owner.append(i)
        terms = token_pseudo_log_likelihoods(self.model, rows, self.special, self.batch_size)
        out: list[list[np.ndarray]] = [[] for _ in sequences]
        for i, values in zip(owner, terms):
            out[i].append(values)
        return [(np.concatenate(parts), len(parts)) for parts in out]


def scorer_for(run: LoadedRun, batch_size: int = 32, stride: int | None = None):
    """The scorer of a run's family (its ``method``: ``chain``, ``backoff`` or ``pll``)."""
    name = run.config["model"].get("family", "transformer")
    family = registry.family(name)
    if not family.neural:
        return NGramScorer(run.model, run.tokenizer)
    if family.objective == "mlm":
        return PseudoScorer(run.model, run.tokenizer, batch_size)
    return CausalScorer(run.model, run.tokenizer, batch_size, stride)


# ---------------------------------------------------------------- records


def token_strings(tokenizer, ids, scorer) -> list[str]:
    names = [tokenizer.id_to_token(int(i)) for i in ids]
    return names + [tokenizer.eos_token] if scorer.method != "pll" else names


def _scored(scorer, lines: list[Line], tokens: bool) -> list[dict]:
    good = [line for line in lines if line.error is None]
    encoded = scorer.tokenizer.encode_batch([line.text for line in good]) if good else []
    sequences = [np.asarray(ids, np.int64) for ids in encoded]
    results = dict(zip((line.number for line in good), zip(sequences, scorer.score(sequences))))
    records = []
    for line in lines:
        if line.error is not None:
            records.append({"line": line.number, "text": line.text, "error": line.error})
            continue
        ids, (values, windows) = results[line.number]
        total = float(values.sum())
        record = {"line": line.number, "text": line.text, "logprob": total, "tokens": int(len(values)),
                  "perplexity": math.exp(-total / len(values)) if len(values) else None}
        if not len(values):
            record["error"] = "no token to score"
        if windows > 1:
            record["windows"] = windows
        if tokens:
            record["token_strings"] = token_strings(scorer.tokenizer, ids, scorer)
            record["token_logprobs"] = [float(v) for v in values]
        records.append(record)
    return records


def score_lines(scorer, lines: Iterable[Line], tokens: bool = False, progress: bool = False,
                total: int | None = None, chunk: int = CHUNK_LINES) -> Iterator[dict]:
    """One record per line, in order, scored ``chunk`` lines at a time (``progress``: a bar over the lines)."""
    with progress_bar(progress, "score", " lines", total) as bar:
        batch: list[Line] = []
        for line in lines:
            batch.append(line)
            if len(batch) >= chunk:
                yield from _scored(scorer, batch, tokens)
                bar.update(len(batch))
                batch = []
        if batch:
            yield from _scored(scorer, batch, tokens)
            bar.update(len(batch))


def score_texts(run, texts: Iterable[str], tokens: bool = False, batch_size: int = 32, stride: int | None = None,
                checkpoint: str = "best", progress: bool = False) -> Iterator[dict]:
    """Score each text of ``texts`` with a run (a folder or a :class:`~lmlab.runs.load.LoadedRun`).

    Yields one record per text, in order, lazily: ``line`` (from 1), ``text``, ``logprob`` (total
    log-probability, nats), ``tokens`` (predicted tokens, the end token included for decoders and
    n-grams), ``perplexity``; ``windows`` for a text longer than the context; with ``tokens=True``
    also ``token_strings`` and ``token_logprobs``. An empty text gets ``error`` instead of a score.
    See the module docstring for what each family's score is."""
    if not isinstance(run, LoadedRun):
        run = load_run(run, checkpoint)
    scorer = scorer_for(run, batch_size, stride)
    lines = (Line(n, t, None if t.strip() else "empty line") for n, t in enumerate(texts, 1))
    return score_lines(scorer, lines, tokens, progress)


def summarize(records: Iterable[dict]) -> dict:
    """Counts of a stream of records (consumed): scored, errors (by kind), windowed; total nats and tokens."""
    summary = {"lines": 0, "scored": 0, "errors": 0, "empty": 0, "windowed": 0, "logprob": 0.0, "tokens": 0}
    for record in records:
        summary["lines"] += 1
        if "error" in record:
            summary["errors"] += 1
            summary["empty"] += record["error"] == "empty line"
            continue
        summary["scored"] += 1
        summary["windowed"] += "windows" in record
        summary["logprob"] += record["logprob"]
        summary["tokens"] += record["tokens"]
    return summary
