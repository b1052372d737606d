"""Accuracy, per-class precision/recall/F1, macro-averaged F1 and the confusion matrix.

Each figure is scikit-learn's (tests/test_metrics_official.py checks them
against it): ``accuracy_score``; per class ``precision_recall_fscore_support``
with ``labels=range(k)`` and ``zero_division=0`` (a class never predicted has
precision 0, one never present recall 0, and F1 is ``2·TP / (2·TP + FP + FN)``,
0 when that is 0/0); macro-F1 is ``f1_score(average="macro")`` without a
``labels`` argument: the unweighted mean over the classes that occur among the
true or the predicted labels (a class present but never predicted counts with
F1 = 0; one neither present nor predicted is left out). The confusion matrix has
one row per true label and one column per predicted label (``confusion_matrix``).
Figures are percentages.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def classification_metrics(true: Sequence[int], predicted: Sequence[int], labels: Sequence[str]) -> dict:
    true, predicted = np.asarray(true, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    if true.shape != predicted.shape:
        raise ValueError(f"{len(true)} true labels for {len(predicted)} predictions")
    k = len(labels)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (true, predicted), 1)
    per_class, f1s = {}, []
    for i, label in enumerate(labels):
        tp = int(confusion[i, i])
        support, guessed = int(confusion[i].sum()), int(confusion[:, i].sum())
        precision = tp / guessed if guessed else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * tp / (support + guessed) if support + guessed else 0.0  # = 2·TP / (2·TP + FP + FN)
        per_class[label] = {"precision": 100 * precision, "recall": 100 * recall, "f1": 100 * f1,
                            "support": support}
        if support or guessed:
            f1s.append(f1)
    return {
        "examples": int(len(true)),
        "accuracy": 100 * float((true == predicted).mean()) if len(true) else 0.0,
        "macro_f1": 100 * float(np.mean(f1s)) if f1s else 0.0,
        "labels": list(labels),
        "confusion_matrix": confusion.tolist(),
        "per_class": per_class,
    }
