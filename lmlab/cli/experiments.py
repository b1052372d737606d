"""``lmlab compare`` (several runs under one budget, with a report) and ``lmlab plan`` (sizing for a budget)."""

from __future__ import annotations

import json

from lmlab.cli.common import log, log_unless_quiet, progress_on
from lmlab.core.errors import ConfigError


def cmd_compare(args) -> int:
    from lmlab.experiments import run_experiment

    result = run_experiment(args.experiment, args.out, scale=args.scale, only=args.only, data=args.data,
                            dry_run=args.dry_run, progress=progress_on(args),
                            log=log_unless_quiet(args))
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
        log("calibrating: a few training steps of a small Transformer ...")
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


def add_commands(commands) -> None:
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
