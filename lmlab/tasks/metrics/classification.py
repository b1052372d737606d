"""Accuracy, macro-averaged F1 and the confusion matrix.

Macro-F1 is the unweighted mean of each class's F1 (scikit-learn's
``f1_score(average="macro")``): a class that is never predicted and never
present is left out; one present but never predicted counts with F1 = 0.
The confusion matrix has one row per true label and one column per predicted
label. Figures are percentages.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def classification_metrics(true: Sequence[int], predicted: Sequence[int], labels: Sequence[str]) -> dict:
    true, predicted = np.asarray(true, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    k = len(labels)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (true, predicted), 1)
    per_class, f1s = {}, []
    for i, label in enumerate(labels):
        tp = int(confusion[i, i])
        support, guessed = int(confusion[i].sum()), int(confusion[:, i].sum())
        precision = tp / guessed if guessed else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
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
