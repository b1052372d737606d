"""Word-level training speed: the full softmax against the adaptive softmax on WikiText-2's vocabulary.

    python bench/wordlm.py [--steps 30] [--vocab-size 33278] [--cutoffs 2000,10000] [--div-value 4]

Prints one JSON line. For each model, with ``output: softmax`` and ``output: adaptive``
(:mod:`lmlab.layers.adaptive_softmax`), tokens/s of lmlab's compiled optimizer step
(:class:`lmlab.training.steps.Stepper` with the trainer's AdamW, float32, XLA), the model's own
training FLOPs per token (``flops_per_token``: the adaptive output counted as computed) and the
GFLOPS they give:

* ``lstm``: the rnn ``wikitext2`` shape (2 x 256 LSTM, BPTT 35, tied), batch 20, as
  ``experiments/families-wikitext2.yaml`` trains it;
* ``transformer``: that experiment's Transformer (GPT-2 style, 2 layers x 256, 4 heads, block 128),
  batch 6.

Inputs are random ids over the vocabulary (speed does not depend on the text), so no prepared data
is needed. The first 3 steps (compilation) are left out; the median of the timed steps is
reported, with the machine's load average and the CPU facts (``bench/contenders.py``), as the
machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from contenders import cpu_facts

from lmlab.models import registry
from lmlab.models.rnn import shape as rnn_shape
from lmlab.models.transformer import shape as transformer_shape
from lmlab.training.config import TrainConfig
from lmlab.training.optimizer import build_optimizer
from lmlab.training.steps import Stepper

WARMUP = 3


def configs(vocab_size: int):
    """``name → (config, batch_size)`` with the full softmax."""
    return {
        "lstm": (rnn_shape("wikitext2", vocab_size=vocab_size, dropout=0.0), 20),
        "transformer": (transformer_shape("shakespeare-char", vocab_size=vocab_size, n_layer=2, d_model=256,
                                          n_head=4, block_size=128, dropout=0.0), 6),
    }


def time_steps(config, batch_size: int, steps: int, seed: int = 0) -> dict:
    import numpy as np

    model = registry.build_model(config, seed=seed)
    optimizer, _ = build_optimizer(TrainConfig(data="unused", max_steps=steps + WARMUP, warmup_steps=1), model)
    stepper = Stepper(model, optimizer)
    rng = np.random.default_rng(seed)
    shape = (1, batch_size, config.block_size)
    seconds = []
    for step in range(steps + WARMUP):
        x = rng.integers(0, config.vocab_size, size=shape).astype("int32")
        y = rng.integers(0, config.vocab_size, size=shape).astype("int32")
        started = time.perf_counter()
        stepper.train(x, y)
        if step >= WARMUP:
            seconds.append(time.perf_counter() - started)
    per_step = statistics.median(seconds)
    tokens_per_s = batch_size * config.block_size / per_step
    flops = model.flops_per_token()
    return {"tokens_per_s": round(tokens_per_s, 1), "flops_per_token": flops,
            "gflops": round(tokens_per_s * flops / 1e9, 3), "step_s": round(per_step, 4),
            "batch_size": batch_size, "block_size": config.block_size, "parameters": model.num_parameters()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--vocab-size", type=int, default=33278)  # WikiText-2's word vocabulary
    parser.add_argument("--cutoffs", default="2000,10000")
    parser.add_argument("--div-value", type=float, default=4.0)
    parser.add_argument("--models", default="lstm,transformer")
    args = parser.parse_args(argv)
    cutoffs = [int(c) for c in args.cutoffs.split(",")]
    results = {}
    for name in args.models.split(","):
        config, batch = configs(args.vocab_size)[name]
        for output, variant in (("softmax", config),
                                ("adaptive", config.replace(output="adaptive", cutoffs=cutoffs,
                                                            div_value=args.div_value))):
            results[f"{name}_{output}"] = {"load_before": os.getloadavg()[0],
                                           **time_steps(variant, batch, args.steps)}
        results[f"{name}_speedup"] = round(results[f"{name}_adaptive"]["tokens_per_s"]
                                           / results[f"{name}_softmax"]["tokens_per_s"], 2)
    import keras

    print(json.dumps({"bench": "wordlm", "backend": keras.backend.backend(), "vocab_size": args.vocab_size,
                      "cutoffs": cutoffs, "div_value": args.div_value, "steps": args.steps,
                      "load_average": os.getloadavg(), **cpu_facts(), "results": results}))


if __name__ == "__main__":
    main()
