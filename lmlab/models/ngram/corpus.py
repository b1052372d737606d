"""Reading training and test text the way ``lmplz`` and ``query`` read it.

One line is one sentence (an empty line is an empty sentence, which still has a
``</s>``); words are separated by runs of space, tab, carriage return or NUL - the
delimiters of KenLM's ``lm/builder/corpus_count.cc`` - and nothing else (Python's
``str.split()`` would also split on form feeds and Unicode spaces, so lines holding
those are split by a regular expression instead). A last line without a newline is
still a sentence.
"""

from __future__ import annotations

import gzip
import re
import zlib
from pathlib import Path
from typing import Iterator, Sequence

from lmlab.core.errors import DataError, where

BLOCK_BYTES = 1 << 22
# Characters Python's str.split() treats as whitespace but KenLM does not, and NUL,
# which KenLM splits on but Python does not.
_SPLITS_DIFFERENTLY = re.compile("[\x00\x0b\x0c\x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")
_KENLM_WORD = re.compile("[^ \t\r\x00]+")


def split_words(line: str) -> list[str]:
    """The words of one line as ``lmplz`` splits them."""
    if _SPLITS_DIFFERENTLY.search(line):
        return _KENLM_WORD.findall(line)
    return line.split()


def _open(path: Path):
    try:
        with open(path, "rb") as probe:
            magic = probe.read(2)
        return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")
    except FileNotFoundError:
        raise DataError(f"{path}: text file not found") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read: {error.strerror or error}") from None


def read_sentences(path, replace: Sequence[tuple[str, str]] = ()) -> Iterator[list[str]]:
    """Yield the words of each line of a text file (gzip allowed), as ``lmplz`` reads it.

    ``replace``: (old, new) text substitutions made on each line first, like
    ``sed 's/old/new/g'`` (KenLM's reference outputs rename WikiText's ``<unk>`` to
    ``<oov>`` this way, since ``<unk>`` is reserved). The file is read in blocks of a
    few MB; only the current block's lines are held.
    """
    path = Path(path)
    handle = _open(path)
    line_number = 0  # lines before the current block
    rest = b""  # an incomplete last line, kept for the next block
    try:
        while True:
            try:
                data = handle.read(BLOCK_BYTES)
            except (OSError, EOFError, zlib.error) as error:
                raise DataError(f"{where(path, line_number + 1)}: cannot read (truncated or corrupt file?): "
                                f"{error}") from None
            if data:
                data, rest = rest + data, b""
                cut = data.rfind(b"\n") + 1
                data, rest = data[:cut], data[cut:]
                if not data:
                    continue
            elif rest:
                data, rest = rest, b""  # a last line without a newline is a sentence too
            else:
                return
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as error:
                line = line_number + data.count(b"\n", 0, error.start) + 1
                raise DataError(f"{where(path, line)}: not valid UTF-8") from None
            for old, new in replace:
                text = text.replace(old, new)
            lines = text.split("\n")
            if text.endswith("\n"):
                lines.pop()
            line_number += len(lines)
            if _SPLITS_DIFFERENTLY.search(text):
                yield from map(split_words, lines)
            else:
                yield from map(str.split, lines)
    finally:
        handle.close()
