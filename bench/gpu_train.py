"""GPT-2-small-shaped training throughput and MFU on one accelerator, through lmlab's own step.

    python bench/gpu_train.py --backend jax          # or tensorflow; see bench/gpu.sh
    python bench/gpu_train.py --backend jax --smoke  # a debug-sized dry run on whatever device (CPU in CI)

Builds the ``gpt2-small`` model shape (124M parameters, block 1024, vocabulary 50,257) under a
``mixed_bfloat16`` policy, the trainer's AdamW and the compiled step of
:class:`lmlab.training.steps.Stepper` (XLA on TensorFlow, ``jax.jit`` on JAX), and times
``--steps`` steps on random tokens after ``--warmup`` steps (compilation). It reports tokens/s
and the model FLOPs utilisation: tokens/s × (6N + 12·L·H·Q·T) over the chip's peak bf16 FLOP/s
(``--peak-tflops``, else looked up from the device name; unknown: MFU is left out). One JSON
line goes to stdout (and to ``--json`` if given).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
import os
import sys
import time

sys.path.insert(0, str(Path(__file__).resolve().parent))

from contenders import cpu_facts  # noqa: E402

# Dense bf16 peak (no sparsity), TFLOP/s, from the vendors' data sheets.
PEAK_TFLOPS = {
    "H200": 989.0, "H100 SXM": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0,
    "L4": 121.0, "A10G": 125.0, "A10": 125.0, "TPU v5p": 459.0, "TPU v5 lite": 197.0, "TPU v5e": 197.0,
    "TPU v4": 275.0, "TPU v6 lite": 918.0,
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("jax", "tensorflow"), required=True)
    parser.add_argument("--shape", default="gpt2-small", help="transformer model shape (random weights)")
    parser.add_argument("--preset", dest="shape", help=argparse.SUPPRESS)  # the old name of --shape
    parser.add_argument("--batch-size", type=int, default=16, help="sequences per step (default 16)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps (default 30)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first, compilation included")
    parser.add_argument("--precision", default="mixed_bfloat16", choices=("mixed_bfloat16", "float32"))
    parser.add_argument("--peak-tflops", type=float, help="the chip's peak FLOP/s in TFLOP/s, for MFU")
    parser.add_argument("--smoke", action="store_true",
                        help="dry run: the debug shape, batch 2, 2 warm-up and 3 timed steps")
    parser.add_argument("--json", help="also append the result line to this file")
    return parser.parse_args(argv)


def device_name(backend: str) -> str:
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        return getattr(device, "device_kind", str(device))
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return details.get("device_name", "GPU")
    return "CPU"


def peak_for(name: str) -> float | None:
    for key in sorted(PEAK_TFLOPS, key=len, reverse=True):  # "H100 PCIe" before "H100"
        if key.lower() in name.lower():
            return PEAK_TFLOPS[key] * 1e12
    return None


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.smoke:
        args.shape, args.batch_size, args.warmup, args.steps = "debug", 2, 2, 3
    os.environ["KERAS_BACKEND"] = args.backend
    import keras
    import numpy as np

    from lmlab.models import transformer
    from lmlab.models.registry import build_model
    from lmlab.training.config import TrainConfig
    from lmlab.training.steps import Stepper
    from lmlab.training.optimizer import build_optimizer

    vocab = 50257
    config = transformer.shape(args.shape, vocab_size=vocab)
    keras.config.set_dtype_policy(args.precision)
    keras.utils.set_random_seed(0)
    model = build_model(config, seed=0)
    train_config = TrainConfig(data="synthetic", shape=args.shape, batch_size=args.batch_size,
                               max_steps=max(args.warmup + args.steps, 2), warmup_steps=1, precision=args.precision)
    optimizer, _ = build_optimizer(train_config, model)
    stepper = Stepper(model, optimizer)
    rng = np.random.default_rng(0)
    shape = (1, args.batch_size, config.block_size)

    def batch():
        tokens = rng.integers(0, vocab, (shape[0], shape[1], shape[2] + 1), dtype=np.int32)
        return tokens[..., :-1], tokens[..., 1:]

    batches = [batch() for _ in range(4)]
    for i in range(args.warmup):
        loss, _ = stepper.train(*batches[i % 4])  # float(): waits for the device
    start = time.perf_counter()
    for i in range(args.steps):
        loss, _ = stepper.train(*batches[i % 4])
    seconds = time.perf_counter() - start
    tokens_per_s = args.steps * args.batch_size * config.block_size / seconds
    flops_per_token = model.flops_per_token()
    name = device_name(args.backend)
    peak = args.peak_tflops * 1e12 if args.peak_tflops else peak_for(name)
    result = {"backend": args.backend, "device": name, "shape": args.shape, "precision": args.precision,
              "parameters": int(model.num_parameters()), "batch_size": args.batch_size,
              "block_size": config.block_size, "steps": args.steps, "seconds": round(seconds, 3),
              "tokens_per_s": round(tokens_per_s, 1), "flops_per_token": int(flops_per_token),
              "achieved_tflops": round(tokens_per_s * flops_per_token / 1e12, 3),
              "peak_tflops": peak / 1e12 if peak else None,
              "mfu": round(tokens_per_s * flops_per_token / peak, 4) if peak else None,
              "final_loss": round(float(loss), 4), "smoke": args.smoke}
    line = json.dumps({**cpu_facts(), **result})
    print(line)
    if args.json:
        with open(args.json, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
