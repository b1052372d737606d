"""What the subcommands share: logging to stderr, whether to draw progress bars, and the output options of the
commands that read a run."""

from __future__ import annotations

import sys

from lmlab.cli import quiet

CHECKPOINT_HELP = "best (default) or last"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def log_unless_quiet(args):
    """The log function of a command: :func:`log`, or nothing under ``--quiet``."""
    return (lambda message: None) if args.quiet else log


def progress_on(args) -> bool:
    """Progress bars are for a person watching: on when stderr is a terminal, off with ``--quiet``."""
    return not args.quiet and quiet.stderr_is_terminal()


def run_output_options(p, json: str | None = None, quiet: bool = False) -> None:
    """``--checkpoint`` (which of the run's checkpoints to read), ``--json`` and, with ``quiet``, ``--quiet``."""
    p.add_argument("--checkpoint", default="best", help=CHECKPOINT_HELP)
    p.add_argument("--json", action="store_true", help=json)
    if quiet:
        p.add_argument("--quiet", action="store_true", help="no progress bar")


DTYPES = ("float32", "bfloat16", "int8")  # lmlab.models.precision.DTYPES, spelled here so --help imports no Keras


def dtype_option(p) -> None:
    """``--dtype``: the inference precision a run's model is loaded in (:mod:`lmlab.models.precision`)."""
    p.add_argument("--dtype", choices=DTYPES, default=None,
                   help="inference precision: float32, bfloat16, or int8 (weight-only, transformer runs); "
                   "default: what the run holds")
