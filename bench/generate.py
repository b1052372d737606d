"""KV-cache decoding speed: lmlab's ``generate_ids`` against Hugging Face ``transformers`` ``generate``.

    python bench/generate.py [--shapes small,large] [--runs 5] [--new-tokens 256] [--tf-inter-op 1]

(about 8 minutes on the 2-core CI-class machine when it is otherwise idle: the compiled peers take
about half a minute each to compile.)

What is measured: greedy decoding of ``--new-tokens`` (256) new tokens at batch 1, and at batch 8
beside it (``--batches 1,8``; keys ending ``_batch8``, ``--runs-batch8`` runs, rows from different
prompts), from a short random prompt (``--prompt``, 8 tokens), with a KV cache, for two GPT-2 shapes with a
65-token (character-level) vocabulary and random weights (float32, dropout 0):

* ``small``: 4 layers, 4 heads, 128 wide;
* ``large``: 6 layers, 6 heads, 384 wide.

Both use a block (``block_size`` / ``n_positions``) of 512, not the training benchmark's 64
and 256: the prompt plus 256 new tokens must fit (with a smaller block lmlab would rebuild its
cache mid-run and ``transformers`` would run past its position table).

* ``lmlab_<dtype>``: :func:`lmlab.generate.decoder.generate_ids` with ``SamplerConfig(temperature=0)``, in
  each inference dtype of :mod:`lmlab.models.precision` (``float32``; ``bfloat16``; ``int8``, weight-only,
  Keras's int8 Dense path), each in its own worker: a compiled (XLA) prefill, then compiled calls that each
  make up to 32 tokens in a loop inside XLA, against per-layer key and value caches updated in place, as long
  as the generation needs (prompt + new tokens rounded up to 64: 320 slots here). Each worker also reports
  its perplexity on 256 tokens the float32 model sampled (temperature 1, seed 0), its weights' megabytes and
  its peak RSS. ``lmlab_dtype_<shape>`` = the fastest dtype (at batch 1) whose perplexity is within 1 % of
  float32's; ``lmlab_<shape>_tokens_per_s`` and the ratios are that dtype's.
* ``transformers``: ``GPT2LMHeadModel.generate(do_sample=False, max_new_tokens=256,
  use_cache=True)`` under ``torch.inference_mode()`` (eager PyTorch, the library's default
  attention and cache), with no end token so that every run makes all 256 tokens; and the
  peer's faster modes, each in its own worker:

  * ``transformers_static``: the same with ``cache_implementation="static"`` (a preallocated cache);
  * ``transformers_compiled``: the static cache and ``generate``'s own ``torch.compile`` of the
    forward pass (``CompileConfig(fullgraph=True, mode="default")``; ``generate`` compiles only on
    accelerators unless the config's ``_compile_all_devices`` is set, which is how it runs on a CPU);
  * ``transformers_bf16_compiled``: that, with the model's weights in bfloat16.

  ``ratio_best_<shape>`` = lmlab's chosen dtype's tokens/s / the fastest of the four (``peer_best_<shape>`` names
  it); ``ratio_<shape>`` is against the default mode.

Threads: ``torch.set_num_threads(2)``; TensorFlow intra-op 2, inter-op ``--tf-inter-op``
(default 1), set before anything is built.

How: as ``bench/train_step.py``: each side runs in its own long-lived worker process, which
builds the model and warms up with one full generation (for lmlab this compiles the prefill
and the step); then ``--runs`` rounds, in each of which every worker in turn times one
generation while the other waits, after waiting (within ``--idle-budget`` seconds in all) for
other processes on the machine to go quiet. Runs during which other processes kept 0.25 cores
or more busy are left out (all are used, flagged ``contended``, if none was quiet). The figure
is the median: tokens/s = new tokens / seconds per generation (prefill included).
``ratio_small`` / ``ratio_large`` = lmlab tokens/s / the default mode's tokens/s, and
``ratio_best_small`` / ``ratio_best_large`` the same against the peer's fastest mode (the figure to quote).

``lmlab_<dtype>_<shape>_step_ms`` is lmlab's compiled loop per token (one call making 32 tokens at a
mid-cache position, divided by 32), and ``transformers_step_<shape>_ms`` the same for one ``GPT2LMHeadModel`` forward
call on one token with a filled cache (``DynamicCache``, cropped back by one after each call):
how much of a token's time is the model step and how much the loop around it.

Progress goes to stderr; one JSON line with every figure (and the CPU's model and flags, and the load
average at the start and end) goes to stdout at the end.
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

from contenders import (Budget, add_driver_arguments, cpu_facts, interleave, serve, start_workers,  # noqa: E402
                        timed_burst)
from train_step import THREADS, VOCAB, tf_setup  # noqa: E402

BLOCK = 512
SHAPES = {
    "small": dict(n_layer=4, n_head=4, d_model=128),
    "large": dict(n_layer=6, n_head=6, d_model=384),
}
STEP_CALLS = 100
# The peer's modes: part -> (weights' dtype, cache, compiled forward)
PEER_MODES = {
    "transformers": ("float32", "dynamic", False),
    "transformers_static": ("float32", "static", False),
    "transformers_compiled": ("float32", "static", True),
    "transformers_bf16_compiled": ("bfloat16", "static", True),
}
LMLAB_DTYPES = ("float32", "bfloat16", "int8")  # lmlab.models.precision.DTYPES
LMLAB_PARTS = tuple(f"lmlab_{dtype}" for dtype in LMLAB_DTYPES)
PARTS = (*PEER_MODES, *LMLAB_PARTS)
QUALITY_TOKENS = 256  # length of the text every lmlab dtype is scored on
QUALITY_LIMIT = 0.01  # a dtype counts when its perplexity is within 1 % of float32's


def log(message: str) -> None:
    print(f"[generate] {message}", file=sys.stderr, flush=True)


def prompt_ids(length: int, seed: int = 0) -> list[int]:
    import numpy as np

    return np.random.default_rng(seed).integers(0, VOCAB, size=length).tolist()


def prompt_rows(length: int, batch: int) -> list[list[int]]:
    """``batch`` prompts, row ``r`` drawn with seed ``r`` (row 0 is the batch-1 prompt)."""
    return [prompt_ids(length, seed=row) for row in range(batch)]


def median_call_ms(call, calls: int = STEP_CALLS, warmup: int = 5) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times) * 1e3, 3)


# ---------------------------------------------------------------------------- workers (child side)


def torch_generator(shape: dict, prompts: list[list[int]], new_tokens: int, part: str = "transformers"):
    import torch
    from transformers import DynamicCache, GPT2Config, GPT2LMHeadModel
    from transformers.generation.configuration_utils import CompileConfig

    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    dtype, cache_kind, compiled = PEER_MODES[part]
    config = GPT2Config(vocab_size=VOCAB, n_positions=BLOCK, n_embd=shape["d_model"], n_layer=shape["n_layer"],
                        n_head=shape["n_head"], activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0, layer_norm_epsilon=1e-5, tie_word_embeddings=True)
    model = GPT2LMHeadModel(config).to(getattr(torch, dtype)).eval()
    prompt = prompts[0]
    ids = torch.tensor(prompts, dtype=torch.long)  # (B, prompt)
    mask = torch.ones_like(ids)
    mode: dict = {}
    if cache_kind == "static":
        mode["cache_implementation"] = "static"
        if compiled:
            compile_config = CompileConfig(fullgraph=True, mode="default")
            compile_config._compile_all_devices = True  # generate() compiles on accelerators only otherwise
            mode["compile_config"] = compile_config
        else:
            mode["disable_compile"] = True

    def generate():
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=new_tokens,
                                 min_new_tokens=new_tokens, use_cache=True, eos_token_id=None, pad_token_id=0,
                                 **mode)
        return out[0, len(prompt):].tolist()

    def step_ms():
        """One forward call on one token against a cache filled to mid-generation (the default mode only)."""
        if part != "transformers" or len(prompts) > 1:
            return None
        length = len(prompt) + new_tokens // 2
        with torch.inference_mode():
            cache = DynamicCache(config=config)
            context = torch.randint(0, VOCAB, (1, length))
            model(input_ids=context, past_key_values=cache, use_cache=True)
            token = context[:, -1:]
            position = torch.tensor([[length]])

            def call():
                logits = model(input_ids=token, past_key_values=cache, position_ids=position, use_cache=True).logits
                int(logits[0, -1].argmax())
                cache.crop(-1)  # drop the token just added: the cache stays at `length`

            return median_call_ms(call)

    info = {"attn_implementation": getattr(model.config, "_attn_implementation", None), "dtype": dtype,
            "cache": cache_kind, "compiled": compiled}
    return generate, step_ms, info


def lmlab_generator(shape: dict, prompts: list[list[int]], new_tokens: int, inter_op: int, dtype: str):
    """lmlab's generate in inference ``dtype``: the float32 model of seed 0, cast (bfloat16) or quantized (int8)
    as :func:`lmlab.runs.load.load_run` does it; also its perplexity on text the float32 model samples."""
    tf_setup(inter_op)
    import resource

    import numpy as np

    from lmlab.generate.decoder import CHUNK, decoder_for, step_seed, cache_length, generate_ids
    from lmlab.generate.samplers import SamplerConfig
    from lmlab.models import precision, registry
    from lmlab.models import transformer

    config = transformer.shape("shakespeare-char", vocab_size=VOCAB, block_size=BLOCK, dropout=0.0, **shape)
    reference = registry.build_model(config, seed=0)
    # The text quality is measured on: sampled (temperature 1, seed 0) from the float32 model, the same in every worker.
    text = prompts[0] + generate_ids(reference, [prompts[0]], QUALITY_TOKENS, SamplerConfig(temperature=1.0), seed=0)[0]
    if dtype == "float32":
        model = reference
    else:
        model = registry.build_model(config, dtype="float32" if dtype == "int8" else dtype)
        for variable, value in zip(model.variables, reference.variables):
            variable.assign(np.asarray(value.numpy()).astype(variable.dtype))
        if dtype == "int8":
            precision.quantize_int8(model)
        del reference
    sampler = SamplerConfig(temperature=0)

    def perplexity() -> float:
        import keras

        ids = np.array([text], dtype=np.int32)
        nll = keras.ops.convert_to_numpy(model(ids[:, :-1], targets=ids[:, 1:]))  # (1, T)
        return float(np.exp(nll.mean()))

    def generate():
        return generate_ids(model, prompts, new_tokens, sampler=sampler)[0]

    def step_ms():
        """Per token of the compiled decoding loop: one call making CHUNK tokens at mid-cache, over CHUNK.

        The cache has the length ``generate`` gives it (prompt + new tokens, rounded up)."""
        decoder = decoder_for(model, sampler)
        cache = model.init_cache(len(prompts), cache_length(BLOCK, len(prompts[0]) + new_tokens))
        token, cache = decoder.prefill(np.array(prompts, dtype=np.int32), cache, 0, step_seed(0, 0))
        index, finished = len(prompts[0]) + new_tokens // 2, np.zeros(len(prompts), dtype=bool)
        return median_call_ms(lambda: decoder.decode(token, cache, index, 0, 1, CHUNK, None, finished)) / CHUNK

    weights = precision.weight_bytes(model)
    info = {"parameters": int(model.num_parameters()), "dtype": dtype, "perplexity": round(perplexity(), 4),
            "weight_mb": round(sum(weights.values()) / 1e6, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    return generate, step_ms, info


def worker(args) -> None:
    """Child process: build, warm up with one generation, report, then time generations on request."""
    shape, prompts = SHAPES[args.shape], prompt_rows(args.prompt, args.batch)
    if args.part in PEER_MODES:
        generate, step_ms, info = torch_generator(shape, prompts, args.new_tokens, args.part)
    else:
        generate, step_ms, info = lmlab_generator(shape, prompts, args.new_tokens, args.tf_inter_op,
                                                  args.part.removeprefix("lmlab_"))
    start = time.perf_counter()
    first = generate()
    warm_s = time.perf_counter() - start
    if len(first) != args.new_tokens:
        raise SystemExit(f"{args.part}: expected {args.new_tokens} new tokens, got {len(first)}")
    def one_generation(_):
        if generate() != first:
            raise SystemExit(f"{args.part}: greedy decoding changed between runs")

    serve({"warmup_s": round(warm_s, 3), "step_ms": step_ms(), "first_tokens": first[:8], **info},
          lambda count: timed_burst(one_generation, count))


# ---------------------------------------------------------------------------- driver (parent side)


def measure(args, budget: Budget, shape: str, batch: int, runs: int) -> dict:
    extra = ("--new-tokens", str(args.new_tokens), "--prompt", str(args.prompt), "--batch", str(batch))
    tokens = batch * args.new_tokens  # per generation, all rows
    workers = []
    try:
        workers = start_workers(args, budget, PARTS, shape, __file__, log, extra)
        for w in workers:
            step = f"; bare one-token step {w.info['step_ms']} ms" if w.info.get("step_ms") else ""
            quality = f"; perplexity {w.info['perplexity']}, weights {w.info['weight_mb']} MB" \
                if "perplexity" in w.info else ""
            log(f"{w.part:>26} {shape} batch {batch}: built and warmed up in {w.info['start_s']} s (first generation "
                f"{w.info['warmup_s']} s){step}{quality}")
        interleave(workers, [1] * runs, budget, log, lambda r, w, count, b: (
            f"run {r + 1}/{runs} {w.part:>26}: {b['times'][0]:.3f} s = {tokens / b['times'][0]:,.1f} tokens/s"))
        out = {}
        for w in workers:
            r = out[w.part] = {**w.summary(tokens), **{k: v for k, v in w.info.items() if k != "ready"}}
            log(f"{w.part:>26} {shape} batch {batch}: {r['median_s']:.3f} s per generation, median of {r['steps']} = "
                f"{r['tokens_per_s']:,.1f} tokens/s{'  CONTENDED' if r['contended'] else ''}")
        return out
    finally:
        for w in workers:
            w.close()


def choose_dtype(r: dict) -> str | None:
    """lmlab's fastest dtype whose perplexity is within :data:`QUALITY_LIMIT` of float32's."""
    if "lmlab_float32" not in r:
        return None
    limit = r["lmlab_float32"]["perplexity"] * (1 + QUALITY_LIMIT)
    fit = [part for part in LMLAB_PARTS if part in r and r[part]["perplexity"] <= limit]
    return max(fit, key=lambda part: r[part]["tokens_per_s"]).removeprefix("lmlab_")


def summarise(summary: dict, r: dict, shape: str, suffix: str, chosen: str | None) -> None:
    """Figures of one shape at one batch size into ``summary`` (keys end in ``suffix``: "" or "_batch8")."""
    for part in PARTS:
        summary[f"{part}_{shape}{suffix}_tokens_per_s"] = r[part]["tokens_per_s"] if part in r else None  # None: failed
    for part in LMLAB_PARTS:
        if part in r:
            for key in ("perplexity", "weight_mb", "peak_rss_mb", "step_ms"):
                summary[f"{part}_{shape}{suffix}_{key}"] = r[part][key]
    if chosen is None or f"lmlab_{chosen}" not in r:
        return
    lmlab = r[f"lmlab_{chosen}"]["tokens_per_s"]
    summary[f"lmlab_{shape}{suffix}_tokens_per_s"] = lmlab
    if "transformers" in r:
        summary["transformers_attn_implementation"] = r["transformers"].get("attn_implementation")
        summary[f"ratio_{shape}{suffix}"] = round(lmlab / r["transformers"]["tokens_per_s"], 3)
    peers = {part: r[part]["tokens_per_s"] for part in PEER_MODES if part in r}
    if peers:
        best = max(peers, key=peers.get)
        summary[f"peer_best_{shape}{suffix}"] = best
        summary[f"ratio_best_{shape}{suffix}"] = round(lmlab / peers[best], 3)
    summary[f"contended_{shape}{suffix}"] = any(v["contended"] for v in r.values())
    summary[f"other_cores_{shape}{suffix}"] = max((v["other_cores"] for v in r.values()), default=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_driver_arguments(parser)
    parser.add_argument("--runs", type=int, default=5, help="timed generations per side (interleaved)")
    parser.add_argument("--runs-batch8", type=int, default=3, help="timed generations per side at batch 8")
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--prompt", type=int, default=8, help="prompt length in tokens")
    parser.add_argument("--batches", default="1,8", help="batch sizes: 1 (the ratio's), and 8 beside it")
    parser.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)  # a worker's
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.prompt + args.new_tokens > BLOCK:
        raise SystemExit(f"prompt + new tokens must fit the block of {BLOCK}")

    import keras
    import tensorflow as tf
    import torch
    import transformers

    log(f"cores {os.cpu_count()}; torch {torch.__version__} ({THREADS} threads), transformers "
        f"{transformers.__version__}, tensorflow {tf.__version__} (intra-op {THREADS}, inter-op "
        f"{args.tf_inter_op}), keras {keras.__version__}; block {BLOCK}, prompt {args.prompt}, "
        f"{args.new_tokens} new tokens, batches {args.batches}, greedy")
    machine = cpu_facts()
    log(f"cpu {machine['cpu_model']}, {machine['cpu_cores']} cores, flags {' '.join(machine['cpu_flags'])}")
    summary: dict = {**machine, "threads": THREADS, "tf_intra_op": THREADS, "tf_inter_op": args.tf_inter_op,
                     "block_size": BLOCK, "prompt_tokens": args.prompt, "new_tokens": args.new_tokens,
                     "batch": 1, "batches": args.batches, "quality_limit": QUALITY_LIMIT,
                     "load_average_start": os.getloadavg()[0], "torch": torch.__version__,
                     "transformers": transformers.__version__, "tensorflow": tf.__version__,
                     "keras": keras.__version__}
    budget = Budget(args.idle_budget)
    start = time.perf_counter()
    batches = [int(b) for b in args.batches.split(",") if b]
    for shape in [s for s in args.shapes.split(",") if s]:
        s = SHAPES[shape]
        log(f"{shape}: {s['n_layer']} layers, {s['n_head']} heads, {s['d_model']} wide, vocab {VOCAB}")
        chosen = None
        for batch in batches:
            r = measure(args, budget, shape, batch, args.runs if batch == 1 else args.runs_batch8)
            chosen = choose_dtype(r) if chosen is None else chosen  # chosen at batch 1, kept for batch 8
            summary[f"lmlab_dtype_{shape}"] = chosen
            summarise(summary, r, shape, "" if batch == 1 else f"_batch{batch}", chosen)
            if batch == 1 and "transformers" in r:
                summary[f"transformers_step_{shape}_ms"] = r["transformers"]["step_ms"]
            if chosen:
                log(f"{shape} batch {batch}: lmlab {chosen} (fastest within {QUALITY_LIMIT:.0%} of float32's "
                    f"perplexity), ratio to the peer's best {summary.get(f'ratio_best_{shape}' + ('' if batch == 1 else f'_batch{batch}'))}")
    summary["load_average_end"] = os.getloadavg()[0]
    summary["wall_s"] = round(time.perf_counter() - start, 1)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
