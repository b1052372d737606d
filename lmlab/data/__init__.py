"""Corpora to training data: readers, cleaning, segmentation, shards and loaders."""

from lmlab.data.windows import RandomWindows, SequentialWindows, keras_dataset
from lmlab.data.prepare import prepare
from lmlab.data.shards import load_manifest, open_split, verify

__all__ = ["RandomWindows", "SequentialWindows", "keras_dataset", "load_manifest", "open_split", "prepare", "verify"]
