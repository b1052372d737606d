"""Stage 5, the ARPA format: writing our models, reading ours, KenLM's and SRILM's.

The format (Doug Paul's ARPA back-off format, as ``lmplz`` writes it in
``lm/common/print.cc``)::

    \\data\\
    ngram 1=13779
    ngram 2=96258

    \\1-grams:
    -4.936203	<unk>	0
    0	<s>	-0.9722865
    ...                                     log10 p <TAB> words <TAB> log10 backoff

    \\2-grams:
    -0.46197122	<s> </s>                    (the highest order has no backoff column)

    \\end\\

**Writing.** Like ``lmplz`` we list n-grams in suffix order, write a backoff on every
line of the orders below the highest (0 included) and print each float32 with the
shortest digits that read back as the same float32 (``lmplz`` prints through
double-conversion's shortest mode, so for the same numbers the text is the same).
Formatting millions of numbers one by one in Python is slow, so
:func:`format_float32` finds the shortest digits with array arithmetic (once per
distinct value) and :func:`_write_lines` assembles whole blocks of lines as one byte
gather.

**Reading** accepts any whitespace between fields, optional backoffs (SRILM leaves
them out where they are 0), comments before ``\\data\\`` and gzip files. Every problem
is a one-line :class:`~lmlab.core.errors.DataError` naming the file and line. n-grams
whose suffix or context is missing (pruned SRILM files) get *blank* entries:
probability NaN ("not listed", so scoring backs off past them) and backoff 0, which
is what KenLM does to such files when it loads them.
"""

from __future__ import annotations

import bisect
import gzip
import itertools
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmlab.core.errors import DataError, where
from lmlab.core.io import atomic_open
from lmlab.models.ngram.count import id_bits, sort_keys, suffix_order
from lmlab.models.ngram.vocabulary import SPECIALS

UNK_LOG10_IF_MISSING = -100.0  # KenLM: "The ARPA file is missing <unk>. Substituting log10 probability -100"

# ---------------------------------------------------------------------------
# Float formatting
# ---------------------------------------------------------------------------

_POW10 = 10.0 ** np.arange(0, 23)
FAST_RANGE = (1e-7, 1e6)  # |x| where format_float32 works with arrays; others go one by one


def _times_pow10(a: np.ndarray, s: np.ndarray) -> np.ndarray:
    """a * 10**s using an exactly representable power of ten, so there is one rounding."""
    factor = _POW10[np.abs(s)]
    return np.where(s >= 0, a * factor, a / factor)


def _signed_pow10(k: np.ndarray) -> np.ndarray:
    return np.where(k >= 0, _POW10[np.clip(k, 0, 22)], 1.0 / _POW10[np.clip(-k, 0, 22)])


def format_float32(values) -> tuple[np.ndarray, np.ndarray]:
    """The shortest decimal text that reads back as the same float32, positional notation.

    Returns ``(chars, lengths)``: ``chars`` (M, W) uint8 holds each text right-aligned.
    The digits are those of NumPy's ``format_float_positional(unique=True)``: for each
    value, the fewest significant digits p whose correctly rounded decimal
    ``round(|x| 10^(p-1-e)) 10^(e-p+1)`` converts back to x (float32 never needs more
    than 9). Values outside [1e-7, 1e6) and non-finite ones are formatted by NumPy one
    by one; zeros print as ``0``.
    """
    x = np.asarray(values, np.float32)
    target = np.abs(x)
    a = target.astype(np.float64)
    fast = np.isfinite(a) & (((a >= FAST_RANGE[0]) & (a < FAST_RANGE[1])) | (a == 0))
    idx = np.flatnonzero(fast & (a > 0))
    av, tv = a[idx], target[idx]
    e = np.floor(np.log10(av)).astype(np.int64)  # decimal exponent: 10^e <= |x| < 10^(e+1)
    e += _signed_pow10(e + 1) <= av
    e -= _signed_pow10(e) > av
    mantissa = np.zeros(len(idx), np.int64)
    scale = np.zeros(len(idx), np.int64)  # |x| prints as mantissa * 10^-scale

    def attempt(digits: int, rows: np.ndarray):
        s = digits - 1 - e[rows]
        m = np.rint(_times_pow10(av[rows], s))
        ok = _times_pow10(m, -s).astype(np.float32) == tv[rows]
        return ok, m.astype(np.int64), s

    # Most log10 probabilities need 8 or 9 digits: try 8, take 9 where 8 fails, and
    # keep shortening the others while the text still reads back the same.
    ok, m, s = attempt(8, np.arange(len(idx)))
    rows = np.flatnonzero(ok)
    mantissa[rows], scale[rows] = m[ok], s[ok]
    nine = np.flatnonzero(~ok)
    _, m9, s9 = attempt(9, nine)
    mantissa[nine], scale[nine] = m9, s9
    for digits in range(7, 0, -1):
        if not len(rows):
            break
        ok, m, s = attempt(digits, rows)
        rows = rows[ok]
        mantissa[rows], scale[rows] = m[ok], s[ok]
    for _ in range(9):  # rounding up to 10^p leaves trailing zeros
        strip = (mantissa % 10 == 0) & (scale > 0)
        if not strip.any():
            break
        mantissa[strip] //= 10
        scale[strip] -= 1
    whole = (mantissa * 10 ** np.maximum(-scale, 0)).astype(np.float64)  # digits, no point
    point = np.maximum(scale, 0)  # digits after the point
    ndigits = np.maximum(np.floor(np.log10(np.maximum(whole, 1))).astype(np.int64) + 1, point + 1)
    ndigits += whole >= _signed_pow10(ndigits)  # log10 rounding at exact powers of ten
    negative = x[idx] < 0
    has_point = point > 0
    lengths_fast = ndigits + has_point + negative

    # Characters column by column from the right; row-major at the end.
    width = int(lengths_fast.max()) if len(idx) else 1
    columns = np.zeros((width, len(idx)), np.uint8)  # (W, n), column-major while building
    previous = np.zeros(len(idx), np.uint8)
    rest = whole
    for r in range(width):  # r-th character from the right
        quotient = np.floor(rest / 10.0)
        current = (rest - 10.0 * quotient).astype(np.uint8)  # digit r of the digit string
        rest = quotient
        shifted = has_point & (r > point)  # left of the point: digit r - 1
        j = r - shifted
        char = np.where(shifted, previous, current) + np.uint8(48)
        char = np.where(j < ndigits, char, np.where((j == ndigits) & negative, np.uint8(45), np.uint8(0)))
        columns[width - 1 - r] = np.where(has_point & (r == point), np.uint8(46), char)
        previous = current
    chars = np.zeros((len(x), width), np.uint8)
    lengths = np.ones(len(x), np.int64)
    chars[:, -1] = ord("0")
    chars[idx] = columns.T
    lengths[idx] = lengths_fast
    for row in np.flatnonzero(~fast):
        text = _slow_text(x[row]).encode()
        if len(text) > chars.shape[1]:
            chars = np.pad(chars, ((0, 0), (len(text) - chars.shape[1], 0)))
        chars[row, chars.shape[1] - len(text):] = np.frombuffer(text, np.uint8)
        lengths[row] = len(text)
    return chars, lengths


def _slow_text(value) -> str:
    if np.isnan(value):
        return "nan"
    if np.isinf(value):
        return "-inf" if value < 0 else "inf"
    return str(np.float32(value))


def format_floats(values) -> list[str]:
    """``format_float32`` as Python strings (for tests and small outputs)."""
    chars, lengths = format_float32(values)
    width = chars.shape[1]
    return [bytes(row[width - n:]).decode() for row, n in zip(chars, lengths)]


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------

LINES_PER_BLOCK = 1 << 16  # ~2.5 MB of text: the index arrays stay in malloc's reused heap


def ngram_words(keys: list[np.ndarray], vocab_size: int) -> list[np.ndarray]:
    """Word ids of every n-gram from the keys: g = [key % V] + (the (k-1)-gram key // V)."""
    grams = []
    for k, key in enumerate(keys, start=1):
        if k == 1:
            grams.append(key.astype(np.int32)[:, None])
        else:
            grams.append(np.concatenate([(key % vocab_size).astype(np.int32)[:, None],
                                         grams[-1][key // vocab_size]], axis=1))
    return grams


def _number_table(values: np.ndarray, end: bytes):
    """``(ids, table, offsets, lengths)``: each value's text followed by ``end``, for :func:`_write_lines`.

    Only distinct values are formatted (a 5-gram model has ~6,000 distinct backoffs
    and about half as many distinct probabilities as n-grams); ``ids`` picks each
    line's text.
    """
    values = np.ascontiguousarray(values, np.float32)
    moved, bits = sort_keys(values.view(np.uint32).astype(np.int64), 32)  # equal floats, equal bits
    new = np.empty(len(bits), bool)
    new[:1] = True
    np.not_equal(bits[1:], bits[:-1], out=new[1:])
    ids = np.empty(len(values), np.int64)
    ids[moved] = np.cumsum(new) - 1
    chars, lengths = format_float32(values[moved[new]])
    width = chars.shape[1]
    table = np.empty((len(chars), width + 1), np.uint8)  # (distinct values, W + 1)
    table[:, :width] = chars
    table[:, width] = end[0]
    offsets = np.arange(len(chars), dtype=np.int64) * (width + 1) + width - lengths
    return ids, table.reshape(-1), offsets, lengths + 1


def _write_lines(handle, fields: list) -> None:
    """Write lines made of ``fields`` laid side by side, as one byte gather per block.

    Each field is ``(ids (M,), table bytes, offsets, lengths)``: line i holds
    ``table[offsets[ids[i]]:][:lengths[ids[i]]]`` of field 1, then of field 2, ... Every
    segment is a slice of one source buffer, so a block of lines is
    ``source[ragged arange]``.
    """
    count = len(fields[0][0])
    bases = np.cumsum([0] + [len(f[1]) for f in fields])[:-1]
    source = np.concatenate([f[1] for f in fields])
    index = np.int32 if len(source) < 2**31 else np.int64
    for lo in range(0, count, LINES_PER_BLOCK):
        hi = min(count, lo + LINES_PER_BLOCK)
        starts = np.empty((hi - lo, len(fields)), np.int64)  # (lines, fields)
        sizes = np.empty((hi - lo, len(fields)), np.int64)
        for f, ((ids, _, offsets, lengths), base) in enumerate(zip(fields, bases)):
            chosen = ids[lo:hi]
            starts[:, f] = base + offsets[chosen]
            sizes[:, f] = lengths[chosen]
        starts, sizes = starts.reshape(-1), sizes.reshape(-1)
        total = int(sizes.sum())
        # gather = the concatenation of arange(start, start + size) over the segments,
        # as a cumulative sum of steps: +1 inside a segment, a jump at each segment start.
        begin = np.cumsum(sizes) - sizes  # where each segment starts in the block
        step = np.ones(total, index)
        step[begin[1:]] = starts[1:] - (starts[:-1] + sizes[:-1]) + 1
        step[0] = starts[0]
        handle.write(source[np.cumsum(step, dtype=index)].tobytes())


def _vocab_table(words: list[str], end: bytes):
    """Each word's UTF-8 bytes followed by ``end``, concatenated, with offsets and lengths."""
    encoded = [w.encode("utf-8") + end for w in words]
    lengths = np.fromiter(map(len, encoded), np.int64, len(encoded))
    offsets = np.cumsum(lengths) - lengths
    return np.frombuffer(b"".join(encoded), np.uint8), offsets, lengths


def write_arpa(path, words: list[str], keys: list[np.ndarray], log10_prob: list[np.ndarray],
               log10_backoff: list[np.ndarray]) -> None:
    """Write an ARPA file (gzip if ``path`` ends in ``.gz``), atomically.

    ``keys``/``log10_prob``/``log10_backoff``: per order, as :class:`NGramLM` holds them;
    entries with a NaN probability (blanks from reading) are left out.
    """
    path = Path(path)
    vocab_size = len(words)
    grams = ngram_words(keys, vocab_size)
    top = len(keys)
    listed = [~np.isnan(p) for p in log10_prob]
    tables = {end: _vocab_table(words, end) for end in (b" ", b"\t", b"\n")}
    with atomic_open(path, "wb") as raw:
        handle = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) if path.suffix == ".gz" else raw
        header = "\\data\\\n" + "".join(f"ngram {k}={int(n.sum())}\n" for k, n in enumerate(listed, 1)) + "\n"
        handle.write(header.encode())
        for k in range(1, top + 1):
            keep = listed[k - 1]
            handle.write(f"\\{k}-grams:\n".encode())
            last_end = b"\t" if k < top else b"\n"
            fields = [_number_table(log10_prob[k - 1][keep], b"\t")]
            for column in range(k):
                end = b" " if column < k - 1 else last_end
                fields.append((grams[k - 1][keep, column], *tables[end]))
            if k < top:
                fields.append(_number_table(log10_backoff[k - 1][keep], b"\n"))
            _write_lines(handle, fields)
            handle.write(b"\n")
        handle.write(b"\\end\\\n")
        if handle is not raw:
            handle.close()


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------


@dataclass
class ArpaNGrams:
    """What an ARPA file lists: per order, word ids (M, k), log10 probs and backoffs."""

    words: list[str]
    grams: list[np.ndarray]
    log10_prob: list[np.ndarray]
    log10_backoff: list[np.ndarray]


def _section_breaks(text: str, lines: int) -> list[int]:
    """Sorted indices of the lines of ``text`` (whole lines) that are blank or start with ``\\``.

    A line holding only spaces or tabs is a break too, as is one holding only ``\r``.
    """
    found = set()
    for marker in ("\n\n", "\n\r\n", "\n\\", "\n ", "\n\t"):
        at = text.find(marker)
        while at >= 0:
            end = text.find("\n", at + 1)
            if marker in ("\n ", "\n\t") and text[at + 1:end if end >= 0 else len(text)].strip(" \t\r\f\v"):
                at = text.find(marker, at + 1)  # an entry line that merely starts with a space
                continue
            found.add(at + 1)
            at = text.find(marker, at + 1)
    first_line = text[: text.find("\n")] if "\n" in text else text
    if not first_line.strip(" \t\r\f\v") or first_line.startswith("\\"):
        found.add(0)
    starts = sorted(found)
    indices, counted, line = [], 0, 0
    for start in starts:
        line += text.count("\n", counted, start)
        counted = start
        if line < lines:
            indices.append(line)
    return indices


class _Lines:
    """Numbered lines of a text or gzip file, decoded as UTF-8 a block at a time.

    Each block's *section breaks* (blank lines and lines starting with ``\\``) are
    found with a few ``str.find`` calls, so the entry lines between them are handed
    out as list slices without looking at each line in Python.
    """

    def __init__(self, path: Path):
        self.path = path
        try:
            with open(path, "rb") as probe:
                magic = probe.read(2)
            self.handle = gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")
        except FileNotFoundError:
            raise DataError(f"{path}: ARPA file not found") from None
        except OSError as error:
            raise DataError(f"{path}: cannot read ARPA file: {error.strerror or error}") from None
        self.number = 0  # of the line last returned
        self._buffer: list[str] = []
        self._breaks: list[int] = []  # indices of section-break lines in the buffer
        self._at = 0  # next line of the buffer
        self._rest = b""  # an incomplete last line, kept for the next block
        self._done = False

    def error(self, message: str, line: int | None = None) -> DataError:
        return DataError(f"{where(self.path, self.number if line is None else line)}: {message}")

    def _fill(self) -> bool:
        """Read the next block of lines; False at the end of the file."""
        if self._done:
            return False
        try:
            data = self.handle.read(1 << 22)
        except (OSError, EOFError, zlib.error) as error:
            raise self.error(f"cannot read (truncated or corrupt file?): {error}", self.number + 1) from None
        if not data:
            self._done = True
            if not self._rest:
                return False
            data, self._rest = self._rest + b"\n", b""
        else:
            data, self._rest = self._rest + data, b""
            cut = data.rfind(b"\n") + 1
            data, self._rest = data[:cut], data[cut:]
            if not data:
                return self._fill()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise self.error("not valid UTF-8", self.number + data.count(b"\n", 0, error.start) + 1) from None
        self._buffer = text.split("\n")
        self._buffer.pop()  # after the final newline
        self._breaks = _section_breaks(text, len(self._buffer))
        self._at = 0
        return True

    def next(self) -> str | None:
        """The next line (without its newline), or None at the end of the file."""
        if self._at >= len(self._buffer) and not self._fill():
            return None
        self._at += 1
        self.number += 1
        return self._buffer[self._at - 1]

    def entries(self) -> tuple[list[str], bool]:
        """The following entry lines of this block, and whether the section ended there
        (at a blank or ``\\`` line, which is left unread, or at the end of the file)."""
        if self._at >= len(self._buffer) and not self._fill():
            return [], True
        start = self._at
        following = bisect.bisect_left(self._breaks, start)
        end = self._breaks[following] if following < len(self._breaks) else len(self._buffer)
        self._at = end
        self.number += end - start
        return self._buffer[start:end], end < len(self._buffer)

    def close(self):
        self.handle.close()


def read_arpa(path) -> ArpaNGrams:
    """Parse an ARPA file (see the module notes). Raises DataError naming file and line."""
    path = Path(path)
    lines = _Lines(path)
    try:
        return _read(lines)
    finally:
        lines.close()


def _read(lines: _Lines) -> ArpaNGrams:
    line = lines.next()
    while line is not None and line.strip().lstrip("\ufeff") != "\\data\\":
        line = lines.next()
    if line is None:
        raise DataError(f"{lines.path}: not an ARPA file (no \\data\\ line)")
    declared: list[int] = []
    line = lines.next()
    while line is not None and not line.startswith("\\"):
        text = line.strip()
        if text:
            count = _NGRAM_COUNT.fullmatch(text)
            if count is None:
                raise lines.error(f"expected 'ngram N=count', found {text[:60]!r}")
            if int(count.group(1)) != len(declared) + 1:
                raise lines.error(f"expected the count of {len(declared) + 1}-grams, found {text[:60]!r}")
            declared.append(int(count.group(2)))
        line = lines.next()
    if not declared:
        raise lines.error("the \\data\\ section declares no n-gram counts")
    order = len(declared)
    words: list[str] = []
    index: dict[str, int] = {}
    grams, probs, backoffs = [], [], []
    for k in range(1, order + 1):
        while line is not None and not line.strip():
            line = lines.next()
        if line is None:
            raise lines.error(f"file ends before the \\{k}-grams: section (truncated?)")
        if line.strip() != f"\\{k}-grams:":
            raise lines.error(f"expected \\{k}-grams:, found {line.strip()[:60]!r}")
        ids, prob, backoff = _read_section(lines, k, declared[k - 1], words, index)
        grams.append(ids)
        probs.append(prob)
        backoffs.append(backoff)
        line = lines.next()
    while line is not None and not line.strip():
        line = lines.next()
    if line is None or line.strip() != "\\end\\":
        found = "the end of the file (truncated?)" if line is None else repr(line.strip()[:60])
        raise lines.error(f"expected \\end\\ after the {order}-grams, found {found}")
    return ArpaNGrams(words, grams, probs, backoffs)


def _usable(values: np.ndarray) -> np.ndarray:
    """A log10 value may be finite or -inf (probability 0); NaN and +inf are errors."""
    return ~np.isnan(values) & (values != np.inf)


def _parse_float(text: str, lines: _Lines, number: int, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise lines.error(f"bad {what} {text[:40]!r}", number) from None
    if not _usable(np.array([value]))[0]:
        raise lines.error(f"{what} {text[:40]!r} is not a number or -inf", number)
    return value


_NGRAM_COUNT = re.compile(r"ngram\s+([0-9]+)\s*=\s*([0-9]+)", re.ASCII)  # ASCII digits: int() takes no others
_ARPA_SPACE = re.compile("[ \t\r\f\v]+")
_NOT_ASCII_SPACE = re.compile("[\x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")
_IS_SPACE = np.zeros(256, bool)
_IS_SPACE[[9, 10, 11, 12, 13, 32]] = True


def _split_fields(block: list[str]) -> tuple[list[str], np.ndarray]:
    """All fields of the lines, and how many each line has.

    Fields are separated by ASCII whitespace (KenLM's ARPA reader splits on spaces and
    tabs; a word may hold any other character). One ``str.split`` over the whole block
    gives the fields; the count per line comes from the UTF-8 bytes (a field starts at
    a non-space byte after a space byte or newline) so no Python runs per line. Lines
    holding Unicode spaces, which ``str.split`` would also split on, are split by a
    regular expression instead.
    """
    text = "\n".join(block)
    if (not text.isascii() and _NOT_ASCII_SPACE.search(text)) or any(c in text for c in "\x1c\x1d\x1e\x1f"):
        rows = [_ARPA_SPACE.split(line.strip(" \t\r\f\v")) if line.strip(" \t\r\f\v") else [] for line in block]
        return list(itertools.chain.from_iterable(rows)), np.fromiter(map(len, rows), np.int64, len(rows))
    data = np.frombuffer(text.encode("utf-8"), np.uint8)
    space = _IS_SPACE[data]
    starts = ~space
    starts[1:] &= space[:-1]
    line_of = np.searchsorted(np.flatnonzero(data == 10), np.flatnonzero(starts))  # line of each field
    fields = np.bincount(line_of, minlength=len(block))
    return text.split(), fields


def _read_section(lines: _Lines, k: int, expected: int, words: list, index: dict):
    """The entries of one ``\\k-grams:`` section as (ids (M, k), probs, backoffs).

    A backoff on the highest order is legal ARPA (SRILM ``-write-bo``); it is ignored.
    """
    ids_parts, prob_parts, backoff_parts = [], [], []
    seen = 0
    ended = False
    while not ended:
        first = lines.number + 1
        block, ended = lines.entries()
        if not block:
            continue
        flat, fields = _split_fields(block)
        bad = np.flatnonzero((fields < k + 1) | (fields > k + 2))
        if len(bad):
            raise lines.error(f"a {k}-gram line needs a probability, {k} word(s) and an optional backoff; "
                              f"found {int(fields[bad[0]])} field(s)", first + int(bad[0]))
        offsets = np.cumsum(fields) - fields  # where each line's fields start in flat

        def column(j: int, rows=slice(None)) -> list[str]:
            return list(map(flat.__getitem__, (offsets[rows] + j).tolist()))

        width = int(fields[0])
        uniform = bool((fields == width).all())  # the usual case: one shape for the whole block
        prob_text = flat[0::width] if uniform else column(0)
        word_text = [flat[1 + j::width] if uniform else column(1 + j) for j in range(k)]
        with_backoff = np.flatnonzero(fields == k + 2)
        try:
            prob = np.array(prob_text, dtype=np.float64)
            backoff = np.zeros(len(block))
            if len(with_backoff):
                backoff[with_backoff] = np.array(flat[k + 1::width] if uniform else column(k + 1, with_backoff),
                                                 dtype=np.float64)
            if not (_usable(prob).all() and _usable(backoff).all()):
                raise ValueError
        except ValueError:
            for offset, line in enumerate(block):
                row = _ARPA_SPACE.split(line.strip(" \t\r\f\v"))  # ASCII spaces only, as _split_fields
                _parse_float(row[0], lines, first + offset, "log10 probability")
                if len(row) == k + 2:
                    _parse_float(row[k + 1], lines, first + offset, "log10 backoff")
            raise lines.error(f"a number in this block of {k}-grams cannot be read", first)
        rows = block
        if k == 1:
            for offset, word in enumerate(word_text[0]):
                if index.setdefault(word, len(words)) != len(words):
                    raise lines.error(f"unigram {word!r} is listed twice", first + offset)
                words.append(word)
            ids = np.arange(len(words) - len(rows), len(words), dtype=np.int32)[:, None]
        else:
            ids = np.empty((len(rows), k), np.int32)
            for j in range(k):
                found = np.fromiter(map(index.get, word_text[j], itertools.repeat(-1)), np.int64, len(rows))
                missing = np.flatnonzero(found < 0)
                if len(missing):
                    word = word_text[j][missing[0]]
                    raise lines.error(f"word {word!r} is not in the \\1-grams: section", first + int(missing[0]))
                ids[:, j] = found
        ids_parts.append(ids)
        prob_parts.append(prob.astype(np.float32))
        backoff_parts.append(backoff.astype(np.float32))
        seen += len(rows)
    if seen != expected:
        raise lines.error(f"\\data\\ declares {expected:,} {k}-grams but the section lists {seen:,} "
                          f"(truncated file or wrong count?)")
    if not ids_parts:
        return np.zeros((0, k), np.int32), np.zeros(0, np.float32), np.zeros(0, np.float32)
    return np.concatenate(ids_parts), np.concatenate(prob_parts), np.concatenate(backoff_parts)


# ---------------------------------------------------------------------------
# From listed n-grams to model tables
# ---------------------------------------------------------------------------


def _renumber_specials(ngrams: ArpaNGrams, path) -> tuple[list[str], np.ndarray]:
    """Our vocabulary (<unk>, <s>, </s> first, then file order) and old id -> new id."""
    index = {w: i for i, w in enumerate(ngrams.words)}
    for special in SPECIALS[1:]:
        if special not in index:
            raise DataError(f"{path}: the ARPA file has no {special} unigram")
    order = [index[s] for s in SPECIALS if s in index]
    rest = [i for i in range(len(ngrams.words)) if ngrams.words[i] not in SPECIALS]
    words = list(SPECIALS) + [ngrams.words[i] for i in rest]
    mapping = np.empty(len(ngrams.words), np.int32)
    offset = 0 if SPECIALS[0] in index else 1  # a missing <unk> still takes id 0
    mapping[order] = np.arange(len(order)) + offset
    mapping[rest] = np.arange(len(rest)) + 3
    return words, mapping


def tables_from_ngrams(ngrams: ArpaNGrams, path="ARPA file"):
    """Our per-order ``(words, keys, log10_prob, log10_backoff)`` from listed n-grams.

    Closes the tables under suffixes and contexts with blank entries (NaN probability,
    backoff 0), then keys every n-gram as ``index(g[1:]) * V + g[0]`` in suffix order.
    """
    words, mapping = _renumber_specials(ngrams, path)
    vocab_size = len(words)
    top = len(ngrams.grams)
    grams = [mapping[g] for g in ngrams.grams]
    probs = [p.copy() for p in ngrams.log10_prob]
    backoffs = [b.copy() for b in ngrams.log10_backoff]
    # Unigrams indexed by id; <unk> gets KenLM's substitute if the file has none.
    uni_prob = np.full(vocab_size, UNK_LOG10_IF_MISSING, np.float32)
    uni_backoff = np.zeros(vocab_size, np.float32)
    uni_prob[grams[0][:, 0]] = probs[0]
    uni_backoff[grams[0][:, 0]] = backoffs[0]
    grams[0], probs[0], backoffs[0] = np.arange(vocab_size, dtype=np.int32)[:, None], uni_prob, uni_backoff
    bits = id_bits(vocab_size)
    for k in range(top, 1, -1):  # add blank (k-1)-grams for missing suffixes and contexts
        needed = np.concatenate([grams[k - 1][:, 1:], grams[k - 1][:, :-1]])
        extra = _missing_rows(grams[k - 2], needed, bits)
        if len(extra):
            grams[k - 2] = np.concatenate([grams[k - 2], extra])
            probs[k - 2] = np.concatenate([probs[k - 2], np.full(len(extra), np.nan, np.float32)])
            backoffs[k - 2] = np.concatenate([backoffs[k - 2], np.zeros(len(extra), np.float32)])
    keys = [np.arange(vocab_size, dtype=np.int64)]
    for k in range(2, top + 1):
        g = grams[k - 1]
        suffix = g[:, k - 1].astype(np.int64)  # index of the 1-word suffix, then longer ones
        for j in range(2, k):
            suffix = _lookup(keys[j - 1], suffix * vocab_size + g[:, k - j])
        key = suffix * vocab_size + g[:, 0]
        moved = np.argsort(key, kind="stable")
        key = key[moved]
        duplicate = np.flatnonzero(key[1:] == key[:-1])
        if len(duplicate):
            text = " ".join(words[i] for i in g[moved[duplicate[0]]])
            raise DataError(f"{path}: the {k}-gram {text!r} is listed twice")
        keys.append(key)
        probs[k - 1], backoffs[k - 1] = probs[k - 1][moved], backoffs[k - 1][moved]
    backoffs[-1] = np.zeros(len(keys[-1]), np.float32)
    return words, keys, probs, backoffs


def _lookup(keys: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    found = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    if not np.array_equal(keys[found], wanted):  # cannot happen after closing the tables
        raise ValueError("n-gram suffix missing")
    return found


def _missing_rows(existing: np.ndarray, needed: np.ndarray, bits: int) -> np.ndarray:
    """Distinct rows of ``needed`` that are not rows of ``existing``."""
    if not len(needed):
        return needed
    rows = np.concatenate([existing, needed])
    moved, new = suffix_order(rows, bits)
    group = np.cumsum(new) - 1
    from_existing = np.zeros(int(group[-1]) + 1, bool)
    from_existing[group[moved < len(existing)]] = True
    starts = np.flatnonzero(new)
    return rows[moved[starts[~from_existing]]]
