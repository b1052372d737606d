"""Classification: reading and encoding labelled texts, the classifier, validation and prediction.

Texts are encoded with the base run's tokenizer, cut to ``block_size - 1``
tokens (the beginning is kept; the number cut is reported) and closed with
the end token, whose state ``last`` pooling reads. ``balanced`` class
weights are ``n / (k * count)`` per class (scikit-learn's rule).
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np

from lmlab.core.progress import progress_bar
from lmlab.tasks.augment import Augmenter, augment_examples, corpus_vocabulary, parse_operations, synonym_sources
from lmlab.tasks.batching import ClassificationData, encode_texts, input_prefix
from lmlab.tasks.config import FinetuneConfig
from lmlab.tasks.metrics.classification import classification_metrics
from lmlab.tasks.readers.examples import split_off
from lmlab.tasks.readers.labelled import describe, label_ids, label_set, read_labelled


def class_weights(config: FinetuneConfig, ids: Sequence[int], count: int) -> list[float]:
    spec = config.class_weight_values(count)
    if spec == "none":
        return [1.0] * count
    if spec == "balanced":
        counts = Counter(ids)
        return [len(ids) / (count * counts[c]) if counts[c] else 0.0 for c in range(count)]
    return list(spec)


class ClassifyTask:
    def __init__(self, config: FinetuneConfig, tokenizer, block_size: int, options: dict, log=print,
                 prefix: Sequence[int] = ()):
        self.config, self.tokenizer, self.block_size, self.options, self.log = config, tokenizer, block_size, options, log
        self.prefix = list(prefix)  # an encoder's [CLS] (lmlab.tasks.batching.input_prefix)
        self.lm = self.head = None

    def read(self, train, valid) -> None:
        o, c = self.options, self.config
        columns = dict(format=o.get("format", "auto"), text_column=o.get("text_column"),
                       label_column=o.get("label_column"))
        train_examples = read_labelled(train, **columns)
        if train_examples.skipped:
            self.log(f"{train}: {train_examples.note()}")
        if o.get("limit"):
            train_examples = train_examples[: o["limit"]]
        if valid:
            valid_examples = read_labelled(valid, **columns)
            if valid_examples.skipped:
                self.log(f"{valid}: {valid_examples.note()}")
        else:
            train_examples, valid_examples = split_off(train_examples, c.valid_fraction, c.seed, str(train))
        self.labels = label_set(train_examples)
        train_ids = label_ids(train_examples, self.labels, "training data")
        valid_ids = label_ids(valid_examples, self.labels, "validation data")
        self.weights = class_weights(c, train_ids, len(self.labels))
        self.log(describe(train_examples, train) + "; validation " + describe(valid_examples, valid or train))
        self.original_examples = len(train_examples)
        if c.augment:
            train_examples, train_ids = self._augment(train_examples, train_ids)
        length = min(c.max_length or self.block_size, self.block_size)
        texts, self.cut = encode_texts(self.tokenizer, [e.text for e in train_examples], length, self.prefix)
        valid_texts, valid_cut = encode_texts(self.tokenizer, [e.text for e in valid_examples], length, self.prefix)
        if self.cut or valid_cut:
            self.log(f"note: {self.cut + valid_cut:,} texts are longer than {length} tokens; their beginnings are used")
        self.train_data = ClassificationData(texts, train_ids, [self.weights[i] for i in train_ids], length)
        self.valid_data = ClassificationData(valid_texts, valid_ids, [1.0] * len(valid_ids), length)

    def _augment(self, examples, ids):
        c, o = self.config, self.options
        operations = parse_operations(c.augment)
        vocabulary = None
        if any(name == "rv" for name, _ in operations):
            vocabulary = corpus_vocabulary([e.text for e in examples], c.lang)
        augmenter = Augmenter(operations, c.augment_copies, c.seed, c.lang,
                              synonym_sources(o.get("wordnet"), o.get("cilin"), o.get("neighbours")), vocabulary,
                              o.get("stop_words"))
        augmented, operations_used, rows = augment_examples(examples, augmenter)
        self.log(f"augmentation ({c.augment}, up to {c.augment_copies} copies): {len(examples):,} -> "
                 f"{len(augmented):,} training texts")
        return augmented, [ids[r] for r in rows]

    def build(self, lm):
        from lmlab.tasks.classifier import SequenceClassifier

        self.lm = lm
        model = SequenceClassifier(lm, len(self.labels), self.config.pooling, self.config.freeze, self.config.seed)
        model(np.zeros((1, 1), np.int32), np.ones(1, np.int32))
        self.head = model.head
        return model

    def validate(self, stepper) -> dict:
        probabilities, total, count = evaluate_data(stepper, self.valid_data, self.config.batch_size)
        metrics = classification_metrics(self.valid_data.labels, probabilities.argmax(axis=1), self.labels)
        return {"val_loss": total / count, "val_accuracy": metrics["accuracy"], "val_macro_f1": metrics["macro_f1"],
                "val_score": metrics["accuracy"], "valid_metrics": metrics}

    @staticmethod
    def describe(metrics: dict) -> str:
        return (f"val loss {metrics['val_loss']:.4f}, accuracy {metrics['val_accuracy']:.2f}%, "
                f"macro-F1 {metrics['val_macro_f1']:.2f}%")

    def settings(self) -> dict:
        return {"labels": self.labels, "class_weights": self.weights, "train_examples": self.original_examples,
                "train_texts": len(self.train_data), "texts_cut": self.cut}


def evaluate_data(stepper, data: ClassificationData, batch_size: int,
                  progress=None) -> tuple[np.ndarray, float, float]:
    """Class probabilities ``(N, C)`` in the data's order, with the summed weighted loss and weight.

    ``progress``: called with the number of texts each batch scored."""
    rows, total, count = [], 0.0, 0.0
    for batch in data.batches(batch_size):
        t, n, logits = stepper.evaluate(batch.inputs, batch.targets, batch.weights)
        keep = batch.rows >= 0
        rows.append((batch.rows[keep], logits[keep]))
        total, count = total + t, count + n
        if progress:
            progress(int(keep.sum()))
    order = np.concatenate([r for r, _ in rows])
    logits = np.concatenate([values for _, values in rows])[np.argsort(order)]
    logits = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True), total, count


def classify_texts(finetuned, texts: Sequence[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
    """Class probabilities ``(N, C)`` of a fine-tuned classifier for ``texts`` (``progress``: a bar on stderr)."""
    block = finetuned.lm.config.block_size
    block = min(finetuned.config["finetune"].get("max_length") or block, block)
    encoded, _ = encode_texts(finetuned.tokenizer, list(texts), block, input_prefix(finetuned.lm, finetuned.tokenizer))
    data = ClassificationData(encoded, [0] * len(encoded), [1.0] * len(encoded), block)
    with progress_bar(progress, "classify", " texts", len(encoded)) as bar:
        return evaluate_data(finetuned.classifier_stepper, data, batch_size, bar.update)[0]
