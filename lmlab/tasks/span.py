"""Extractive question answering with an encoder: start and end heads over sliding windows of the context.

As BERT's ``run_squad.py`` (and Hugging Face's ``run_qa.py``): each question becomes one or
more features ``[CLS] question [SEP] window [SEP]`` (segment ids 0, then 1), the windows
covering the context with a stride of ``doc_stride`` tokens (default: half a window). A
linear layer reads each token's state into a start and an end logit; the loss is the mean
of the start and end cross-entropies, with the [CLS] position as the target of a window
that does not hold the whole answer. The answer trained on is the first reference at its
``answer_start`` (checked by :func:`lmlab.tasks.readers.squad.read_squad`), or, in a file without
offsets, its first occurrence in the context; training contexts are encoded in three parts
(before, answer, after) so its boundaries are token boundaries. Validation encodes the
context whole and, over the windows of a question, picks the span with the largest start +
end logit (start <= end, at most ``max_answer_tokens`` tokens), decoded with the tokenizer
and scored with the official SQuAD v1.1 exact match and F1 (:mod:`lmlab.tasks.metrics.squad`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import keras
import numpy as np
from keras import ops

from lmlab.core.errors import ConfigError, DataError
from lmlab.core.progress import progress_bar
from lmlab.tasks.batching import Batch, batch_orders, check_neural, is_masked_lm, padded_length
from lmlab.tasks.config import FinetuneConfig
from lmlab.tasks.metrics.squad import squad_scores
from lmlab.tasks.readers.examples import split_off
from lmlab.tasks.readers.squad import read_squad
from lmlab.tokenizers.specials import special_ids

MIN_WINDOW = 8


def span_nll(outputs, targets, weights):
    """``(B, 2, T)`` start/end logits against ``(B, 2)`` positions: (weighted summed mean of the two, weight)."""
    nll = ops.sparse_categorical_crossentropy(targets, ops.cast(outputs, "float32"), from_logits=True)  # (B, 2)
    weights = ops.cast(weights, "float32")
    return ops.sum(ops.mean(nll, axis=1) * weights), ops.sum(weights)


class SpanExtractor(keras.Model):
    """``(ids (B, T), segment ids (B, T), lengths (B,))`` → float32 ``(B, 2, T)`` start and end logits;
    positions at or past a row's length get -1e9."""

    def __init__(self, encoder, seed: int | None = None, **kwargs):
        kwargs.setdefault("name", "span_extractor")
        super().__init__(**kwargs)
        check_neural(encoder)
        if not is_masked_lm(encoder):
            raise ConfigError(f"extractive QA (--task span) needs an encoder run (--model encoder), not "
                              f"{getattr(encoder.config, 'family', '?')!r}")
        self.backbone = encoder
        for variable in encoder.mlm_head_variables():  # the masked-LM head is not used here
            variable.trainable = False
        self.head = keras.layers.Dense(2, kernel_initializer=keras.initializers.RandomNormal(stddev=0.02, seed=seed),
                                       name="head")
        self.head.build((None, encoder.config.d_model))

    def call(self, token_ids, segment_ids, lengths, training=None):
        h = self.backbone.hidden_states(token_ids, training=training, lengths=lengths,
                                        token_type_ids=segment_ids)  # (B, T, d)
        logits = ops.transpose(ops.cast(self.head(h), "float32"), (0, 2, 1))  # (B, 2, T)
        real = ops.arange(ops.shape(token_ids)[1])[None, :] < ops.cast(lengths, "int32")[:, None]  # (B, T)
        return ops.where(real[:, None, :], logits, ops.full_like(logits, -1e9))


@dataclass
class Feature:
    ids: list[int]
    start: int  # target positions in ids (0, the [CLS], when the window lacks the answer)
    end: int
    example: int  # index of the question
    offset: int  # where the window starts in ids
    context: list[int]  # the window's context tokens


class SpanData:
    def __init__(self, features: list[Feature], block_size: int):
        self.features, self.block_size = features, block_size
        self.lengths = [len(f.ids) for f in features]

    def __len__(self) -> int:
        return len(self.features)

    def batches(self, batch_size: int, shuffle: bool = False, seed: int = 0, epoch: int = 0):
        for rows in batch_orders(self.lengths, batch_size, shuffle, seed, epoch):
            length = padded_length(max(self.lengths[r] for r in rows), self.block_size)
            ids = np.zeros((batch_size, length), np.int32)
            segments = np.zeros((batch_size, length), np.int32)
            lengths = np.ones(batch_size, np.int32)
            targets = np.zeros((batch_size, 2), np.int32)
            weights = np.zeros(batch_size, np.float32)
            for i, r in enumerate(rows):
                f = self.features[r]
                ids[i, :len(f.ids)], lengths[i] = f.ids, len(f.ids)
                segments[i, f.offset:len(f.ids)] = 1
                targets[i], weights[i] = (f.start, f.end), 1.0
            padded_rows = np.full(batch_size, -1, np.int64)
            padded_rows[:len(rows)] = rows
            yield Batch((ids, segments, lengths), targets, weights, padded_rows)

    def steps_per_epoch(self, batch_size: int) -> int:
        return math.ceil(len(self) / batch_size)


class SpanTask:
    loss_fn = staticmethod(span_nll)

    def __init__(self, config, tokenizer, block_size: int, options: dict, log=print):
        self.config, self.tokenizer, self.block_size, self.options, self.log = config, tokenizer, block_size, options, log
        self.special = special_ids(tokenizer)
        if not self.special.wraps:
            raise ConfigError("extractive QA needs a tokenizer with [CLS] and [SEP] (or <s> and </s>)")
        self.lm = self.head = None
        self.windows_cut = 0

    # -- data ---------------------------------------------------------------

    def read(self, train, valid) -> None:
        train_examples = read_squad(train, log=self.log)
        if self.options.get("limit"):
            train_examples = train_examples[:self.options["limit"]]
        if valid:
            valid_examples = read_squad(valid)
        else:
            train_examples, valid_examples = split_off(train_examples, self.config.valid_fraction, self.config.seed,
                                                       str(train))
        self.lang = self.config.lang if self.config.lang != "auto" else _language(train_examples)
        self.valid_examples = valid_examples
        self.train_data = SpanData(self._features(train_examples, training=True), self.block_size)
        self.valid_data = SpanData(self._features(valid_examples, training=False), self.block_size)
        self.log(f"{len(train_examples):,} training questions in {len(self.train_data):,} windows, "
                 f"{len(valid_examples):,} validation questions in {len(self.valid_data):,} windows")

    def _features(self, examples, training: bool) -> list[Feature]:
        encode, s = self.tokenizer.encode, self.special
        features = []
        for index, example in enumerate(examples):
            question = encode(example.fields["question"])
            context, answer = example.fields["context"], example.target
            at = -1
            if training and answer:
                given = example.starts[0] if example.starts else None
                at = context.find(answer) if given is None else given
            if at >= 0:
                before, inside = encode(context[:at]), encode(answer)
                tokens = before + inside + encode(context[at + len(answer):])
                first, last = len(before), len(before) + len(inside) - 1
            else:
                tokens, first, last = encode(context), -1, -1
            room = self.block_size - len(question) - 3
            if room < MIN_WINDOW:
                raise ConfigError(f"{example.where}: the question is {len(question)} tokens; with [CLS] and two "
                                  f"[SEP] it leaves {max(room, 0)} of the context of {self.block_size} for the "
                                  f"passage (at least {MIN_WINDOW} needed)")
            stride = min(self.config.doc_stride or max(room // 2, 1), room)
            offset = len(question) + 2
            for begin in range(0, max(len(tokens) - room, 0) + stride, stride):
                window = tokens[begin:begin + room]
                inside_window = first >= begin and 0 <= last < begin + room
                start, end = (first - begin + offset, last - begin + offset) if inside_window else (0, 0)
                features.append(Feature([s.cls, *question, s.sep, *window, s.sep], start, end, index, offset, window))
                if begin + room >= len(tokens):
                    break
        return features

    # -- model and validation ---------------------------------------------------

    def build(self, lm):
        self.lm = lm
        model = SpanExtractor(lm, seed=self.config.seed)
        model(np.zeros((1, 1), np.int32), np.zeros((1, 1), np.int32), np.ones(1, np.int32))
        self.head = model.head
        return model

    def answers(self, stepper, data: SpanData, count: int, on_windows: Callable[[int], None] | None = None) -> list[str]:
        """The best span of each of ``count`` questions over its windows; ``on_windows(n)`` after each batch."""
        best = [(-math.inf, "")] * count
        limit = self.config.max_answer_tokens
        for batch in data.batches(self.config.batch_size):
            _, _, logits = stepper.evaluate(batch.inputs, batch.targets, batch.weights)
            logits = np.asarray(logits)
            for row, r in enumerate(batch.rows):
                if r < 0:
                    continue
                f = data.features[r]
                n = len(f.context)
                starts = logits[row, 0, f.offset:f.offset + n]
                ends = logits[row, 1, f.offset:f.offset + n]
                scores = starts[:, None] + ends[None, :]  # (n, n): start i, end j
                i, j = np.indices(scores.shape)
                scores = np.where((j >= i) & (j - i < limit), scores, -np.inf)
                s, e = np.unravel_index(np.argmax(scores), scores.shape)
                if scores[s, e] > best[f.example][0]:
                    best[f.example] = (scores[s, e], self._text(f.context[s:e + 1]))
            if on_windows:
                on_windows(sum(r >= 0 for r in batch.rows))
        return [text for _, text in best]

    def _text(self, ids) -> str:
        text = self.tokenizer.decode(ids)
        return text.replace(" ", "") if self.lang == "zh" else text  # WordPiece spaces out Chinese characters

    def validate(self, stepper) -> dict:
        """Exact match and F1 on the validation questions (no loss: their answers are not looked up)."""
        predictions = self.answers(stepper, self.valid_data, len(self.valid_examples))
        scores = squad_scores(predictions, [e.references for e in self.valid_examples], self.lang)
        return {"val_exact_match": scores["exact_match"], "val_f1": scores["f1"], "val_score": scores["f1"]}

    @staticmethod
    def describe(metrics: dict) -> str:
        return f"exact match {metrics['val_exact_match']:.2f}%, F1 {metrics['val_f1']:.2f}%"

    def settings(self) -> dict:
        return {"train_windows": len(self.train_data), "valid_questions": len(self.valid_examples), "lang": self.lang,
                "max_answer_tokens": self.config.max_answer_tokens, "doc_stride": self.config.doc_stride}


def _language(examples) -> str:
    text = "".join(e.fields["context"][:200] for e in examples[:50])
    if not text:
        raise DataError("the SQuAD file has empty contexts")
    chinese = sum("\u4e00" <= ch <= "\u9fff" for ch in text)
    return "zh" if chinese > len(text) / 4 else "en"


def evaluate_span(finetuned, test, limit: int | None = None, progress: bool = False) -> tuple[dict, list[dict]]:
    """``lmlab evaluate-task`` for an extractive-QA folder: exact match and F1 on a SQuAD file (``progress``: a bar
    over the question windows)."""
    from lmlab.training.steps import TaskStepper

    config = FinetuneConfig.from_dict(finetuned.config["finetune"])
    examples = read_squad(test)[:limit or None]
    task = SpanTask(config, finetuned.tokenizer, finetuned.lm.config.block_size, {}, log=lambda m: None)
    task.lang = finetuned.config["span"]["lang"]
    data = SpanData(task._features(examples, training=False), task.block_size)
    stepper = TaskStepper(finetuned.classifier, loss_fn=span_nll)
    with progress_bar(progress, "answer", " windows", len(data)) as bar:
        predictions = task.answers(stepper, data, len(examples), on_windows=bar.update)
    scores = squad_scores(predictions, [e.references for e in examples], task.lang)
    rows = [{"id": e.id, "question": e.fields["question"], "prediction": p, "references": list(e.references)}
            for e, p in zip(examples, predictions)]
    return {**scores, "questions": len(examples), "windows": len(data)}, rows
