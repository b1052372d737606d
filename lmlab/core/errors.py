"""User-facing errors.

Anything a user can cause (a bad path, a broken file, a wrong option) raises
:class:`LmlabError` with a one-line message that names the file, the place in
it and what to do. The CLI prints that line and exits non-zero; a traceback is
shown only with ``--debug``. Any other exception is a bug in lmlab.
"""

from __future__ import annotations


class LmlabError(Exception):
    """An error caused by input or configuration, reported as one line."""


class DataError(LmlabError):
    """A corpus, shard or manifest that cannot be read as it should."""


class ConfigError(LmlabError):
    """An option or configuration value that is not valid."""


def where(path, line: int | None = None, byte: int | None = None) -> str:
    """Format a location for an error message: ``file:line`` or ``file (byte N)``."""
    text = str(path)
    if line is not None:
        text += f":{line}"
    if byte is not None:
        text += f" (byte {byte})"
    return text
