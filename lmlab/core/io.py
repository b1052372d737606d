"""Atomic file writes and checksums.

Every file lmlab writes goes to a temporary name in the same folder, is
flushed to disk, and is renamed into place, so a crash leaves either the old
file or the new one, never half of one. Only JSON, raw arrays and
safetensors are written: nothing is ever pickled.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

from lmlab.core.errors import LmlabError

TMP_SUFFIX = ".tmp"


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temporary_path(path: Path) -> Path:
    return path.with_name(f"{path.name}.{os.getpid()}{TMP_SUFFIX}")


@contextlib.contextmanager
def atomic_open(path, mode: str = "wb", encoding: str | None = None):
    """Open ``path`` for writing through a temporary file renamed on success.

    If the block raises, the temporary file is removed and ``path`` is left
    as it was. Failures of the file system become an :class:`LmlabError`.
    """
    path = Path(path)
    tmp = temporary_path(path)
    try:
        with open(tmp, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise LmlabError(f"cannot write {path}: {error.strerror or error}") from error
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_json(path, data, indent: int | None = 2) -> None:
    """Write JSON atomically; ``indent=None`` for large files (json's C encoder, ~10x faster)."""
    text = json.dumps(data, ensure_ascii=False, indent=indent)
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text + "\n")


def read_text(path, what: str = "file") -> str:
    """A whole UTF-8 file, or an :class:`LmlabError` naming what is wrong with it."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LmlabError(f"{path}: {what} not found") from None
    except UnicodeDecodeError as error:
        raise LmlabError(f"{path}: {what} is not valid UTF-8 (byte {error.start:,})") from None
    except OSError as error:
        raise LmlabError(f"{path}: cannot read {what}: {error.strerror or error}") from None


def read_json(path, what: str = "JSON file"):
    path = Path(path)
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise LmlabError(f"{path}:{error.lineno}: {what} is not valid JSON: {error.msg}") from None
    except RecursionError:
        raise LmlabError(f"{path}: {what} is nested too deeply to be read") from None


def sha256_file(path, chunk_size: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def remove_stale_temporaries(folder: Path) -> None:
    """Delete temporary files a killed process left behind in ``folder``."""
    for stale in Path(folder).glob(f"*{TMP_SUFFIX}"):
        stale.unlink(missing_ok=True)
