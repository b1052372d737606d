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


MODEL_HELP = ("a run folder, or any model lmlab.load reads: a fine-tuned or Hugging Face folder, an ARPA file, an "
              "n-gram folder, a SavedModel")
ARTEFACTS = {"finetuned": "a fine-tuned folder", "huggingface": "a Hugging Face folder", "arpa": "an ARPA file",
             "ngram": "an n-gram folder", "savedmodel": "a SavedModel"}  # lmlab.language_model.KINDS but run
RUNLESS = ("arpa", "ngram", "savedmodel")  # answered by lmlab.load's own code, not through a loaded run


def load_artefact(args, check=None):
    """``None`` for a run folder (or for what is no model at all: the run path's errors say why), else
    ``lmlab.load``'s model of ``args.run``. The options its kind cannot take are refused first, before a large
    model loads: ``--checkpoint`` and ``--dtype`` here, the command's own by ``check(kind)``, which may also
    return False to send the path down the run path after all."""
    from lmlab.core.errors import ConfigError
    from lmlab.language_model import artefact_kind, load

    try:
        kind = artefact_kind(args.run)
    except ConfigError:
        return None
    if kind == "run":
        return None
    if args.checkpoint != "best" and kind != "finetuned":
        raise refuse(args.run, kind, f"--checkpoint {args.checkpoint}", "it holds one set of weights")
    if args.dtype not in (None, "float32") and kind in RUNLESS:
        raise refuse(args.run, kind, f"--dtype {args.dtype}", "it runs in the precision it was saved in")
    if check is not None and check(kind) is False:
        return None
    return load(args.run, args.checkpoint, args.dtype)


def refuse(path, kind: str, option: str, why: str):
    """The one-line error for an option that a ``kind`` of artefact does not take."""
    from lmlab.core.errors import ConfigError

    return ConfigError(f"{option} does not apply to {path}, {ARTEFACTS[kind]}: {why}")
