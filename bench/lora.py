"""A fine-tuning step with LoRA against full fine-tuning of the same model: tokens/s and peak memory.

    python bench/lora.py [--layers 8 --width 512 --heads 8 --vocab 16000 --block 128 --batch 8]
                         [--rank 8 --targets q,v --steps 10]

What one step is: the step ``lmlab finetune --task generate`` runs --
:class:`lmlab.training.steps.TaskStepper` ``.train`` (a TensorFlow graph, the weighted
next-token loss, AdamW from :func:`lmlab.training.optimizer.build_optimizer` with warm-up,
cosine decay and clipping) on a GPT-2-style :class:`lmlab.models.transformer.TransformerLM`
with random weights, float32, on the same random batches (NumPy, fixed seed). ``full`` trains
every weight; ``lora`` freezes them and trains rank-``--rank`` adapters on ``--targets``
(:func:`lmlab.models.lora.enable_lora`).

Each mode runs in its own subprocess, one after the other, so ``peak_rss_mb`` (``ru_maxrss``
of that process: model, optimizer state, gradients and activations at their peak) belongs to
it alone; ``model_rss_mb`` is the resident memory once the model is built, before the
optimizer. tokens/s = batch * block / the median of ``--steps`` timed steps after two
warm-up steps (the first traces the graph). The last line is one JSON object with both modes,
the ratios (``speedup`` = lora tokens/s / full; ``memory_ratio`` = lora peak / full peak) and
the CPU (:func:`bench.contenders.cpu_facts`). On a shared machine other processes slow both
modes; ``load`` reports how many cores others kept busy during each mode's timed steps.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.contenders import cpu_busy_s, cpu_facts  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def worker(args) -> dict:
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(os.cpu_count() or 1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from lmlab.models.lora import enable_lora
    from lmlab.models.transformer import TransformerConfig, build_transformer
    from lmlab.training.config import TrainConfig
    from lmlab.training.optimizer import build_optimizer
    from lmlab.training.steps import TaskStepper

    config = TransformerConfig(vocab_size=args.vocab, block_size=args.block, n_layer=args.layers, n_head=args.heads,
                               d_model=args.width, d_ff=4 * args.width)
    model = build_transformer(config, seed=0)
    lora = enable_lora(model, args.rank, 2.0 * args.rank, args.targets) if args.worker == "lora" else None
    model_rss = rss_mb()
    steps = args.steps + 2
    optimizer, _ = build_optimizer(TrainConfig(batch_size=args.batch, max_steps=steps, learning_rate=1e-4,
                                               min_learning_rate=1e-5, warmup_steps=1, seed=0), model)
    stepper = TaskStepper(model, optimizer, return_outputs=False)
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, args.vocab, size=(args.batch, args.block + 1)).astype(np.int32) for _ in range(steps)]
    weights = np.ones((args.batch, args.block), np.float32)
    times = []
    for i, batch in enumerate(batches):
        if i == 2:  # the timed steps start: the machine's and this process's CPU seconds so far
            busy_before, own_before, wall_before = cpu_busy_s(), own_cpu_s(), time.perf_counter()
        started = time.perf_counter()
        loss, _ = stepper.train((batch[:, :-1],), batch[:, 1:], weights)
        times.append(time.perf_counter() - started)
    wall = time.perf_counter() - wall_before
    others = max(0.0, ((cpu_busy_s() - busy_before) - (own_cpu_s() - own_before)) / wall)  # cores others used
    own = resource.getrusage(resource.RUSAGE_SELF)
    step_s = statistics.median(times[2:])
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    return {"mode": args.worker, "tokens_per_s": round(args.batch * args.block / step_s, 1),
            "step_ms": round(step_s * 1000, 1), "peak_rss_mb": round(own.ru_maxrss / 1024, 1),
            "model_rss_mb": round(model_rss, 1), "trainable": trainable,
            "parameters": int(model.count_params()), "last_loss": round(float(loss), 4),
            "load": round(others, 2), **({"lora_percent": lora["percent"]} if lora else {})}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=16000)
    parser.add_argument("--block", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--targets", default="q,v")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--worker", choices=("full", "lora"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    shape = {k: getattr(args, k) for k in ("layers", "width", "heads", "vocab", "block", "batch", "rank", "targets",
                                           "steps")}
    results = {}
    for mode in ("full", "lora"):
        command = [sys.executable, __file__, "--worker", mode] + [f"--{k}={v}" for k, v in shape.items()]
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        if done.returncode:
            sys.stderr.write(done.stderr[-3000:])
            return done.returncode
        results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{mode:>4}: {results[mode]['tokens_per_s']:>9,.1f} tokens/s, peak RSS {results[mode]['peak_rss_mb']:,.0f} MB "
              f"(model {results[mode]['model_rss_mb']:,.0f} MB), {results[mode]['trainable']:,} trainable", flush=True)
    full, lora = results["full"], results["lora"]
    print(json.dumps({"bench": "lora", **shape, "full": full, "lora": lora,
                      "speedup": round(lora["tokens_per_s"] / full["tokens_per_s"], 3),
                      "memory_ratio": round(lora["peak_rss_mb"] / full["peak_rss_mb"], 3), **cpu_facts()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
