"""Continued pre-training (``--task lm``): a decoder run's language model trained further on plain text.

The text is read as ``lmlab data prepare`` reads a plain-text corpus
(:func:`lmlab.data.readers.read_text`: documents separated by blank lines,
``doc_sep`` "blank", or one a line, "line", or the whole file one, "file"),
each document is tokenized with the base run's tokenizer and followed by its
end token, as prepared shards are, and the documents are joined into one
token stream. Without a validation file the *last* ``valid_fraction`` of the
documents (whole documents, at least one) is held out.

Training reads the stream as contiguous, non-overlapping windows of the
model's block size (inputs and next-token targets; the last window may be
short, its padding weighs 0), shuffled each epoch by ``(seed, epoch)``, with
the standard next-token loss on every target. Validation is the mean token
loss over the held-out stream's windows (``val_score = -loss``: the best
checkpoint has the lowest loss), with its perplexity and bits per byte (nats
over ``ln 2 ×`` the held-out UTF-8 bytes, one byte per end token, as
:mod:`lmlab.evaluation.perplexity` counts a prepared split).

``lmlab evaluate-task`` scores a test file as ``lmlab eval --text`` does (the
whole file one text, sequential windows), so its figures equal
``lmlab.load(folder).perplexity(text)``; ``lmlab predict`` continues prompts.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from lmlab.core.errors import ConfigError, DataError
from lmlab.core.io import read_text
from lmlab.data.documents import DOC_SEPARATORS, ReadOptions, ReadStats
from lmlab.data.readers import read_text as read_text_documents
from lmlab.evaluation.perplexity import evaluate_tokens, text_split
from lmlab.tasks.batching import Batch, held_out_loss, is_masked_lm
from lmlab.tasks.config import FinetuneConfig
from lmlab.tasks.generate import check_new_tokens, decode_prompts

DEFAULT_NEW_TOKENS = 50  # lmlab predict on an lm fine-tune, without --max-new-tokens


def read_documents(path, doc_sep: str = "blank", limit: int | None = None) -> list[str]:
    """The documents of a UTF-8 plain-text file, as ``lmlab data prepare`` splits them."""
    if doc_sep not in DOC_SEPARATORS:
        raise ConfigError(f"--doc-sep must be one of {', '.join(DOC_SEPARATORS)}, got {doc_sep!r}")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    documents = ["\n".join(d.body) for d in read_text_documents(path, ReadOptions(doc_sep=doc_sep), ReadStats())]
    documents = [d for d in documents if d.strip()]
    return documents[:limit] if limit else documents


class TextWindows:
    """One token stream cut into contiguous windows of ``block_size`` next-token predictions."""

    def __init__(self, tokens: np.ndarray, block_size: int, utf8_bytes: int, documents: int):
        if len(tokens) < 2:
            raise DataError(f"the text has {len(tokens)} tokens; language modelling needs at least 2")
        self.tokens, self.block_size = np.asarray(tokens, dtype=np.int32), block_size
        self.utf8_bytes, self.documents = utf8_bytes, documents
        self.windows = math.ceil((len(self.tokens) - 1) / block_size)

    @classmethod
    def encode(cls, tokenizer, documents: Sequence[str], block_size: int) -> "TextWindows":
        """Each document's tokens followed by the end token (as :func:`lmlab.data.prepare` shards them)."""
        eos = tokenizer.eos_id
        if eos is None:
            raise ConfigError("the base run's tokenizer has no end token to separate documents with")
        ids = [list(t) + [eos] for t in tokenizer.encode_batch(list(documents))]
        tokens = np.fromiter((i for row in ids for i in row), dtype=np.int64)
        utf8 = sum(len(d.encode("utf-8")) for d in documents) + len(documents)  # one byte per end token
        return cls(tokens, block_size, utf8, len(documents))

    @property
    def targets(self) -> int:
        return len(self.tokens) - 1

    def __len__(self) -> int:
        return self.windows

    def batches(self, batch_size: int, shuffle: bool = False, seed: int = 0, epoch: int = 0) -> Iterator[Batch]:
        """Batches of ``batch_size`` windows (padding rows weigh 0), in order or shuffled by ``(seed, epoch)``."""
        n, block = self.windows, self.block_size
        order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
        for start in range(0, n, batch_size):
            rows = order[start:start + batch_size]
            x = np.zeros((batch_size, block), dtype=np.int32)
            y = np.zeros((batch_size, block), dtype=np.int32)
            mask = np.zeros((batch_size, block), dtype=np.float32)
            for i, w in enumerate(rows):
                chunk = self.tokens[w * block: w * block + block + 1]
                count = len(chunk) - 1
                x[i, :count], y[i, :count], mask[i, :count] = chunk[:-1], chunk[1:], 1.0
            padded_rows = np.full(batch_size, -1, dtype=np.int64)
            padded_rows[: len(rows)] = rows
            yield Batch((x,), y, mask, padded_rows)

    def steps_per_epoch(self, batch_size: int) -> int:
        return math.ceil(self.windows / batch_size)


class LanguageModelTask:
    """The interface of :class:`lmlab.tasks.generate.GenerateTask`: read, build, validate, describe, settings."""

    def __init__(self, config: FinetuneConfig, tokenizer, block_size: int, options: dict, log=print):
        self.config, self.tokenizer, self.block_size, self.options, self.log = config, tokenizer, block_size, options, log
        self.doc_sep = options.get("doc_sep", "blank")
        self.lm = self.head = None

    def read(self, train, valid) -> None:
        c, limit = self.config, self.options.get("limit")
        train_documents = read_documents(train, self.doc_sep, limit)
        if not train_documents:
            raise DataError(f"{train}: no text")
        if valid:
            valid_documents = read_documents(valid, self.doc_sep, limit)
            if not valid_documents:
                raise DataError(f"{valid}: no text")
            self.held_out = f"{valid}"
        else:
            if c.valid_fraction <= 0:
                raise ConfigError("--task lm validates on held-out text: give --valid FILE or a --valid-fraction > 0")
            if len(train_documents) < 2:
                raise ConfigError(f"{train}: one document (doc_sep {self.doc_sep!r}) cannot be split into training and "
                                  "validation text: give --valid FILE, or --doc-sep line for one document a line")
            count = min(len(train_documents) - 1, max(1, round(len(train_documents) * c.valid_fraction)))
            train_documents, valid_documents = train_documents[:-count], train_documents[-count:]
            self.held_out = f"the last {count:,} documents of {train}"
        self.train_data = TextWindows.encode(self.tokenizer, train_documents, self.block_size)
        self.valid_data = TextWindows.encode(self.tokenizer, valid_documents, self.block_size)
        self.log(f"{len(train_documents):,} training documents ({self.train_data.targets:,} tokens, "
                 f"{len(self.train_data):,} windows of {self.block_size}) and {len(valid_documents):,} validation "
                 f"documents ({self.valid_data.targets:,} tokens; {self.held_out}), documents separated by "
                 f"{self.doc_sep!r} and joined with the end token")

    def build(self, lm):
        self.lm = lm
        return lm

    def validate(self, stepper) -> dict:
        total, count = held_out_loss(stepper, self.valid_data, self.config.batch_size)
        loss = total / count
        return {"val_loss": loss, "val_perplexity": math.exp(min(loss, 50)),
                "val_bits_per_byte": total / (math.log(2) * self.valid_data.utf8_bytes), "val_score": -loss}

    @staticmethod
    def describe(metrics: dict) -> str:
        return (f"val loss {metrics['val_loss']:.4f} (perplexity {metrics['val_perplexity']:.2f}, "
                f"{metrics['val_bits_per_byte']:.3f} bits per byte)")

    def settings(self) -> dict:
        return {"doc_sep": self.doc_sep, "held_out": self.held_out,
                "train_documents": self.train_data.documents, "train_tokens": int(len(self.train_data.tokens)),
                "valid_documents": self.valid_data.documents, "valid_tokens": int(len(self.valid_data.tokens)),
                "valid_utf8_bytes": self.valid_data.utf8_bytes}


def check_causal(model, base_run) -> None:
    if is_masked_lm(model):
        raise ConfigError(f"--task lm continues a causal (left-to-right) language model's pre-training; {base_run} is "
                          "an encoder (masked language model): continue its pre-training with lmlab train --model "
                          "encoder, or fine-tune it with --task classify or --task span")


def evaluate_text(finetuned, test, batch_size: int = 8, stride: int | None = None, progress: bool = False) -> dict:
    """``lmlab evaluate-task`` on an lm fine-tune: the test file scored as ``lmlab eval --text`` scores it (the
    whole file one text), which is also ``lmlab.load(folder).perplexity(text)``."""
    split = text_split(finetuned.tokenizer, read_text(Path(test), "text file"), str(test))
    return evaluate_tokens(finetuned.lm, split, split.utf8_bytes, finetuned.lm.config.block_size, batch_size, stride,
                           progress)


def continue_texts(finetuned, prompts: Sequence[str], decode_config, max_new_tokens: int | None = None,
                   progress=None) -> list[str]:
    """Each prompt's continuation as text (``lmlab predict`` on an lm fine-tune); an over-long prompt keeps its
    end, an empty one starts a new document (after the end token)."""
    max_new = max_new_tokens or min(DEFAULT_NEW_TOKENS, finetuned.lm.config.block_size)
    block = check_new_tokens(finetuned.lm, max_new)
    eos = finetuned.tokenizer.eos_id
    prompts = [(list(finetuned.tokenizer.encode(prompt)) or [eos])[-(block - max_new + 1):] for prompt in prompts]
    return decode_prompts(finetuned.lm, finetuned.tokenizer, prompts, max_new, decode_config, progress)
