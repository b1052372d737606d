"""Feeding training and evaluation from memory-mapped token shards.

* :class:`RandomWindows` — training batches of random windows of
  ``block_size + 1`` tokens (inputs and next-token targets). Batch ``step`` is
  a pure function of ``(seed, step)``, so a run resumes exactly from a saved
  step and never replays or skips data. Windows never straddle two shards.
* :class:`SequentialWindows` — evaluation windows walking the split in order,
  optionally strided: each window of ``block_size`` predictions scores only
  the targets that no earlier window scored, so every token after the first
  is counted exactly once (the sliding-window perplexity of Hugging Face's
  guide), with up to ``block_size - stride`` tokens of extra context.

Both yield NumPy ``int32`` arrays; :func:`keras_dataset` wraps either as a
``keras.utils.PyDataset`` for ``Model.fit`` / ``evaluate`` on any backend.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np

from lmlab.data.shards import TokenSplit
from lmlab.core.errors import ConfigError, DataError


class RandomWindows:
    def __init__(self, split: TokenSplit, block_size: int, batch_size: int, seed: int = 0, start_step: int = 0):
        if block_size < 1 or batch_size < 1:
            raise ConfigError(f"block_size and batch_size must be >= 1, got {block_size} and {batch_size}")
        self.split, self.block_size, self.batch_size = split, block_size, batch_size
        self.seed, self.step = seed, start_step
        window = block_size + 1
        self._arrays = [a for a in split.arrays if len(a) >= window]
        if not self._arrays:
            raise DataError(f"the {split.name} split has no shard of at least block_size + 1 = {window} tokens "
                            f"({split.tokens:,} tokens in all)")
        self._windows = [np.lib.stride_tricks.sliding_window_view(a, window) for a in self._arrays]
        self._cumulative = np.cumsum([len(w) for w in self._windows])

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and targets, each ``(batch_size, block_size)`` int32, for ``step``."""
        rng = np.random.default_rng((self.seed, step))
        starts = rng.integers(0, self._cumulative[-1], size=self.batch_size)
        if len(self._windows) == 1:
            windows = self._windows[0][starts]
        else:
            shard = np.searchsorted(self._cumulative, starts, side="right")
            offsets = starts - np.concatenate([[0], self._cumulative[:-1]])[shard]
            windows = np.stack([self._windows[s][o] for s, o in zip(shard, offsets)])
        windows = windows.astype(np.int32)  # (B, T + 1)
        return windows[:, :-1], windows[:, 1:]

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        while True:
            batch = self.batch(self.step)
            self.step += 1
            yield batch

    def state(self) -> dict:
        return {"seed": self.seed, "step": self.step}

    def restore(self, state: dict) -> None:
        self.seed, self.step = int(state["seed"]), int(state["step"])


class SequentialWindows:
    def __init__(self, split: TokenSplit, block_size: int, batch_size: int = 1, stride: int | None = None):
        stride = block_size if stride is None else stride
        if block_size < 1 or batch_size < 1 or not 1 <= stride <= block_size:
            raise ConfigError(f"need block_size >= 1, batch_size >= 1 and 1 <= stride <= block_size; got "
                              f"{block_size}, {batch_size}, {stride}")
        self.split, self.block_size, self.batch_size, self.stride = split, block_size, batch_size, stride
        self.tokens = np.concatenate(split.arrays) if len(split.arrays) > 1 else (
            split.arrays[0] if split.arrays else np.zeros(0, np.uint16))
        if len(self.tokens) < 2:
            raise DataError(f"the {split.name} split has {len(self.tokens)} tokens; evaluation needs at least 2")

    @property
    def targets(self) -> int:
        """Number of scored targets: every token but the first."""
        return len(self.tokens) - 1

    def __len__(self) -> int:
        """Number of batches."""
        return math.ceil(self.num_windows / self.batch_size)

    @property
    def num_windows(self) -> int:
        extra = self.targets - self.block_size
        return 1 if extra <= 0 else 1 + math.ceil(extra / self.stride)

    def window(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Inputs, targets and a 0/1 mask of the targets this window scores."""
        start = index * self.stride
        chunk = np.asarray(self.tokens[start : start + self.block_size + 1], dtype=np.int32)
        count = len(chunk) - 1
        x = np.zeros(self.block_size, np.int32)
        y = np.zeros(self.block_size, np.int32)
        mask = np.zeros(self.block_size, np.float32)
        x[:count], y[:count] = chunk[:-1], chunk[1:]
        first_new = 0 if index == 0 else self.block_size - self.stride  # earlier windows scored the rest
        mask[first_new:count] = 1.0
        return x, y, mask

    def batch(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        first = index * self.batch_size
        rows = [self.window(i) for i in range(first, min(first + self.batch_size, self.num_windows))]
        return tuple(np.stack(column) for column in zip(*rows))

    def __iter__(self):
        for index in range(len(self)):
            yield self.batch(index)


def keras_dataset(windows, steps: int | None = None, start_step: int = 0):
    """Wrap :class:`RandomWindows` (``steps`` batches from ``start_step``) or
    :class:`SequentialWindows` as a ``keras.utils.PyDataset``.

    Evaluation batches are ``(x, y, mask)``: Keras uses the mask as sample weights.
    """
    import keras

    class WindowDataset(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=1, use_multiprocessing=False)

        def __len__(self):
            if isinstance(windows, RandomWindows):
                if steps is None:
                    raise ConfigError("steps is required for random training windows")
                return steps
            return len(windows)

        def __getitem__(self, index):
            if isinstance(windows, RandomWindows):
                return windows.batch(start_step + index)
            return windows.batch(index)

    return WindowDataset()
