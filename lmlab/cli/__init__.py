"""The ``lmlab`` command line: a table of subcommands, each a plain function.

Errors a user can cause are :class:`~lmlab.core.errors.LmlabError`: printed as one
line, exit status 1; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from lmlab.cli import interop, tasks
from lmlab.cli.quiet import filter_stderr, stderr_is_terminal
from lmlab.core.errors import ConfigError, LmlabError
from lmlab.core.extras import missing_message


def _fractions(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected fractions like 0.98,0.01,0.01, got {text!r}") from None


def _fields(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- prepare


def cmd_prepare(args) -> int:
    from lmlab.data.prepare import prepare

    manifest = prepare(
        args.sources, args.out, workers=args.workers, overwrite=args.overwrite,
        progress=not args.quiet and stderr_is_terminal(), log=(lambda m: None) if args.quiet else _log,
        read=dict(format=args.format, fields=args.field, doc_sep=args.doc_sep, errors=args.errors,
                  doc_types=args.doc_types),
        clean=dict(nfkc=args.nfkc, min_chars=args.min_chars, max_chars=args.max_chars, dedup=not args.no_dedup),
        tokenizer=args.tokenizer, vocab_size=args.vocab_size, min_freq=args.min_freq, segmenter=args.segmenter,
        eos_token=args.eos_token, unit=args.unit, lang=args.lang, split=args.split, split_order=args.split_order,
        seed=args.seed, shard_tokens=args.shard_tokens, tokenizer_max_chars=args.tokenizer_max_chars,
    )
    print(_summary(args.out, manifest))
    return 0


def _summary(folder, manifest: dict) -> str:
    tokenizer = manifest["tokenizer"]
    lines = [f"{folder}: {tokenizer['kind']} tokenizer, vocabulary {tokenizer['vocab_size']:,}, "
             f"{manifest['dtype']} tokens, unit {manifest['unit']}"]
    lines.append(f"{'split':<6} {'documents':>10} {'units':>10} {'tokens':>13} {'shards':>6} {'bytes/token':>11}")
    for name, split in manifest["splits"].items():
        per_token = split["utf8_bytes"] / split["tokens"] if split["tokens"] else 0.0
        lines.append(f"{name:<6} {split['documents']:>10,} {split['units']:>10,} {split['tokens']:>13,} "
                     f"{len(split['shards']):>6} {per_token:>11.2f}")
    return "\n".join(lines)


# ---------------------------------------------------------------- data


def cmd_data_stats(args) -> int:
    import numpy as np

    from lmlab.data.shards import load_manifest, open_split
    from lmlab.tokenizers import load_tokenizer

    manifest = load_manifest(args.folder)
    if args.json:
        print(json.dumps({"tokenizer": manifest["tokenizer"], "splits": {
            name: {k: v for k, v in split.items() if k != "shards"} | {"shards": len(split["shards"])}
            for name, split in manifest["splits"].items()}, "report": manifest.get("report", {})}, indent=2))
        return 0
    print(_summary(args.folder, manifest))
    report = manifest.get("report", {})
    if report:
        print(f"documents read {report.get('documents_read', 0):,}, kept {report.get('documents_kept', 0):,}, "
              f"duplicates dropped {report.get('duplicates', 0):,}")
        for reason, count in {**report.get("dropped", {}), **report.get("reader_skipped", {})}.items():
            print(f"  dropped: {reason}: {count:,}")
    if args.top:
        tokenizer = load_tokenizer(os.path.join(args.folder, "tokenizer.json"))
        train = open_split(args.folder, "train", checksum=False)
        counts = np.zeros(tokenizer.vocab_size, dtype=np.int64)
        for array in train.arrays:
            counts += np.bincount(array, minlength=tokenizer.vocab_size)[: tokenizer.vocab_size]
        total = max(int(counts.sum()), 1)
        used = int((counts > 0).sum())
        print(f"train uses {used:,} of {tokenizer.vocab_size:,} vocabulary entries")
        if tokenizer.unk_id is not None:
            print(f"unknown-token rate in train: {counts[tokenizer.unk_id] / total:.4%}")
        print(f"most frequent {args.top} train tokens:")
        for index in np.argsort(-counts, kind="stable")[: args.top]:
            print(f"  {index:>7} {tokenizer.id_to_token(int(index))!r:<20} {counts[index] / total:8.4%}")
    return 0


def cmd_data_verify(args) -> int:
    from lmlab.data.shards import load_manifest, verify

    problems = verify(args.folder)
    if problems:
        for problem in problems:
            print(f"lmlab: error: {problem}", file=sys.stderr)
        return 1
    manifest = load_manifest(args.folder)
    shards = sum(len(s["shards"]) for s in manifest["splits"].values())
    tokens = sum(s["tokens"] for s in manifest["splits"].values())
    print(f"{args.folder}: ok, {shards} shards and {tokens:,} tokens match their checksums")
    return 0


# ---------------------------------------------------------------- train, eval, generate


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
        config = build_config(args.config, args.set, data=args.data, family=args.model, preset=args.preset,
                              max_steps=args.max_steps, skip_bad_batches=args.skip_bad_batches or None,
                              distribute=args.distribute, mesh=args.mesh)
        run = args.out
    result = train(config, run, resume=bool(args.resume), progress=not args.quiet and stderr_is_terminal(),
                   log=(lambda m: None) if args.quiet else _log)
    print(json.dumps(result))
    return 0


def cmd_launch(args) -> int:
    from lmlab.training.distribute.launch import launch

    command = ["--debug", *args.command] if args.debug else args.command  # tracebacks from the workers too
    return launch(args.workers, command, backend=args.backend, log=_log)


def cmd_eval(args) -> int:
    from lmlab.evaluation.perplexity import evaluate_run

    result = evaluate_run(args.run, split=args.split, text_file=args.text, stride=args.stride,
                          batch_size=args.batch_size, checkpoint=args.checkpoint,
                          progress=not args.quiet and stderr_is_terminal())
    if args.json:
        print(json.dumps(result))
    elif "masked_accuracy" in result:  # an encoder: lmlab.evaluation.masked
        print(f"{result['source']} ({result['masked_tokens']:,} masked tokens, {result['checkpoint']}): masked loss "
              f"{result['masked_loss']:.4f}, masked accuracy {result['masked_accuracy']:.4f}, pseudo-perplexity "
              f"{result['pseudo_perplexity']:.3f} over {result['pseudo_tokens']:,} tokens ({result['note']})")
    else:
        print(f"{result['source']} ({result['tokens']:,} tokens, {result['checkpoint']}): loss {result['loss']:.4f}, "
              f"perplexity {result['perplexity']:.3f}, bits per byte {result['bits_per_byte']:.4f}")
    return 0


def cmd_generate(args) -> int:
    from lmlab.generate.decoder import generate_text
    from lmlab.generate.samplers import SamplerConfig
    from lmlab.runs.load import load_run

    run = load_run(args.run, args.checkpoint)
    sampler = SamplerConfig(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    prompts = args.prompt or [""]
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


def cmd_demo(args) -> int:
    from lmlab.cli.demo import run_demo

    run_demo(args.out, args.text, args.steps, say=print, progress=not args.quiet and stderr_is_terminal(),
             data=args.data)
    return 0


# ---------------------------------------------------------------- compare, plan


def cmd_compare(args) -> int:
    from lmlab.experiments import run_experiment

    result = run_experiment(args.experiment, args.out, scale=args.scale, only=args.only, data=args.data,
                            dry_run=args.dry_run, progress=not args.quiet and stderr_is_terminal(),
                            log=(lambda m: None) if args.quiet else _log)
    if result.report is not None:
        print((result.out / "results.md").read_text(encoding="utf-8"), end="")
        print(f"report: {result.report}")
    return 0


def cmd_plan(args) -> int:
    from pathlib import Path

    from lmlab.data.shards import load_manifest
    from lmlab.experiments import plan

    if (args.flops is None) == (args.time is None):
        raise ConfigError("give the budget with --time (e.g. 45m, 2h) or --flops, one of the two")
    manifest = load_manifest(args.data)
    vocab = manifest["tokenizer"]["vocab_size"]
    throughput = None
    if args.flops_per_second:
        throughput = plan.Throughput(args.flops_per_second, "given with --flops-per-second")
    elif args.calibrate:
        _log("calibrating: a few training steps of a small Transformer ...")
        throughput = plan.calibrate(vocab, args.block_size)
    else:
        paths = args.runs or ([Path("runs")] if Path("runs").is_dir() else [])
        throughput = plan.measured_throughput(paths) if paths else None
        if throughput is None and args.time is not None:
            where = ", ".join(map(str, paths)) or "runs/ (not found)"
            raise ConfigError(f"no measured throughput: no trained run under {where}; point --runs at run folders or "
                              "a compare results.csv, give --flops-per-second, or add --calibrate for a short "
                              "measurement")
    result = plan.plan_budget(manifest["splits"]["train"]["tokens"], vocab, flops=args.flops,
                              seconds=plan.parse_duration(args.time) if args.time is not None else None,
                              throughput=throughput, block_size=args.block_size, style=args.style,
                              tokens_per_parameter=args.tokens_per_parameter, max_epochs=args.max_epochs)
    print(json.dumps(result.to_dict()) if args.json else plan.describe(result, args.data))
    return 0


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmlab", description="A language-model lab on Keras 3.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("--verbose", action="store_true", help="let TensorFlow's and XLA's own logging through")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = commands.add_parser("prepare", help="turn raw corpora into a tokenizer and token shards",
                            description="Read, clean, tokenize and shard corpora. A SOURCE is a file, folder, glob or "
                            "hf:SPEC; prefix it with train=, valid= or test= to take splits from the sources.")
    p.add_argument("sources", nargs="+", metavar="SOURCE")
    p.add_argument("--out", required=True, help="output folder")
    g = p.add_argument_group("reading")
    g.add_argument("--format", default="auto",
                   help="auto (default), text, wikitext, jsonl, json, csv, tsv, mediawiki, gigaword or hf")
    g.add_argument("--field", type=_fields, default=("text",),
                   help="JSON/CSV/HF field(s) holding the text, comma-separated; integers for headerless CSV")
    g.add_argument("--doc-sep", default="blank", help="plain text documents: blank (default), line or file")
    g.add_argument("--errors", default="strict", help="invalid UTF-8: strict (default), replace or skip")
    g.add_argument("--doc-types", type=_fields, default=("story",),
                   help="Gigaword DOC types to keep (default story; 'all' keeps every type)")
    g = p.add_argument_group("cleaning")
    g.add_argument("--nfkc", action="store_true", help="apply Unicode NFKC normalisation")
    g.add_argument("--min-chars", type=int, default=1, help="drop documents shorter than this")
    g.add_argument("--max-chars", type=int, default=0, help="drop documents longer than this (0: no limit)")
    g.add_argument("--no-dedup", action="store_true", help="keep exact duplicate documents")
    g = p.add_argument_group("tokenizer")
    g.add_argument("--tokenizer", default="bpe", help="char, word, bpe (default) or a tokenizer JSON file")
    g.add_argument("--vocab-size", type=int, default=0, help="vocabulary size (bpe default 8000; char/word: all)")
    g.add_argument("--min-freq", type=int, default=1, help="minimum count for a vocabulary entry")
    g.add_argument("--segmenter", default="whitespace", help="word tokenizer: whitespace (default) or jieba")
    g.add_argument("--eos-token", default=None, help="end token of a tokenizer.json that has no known one")
    g.add_argument("--tokenizer-max-chars", type=int, default=1_000_000_000,
                   help="train the tokenizer on at most this many characters (default 1e9)")
    g = p.add_argument_group("units and splits")
    g.add_argument("--unit", default="document", help="what the end token closes: document (default), paragraph, sentence")
    g.add_argument("--lang", default="auto", help="sentence splitting language: auto (default), en, zh")
    g.add_argument("--split", type=_fractions, default=(0.98, 0.01, 0.01), help="train,valid,test fractions")
    g.add_argument("--split-order", default="random", help="random (by document, seeded) or ordered (the last documents)")
    g.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("output")
    g.add_argument("--shard-tokens", type=int, default=100_000_000, help="tokens per shard (default 1e8)")
    g.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 8), help="worker processes")
    g.add_argument("--overwrite", action="store_true", help="replace data prepared with other options")
    g.add_argument("--quiet", action="store_true", help="print only the summary")
    p.set_defaults(func=cmd_prepare)

    p = commands.add_parser("demo", help="prepare Tiny Shakespeare, train a small model, evaluate and generate")
    p.add_argument("--out", default="runs/demo", help="folder for the data and the run (default runs/demo)")
    p.add_argument("--text", help="a plain-text corpus to use instead of the Tiny Shakespeare shipped with lmlab")
    p.add_argument("--data", help="a data folder holding tinyshakespeare/input.txt (e.g. ../shared/data)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--steps", type=int, default=2000, help="training steps (default 2000)")
    p.set_defaults(func=cmd_demo)

    p = commands.add_parser("train", help="train a language model of any family (Transformer, LSTM/GRU, gated CNN, masked LM, n-gram)",
                            description="Train from a config file and/or options; every config field can be set "
                            "with --set key=value (model fields as model.NAME=VALUE).")
    p.add_argument("config", nargs="?", help="YAML or TOML config file")
    p.add_argument("--data", help="a folder made by lmlab prepare")
    p.add_argument("--model", help="model family: transformer (default), rnn, gated_cnn (alias cnn), "
                   "encoder (masked LM, alias bert)")
    p.add_argument("--preset", help="model preset, e.g. debug, shakespeare-char; transformer: gpt2-small, "
                   "llama-small; rnn, gated_cnn: wikitext2")
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

    p = commands.add_parser("eval", help="perplexity and bits per byte of a run's model")
    p.add_argument("run")
    p.add_argument("--split", default="test", help="split of the run's data (default test)")
    p.add_argument("--text", help="score this UTF-8 text file instead")
    p.add_argument("--stride", type=int, help="sliding-window stride (default: the block size)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--checkpoint", default="best", help="best (default) or last")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_eval)

    p = commands.add_parser("generate", help="generate text from a run's model (KV cache)")
    p.add_argument("run")
    p.add_argument("--prompt", action="append", help="prompt text; repeat for a batch")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8, help="0 for greedy")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", default="best", help="best (default) or last")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_generate)

    interop.add_commands(commands)  # lmlab export, lmlab import

    p = commands.add_parser("fill-mask", help="top candidates for each [MASK] in a text (encoder runs)",
                            description="Fills each mask token ([MASK] or <mask>, as the tokenizer has it) of TEXT "
                            "with a masked language model's top candidates.")
    p.add_argument("run")
    p.add_argument("text", help='e.g. "The capital of France is [MASK] ."')
    p.add_argument("--second", help="a second text: the input is the pair [CLS] TEXT [SEP] SECOND [SEP]")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--checkpoint", default="best", help="best (default) or last")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_fill_mask)

    p = commands.add_parser("compare", help="train several models under one budget; tables, plots and a report",
                            description="Run an experiment file (YAML): every run in its own run folder, one after "
                            "another; re-running the command resumes an interrupted sweep. Writes results.csv, "
                            "results.md, report.md and PNG plots to the output folder.")
    p.add_argument("experiment", help="experiment file (YAML), e.g. experiments/families-wikitext2.yaml")
    p.add_argument("--out", help="output folder (default runs/compare/NAME)")
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiply every budget (and warm-up) by this, e.g. 0.01 for a smoke run")
    p.add_argument("--only", action="append", default=[], metavar="GLOB",
                   help="run only the runs whose id, configuration or name matches (repeatable)")
    p.add_argument("--data", help="use this prepared folder instead of the file's data")
    p.add_argument("--dry-run", action="store_true", help="check the file and print the runs without training")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_compare)

    p = commands.add_parser("plan", help="compute-optimal model size and steps for a budget on this machine",
                            description="Chinchilla sizing (about 20 tokens per parameter, 6N + attention FLOPs per "
                            "token) for a time or FLOPs budget, a prepared data set and this machine's throughput "
                            "measured from earlier runs.")
    p.add_argument("--data", required=True, help="a folder made by lmlab prepare (its size and vocabulary)")
    p.add_argument("--time", help="time budget: seconds, or with a unit: 45m, 1.5h")
    p.add_argument("--flops", type=float, help="budget in training FLOPs, e.g. 1e15")
    p.add_argument("--runs", action="append", default=[], metavar="PATH",
                   help="run folders, folders of runs, or a compare results.csv to measure throughput from "
                   "(default runs/)")
    p.add_argument("--flops-per-second", type=float, help="this machine's training FLOP/s, if known")
    p.add_argument("--calibrate", action="store_true", help="measure throughput with a few training steps")
    p.add_argument("--block-size", type=int, default=256, help="context length of the planned model (default 256)")
    p.add_argument("--style", default="gpt2", help="gpt2 (default) or llama")
    p.add_argument("--tokens-per-parameter", type=float, default=20.0, help="Chinchilla's ratio (default 20)")
    p.add_argument("--max-epochs", type=float, default=4.0, help="repeats of the data worth training on (default 4)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plan)

    tasks.add_commands(commands)  # finetune, predict, evaluate-task, augment

    data = commands.add_parser("data", help="inspect prepared data").add_subparsers(dest="data_command", metavar="COMMAND")
    p = data.add_parser("stats", help="token, document and shard counts of a prepared folder")
    p.add_argument("folder")
    p.add_argument("--top", type=int, default=0, help="also count tokens and show the N most frequent")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_data_stats)
    p = data.add_parser("verify", help="check every shard's size and checksum")
    p.add_argument("folder")
    p.set_defaults(func=cmd_data_verify)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    restore = (lambda: None) if args.verbose or os.environ.get("LMLAB_VERBOSE") else filter_stderr()
    try:
        return run_command(parser, args)
    finally:
        restore()


def run_command(parser, args) -> int:
    if args.version:
        from lmlab import __version__

        print(f"lmlab {__version__}")
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except LmlabError as error:
        if args.debug:
            raise
        print(f"lmlab: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lmlab: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except ModuleNotFoundError as error:  # an optional package a feature needs (say which extra brings it)
        advice = missing_message(error.name or "")
        if advice is None or args.debug:
            raise
        print(f"lmlab: error: {advice}", file=sys.stderr)
        return 1
    except Exception as error:  # a bug in lmlab: say so in one line unless debugging
        if args.debug:
            raise
        print(f"lmlab: internal error: {type(error).__name__}: {error} (run with --debug for the traceback)",
              file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
