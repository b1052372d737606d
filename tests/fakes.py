"""Stand-ins for Keras variables: just what lmlab.runs.checkpoint uses, with no backend to import."""

from __future__ import annotations

import numpy as np


class Variable:
    def __init__(self, path: str, value):
        self.path, self.name, self.value = path, path.rsplit("/", 1)[-1], np.asarray(value, np.float32)

    shape = property(lambda self: self.value.shape)
    dtype = property(lambda self: self.value.dtype)

    def numpy(self):
        return self.value

    def assign(self, value):
        self.value = np.asarray(value, self.dtype)


class Holder:
    """A model or optimizer: a list of variables under one name, with values drawn from ``seed``."""

    def __init__(self, seed: int, prefix: str):
        rng = np.random.default_rng(seed)
        self.variables = [Variable(f"{prefix}/dense/kernel", rng.normal(size=(5, 3))),
                          Variable(f"{prefix}/dense/bias", rng.normal(size=3))]
