"""``lmlab train``, ``launch``, ``eval``, ``generate`` and ``fill-mask``: make a run, and use it."""

from __future__ import annotations

import argparse
import json
import sys

from lmlab.cli.common import (MODEL_HELP, RUNLESS, dtype_option, load_artefact, log, log_unless_quiet, progress_on,
                               refuse, run_output_options)
from lmlab.core.errors import ConfigError


def add_commands(commands) -> None:
    p = commands.add_parser("train", help="train a language model of any family (Transformer, LSTM/GRU, gated CNN, masked LM, n-gram)",
                            description="Train from a config file and/or options; every config field can be set "
                            "with --set key=value (model fields as model.NAME=VALUE).")
    p.add_argument("config", nargs="?", help="YAML or TOML config file")
    p.add_argument("--data", help="a folder made by lmlab prepare")
    p.add_argument("--model", help="model family: transformer (default), rnn, gated_cnn (alias cnn), "
                   "encoder (masked LM, alias bert)")
    p.add_argument("--shape", help="model shape (random initial weights; not a checkpoint — to start from weights "
                   "use lmlab import or lmlab finetune): e.g. debug, shakespeare-char; transformer: gpt2-small, "
                   "llama-small; rnn, gated_cnn: wikitext2; encoder: small, bert-base, roberta-base")
    p.add_argument("--preset", dest="shape", help=argparse.SUPPRESS)  # the old name of --shape, still accepted
    p.add_argument("--max-steps", type=int, help="optimizer steps")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    p.add_argument("--out", help="run folder to create")
    p.add_argument("--resume", metavar="RUN", help="continue a run from its last checkpoint")
    p.add_argument("--skip-bad-batches", action="store_true",
                   help="skip (and log) a batch whose loss or gradient is NaN or infinite instead of stopping; "
                   "also allowed with --resume")
    p.add_argument("--distribute", choices=("none", "data", "model"),
                   help="data: data parallel over this machine's devices, or over the workers of TF_CONFIG / "
                   "lmlab launch; model: model parallel on JAX (see --mesh); also allowed with --resume "
                   "(docs/distributed.md)")
    p.add_argument("--mesh", metavar="batch=B,model=M",
                   help="device mesh for --distribute model (default: batch=1, model=every device)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train)

    p = commands.add_parser("launch", help="run an lmlab command as N local worker processes of one distributed run",
                            description="Starts N local processes of `lmlab COMMAND ...` with TF_CONFIG (TensorFlow) "
                            "or jax.distributed settings (JAX) on loopback ports; worker 0 reports and writes. "
                            "Example: lmlab launch --workers 2 train --data DIR --distribute data --out RUN")
    p.add_argument("--workers", type=int, required=True, help="number of worker processes")
    p.add_argument("--backend", choices=("tensorflow", "jax"),
                   help="Keras backend of the workers (default: KERAS_BACKEND, else tensorflow)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="the lmlab command and its options")
    p.set_defaults(func=cmd_launch)

    p = commands.add_parser("eval", help="perplexity and bits per byte of a run's model (or of any model on --text)")
    p.add_argument("run", help=MODEL_HELP)
    p.add_argument("--split", default="test", help="split of the run's data (default test); other models: --text")
    p.add_argument("--text", help="score this UTF-8 text file instead")
    p.add_argument("--stride", type=int, help="sliding-window stride (default: the block size)")
    p.add_argument("--batch-size", type=int, default=8)
    dtype_option(p)
    run_output_options(p, quiet=True)
    p.set_defaults(func=cmd_eval)

    p = commands.add_parser("generate", help="generate text from a run's model (KV cache) or any lmlab.load model")
    p.add_argument("run", help=MODEL_HELP)
    p.add_argument("--prompt", action="append", help="prompt text; repeat for a batch")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, help="0 for greedy (default 0.8)")  # unset: an n-gram takes none
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    dtype_option(p)
    run_output_options(p)
    p.set_defaults(func=cmd_generate)

    p = commands.add_parser("fill-mask", help="top candidates for each [MASK] in a text (encoder runs)",
                            description="Fills each mask token ([MASK] or <mask>, as the tokenizer has it) of TEXT "
                            "with a masked language model's top candidates.")
    p.add_argument("run")
    p.add_argument("text", help='e.g. "The capital of France is [MASK] ."')
    p.add_argument("--second", help="a second text: the input is the pair [CLS] TEXT [SEP] SECOND [SEP]")
    p.add_argument("--top-k", type=int, default=5)
    run_output_options(p)
    p.set_defaults(func=cmd_fill_mask)


def cmd_train(args) -> int:
    from lmlab.training.config import TrainConfig, build_config
    from lmlab.training.distribute import is_chief_process
    from lmlab.training.trainer import train

    if not is_chief_process():  # another worker of a distributed run: the chief reports
        args.quiet = True
    if args.resume:
        # The options a resume may add: skipping bad batches, and where it runs.
        config = TrainConfig(skip_bad_batches=args.skip_bad_batches, distribute=args.distribute or "none",
                             mesh=args.mesh or "")
        if args.config or args.set or args.data:
            raise ConfigError("--resume continues a run with its own saved config; drop the other options")
        run = args.resume
    else:
        if not args.out:
            raise ConfigError("give --out RUN (a new run folder) or --resume RUN")
        config = build_config(args.config, args.set, data=args.data, family=args.model, shape=args.shape,
                              max_steps=args.max_steps, skip_bad_batches=args.skip_bad_batches or None,
                              distribute=args.distribute, mesh=args.mesh)
        run = args.out
    result = train(config, run, resume=bool(args.resume), progress=progress_on(args),
                   log=log_unless_quiet(args))
    print(json.dumps(result))
    return 0


def cmd_launch(args) -> int:
    from lmlab.training.distribute.launch import launch

    command = ["--debug", *args.command] if args.debug else args.command  # tracebacks from the workers too
    return launch(args.workers, command, backend=args.backend, log=log)


def cmd_eval(args) -> int:
    from lmlab.evaluation.perplexity import evaluate_run

    def check(kind):
        if args.text is None and kind == "finetuned":
            return False  # a fine-tuned folder names its base run's prepared data: evaluated as a run, as before
        if args.text is None:
            raise refuse(args.run, kind, f"--split {args.split}", "it has no prepared data; give --text FILE")
        if args.stride is not None and kind in RUNLESS:
            raise refuse(args.run, kind, "--stride", "it scores whole lines, or windows of its own")

    lm = load_artefact(args, check)
    if lm is None:
        result = evaluate_run(args.run, split=args.split, text_file=args.text, stride=args.stride,
                              batch_size=args.batch_size, checkpoint=args.checkpoint,
                              progress=progress_on(args), dtype=args.dtype)
    else:
        result = _eval_artefact(lm, args)
    if args.json:
        print(json.dumps(result))
    elif "masked_accuracy" in result:  # an encoder: lmlab.evaluation.masked
        print(f"{result['source']} ({result['masked_tokens']:,} masked tokens, {result['checkpoint']}): masked loss "
              f"{result['masked_loss']:.4f}, masked accuracy {result['masked_accuracy']:.4f}, pseudo-perplexity "
              f"{result['pseudo_perplexity']:.3f} over {result['pseudo_tokens']:,} tokens ({result['note']})")
    else:
        print(f"{result['source']} ({result['tokens']:,} tokens, {result['checkpoint'] or result['kind']}): loss "
              f"{result['loss']:.4f}, perplexity {result['perplexity']:.3f}, bits per byte "
              f"{result['bits_per_byte']:.4f} ({result['dtype']})")
    return 0


def _eval_artefact(lm, args) -> dict:
    """``lmlab eval --text`` of a model that is not a run folder, through ``lmlab.load``'s object: the keys of
    ``evaluate_run``'s answer (``checkpoint`` None where the model has none) and ``kind``."""
    from lmlab.core.io import read_text
    from lmlab.runs.load import stored_dtype

    run = getattr(lm, "run", None)
    text = read_text(args.text, "text file")
    envelope = {"run": str(args.run), "kind": lm.kind, "source": str(args.text)}
    if run is not None:
        envelope.update(checkpoint=run.checkpoint.name, step=run.step, dtype=args.dtype or stored_dtype(run.config))
    else:  # an ARPA file, an n-gram folder or a SavedModel: one set of float32 numbers, no checkpoints
        envelope.update(checkpoint=None, step=getattr(lm, "info", {}).get("step"), dtype="float32")
    return {**envelope, "block_size": getattr(lm, "block_size", None), "stride": None,
            **lm.perplexity(text, args.stride, args.batch_size)}


def cmd_generate(args) -> int:
    from lmlab.generate.decoder import generate_text
    from lmlab.generate.samplers import SamplerConfig
    from lmlab.runs.load import load_run

    def check(kind):
        given = [name for name, value, unset in (("--temperature", args.temperature, None), ("--top-k", args.top_k, 0),
                                                 ("--top-p", args.top_p, 1.0)) if value != unset]
        if given and kind in ("arpa", "ngram"):
            raise refuse(args.run, kind, ", ".join(given), "an n-gram samples its own distribution")
        if "--top-p" in given and kind == "savedmodel":
            raise refuse(args.run, kind, "--top-p", "its generate signature samples with temperature and top-k only")

    lm = load_artefact(args, check)
    prompts = args.prompt or [""]
    temperature = 0.8 if args.temperature is None else args.temperature
    if lm is not None and not hasattr(lm, "run"):  # an ARPA file, n-gram folder or SavedModel: its own sampler
        return _generate_artefact(lm, args, prompts, temperature)
    run = lm.run if lm is not None else load_run(args.run, args.checkpoint, dtype=args.dtype)
    sampler = SamplerConfig(temperature=temperature, top_k=args.top_k, top_p=args.top_p)
    stream = None
    if len(prompts) == 1 and not args.json:
        print(prompts[0], end="", flush=True)
        stream = lambda text: print(text, end="", flush=True)  # noqa: E731 - a one-line callback
    outputs = generate_text(run.model, run.tokenizer, prompts, args.max_new_tokens, sampler, args.seed,
                            stream=stream)
    if args.json:
        print(json.dumps([{"prompt": p, "completion": o} for p, o in zip(prompts, outputs)], ensure_ascii=False))
    elif stream is not None:
        print()
    else:
        for prompt, output in zip(prompts, outputs):
            print(f"{prompt}{output}\n")
    return 0


def _generate_artefact(lm, args, prompts, temperature: float) -> int:
    """``lmlab generate`` through ``lmlab.load``'s object, printed as for a run (without streaming)."""
    sampling = {} if lm.family == "ngram" else {"temperature": temperature, "top_k": args.top_k}  # n-grams: their own
    outputs = lm.generate(prompts, args.max_new_tokens, seed=args.seed, **sampling)
    if args.json:
        print(json.dumps([{"prompt": p, "completion": o} for p, o in zip(prompts, outputs)], ensure_ascii=False))
        return 0
    space = " " if lm.family == "ngram" else ""  # words: the completion starts a new one
    end = "" if len(prompts) == 1 else "\n"  # one prompt prints as a streamed one ends
    for prompt, output in zip(prompts, outputs):
        print(f"{prompt}{space if prompt and output else ''}{output}{end}")
    return 0


def cmd_fill_mask(args) -> int:
    from lmlab.evaluation.fill_mask import fill_mask
    from lmlab.runs.load import load_run

    run = load_run(args.run, args.checkpoint)
    if run.config["model"].get("family") != "encoder":
        raise ConfigError(f"{args.run} is a {run.config['model'].get('family', 'transformer')} run; fill-mask needs "
                          "a masked language model (--model encoder)")
    result = fill_mask(run.model, run.tokenizer, args.text, args.top_k, args.second)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
        return 0
    for mask in result["masks"]:
        shown = ", ".join(f"{c['token']} {c['probability']:.3f}" for c in mask["candidates"])
        print(f"position {mask['position']}: {shown}")
    print(f"filled: {result['filled']}")
    sys.stdout.flush()
    return 0
