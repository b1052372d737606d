"""Training and evaluation windows over token shards."""

from __future__ import annotations

import numpy as np
import pytest

from lmlab.data import RandomWindows, SequentialWindows, keras_dataset, open_split, prepare
from lmlab.data.shards import TokenSplit
from lmlab.core.errors import ConfigError, DataError
from tests.baselines import split_tokens, uniform_loss, unigram_cross_entropy
from tests.conftest import data_path


def split_of(*arrays) -> TokenSplit:
    return TokenSplit("train", [np.asarray(a, dtype=np.uint16) for a in arrays], eos_id=0, utf8_bytes=0, documents=0)


def test_random_windows_are_shifted_slices_deterministic_and_resumable():
    tokens = np.arange(1000) % 50000
    windows = RandomWindows(split_of(tokens), block_size=7, batch_size=13, seed=3)
    x, y = windows.batch(0)
    assert x.shape == y.shape == (13, 7) and x.dtype == np.int32
    assert np.array_equal(x[:, 1:], y[:, :-1])
    assert np.array_equal(y - x, np.ones_like(x))  # consecutive tokens of the stream
    first_run = [b for _, b in zip(range(5), windows)]
    resumed = RandomWindows(split_of(tokens), block_size=7, batch_size=13, seed=3, start_step=2)
    for expected, got in zip(first_run[2:], resumed):
        assert np.array_equal(expected[0], got[0])
    assert windows.state() == {"seed": 3, "step": 5}
    other = RandomWindows(split_of(tokens), 7, 13, seed=4)
    assert not np.array_equal(other.batch(0)[0], x)


def test_random_windows_never_cross_shards_and_cover_all_of_them():
    a, b = np.arange(0, 100), np.arange(1000, 1010)
    windows = RandomWindows(split_of(a, b, np.arange(5)), block_size=4, batch_size=500, seed=0)
    x, y = windows.batch(0)
    full = np.concatenate([x, y[:, -1:]], axis=1)
    assert np.all(np.diff(full, axis=1) == 1)  # contiguous, so inside one shard
    assert (x[:, 0] >= 1000).any() and (x[:, 0] < 1000).any()
    with pytest.raises(DataError, match="no shard of at least block_size \\+ 1 = 11 tokens"):
        RandomWindows(split_of(np.arange(5)), block_size=10, batch_size=1)
    with pytest.raises(ConfigError):
        RandomWindows(split_of(a), block_size=0, batch_size=1)


@pytest.mark.parametrize("length, block, stride", [(100, 10, 10), (100, 10, 3), (11, 10, 5), (7, 10, 4), (101, 10, 1)])
def test_sequential_windows_score_every_target_once(length, block, stride):
    tokens = np.arange(length)
    windows = SequentialWindows(split_of(tokens), block_size=block, batch_size=4, stride=stride)
    counted = np.zeros(length, dtype=int)
    for x, y, mask in windows:
        assert x.shape == y.shape == mask.shape and x.shape[1] == block
        valid = mask > 0
        assert np.array_equal(y[valid], x[valid] + 1)
        np.add.at(counted, y[valid], 1)
    assert counted[0] == 0 and np.all(counted[1:] == 1)
    assert sum(int(m.sum()) for _, _, m in windows) == windows.targets == length - 1


def test_sequential_windows_span_shards():
    windows = SequentialWindows(split_of(np.arange(10), np.arange(10, 20)), block_size=8)
    x, _, _ = windows.batch(0)
    _, y, _ = windows.batch(1)
    assert x[0].tolist() == list(range(8)) and y[0].tolist()[:3] == [9, 10, 11]


def unigram_valid(folder, vocab: int = 67) -> float:
    """The training unigram's loss on the validation targets (every token but the first), nats."""
    return unigram_cross_entropy(split_tokens(folder, "train"), split_tokens(folder, "valid")[1:], vocab)


def test_keras_fit_reads_prepared_shards(tmp_path):
    import keras

    prepare(str(data_path("tinyshakespeare", "input.txt")), tmp_path, tokenizer="char")
    train, valid = open_split(tmp_path, "train"), open_split(tmp_path, "valid")
    vocab = 67
    model = keras.Sequential([keras.Input((16,), dtype="int32"), keras.layers.Embedding(vocab, 8),
                              keras.layers.Dense(vocab)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True)
    history = model.fit(keras_dataset(RandomWindows(train, 16, 32, seed=0), steps=60), epochs=2, verbose=0)
    losses = history.history["loss"]
    evaluation = SequentialWindows(valid, block_size=16, batch_size=64)
    loss = model.evaluate(keras_dataset(evaluation), verbose=0)
    assert losses[-1] < losses[0] < uniform_loss(vocab)  # it learns character statistics
    # An embedding and a dense layer: a bigram model, which beats the unigram (3.34): measured 2.63-2.64.
    assert 1.5 < loss < unigram_valid(tmp_path) - 0.3


JAX_FIT = """
import numpy as np, keras, sys
from lmlab.data import RandomWindows, SequentialWindows, keras_dataset, open_split
assert keras.backend.backend() == "jax"
keras.utils.set_random_seed(0)  # a fixed start: the loss it reaches is compared with a baseline
folder = sys.argv[1]
model = keras.Sequential([keras.Input((16,), dtype="int32"), keras.layers.Embedding(67, 8), keras.layers.Dense(67)])
model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
history = model.fit(keras_dataset(RandomWindows(open_split(folder, "train"), 16, 32), steps=40), epochs=2, verbose=0)
loss = model.evaluate(keras_dataset(SequentialWindows(open_split(folder, "valid"), 16, 64)), verbose=0)
print(history.history["loss"][0], history.history["loss"][-1], loss)
"""


def test_keras_fit_on_the_jax_backend(tmp_path):
    pytest.importorskip("jax")
    import os
    import subprocess
    import sys

    prepare(str(data_path("tinyshakespeare", "input.txt")), tmp_path, tokenizer="char")
    result = subprocess.run([sys.executable, "-c", JAX_FIT, str(tmp_path)], capture_output=True, text=True,
                            env={**os.environ, "KERAS_BACKEND": "jax"}, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    first, last, evaluation = map(float, result.stdout.split())
    assert last < first and 1.5 < evaluation < unigram_valid(tmp_path) - 0.3  # measured 2.77
