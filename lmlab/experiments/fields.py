"""Checking an experiment file's fields: every error names the file, the section and the field.

Shared by the experiment file (:mod:`~lmlab.experiments.spec`) and its finetune section
(:mod:`~lmlab.experiments.finetune`).
"""

from __future__ import annotations

import contextlib
import os
import re

from lmlab.core.errors import ConfigError, LmlabError

DEFAULT_DATA_ROOT = "../shared/data"  # where $LMLAB_DATA points when unset, as for the tests and the demo


def expand_path(text: str) -> str:
    """``$LMLAB_DATA`` (default ``../shared/data``), other variables and ``~`` expanded."""
    text = re.sub(r"\$\{LMLAB_DATA\}|\$LMLAB_DATA\b", lambda m: os.environ.get("LMLAB_DATA", DEFAULT_DATA_ROOT), text)
    return os.path.expanduser(os.path.expandvars(text))


@contextlib.contextmanager
def at(place: str):
    """Prefix any LmlabError raised inside with ``place`` (file, section, run)."""
    try:
        yield
    except LmlabError as error:
        raise ConfigError(f"{place}: {error}") from None


def as_mapping(value, place: str, what: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{place}: {what} must be a mapping, got {value!r}")
    return value


def check_known(data: dict, known, place: str, what: str) -> None:
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise ConfigError(f"{place}: unknown {what} {', '.join(unknown)}; known: {', '.join(known)}")


def positive_int(value, place: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{place} must be a positive integer, got {value!r}")
    return value
