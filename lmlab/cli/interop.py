"""The ``lmlab export`` and ``lmlab import`` subcommands (registered by :mod:`lmlab.cli`)."""

from __future__ import annotations

import json

from lmlab.cli.common import CHECKPOINT_HELP, DTYPES, log_unless_quiet
from lmlab.core.errors import ConfigError

FORMATS = ("hf", "savedmodel", "run")


def cmd_export(args) -> int:
    log = log_unless_quiet(args)
    fmt = args.format or ("run" if args.dtype else "hf")
    if fmt != "run" and args.dtype not in (None, "float32"):
        raise ConfigError(f"--format {fmt} writes float32 weights; --dtype {args.dtype} is for --format run "
                          "(a run folder lmlab generate and eval load)")
    if fmt == "run":
        from lmlab.runs.export import export_run

        summary = export_run(args.run, args.out, args.dtype or "float32", args.checkpoint, overwrite=args.overwrite,
                             log=log)
    elif fmt == "hf":
        from lmlab.interop.hf_export import export_hf

        summary = export_hf(args.run, args.out, args.checkpoint, with_tokenizer=not args.no_tokenizer,
                            overwrite=args.overwrite, log=log)
    else:
        from lmlab.interop.savedmodel import export_savedmodel

        summary = export_savedmodel(args.run, args.out, args.checkpoint, overwrite=args.overwrite, log=log)
    print(json.dumps(summary, ensure_ascii=False))
    return 0


def cmd_import(args) -> int:
    from lmlab.interop.hf_import import import_hf

    summary = import_hf(args.folder, args.out, data=args.data, settings=args.set, tokenizer=args.tokenizer,
                        log=log_unless_quiet(args))
    print(json.dumps(summary, ensure_ascii=False))
    return 0


def add_commands(commands) -> None:
    p = commands.add_parser(
        "export", help="write a run's model as a Hugging Face checkpoint, a TensorFlow SavedModel, or an int8/bfloat16 run",
        description="--format hf: config.json, model.safetensors, tokenizer.json and friends that "
        "transformers' AutoModelForCausalLM and AutoTokenizer load (Transformer runs). --format savedmodel: "
        "a SavedModel with score and generate signatures that runs in plain TensorFlow. --format run --dtype int8 "
        "(or bfloat16): a run folder with int8 weights and per-channel scales that lmlab generate and eval load as "
        "they are.")
    p.add_argument("run")
    p.add_argument("--format", choices=FORMATS, help="hf (default), savedmodel, or run (the default with --dtype)")
    p.add_argument("--dtype", choices=DTYPES, help="run format: the weights' precision (int8: weight-only, "
                   "transformer runs)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--checkpoint", default="best", help=CHECKPOINT_HELP)
    p.add_argument("--no-tokenizer", action="store_true", help="hf: write the model only (e.g. a jieba tokenizer)")
    p.add_argument("--overwrite", action="store_true", help="replace what is in --out")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_export)

    p = commands.add_parser(
        "import", help="turn a Hugging Face GPT-2 or Llama checkpoint folder into an lmlab run",
        description="Reads config.json, model.safetensors (or shards with model.safetensors.index.json) and "
        "tokenizer.json; never a pickle (pytorch_model.bin). With --data (prepared with the checkpoint's "
        "tokenizer.json), `lmlab train --resume RUN` fine-tunes the imported model.")
    p.add_argument("folder", help="a Hugging Face checkpoint folder")
    p.add_argument("--out", required=True, help="run folder to create")
    p.add_argument("--data", help="prepared data to fine-tune on (same tokenizer)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="fine-tuning config field (e.g. max_steps=500, learning_rate=3e-5, model.dropout=0.1)")
    p.add_argument("--tokenizer", help="tokenizer file to use when the folder has no tokenizer.json")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_import)
