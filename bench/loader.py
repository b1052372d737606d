"""Does the shard loader keep up with training? Data time against a small model's step.

    python bench/loader.py [--data ../shared/data] [--steps 200]

Prepares Tiny Shakespeare at character level, then for nanoGPT's CPU recipe
shape (batch 12, block 64; a 4-layer, 4-head, 128-wide causal Transformer built
from stock Keras layers, compiled with XLA) measures per step:

* ``data_ms``: producing one batch with ``RandomWindows.batch`` (random
  windows gathered from the memory-mapped shard, cast to int32);
* ``step_ms``: one compiled ``train_on_batch`` on batches already in memory;
* ``fit_ms``: one step of ``Model.fit`` fed by ``keras_dataset`` (loader and
  Keras's own input pipeline together).

``data_wait_fraction`` = data_ms / (data_ms + step_ms): the share of a step
spent waiting for data if loading were not overlapped at all. Prints one JSON
line at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import os
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from contenders import cpu_facts  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def small_transformer(vocab: int, block: int, layers: int = 4, heads: int = 4, width: int = 128):
    import keras

    tokens = keras.Input((block,), dtype="int32")
    x = keras.layers.Embedding(vocab, width)(tokens)
    x = x + keras.layers.Embedding(block, width)(keras.ops.arange(block))
    for _ in range(layers):
        h = keras.layers.LayerNormalization()(x)
        x = x + keras.layers.MultiHeadAttention(heads, width // heads)(h, h, use_causal_mask=True)
        h = keras.layers.LayerNormalization()(x)
        x = x + keras.layers.Dense(width)(keras.layers.Dense(4 * width, activation="gelu")(h))
    logits = keras.layers.Dense(vocab)(keras.layers.LayerNormalization()(x))
    model = keras.Model(tokens, logits)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3, clipnorm=1.0),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.environ.get("LMLAB_DATA", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--block", type=int, default=64)
    args = parser.parse_args()

    from lmlab.data import RandomWindows, keras_dataset, open_split, prepare

    with tempfile.TemporaryDirectory() as scratch:
        manifest = prepare(str(Path(args.data) / "tinyshakespeare" / "input.txt"), scratch, tokenizer="char")
        windows = RandomWindows(open_split(scratch, "train"), args.block, args.batch, seed=0)
        vocab = manifest["tokenizer"]["vocab_size"]

        start = time.perf_counter()
        batches = [windows.batch(step) for step in range(args.steps)]
        data_ms = (time.perf_counter() - start) / args.steps * 1e3

        model = small_transformer(vocab, args.block)
        for x, y in batches[:10]:  # compile and warm up
            model.train_on_batch(x, y)
        start = time.perf_counter()
        for x, y in batches:
            model.train_on_batch(x, y)
        step_ms = (time.perf_counter() - start) / args.steps * 1e3

        model.fit(keras_dataset(windows, steps=10), epochs=1, verbose=0)  # warm up fit's own function
        start = time.perf_counter()
        model.fit(keras_dataset(windows, steps=args.steps, start_step=10), epochs=1, verbose=0)
        fit_ms = (time.perf_counter() - start) / args.steps * 1e3

    print(json.dumps({
        **cpu_facts(), "batch": args.batch, "block": args.block, "steps": args.steps,
        "data_ms": round(data_ms, 4), "step_ms": round(step_ms, 3), "fit_ms": round(fit_ms, 3),
        "data_wait_fraction": round(data_ms / (data_ms + step_ms), 5),
        "fit_overhead_fraction": round(max(fit_ms - step_ms, 0.0) / fit_ms, 4),
    }))


if __name__ == "__main__":
    np.random.seed(0)
    main()
