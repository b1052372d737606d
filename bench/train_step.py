"""Training throughput: lmlab's compiled step against Hugging Face ``transformers`` on PyTorch.

    python bench/train_step.py [--shapes small,large] [--tf-inter-op 1] [--profile]

(about 15 minutes on the 2-core CI-class machine when it is otherwise idle, a third of it the
compilation of the ``torch.compile`` modes; ``--profile`` adds about 10 more.)

What is measured, for two GPT-2 shapes with a 65-token (character-level) vocabulary,
dropout 0, float32:

* ``small``: nanoGPT's CPU Shakespeare recipe, block 64, batch 12, 4 layers, 4 heads, 128 wide;
* ``large``: block 256, batch 16, 6 layers, 6 heads, 384 wide.

For each shape, tokens/s (``batch * block / seconds per step``) of one full optimizer step:

* ``lmlab``: :func:`lmlab.models.transformer.build_transformer` plus
  :func:`lmlab.training.trainer.build_optimizer` (AdamW, warm-up + cosine schedule,
  global-norm clipping at 1.0, weight decay on matrices only) driven by
  :class:`lmlab.training.steps.Stepper` ``.train`` -- the XLA-compiled step lmlab's trainer runs;
* ``lmlab_bf16``: the same, built under ``keras.config.set_dtype_policy("mixed_bfloat16")``
  (reset to float32 afterwards) and compiled as the trainer's ``compile: auto`` does for it
  (:func:`lmlab.training.steps.use_xla`: on a CPU, a TensorFlow graph, whose oneDNN matmuls use
  bfloat16 instructions, instead of XLA, whose CPU backend computes bfloat16 products in float32);
* the peer, ``GPT2LMHeadModel`` of the same shape (tied embeddings, ``gelu_new``, LayerNorm eps
  1e-5, all dropouts 0, the library's default attention, i.e. SDPA): cross-entropy on the
  logits, ``torch.nn.utils.clip_grad_norm_(…, 1.0)``, ``torch.optim.AdamW`` with the same betas
  (0.9, 0.99), eps 1e-8, weight decay 0.1 on matrices only, and a ``LambdaLR`` warm-up + cosine
  schedule, in its four modes, each in its own worker and each with AdamW's fastest correct
  implementation here (``fused=True``, else ``foreach=True``; ``adamw`` in the JSON says which):

  * ``transformers``: float32, eager;
  * ``transformers_bf16``: the forward pass and the loss under ``torch.autocast("cpu",
    dtype=torch.bfloat16)`` (float32 weights, optimizer and loss: the same mixed precision
    as lmlab's ``mixed_bfloat16``);
  * ``transformers_compiled`` / ``transformers_bf16_compiled``: the same with the model wrapped in
    ``torch.compile`` (inductor; a mode whose compilation fails is reported as ``null``).

Threads: ``torch.set_num_threads(2)``; TensorFlow intra-op 2 and inter-op ``--tf-inter-op``
(default 1: as fast as 2 here), set before anything is built.

How: each contender runs in its own long-lived worker process (so the two frameworks' thread
pools never share a process), builds its model, and warms up (compilation included) on the
same random token batches (NumPy, fixed seed). The parent then runs ``--rounds`` rounds; in
each, every worker in turn times a burst of steps one by one while the others wait idle
(100 steps in all for small, 15 for large). Before each burst the parent waits (within
``--idle-budget`` seconds in all) until other processes on the machine are quiet, and each
burst records how many cores other processes kept busy during it. The figure is the median
step time over the bursts that were not disturbed (other processes < 0.25 cores; all bursts,
flagged ``contended``, if none was). On a shared machine PyTorch suffers most from
disturbance: its OpenMP threads wait on each other at every operation, and a busy core made
its steps 10 to 40 times slower here.

``ratio_best_small`` / ``ratio_best_large`` = lmlab's fastest mode's tokens/s / the peer's
fastest mode's (the figures to quote; the issue's targets: ≥ 2.0 and ≥ 1.5), with
``lmlab_best_*`` and ``peer_best_*`` naming the two; ``ratio_small`` / ``ratio_large`` compare
the float32 modes and ``ratio_bf16_*`` the bfloat16 ones.

``*_gflops`` is each contender's step FLOPs (``6N + 12·L·d·T`` per token as
:meth:`TransformerLM.flops_per_token`) over its step time, and ``*_mfu`` that over the matmul
peak of the path it runs on (the higher of its two sizes), measured in the same run by separate worker processes
(``matmul_gflops``: the best of 20 n×n×n matmuls at n = 384 and 1024, for PyTorch float32 and
bfloat16, a TensorFlow graph float32 and bfloat16 (oneDNN), and XLA float32 and bfloat16).
The CPU's model name and flags (``cpu_flags``: amx_bf16, avx512_bf16, ...) come first.

``--profile`` adds a second group of workers per shape that shows where lmlab's step time
goes, all XLA-compiled on the same model and batches (``profile_<shape>_ms``, median ms per
call, half the steps of the main figures):

* ``stepper``: lmlab's ``Stepper.train`` again (the reference for this group);
* ``keras_fit``: ``model.compile(jit_compile=True)`` + ``train_on_batch`` with the same AdamW;
* ``fwd_bwd``: loss and gradients (and their global norm), no optimizer;
* ``fwd``: the forward pass and the loss alone;
* ``apply``: the optimizer update alone (``optimizer.apply`` on fixed gradients);
* ``reference_attn``: ``Stepper.train`` with ``attention="reference"`` instead of ``"fused"``;
* ``bare_keras``: the stock-Keras-layers model of ``bench/loader.py`` with ``train_on_batch``;
* ``torch_fwd_bwd`` / ``torch_fwd``: the same two pieces for ``transformers``.

Progress goes to stderr; one JSON line with every figure goes to stdout at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from contenders import (REPO, Budget, add_driver_arguments, cpu_facts, interleave, serve,  # noqa: E402
                        start_workers, timed_burst)

VOCAB = 65
THREADS = 2
SHAPES = {
    "small": dict(block=64, batch=12, n_layer=4, n_head=4, d_model=128, steps=100, warmup=10),
    "large": dict(block=256, batch=16, n_layer=6, n_head=6, d_model=384, steps=15, warmup=3),
}
# The optimizer both sides use (lmlab's TrainConfig defaults: nanoGPT's CPU recipe).
LR, MIN_LR, WARMUP, MAX_STEPS = 1e-3, 1e-4, 100, 2000
BETAS, EPS, WEIGHT_DECAY, CLIP = (0.9, 0.99), 1e-8, 0.1, 1.0
# The peer's modes: part -> (bfloat16 autocast, torch.compile)
PEER_MODES = {"transformers": (False, False), "transformers_bf16": (True, False),
              "transformers_compiled": (False, True), "transformers_bf16_compiled": (True, True)}
LMLAB_PARTS = ("lmlab", "lmlab_bf16")
MAIN_PARTS = (*PEER_MODES, *LMLAB_PARTS)
# Which measured matmul peak each contender's step runs on (for its model FLOPs utilisation).
PEAK_OF = {"transformers": "torch_float32", "transformers_compiled": "torch_float32",
           "transformers_bf16": "torch_bfloat16", "transformers_bf16_compiled": "torch_bfloat16",
           "lmlab": "xla_float32", "lmlab_bf16": "tf_graph_bfloat16"}
PEAK_SIZES = (384, 1024)
PROFILE_PARTS = ("stepper", "keras_fit", "fwd_bwd", "fwd", "apply", "reference_attn", "bare_keras",
                 "torch_fwd_bwd", "torch_fwd")


def log(message: str) -> None:
    print(f"[train_step] {message}", file=sys.stderr, flush=True)


def batches(shape: dict, count: int = 8, seed: int = 0):
    """``count`` random (inputs, next-token targets) int32 pairs of shape ``(batch, block)``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        tokens = rng.integers(0, VOCAB, size=(shape["batch"], shape["block"] + 1), dtype=np.int64)
        out.append((tokens[:, :-1].astype(np.int32), tokens[:, 1:].astype(np.int32)))
    return out


# ---------------------------------------------------------------------------- workers (child side)


def torch_step(shape: dict, part: str):
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
    bf16, compiled = PEER_MODES.get(part, (False, False))
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}]
    try:  # the fused CPU kernel (PyTorch >= 2.4), else the multi-tensor one: both faster than the default loop
        optimizer, adamw = torch.optim.AdamW(groups, lr=LR, betas=BETAS, eps=EPS, fused=True), "fused"
    except (RuntimeError, TypeError):
        optimizer, adamw = torch.optim.AdamW(groups, lr=LR, betas=BETAS, eps=EPS, foreach=True), "foreach"
    forward = torch.compile(model) if compiled else model

    def lr_lambda(step):  # linear warm-up from 0, then cosine down to MIN_LR (as lmlab's schedule)
        if step < WARMUP:
            return step / WARMUP
        progress = min((step - WARMUP) / (MAX_STEPS - WARMUP), 1.0)
        return (MIN_LR + (LR - MIN_LR) * 0.5 * (1 + math.cos(math.pi * progress))) / LR

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)

    def loss_of(x, y):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = forward(input_ids=x).logits
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1))  # a float32 loss

    def train(x, y):
        loss = loss_of(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        optimizer.step()
        scheduler.step()
        return float(loss), float(norm)

    def fwd_bwd(x, y):
        model.zero_grad(set_to_none=True)
        loss = loss_of(x, y)
        loss.backward()
        return float(loss)

    def fwd(x, y):
        with torch.no_grad():
            return float(loss_of(x, y))

    step = {"torch_fwd_bwd": fwd_bwd, "torch_fwd": fwd}.get(part, train)
    data = [(torch.from_numpy(x).long(), torch.from_numpy(y).long()) for x, y in batches(shape)]
    info = {"attn_implementation": getattr(model.config, "_attn_implementation", None),
            "parameters": sum(p.numel() for p in model.parameters()), "adamw": adamw}
    return step, data, info


def best_gflops(matmul, n: int, repeats: int = 20) -> float:
    """Best GFLOPS of ``matmul()`` (an ``n``³ product that blocks until done) over ``repeats`` calls."""
    for _ in range(3):
        matmul()
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        matmul()
        best = min(best, time.perf_counter() - t0)
    return round(2 * n**3 / best / 1e9, 1)


def torch_peaks() -> dict:
    """PyTorch's float32 and bfloat16 matmul GFLOPS on its threads, at each of ``PEAK_SIZES``."""
    import torch

    torch.set_num_threads(THREADS)
    out = {}
    for dtype in ("float32", "bfloat16"):
        for n in PEAK_SIZES:
            a, b = torch.rand(n, n).to(getattr(torch, dtype)), torch.rand(n, n).to(getattr(torch, dtype))
            out[f"torch_{dtype}_{n}"] = best_gflops(lambda: a @ b, n)
    return out


def tf_peaks(inter_op: int) -> dict:
    """TensorFlow graph (oneDNN) and XLA float32 and bfloat16 matmul GFLOPS, at each of ``PEAK_SIZES``."""
    tf, _ = tf_setup(inter_op)
    out = {}
    for dtype in ("float32", "bfloat16"):
        for n in PEAK_SIZES:
            a = tf.cast(tf.random.uniform((n, n)), dtype)
            b = tf.cast(tf.random.uniform((n, n)), dtype)
            for path, xla in (("tf_graph", False), ("xla", True)):
                product = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)[:1, :1]), jit_compile=xla)
                out[f"{path}_{dtype}_{n}"] = best_gflops(lambda: product(a, b).numpy(), n)
    return out


def tf_setup(inter_op: int):
    """Thread settings first, then Keras (on the TensorFlow backend)."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(THREADS)
    tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    import keras

    if keras.backend.backend() != "tensorflow":
        raise SystemExit(f"this benchmark runs lmlab on the tensorflow backend, not {keras.backend.backend()}")
    return tf, keras


def lmlab_parts(shape: dict, attention: str = "fused"):
    from lmlab.models.transformer import build_transformer, shape as model_shape
    from lmlab.training.config import TrainConfig
    from lmlab.training.optimizer import build_optimizer

    config = model_shape("shakespeare-char", vocab_size=VOCAB, block_size=shape["block"], n_layer=shape["n_layer"],
                         n_head=shape["n_head"], d_model=shape["d_model"], dropout=0.0, attention=attention)
    model = build_transformer(config, seed=0)
    train_config = TrainConfig(batch_size=shape["batch"], max_steps=MAX_STEPS, warmup_steps=WARMUP,
                               learning_rate=LR, min_learning_rate=MIN_LR, weight_decay=WEIGHT_DECAY,
                               beta1=BETAS[0], beta2=BETAS[1], grad_clip=CLIP)
    optimizer, _ = build_optimizer(train_config, model)
    return model, optimizer


def lmlab_step(shape: dict, part: str, inter_op: int):
    tf, keras = tf_setup(inter_op)
    from lmlab.training.steps import Stepper, global_norm, token_loss, use_xla

    keras.config.set_dtype_policy("mixed_bfloat16" if part == "lmlab_bf16" else "float32")
    try:
        keras.utils.set_random_seed(0)
        data = batches(shape)
        if part == "bare_keras":
            sys.path.insert(0, str(REPO / "bench"))
            from loader import small_transformer

            model = small_transformer(VOCAB, shape["block"], shape["n_layer"], shape["n_head"], shape["d_model"])
            return lambda x, y: float(model.train_on_batch(x, y)), data, {}
        model, optimizer = lmlab_parts(shape, "reference" if part == "reference_attn" else "fused")
        info = {"parameters": int(model.num_parameters()), "flops_per_token": int(model.flops_per_token())}
        if part in ("lmlab", "lmlab_bf16", "stepper", "reference_attn"):
            precision = "mixed_bfloat16" if part == "lmlab_bf16" else "float32"
            stepper = Stepper(model, optimizer, jit_compile=use_xla("auto", precision))
            return stepper.train, [(x[None], y[None]) for x, y in data], info  # (A=1, B, T)
        if part == "keras_fit":
            model.compile(optimizer=optimizer, jit_compile=True,
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            return lambda x, y: float(model.train_on_batch(x, y)), data, info
        variables = model.trainable_variables
        if part == "fwd_bwd":
            @tf.function(jit_compile=True)
            def fwd_bwd(x, y):
                with tf.GradientTape() as tape:
                    loss = keras.ops.mean(token_loss(y, model(x, training=True)))
                return loss, global_norm(tape.gradient(loss, variables))

            return lambda x, y: [float(t) for t in fwd_bwd(x, y)], data, info
        if part == "fwd":
            @tf.function(jit_compile=True)
            def fwd(x, y):
                return keras.ops.mean(token_loss(y, model(x, training=True)))

            return lambda x, y: float(fwd(x, y)), data, info
        if part == "apply":
            grads = [tf.constant(1e-3, shape=v.shape, dtype=v.dtype) for v in variables]

            @tf.function(jit_compile=True)
            def apply():
                optimizer.apply(grads, variables)
                return optimizer.iterations

            return lambda x, y: int(apply()), data, info
    finally:
        keras.config.set_dtype_policy("float32")
    raise SystemExit(f"unknown part {part!r}")


def worker(args) -> None:
    """Child process: build and warm up, say so, then time bursts of steps on request."""
    shape = SHAPES[args.shape]
    if args.part in ("peaks_torch", "peaks_tf"):  # no steps: the matmul peaks, in the ready line
        peaks = torch_peaks() if args.part == "peaks_torch" else tf_peaks(args.tf_inter_op)
        return serve({"warmup_s": 0.0, "peaks": peaks}, lambda count: {"times": [], "other_cores": 0.0})
    if args.part.startswith("torch") or args.part.startswith("transformers"):
        step, data, info = torch_step(shape, args.part)
    else:
        step, data, info = lmlab_step(shape, args.part, args.tf_inter_op)
    start = time.perf_counter()
    for i in range(shape["warmup"]):
        step(*data[i % len(data)])
    done = shape["warmup"]

    def burst(count: int) -> dict:
        nonlocal done
        result = timed_burst(lambda i: step(*data[(done + i) % len(data)]), count)
        done += count
        return result

    serve({"warmup_s": round(time.perf_counter() - start, 3), **info}, burst)


# ---------------------------------------------------------------------------- driver (parent side)


def measure(args, budget: Budget, parts, shape: str, steps: int) -> dict:
    """Start the workers one at a time, then interleave their timed bursts; returns per-part summaries."""
    s = SHAPES[shape]
    workers = []
    try:
        workers = start_workers(args, budget, parts, shape, __file__, log)
        for w in workers:
            log(f"{w.part:>15} {shape}: built and warmed up in {w.info['start_s']} s "
                f"({s['warmup']} steps {w.info['warmup_s']} s)")
        rounds = max(1, min(args.rounds, steps))
        per_round = [steps // rounds + (1 if r < steps % rounds else 0) for r in range(rounds)]
        interleave(workers, per_round, budget, log, lambda r, w, count, b: (
            f"round {r + 1}/{rounds} {w.part:>15}: {count} steps, median "
            f"{statistics.median(b['times']) * 1e3:8.1f} ms"))
        tokens = s["batch"] * s["block"]
        out = {}
        for w in workers:
            out[w.part] = {**w.summary(tokens), **{k: v for k, v in w.info.items() if k != "ready"}}
            r = out[w.part]
            log(f"{w.part:>15} {shape}: {r['median_s'] * 1e3:9.1f} ms/step median of {r['steps']} "
                f"= {r['tokens_per_s']:,.0f} tokens/s{'  CONTENDED' if r['contended'] else ''}")
        return out
    finally:
        for w in workers:
            w.close()


def matmul_peaks(args, budget: Budget) -> dict:
    """Each framework's matmul GFLOPS (PyTorch; TensorFlow graph and XLA), each in a worker process of its own."""
    peaks: dict = {}
    workers = start_workers(args, budget, ("peaks_torch", "peaks_tf"), "small", __file__, log)
    for w in workers:
        peaks.update(w.info["peaks"])
        w.close()
    return peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_driver_arguments(parser)
    parser.add_argument("--steps-small", type=int, default=SHAPES["small"]["steps"])
    parser.add_argument("--steps-large", type=int, default=SHAPES["large"]["steps"])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved bursts per contender")
    parser.add_argument("--profile", action=argparse.BooleanOptionalAction, default=False,
                        help="also time the pieces of lmlab's step (see the module docstring)")
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    import keras
    import tensorflow as tf
    import torch
    import transformers

    log(f"cores {os.cpu_count()}; torch {torch.__version__} ({THREADS} threads), transformers "
        f"{transformers.__version__}, tensorflow {tf.__version__} (intra-op {THREADS}, inter-op "
        f"{args.tf_inter_op}), keras {keras.__version__}")
    machine = cpu_facts()
    log(f"cpu {machine['cpu_model']}, {machine['cpu_cores']} cores, flags {' '.join(machine['cpu_flags'])}")
    summary: dict = {**machine, "threads": THREADS, "tf_intra_op": THREADS, "tf_inter_op": args.tf_inter_op,
                     "torch": torch.__version__, "transformers": transformers.__version__,
                     "tensorflow": tf.__version__, "keras": keras.__version__}
    budget = Budget(args.idle_budget)
    start = time.perf_counter()
    peaks = matmul_peaks(args, budget)
    summary["matmul_gflops"] = peaks
    log("matmul peaks (GFLOPS): " + ", ".join(f"{k} {v}" for k, v in peaks.items()))
    for shape in [s for s in args.shapes.split(",") if s]:
        s = SHAPES[shape]
        steps = args.steps_small if shape == "small" else args.steps_large
        log(f"{shape}: batch {s['batch']}, block {s['block']}, {s['n_layer']} layers, {s['n_head']} heads, "
            f"{s['d_model']} wide, vocab {VOCAB}; {steps} timed steps each")
        main_r = measure(args, budget, MAIN_PARTS, shape, steps)
        for part in MAIN_PARTS:
            if part in main_r:
                r = main_r[part]
                summary[f"{part}_{shape}_tokens_per_s"] = r["tokens_per_s"]
                summary[f"{part}_{shape}_ms_per_step"] = round(r["median_s"] * 1e3, 2)
            else:
                summary[f"{part}_{shape}_tokens_per_s"] = None  # its worker failed (e.g. torch.compile)
        for ours, theirs, key in (("lmlab", "transformers", f"ratio_{shape}"),
                                  ("lmlab_bf16", "transformers_bf16", f"ratio_bf16_{shape}")):
            if ours in main_r and theirs in main_r:
                summary[key] = round(main_r[ours]["tokens_per_s"] / main_r[theirs]["tokens_per_s"], 3)
        fastest = {side: max((p for p in parts if p in main_r), key=lambda p: main_r[p]["tokens_per_s"], default=None)
                   for side, parts in (("lmlab", LMLAB_PARTS), ("peer", PEER_MODES))}
        if fastest["lmlab"] and fastest["peer"]:
            summary[f"lmlab_best_{shape}"], summary[f"peer_best_{shape}"] = fastest["lmlab"], fastest["peer"]
            summary[f"ratio_best_{shape}"] = round(main_r[fastest["lmlab"]]["tokens_per_s"]
                                                   / main_r[fastest["peer"]]["tokens_per_s"], 3)
        if "transformers" in main_r:
            summary["transformers_attn_implementation"] = main_r["transformers"].get("attn_implementation")
            summary["transformers_adamw"] = main_r["transformers"].get("adamw")
        if "lmlab" in main_r:
            gflops = main_r["lmlab"]["flops_per_token"] * s["batch"] * s["block"] / 1e9
            summary[f"gflop_per_step_{shape}"] = round(gflops, 2)
            for part in MAIN_PARTS:
                if part in main_r:
                    achieved = gflops / main_r[part]["median_s"]
                    summary[f"{part}_{shape}_gflops"] = round(achieved, 1)
                    peak = max((peaks.get(f"{PEAK_OF[part]}_{n}") or 0 for n in PEAK_SIZES), default=0)
                    summary[f"{part}_{shape}_mfu"] = round(achieved / peak, 3) if peak else None
        summary[f"contended_{shape}"] = any(r["contended"] for r in main_r.values())
        summary[f"other_cores_{shape}"] = max((r["other_cores"] for r in main_r.values()), default=None)
        if args.profile:
            prof = measure(args, budget, PROFILE_PARTS, shape, max(2, steps // 2))
            summary[f"profile_{shape}_ms"] = {p: round(r["median_s"] * 1e3, 2) for p, r in prof.items()}
            summary[f"profile_{shape}_contended"] = any(r["contended"] for r in prof.values())
    summary["wall_s"] = round(time.perf_counter() - start, 1)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
