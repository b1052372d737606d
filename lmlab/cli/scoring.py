"""``lmlab score`` and ``eval-pairs``: log-probabilities of lines of text, and accuracy on minimal pairs."""

from __future__ import annotations

import contextlib
import json
import sys

from lmlab.cli.common import CHECKPOINT_HELP, log, log_unless_quiet, progress_on
from lmlab.core.errors import ConfigError


def add_commands(commands) -> None:
    p = commands.add_parser("score", help="log-probability, token count and perplexity of each line (JSONL out)",
                            description="Scores each line of FILE (or stdin: -) with a run's model and writes one "
                            "JSON record per line, in order: the chain rule after the end token for decoders, "
                            "back-off probabilities for n-grams, the pseudo-log-likelihood for masked LMs "
                            "(docs/scoring.md). Bad lines get a record with 'error' instead of a score.")
    p.add_argument("run")
    p.add_argument("--input", required=True, metavar="FILE", help="UTF-8 text, one item per line; - for stdin")
    p.add_argument("--field", help="each line is a JSON object: score this field")
    p.add_argument("--tokens", action="store_true", help="also each token and its log-probability")
    p.add_argument("--out", help="write the JSONL here instead of stdout")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--stride", type=int, help="sliding-window stride for lines longer than the context "
                   "(decoders; default: the block size)")
    p.add_argument("--checkpoint", default="best", help=CHECKPOINT_HELP)
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
    p.add_argument("--checkpoint", default="best", help=CHECKPOINT_HELP)
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_eval_pairs)


def cmd_score(args) -> int:
    from lmlab.core.io import atomic_open
    from lmlab.evaluation.score import count_lines, read_lines, score_lines, scorer_for
    from lmlab.runs.load import load_run

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    run = load_run(args.run, args.checkpoint)
    scorer = scorer_for(run, args.batch_size, args.stride)
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
        for record in score_lines(scorer, read_lines(source, args.field), args.tokens, progress_on(args), total):
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            counts["lines"] += 1
            counts["errors"] += "error" in record
            counts["empty"] += record.get("error") == "empty line"
            counts["windowed"] += "windows" in record
    say(f"scored {counts['lines'] - counts['errors']:,} of {counts['lines']:,} lines by {scorer.method} "
        f"({counts['errors']:,} error records, {counts['empty']:,} of them empty lines; {counts['windowed']:,} "
        "longer than the context, scored in windows)" + (f"; wrote {args.out}" if args.out else ""))
    return 0


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
