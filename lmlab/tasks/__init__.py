"""Applications of the language models: fine-tuning, task metrics and data augmentation.

Readers (no TensorFlow needed): :func:`read_labelled` (SST-2, ChnSentiCorp,
CSV/TSV/JSONL), :func:`read_task_examples` (SQuAD, Tatoeba, LCSTS, JSONL).
Metrics: :mod:`lmlab.tasks.metrics`. Augmentation: :mod:`lmlab.tasks.augment`.
Models: :func:`finetune`, :func:`evaluate_task`, :func:`predict`,
:func:`load_finetuned` (imported on first use, as they load Keras).
"""

from __future__ import annotations

import importlib

from lmlab.tasks.config import FinetuneConfig
from lmlab.tasks.readers.labelled import read_labelled
from lmlab.tasks.readers.pairs import read_task_examples
from lmlab.tasks.readers.templates import load_template

_LAZY = {
    "finetune": "lmlab.tasks.finetune",
    "evaluate_task": "lmlab.tasks.evaluate",
    "predict": "lmlab.tasks.predict",
    "load_finetuned": "lmlab.tasks.folder",
    "DecodeConfig": "lmlab.generate.search",
    "classify_texts": "lmlab.tasks.classify",
    "complete": "lmlab.tasks.generate",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lmlab.tasks' has no attribute {name!r}")


__all__ = ["DecodeConfig", "FinetuneConfig", "classify_texts", "complete", "evaluate_task", "finetune",
           "load_finetuned", "load_template", "predict", "read_labelled", "read_task_examples"]
