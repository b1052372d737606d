"""``lmlab score``, ``eval-pairs``, ``rescore`` and ``harness``: log-probabilities of lines, minimal pairs,
n-best rescoring (WER/CER), and lm-evaluation-harness tasks."""

from __future__ import annotations

import contextlib
import itertools
import json
import sys

from lmlab.cli.common import (CHECKPOINT_HELP, MODEL_HELP, RUNLESS, dtype_option, load_artefact, log,
                               log_unless_quiet, progress_on, refuse, run_output_options)
from lmlab.core.errors import ConfigError


def add_commands(commands) -> None:
    p = commands.add_parser("score", help="log-probability, token count and perplexity of each line (JSONL out)",
                            description="Scores each line of FILE (or stdin: -) with a run's model (or any model "
                            "lmlab.load reads) and writes one JSON record per line, in order: the chain rule after "
                            "the end token for decoders, back-off probabilities for n-grams, the pseudo-log-likelihood "
                            "for masked LMs (docs/scoring.md). Bad lines get a record with 'error' instead of a score.")
    p.add_argument("run", help=MODEL_HELP)
    p.add_argument("--input", required=True, metavar="FILE", help="UTF-8 text, one item per line; - for stdin")
    p.add_argument("--field", help="each line is a JSON object: score this field")
    p.add_argument("--tokens", action="store_true", help="also each token and its log-probability")
    p.add_argument("--out", help="write the JSONL here instead of stdout")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--stride", type=int, help="sliding-window stride for lines longer than the context "
                   "(decoders; default: the block size)")
    p.add_argument("--checkpoint", default="best", help=CHECKPOINT_HELP)
    dtype_option(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar, no summary on stderr")
    p.set_defaults(func=cmd_score)

    p = commands.add_parser("eval-pairs", help="minimal-pair accuracy (BLiMP or your own good/bad pairs)",
                            description="A pair is right when the good sentence gets the higher total "
                            "log-probability. Reads BLiMP's JSONL (a folder, one file per paradigm) or "
                            "good,bad[,group] JSONL/CSV (docs/scoring.md).")
    p.add_argument("run")
    p.add_argument("--data", required=True, metavar="DIR_OR_FILE", help="a pair file or a folder of them")
    p.add_argument("--limit", type=int, help="the first N pairs of each paradigm")
    p.add_argument("--out", metavar="DIR", help="write results.json, results.md and accuracy.png here")
    p.add_argument("--batch-size", type=int, default=32)
    run_output_options(p, json="print the results as JSON", quiet=True)
    p.set_defaults(func=cmd_eval_pairs)

    p = commands.add_parser("rescore", help="n-best rescoring: am + λ·lm + β·length, WER/CER before and after",
                            description="Rescores each utterance's n-best list with a run's LM, tunes λ and β on a "
                            "dev part (the odd positions, or --dev), and reports first-pass, rescored and oracle "
                            "error rates, raw and normalised (docs/scoring.md). Formats: JSONL, HyPoradise JSON, "
                            "Kaldi n-best text.")
    p.add_argument("run")
    p.add_argument("--nbest", required=True, metavar="FILE", help=".jsonl, HyPoradise .json, or Kaldi UTT-N text")
    p.add_argument("--ref", metavar="FILE", help="references, Kaldi text (UTT words...); replaces the file's own")
    p.add_argument("--am-costs", metavar="FILE", help="Kaldi lists: UTT-N first-pass cost lines (am = -cost)")
    p.add_argument("--dev", metavar="FILE", help="tune λ and β on this n-best file; test on all of --nbest")
    p.add_argument("--dev-ref", metavar="FILE", help="references for --dev (Kaldi text)")
    p.add_argument("--dev-am-costs", metavar="FILE", help="first-pass costs for a Kaldi --dev list")
    p.add_argument("--unit", choices=("word", "char"), default="word", help="WER (word) or CER (char, e.g. Chinese)")
    p.add_argument("--weights", metavar="LAMBDA,BETA", help="fixed weights, no tuning (0,0: the first pass)")
    p.add_argument("--out", metavar="FILE", help="write the results as JSON here")
    p.add_argument("--hyps", metavar="FILE", help="write each test utterance's chosen hypothesis (Kaldi text)")
    p.add_argument("--batch-size", type=int, default=32)
    run_output_options(p, json="print the results as JSON", quiet=True)
    p.set_defaults(func=cmd_rescore)

    p = commands.add_parser("harness", help="lm-evaluation-harness tasks on a decoder run (the 'lmlab' model)",
                            description="Runs lm_eval.simple_evaluate with the run as the harness model 'lmlab' "
                            "(loglikelihood, loglikelihood_rolling, generate_until; docs/scoring.md). Needs "
                            "pip install 'lmlab[harness]'; the harness's own tasks may download their data.")
    p.add_argument("run")
    p.add_argument("--tasks", required=True, help="comma-separated task names (the harness's or --include-path's)")
    p.add_argument("--include-path", metavar="DIR", help="a folder of your own task YAML files")
    p.add_argument("--limit", type=float, help="the first N documents of each task (a fraction if < 1)")
    p.add_argument("--num-fewshot", type=int)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--checkpoint", default="best", help=CHECKPOINT_HELP)
    p.add_argument("--out", metavar="FILE", help="write the harness's results (and settings) as JSON here")
    p.set_defaults(func=cmd_harness)


def cmd_score(args) -> int:
    from lmlab.core.io import atomic_open
    from lmlab.evaluation.score import count_lines, read_lines, score_lines, scorer_for
    from lmlab.runs.load import load_run

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")

    def check(kind):
        if args.stride is not None and kind in RUNLESS:
            raise refuse(args.run, kind, "--stride", "it scores each line whole")

    lm = load_artefact(args, check)
    if lm is None or hasattr(lm, "run"):  # a run, or an import or fine-tune scored through its run
        run = lm.run if lm is not None else load_run(args.run, args.checkpoint, dtype=args.dtype)
        scorer = scorer_for(run, args.batch_size, args.stride)
        method = scorer.method
    else:
        scorer, method = None, "backoff" if lm.family == "ngram" else "chain"
    say = log_unless_quiet(args)
    with contextlib.ExitStack() as stack:
        if args.input == "-":
            source, total = sys.stdin.buffer, None
        else:
            try:
                source = stack.enter_context(open(args.input, "rb"))
            except OSError as error:
                raise ConfigError(f"{args.input}: {error.strerror}") from None
            total = count_lines(args.input)
        out = stack.enter_context(atomic_open(args.out, "w", encoding="utf-8")) if args.out else sys.stdout
        counts = {"lines": 0, "errors": 0, "empty": 0, "windowed": 0}
        lines = read_lines(source, args.field)
        records = (score_lines(scorer, lines, args.tokens, progress_on(args), total) if scorer is not None
                   else _model_records(lm, lines, args.tokens, args.batch_size))
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            counts["lines"] += 1
            counts["errors"] += "error" in record
            counts["empty"] += record.get("error") == "empty line"
            counts["windowed"] += "windows" in record
    say(f"scored {counts['lines'] - counts['errors']:,} of {counts['lines']:,} lines by {method} "
        f"({counts['errors']:,} error records, {counts['empty']:,} of them empty lines; {counts['windowed']:,} "
        "longer than the context, scored in windows)" + (f"; wrote {args.out}" if args.out else ""))
    return 0


def _model_records(lm, lines, tokens: bool, batch_size: int):
    """``score_lines`` for a model without a run (ARPA file, n-gram folder, SavedModel): ``lm.score``'s records,
    numbered as the lines are, with the lines that cannot be read as their error records."""
    from lmlab.evaluation.score import CHUNK_LINES

    lines = iter(lines)
    while chunk := list(itertools.islice(lines, CHUNK_LINES)):  # a chunk at a time: constant memory
        scored = iter(lm.score([line.text for line in chunk if line.error is None], tokens, batch_size))
        for line in chunk:
            yield ({"line": line.number, "text": line.text, "error": line.error} if line.error is not None
                   else {**next(scored), "line": line.number})


def cmd_eval_pairs(args) -> int:
    from lmlab.evaluation.pairs import chance_note, evaluate_pairs, read_pairs, table, write_results

    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {args.limit}")
    pairs = read_pairs(args.data, args.limit)
    result = evaluate_pairs(args.run, pairs, args.batch_size, args.checkpoint, progress_on(args))
    if args.out:
        write_results(result, args.out, str(args.data), log=log_unless_quiet(args))
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
        return 0
    print(table(result))
    if not args.quiet:
        log(f"overall accuracy {100 * result['accuracy']:.1f}%, {chance_note(result)}")
    return 0


def _weights(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        lm_weight, length_weight = (float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--weights must be LAMBDA,BETA (two numbers), got {text!r}") from None
    return lm_weight, length_weight


def cmd_rescore(args) -> int:
    from lmlab.core.io import atomic_open, write_json
    from lmlab.evaluation.nbest import read_nbest
    from lmlab.evaluation.rescore import rescore, table

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    weights = _weights(args.weights)
    utterances = read_nbest(args.nbest, args.ref, args.am_costs)
    dev = read_nbest(args.dev, args.dev_ref, args.dev_am_costs) if args.dev else None
    result = rescore(utterances, args.run, dev, args.unit, weights, args.batch_size, args.checkpoint,
                     progress_on(args))
    if args.hyps:
        with atomic_open(args.hyps, "w", encoding="utf-8") as out:
            out.writelines(f"{c['id']} {c['hypothesis']}\n" for c in result["choices"])
    summary = {k: v for k, v in result.items() if k != "choices"}
    if args.out:
        write_json(args.out, {"nbest": str(args.nbest), "run": str(args.run), **summary})
    if args.json:
        print(json.dumps(summary, ensure_ascii=False))
        return 0
    print(table(result))
    return 0


def cmd_harness(args) -> int:
    from lmlab.core.extras import require
    from lmlab.core.io import write_json
    from lmlab.evaluation.harness import evaluate

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    limit = None if args.limit is None else (int(args.limit) if args.limit >= 1 else args.limit)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    result = evaluate(args.run, tasks, args.include_path, limit, args.num_fewshot, args.batch_size, args.checkpoint)
    if result is None:  # only on a non-zero rank of a distributed harness run
        return 0
    if args.out:
        keep = {k: result[k] for k in ("results", "versions", "n-shot", "higher_is_better", "n-samples") if k in result}
        write_json(args.out, json.loads(json.dumps({"run": str(args.run), "tasks": tasks, **keep}, default=str)))
    print(require("lm_eval.utils", "lmlab harness").make_table(result))
    return 0
