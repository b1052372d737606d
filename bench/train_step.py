"""Training throughput: lmlab's compiled step against Hugging Face ``transformers`` on PyTorch.

    python bench/train_step.py [--shapes small,large] [--tf-inter-op 1] [--profile | --no-profile]

What is measured, for two GPT-2 shapes with a 65-token (character-level) vocabulary,
dropout 0, float32:

* ``small``: nanoGPT's CPU Shakespeare recipe, block 64, batch 12, 4 layers, 4 heads, 128 wide;
* ``large``: block 256, batch 16, 6 layers, 6 heads, 384 wide.

For each shape, tokens/s (``batch * block / seconds per step``) of one full optimizer step:

* ``lmlab``: :func:`lmlab.models.transformer.build_transformer` plus
  :func:`lmlab.training.trainer.build_optimizer` (AdamW, warm-up + cosine schedule,
  global-norm clipping at 1.0, weight decay on matrices only) driven by
  :class:`lmlab.training.steps.Stepper` ``.train`` -- the XLA-compiled step lmlab's trainer runs;
* ``lmlab_bf16``: the same under ``keras.config.set_dtype_policy("mixed_bfloat16")``;
* ``transformers``: ``GPT2LMHeadModel`` of the same shape (tied embeddings, ``gelu_new``,
  LayerNorm eps 1e-5, all dropouts 0, the library's default attention) in eager PyTorch,
  cross-entropy on the logits, ``torch.nn.utils.clip_grad_norm_(…, 1.0)``, ``torch.optim.AdamW``
  with the same betas (0.9, 0.99), eps 1e-8, weight decay 0.1 on matrices only, and a
  ``LambdaLR`` warm-up + cosine schedule.

Both get 2 threads: ``torch.set_num_threads(2)``; TensorFlow intra-op 2 and inter-op
``--tf-inter-op`` (default 1, the faster here), set before anything is built. Every
measurement runs in its own child process (so the two frameworks' thread pools never
share a process), on the same random token batches (NumPy, fixed seed). Each warms up
(including compilation) for a few steps, then times ``--steps-small`` / ``--steps-large``
steps one by one; the figure is the median step time (the mean is reported too).

``ratio_small`` / ``ratio_large`` = lmlab tokens/s / transformers tokens/s (targets: ≥ 2.0
and ≥ 1.5).

``--profile`` (on by default) adds measurements that show where lmlab's step time goes,
all XLA-compiled on the same model and batch:

* ``keras_fit``: ``model.compile(jit_compile=True)`` + ``train_on_batch`` with an equal AdamW;
* ``fwd_bwd``: loss and gradients (and their global norm) without the optimizer;
* ``fwd``: the forward pass and loss alone;
* ``apply``: the optimizer update alone (``optimizer.apply`` on fixed gradients);
* ``reference_attn``: lmlab's Stepper with ``attention="reference"`` instead of ``"fused"``;
* ``bare_keras``: the stock-Keras-layers model of ``bench/loader.py`` with ``train_on_batch``.

Progress goes to stderr; one JSON line with every figure goes to stdout at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VOCAB = 65
THREADS = 2
SHAPES = {
    "small": dict(block=64, batch=12, n_layer=4, n_head=4, d_model=128),
    "large": dict(block=256, batch=16, n_layer=6, n_head=6, d_model=384),
}
# The optimizer both sides use (lmlab's TrainConfig defaults: nanoGPT's CPU recipe).
LR, MIN_LR, WARMUP, MAX_STEPS = 1e-3, 1e-4, 100, 2000
BETAS, EPS, WEIGHT_DECAY, CLIP = (0.9, 0.99), 1e-8, 0.1, 1.0


def log(message: str) -> None:
    print(f"[train_step] {message}", file=sys.stderr, flush=True)


def batches(shape: dict, count: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        tokens = rng.integers(0, VOCAB, size=(shape["batch"], shape["block"] + 1), dtype=np.int64)
        out.append((tokens[:, :-1].astype(np.int32), tokens[:, 1:].astype(np.int32)))
    return out


def time_steps(step, data, warmup: int, steps: int) -> dict:
    """Run ``warmup`` untimed steps, then ``steps`` timed ones; ``step(x, y)`` must block until done."""
    start = time.perf_counter()
    for i in range(warmup):
        step(*data[i % len(data)])
    warm_s = time.perf_counter() - start
    times = []
    for i in range(steps):
        x, y = data[(warmup + i) % len(data)]
        t0 = time.perf_counter()
        step(x, y)
        times.append(time.perf_counter() - t0)
    return {"warmup_s": round(warm_s, 3), "median_s": statistics.median(times), "mean_s": statistics.fmean(times),
            "min_s": min(times), "steps": steps}


# ---------------------------------------------------------------------------- PyTorch


def run_torch(shape: dict, warmup: int, steps: int) -> dict:
    import torch
    import torch.nn.functional as F
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=VOCAB, n_positions=shape["block"], n_embd=shape["d_model"],
                        n_layer=shape["n_layer"], n_head=shape["n_head"], activation_function="gelu_new",
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5,
                        tie_word_embeddings=True)
    model = GPT2LMHeadModel(config).float().train()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=LR, betas=BETAS, eps=EPS)

    def lr_lambda(step):  # linear warm-up from 0, then cosine to MIN_LR (as lmlab's schedule)
        if step < WARMUP:
            return step / WARMUP
        progress = min((step - WARMUP) / (MAX_STEPS - WARMUP), 1.0)
        return (MIN_LR + (LR - MIN_LR) * 0.5 * (1 + math.cos(math.pi * progress))) / LR

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    data = [(torch.from_numpy(x).long(), torch.from_numpy(y).long()) for x, y in batches(shape, 8)]

    def step(x, y):
        logits = model(input_ids=x).logits
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        optimizer.step()
        scheduler.step()
        return float(loss), float(norm)

    result = time_steps(step, data, warmup, steps)
    result["attn_implementation"] = getattr(model.config, "_attn_implementation", None)
    result["parameters"] = sum(p.numel() for p in model.parameters())
    return result


# ---------------------------------------------------------------------------- TensorFlow / lmlab


def tf_setup(inter_op: int):
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(THREADS)
    tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    import keras

    if keras.backend.backend() != "tensorflow":
        raise SystemExit(f"this benchmark runs lmlab on the tensorflow backend, not {keras.backend.backend()}")
    return tf, keras


def lmlab_parts(shape: dict, attention: str = "fused"):
    from lmlab.models.transformer import build_transformer, preset
    from lmlab.training.config import TrainConfig
    from lmlab.training.trainer import build_optimizer

    config = preset("shakespeare-char", vocab_size=VOCAB, block_size=shape["block"], n_layer=shape["n_layer"],
                    n_head=shape["n_head"], d_model=shape["d_model"], dropout=0.0, attention=attention)
    model = build_transformer(config, seed=0)
    train_config = TrainConfig(batch_size=shape["batch"], max_steps=MAX_STEPS, warmup_steps=WARMUP,
                               learning_rate=LR, min_learning_rate=MIN_LR, weight_decay=WEIGHT_DECAY,
                               beta1=BETAS[0], beta2=BETAS[1], grad_clip=CLIP)
    optimizer, _ = build_optimizer(train_config, model)
    return model, optimizer


def run_lmlab(shape: dict, warmup: int, steps: int, inter_op: int, variant: str) -> dict:
    tf, keras = tf_setup(inter_op)
    from lmlab.training.steps import Stepper, global_norm, token_loss

    policy = "mixed_bfloat16" if variant == "bf16" else "float32"
    keras.config.set_dtype_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        data = batches(shape, 8)
        if variant == "bare_keras":
            sys.path.insert(0, str(REPO / "bench"))
            from loader import small_transformer

            model = small_transformer(VOCAB, shape["block"], shape["n_layer"], shape["n_head"], shape["d_model"])
            return time_steps(lambda x, y: float(model.train_on_batch(x, y)), data, warmup, steps)
        model, optimizer = lmlab_parts(shape, "reference" if variant == "reference_attn" else "fused")
        result = {"parameters": int(model.num_parameters())}
        if variant in ("float32", "bf16", "reference_attn"):
            stepper = Stepper(model, optimizer)
            data = [(x[None], y[None]) for x, y in data]  # (A=1, B, T)
            result.update(time_steps(stepper.train, data, warmup, steps))
        elif variant == "keras_fit":
            model.compile(optimizer=optimizer, jit_compile=True,
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            result.update(time_steps(lambda x, y: float(model.train_on_batch(x, y)), data, warmup, steps))
        elif variant == "fwd_bwd":
            variables = model.trainable_variables

            @tf.function(jit_compile=True)
            def fwd_bwd(x, y):
                with tf.GradientTape() as tape:
                    loss = keras.ops.mean(token_loss(y, model(x, training=True)))
                return loss, global_norm(tape.gradient(loss, variables))

            result.update(time_steps(lambda x, y: [float(t) for t in fwd_bwd(x, y)], data, warmup, steps))
        elif variant == "fwd":
            @tf.function(jit_compile=True)
            def fwd(x, y):
                return keras.ops.mean(token_loss(y, model(x, training=True)))

            result.update(time_steps(lambda x, y: float(fwd(x, y)), data, warmup, steps))
        elif variant == "apply":
            variables = model.trainable_variables
            grads = [tf.constant(1e-3, shape=v.shape, dtype=v.dtype) for v in variables]

            @tf.function(jit_compile=True)
            def apply():
                optimizer.apply(grads, variables)
                return optimizer.iterations

            result.update(time_steps(lambda x, y: int(apply()), data, warmup, steps))
        else:
            raise SystemExit(f"unknown lmlab variant {variant!r}")
        return result
    finally:
        keras.config.set_dtype_policy("float32")


# ---------------------------------------------------------------------------- driver


def child(args) -> None:
    shape = SHAPES[args.shape]
    steps = args.steps_small if args.shape == "small" else args.steps_large
    warmup = args.warmup_small if args.shape == "small" else args.warmup_large
    if args.part == "torch":
        result = run_torch(shape, warmup, steps)
    else:
        variant = args.part.removeprefix("lmlab_") if args.part != "lmlab" else "float32"
        if variant in ("fwd_bwd", "fwd", "apply"):
            steps = steps * 2  # cheap: more steps for a steadier figure
        result = run_lmlab(shape, warmup, steps, args.tf_inter_op, variant)
    print(json.dumps(result), flush=True)


def run_child(args, part: str, shape: str) -> dict | None:
    command = [sys.executable, __file__, "--child", "--part", part, "--shape", shape,
               "--tf-inter-op", str(args.tf_inter_op),
               "--steps-small", str(args.steps_small), "--steps-large", str(args.steps_large),
               "--warmup-small", str(args.warmup_small), "--warmup-large", str(args.warmup_large)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    proc = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        log(f"{part} {shape} FAILED (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        return None
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    s = SHAPES[shape]
    result["tokens_per_s"] = round(s["batch"] * s["block"] / result["median_s"], 1)
    log(f"{part:>20} {shape}: {result['median_s'] * 1e3:9.1f} ms/step median "
        f"(mean {result['mean_s'] * 1e3:.1f}, {result['steps']} steps, warm-up {result['warmup_s']} s) "
        f"= {result['tokens_per_s']:,.0f} tokens/s   [{time.perf_counter() - start:.0f} s]")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="small,large")
    parser.add_argument("--tf-inter-op", type=int, default=1, help="TensorFlow inter-op threads (1 or 2)")
    parser.add_argument("--steps-small", type=int, default=100)
    parser.add_argument("--steps-large", type=int, default=15)
    parser.add_argument("--warmup-small", type=int, default=10)
    parser.add_argument("--warmup-large", type=int, default=3)
    parser.add_argument("--profile", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the breakdown of lmlab's step (see the module docstring)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--part", help=argparse.SUPPRESS)
    parser.add_argument("--shape", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    shapes = [s for s in args.shapes.split(",") if s]
    parts = ["torch", "lmlab", "lmlab_bf16"]
    if args.profile:
        parts += ["lmlab_keras_fit", "lmlab_fwd_bwd", "lmlab_fwd", "lmlab_apply", "lmlab_reference_attn",
                  "lmlab_bare_keras"]
    import keras  # noqa: F401  (versions only)
    import tensorflow as tf
    import torch
    import transformers

    log(f"cores {os.cpu_count()}; torch {torch.__version__} ({THREADS} threads), transformers "
        f"{transformers.__version__}, tensorflow {tf.__version__} (intra-op {THREADS}, inter-op "
        f"{args.tf_inter_op}), keras {keras.__version__}")
    summary: dict = {"threads": THREADS, "tf_intra_op": THREADS, "tf_inter_op": args.tf_inter_op,
                     "torch": torch.__version__, "transformers": transformers.__version__,
                     "tensorflow": tf.__version__, "keras": keras.__version__}
    results: dict = {}
    for shape in shapes:
        s = SHAPES[shape]
        log(f"{shape}: batch {s['batch']}, block {s['block']}, {s['n_layer']} layers, {s['n_head']} heads, "
            f"{s['d_model']} wide, vocab {VOCAB}")
        for part in parts:
            results[(part, shape)] = run_child(args, part, shape)
        torch_r, lmlab_r, bf16_r = (results[(p, shape)] for p in ("torch", "lmlab", "lmlab_bf16"))
        for name, r in (("transformers", torch_r), ("lmlab", lmlab_r), ("lmlab_bf16", bf16_r)):
            if r:
                summary[f"{name}_{shape}_tokens_per_s"] = r["tokens_per_s"]
                summary[f"{name}_{shape}_ms_per_step"] = round(r["median_s"] * 1e3, 2)
        if torch_r and lmlab_r:
            summary[f"ratio_{shape}"] = round(lmlab_r["tokens_per_s"] / torch_r["tokens_per_s"], 3)
        if torch_r and bf16_r:
            summary[f"ratio_bf16_{shape}"] = round(bf16_r["tokens_per_s"] / torch_r["tokens_per_s"], 3)
        if torch_r:
            summary["transformers_attn_implementation"] = torch_r.get("attn_implementation")
        if args.profile:
            summary[f"profile_{shape}_ms"] = {
                part.removeprefix("lmlab_") if part.startswith("lmlab_") else part:
                    round(results[(part, shape)]["median_s"] * 1e3, 2)
                for part in parts if results[(part, shape)]}
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
