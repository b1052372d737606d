"""The ``lmlab`` command line: a table of subcommands, each a plain function.

Errors a user can cause are :class:`~lmlab.core.errors.LmlabError`: printed as one
line, exit status 1 (2 for a Keras backend lmlab does not run on); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys

from lmlab.cli import data, demo, experiments, interop, runs, scoring, serve, tasks
from lmlab.cli.quiet import filter_stderr
from lmlab.core.backend import UnsupportedBackend, check_backend
from lmlab.core.errors import LmlabError
from lmlab.core.extras import missing_message


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmlab", description="A language-model lab on Keras 3.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("--verbose", action="store_true", help="let TensorFlow's and XLA's own logging through")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    data.add_commands(commands)  # prepare, data stats, data verify
    demo.add_commands(commands)  # demo
    runs.add_commands(commands)  # train, launch, eval, generate, fill-mask
    interop.add_commands(commands)  # export, import
    experiments.add_commands(commands)  # compare, plan
    tasks.add_commands(commands)  # finetune, predict, evaluate-task, augment
    scoring.add_commands(commands)  # score, eval-pairs
    serve.add_commands(commands)  # serve
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
        check_backend()  # before any command: one line and status 2 for a backend lmlab does not run on
        return args.func(args)
    except UnsupportedBackend as error:
        if args.debug:
            raise
        print(f"lmlab: error: {error}", file=sys.stderr)
        return 2
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
