"""Corpus readers: raw files to a stream of :class:`RawDocument`.

Every reader streams: memory stays bounded by the largest document, not the
corpus (the one exception is ``json``, a JSON array, which is read one file at
a time). Compressed files (``.gz``, ``.bz2``, ``.xz``) are read transparently.

Formats
    text       plain text; documents separated by blank lines (``doc_sep``
               "blank"), one per line ("line") or one per file ("file")
    wikitext   the WikiText-2/103 files: an article starts at a `` = Title = ``
               line; every other non-blank line is a paragraph
    jsonl      one JSON object per line; ``fields`` names the text field(s)
    json       a JSON array of objects (e.g. the chinese-poetry collection)
    csv, tsv   delimited rows; ``fields`` are header names or 0-based indices
    mediawiki  a MediaWiki XML export (``pages-articles.xml[.bz2]``): article
               namespace only, redirects skipped
    gigaword   LDC Gigaword SGML (``<DOC id=... type=...>``), stories only
               unless ``doc_types`` says otherwise
    hf         a Hugging Face ``datasets`` source (see :mod:`lmlab.data.hf`)
"""

from __future__ import annotations

import bz2
import csv
import glob
import gzip
import html
import json
import lzma
import os
import re
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path
from typing import Iterable, Iterator

from lmlab.data.documents import (FORMATS, PLAIN, WIKITEXT, RawDocument, ReadOptions,
                                  ReadStats, field_paragraphs)
from lmlab.data.hf import read_hf
from lmlab.core.errors import DataError

# ---------------------------------------------------------------- files


def expand_paths(spec: str) -> list[Path]:
    """A file, a folder (every non-hidden file below it) or a glob, sorted."""
    path = Path(spec)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(
            p for p in path.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        if not files:
            raise DataError(f"{spec}: folder holds no files")
        return files
    if glob.has_magic(spec):
        files = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
        if not files:
            raise DataError(f"{spec}: no files match this pattern")
        return files
    raise DataError(f"{spec}: no such file or folder")


class _CountingReader:
    """A raw file that remembers how many bytes were read (for error messages)."""

    def __init__(self, handle):
        self.handle = handle
        self.position = 0

    def read(self, size=-1):
        data = self.handle.read(size)
        self.position += len(data)
        return data

    def readinto(self, buffer):
        n = self.handle.readinto(buffer)
        self.position += n or 0
        return n

    def readable(self):
        return True

    def close(self):
        self.handle.close()


def open_binary(path: Path):
    """Open a possibly compressed file; returns (stream, raw_reader)."""
    try:
        raw = _CountingReader(open(path, "rb"))
    except OSError as error:
        raise DataError(f"{path}: cannot open: {error.strerror or error}") from None
    name = path.name.lower()
    if name.endswith(".bz2"):
        return bz2.BZ2File(raw), raw
    if name.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw), raw
    if name.endswith(".xz"):
        return lzma.LZMAFile(raw), raw
    return raw.handle, raw


def _compressed_error(path: Path, raw: _CountingReader, error: Exception, progress: str) -> DataError:
    size = os.path.getsize(path)
    return DataError(
        f"{path}: truncated or corrupt compressed stream after {progress} "
        f"(compressed byte {raw.position:,} of {size:,}): {error}"
    )


_STREAM_ERRORS = (EOFError, OSError, lzma.LZMAError, gzip.BadGzipFile, zlib.error)


def sniff_format(path: Path) -> str:
    """Guess a file's format from its name and first bytes."""
    name = path.name.lower()
    for suffix in (".bz2", ".gz", ".xz"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    if name.endswith(".jsonl") or name.endswith(".ndjson"):
        return "jsonl"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(".tsv"):
        return "tsv"
    if name.endswith((".parquet", ".arrow")):
        return "hf"
    stream, raw = open_binary(path)
    try:
        head = stream.read(4096)
    except _STREAM_ERRORS as error:
        raise _compressed_error(path, raw, error, "0 bytes") from None
    finally:
        stream.close()
    text = head.decode("utf-8", errors="ignore").lstrip("\ufeff")
    start = text.lstrip()
    if start.startswith("<mediawiki") or (start.startswith("<?xml") and "<mediawiki" in text):
        return "mediawiki"
    if start.startswith("<DOC"):
        return "gigaword"
    if name.endswith(".json") or start.startswith("["):
        return "json" if start.startswith("[") else "jsonl"
    if start.startswith("{"):
        return "jsonl"
    first = next((line for line in text.splitlines() if line.strip()), "")
    if _WIKITEXT_TITLE.match(first):
        return "wikitext"
    return "text"


# ---------------------------------------------------------------- lines


def iter_lines(path: Path, errors: str, stats: ReadStats) -> Iterator[tuple[int, str]]:
    """Yield (line number, decoded line without newline), checking UTF-8.

    ``errors``: strict raises naming the byte offset, replace puts U+FFFD in,
    skip drops the offending line (counted in ``stats``).
    """
    stream, raw = open_binary(path)
    offset = 0
    number = 0
    try:
        with stream:
            for number, line in enumerate(stream, 1):
                try:
                    text = line.decode("utf-8")
                except UnicodeDecodeError as error:
                    if errors == "strict":
                        raise DataError(
                            f"{path}:{number}: invalid UTF-8 at byte {offset + error.start:,}; "
                            "use --errors replace or --errors skip to go on"
                        ) from None
                    if errors == "skip":
                        stats.add("lines with invalid UTF-8 skipped")
                        offset += len(line)
                        continue
                    stats.add("lines with invalid UTF-8 replaced")
                    text = line.decode("utf-8", errors="replace")
                offset += len(line)
                if number == 1:
                    text = text.lstrip("\ufeff")
                yield number, text.rstrip("\r\n")
    except _STREAM_ERRORS as error:
        raise _compressed_error(path, raw, error, f"{number:,} lines") from None


def _split_blocks(lines: Iterable[str]) -> Iterator[list[str]]:
    block: list[str] = []
    for line in lines:
        if line.strip():
            block.append(line)
        elif block:
            yield block
            block = []
    if block:
        yield block


def read_text(path: Path, options: ReadOptions, stats: ReadStats) -> Iterator[RawDocument]:
    source = str(path)
    lines = (line for _, line in iter_lines(path, options.errors, stats))
    if options.doc_sep == "line":
        for number, line in enumerate(lines, 1):
            if line.strip():
                yield RawDocument(source, str(number), (line,))
    elif options.doc_sep == "blank":
        for number, block in enumerate(_split_blocks(lines), 1):
            if number == 1 and len(block) >= LINE_LAYOUT_LINES:
                stats.warn(f"{path}: {len(block):,} lines before the first blank line: with --doc-sep blank "
                           f"(the default) they are one document. For one sentence a line (Penn Treebank, "
                           f"KenLM's input) prepare with --doc-sep line (--unit sentence for an n-gram)")
            yield RawDocument(source, str(number), ("\n".join(block),))
    else:
        paragraphs = tuple("\n".join(block) for block in _split_blocks(lines))
        if paragraphs:
            yield RawDocument(source, path.name, paragraphs)


LINE_LAYOUT_LINES = 1000  # this many lines with no blank one between: surely one text a line, not one document


_WIKITEXT_TITLE = re.compile(r"^ ?= [^=].* = ?$")


def read_wikitext(path: Path, options: ReadOptions, stats: ReadStats) -> Iterator[RawDocument]:
    """WikiText-2/103: an article per level-1 heading, a paragraph per line."""
    source = str(path)
    title, paragraphs = None, []
    for _, line in iter_lines(path, options.errors, stats):
        if _WIKITEXT_TITLE.match(line):
            if paragraphs:
                yield RawDocument(source, title or "", tuple(paragraphs), title=title)
            title, paragraphs = line.strip(" ="), [line.strip()]
        elif line.strip():
            paragraphs.append(line.strip())
    if paragraphs:
        yield RawDocument(source, title or "", tuple(paragraphs), title=title)


# ---------------------------------------------------------------- JSON, CSV


def _loads(text: str):
    """``json.loads``; nesting too deep for Python's parser becomes a ValueError, not a RecursionError."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def read_jsonl(path: Path, options: ReadOptions, stats: ReadStats) -> Iterator[RawDocument]:
    source = str(path)
    for number, line in iter_lines(path, options.errors, stats):
        if not line.strip():
            continue
        try:
            record = _loads(line)
            if not isinstance(record, dict):
                raise ValueError(f"a JSON {type(record).__name__}, not an object")
        except (json.JSONDecodeError, ValueError) as error:
            if options.errors == "skip":
                stats.add("malformed records skipped")
                continue
            message = error.msg if isinstance(error, json.JSONDecodeError) else str(error)
            raise DataError(f"{path}:{number}: malformed JSONL line: {message}") from None
        paragraphs = field_paragraphs(record, options.fields, f"{path}:{number}")
        if paragraphs:
            yield RawDocument(source, str(number), paragraphs)


def read_json(path: Path, options: ReadOptions, stats: ReadStats) -> Iterator[RawDocument]:
    """A JSON array of objects. The whole file is parsed at once: use JSONL for big corpora."""
    stream, raw = open_binary(path)
    try:
        with stream:
            data = stream.read()
    except _STREAM_ERRORS as error:
        raise _compressed_error(path, raw, error, "0 records") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        if options.errors == "strict":
            raise DataError(
                f"{path}: invalid UTF-8 at byte {error.start:,}; use --errors replace or --errors skip to go on"
            ) from None
        stats.add("files with invalid UTF-8 replaced")
        text = data.decode("utf-8", errors="replace")
    try:
        records = _loads(text.lstrip("\ufeff"))
    except json.JSONDecodeError as error:
        raise DataError(f"{path}:{error.lineno}: malformed JSON: {error.msg}") from None
    except ValueError as error:
        raise DataError(f"{path}: malformed JSON: {error}") from None
    if isinstance(records, dict):
        records = [records]
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a JSON array of objects, found a JSON {type(records).__name__}")
    source = str(path)
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise DataError(f"{path}: item {index} is a JSON {type(record).__name__}, not an object")
        paragraphs = field_paragraphs(record, options.fields, f"{path}: item {index}")
        if paragraphs:
            yield RawDocument(source, str(record.get("id", index)), paragraphs, title=record.get("title"))


def read_delimited(path: Path, options: ReadOptions, stats: ReadStats, delimiter: str) -> Iterator[RawDocument]:
    """CSV/TSV. Fields given as integers mean a file without a header row."""
    source = str(path)
    by_index = all(f.isdigit() for f in options.fields)
    lines = (line for _, line in iter_lines(path, options.errors, stats))
    reader = csv.reader(lines, delimiter=delimiter)
    header = None
    try:
        for row in reader:
            if not row:
                continue
            if header is None and not by_index:
                header = row
                continue
            record = row if by_index else dict(zip(header, row))
            paragraphs = field_paragraphs(record, options.fields, f"{path}:{reader.line_num}")
            if paragraphs:
                yield RawDocument(source, str(reader.line_num), paragraphs)
    except csv.Error as error:
        raise DataError(f"{path}:{reader.line_num}: malformed {'TSV' if delimiter == chr(9) else 'CSV'}: {error}") from None


# ---------------------------------------------------------------- MediaWiki XML


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def read_mediawiki(path: Path, options: ReadOptions, stats: ReadStats) -> Iterator[RawDocument]:
    """Stream ``<page>`` elements; yield article-namespace, non-redirect pages as wikitext."""
    from lmlab.data.wikimarkup import is_redirect_text

    stream, raw = open_binary(path)
    source = str(path)
    pages = 0
    root = None
    parser = ET.iterparse(stream, events=("start", "end"))
    try:
        with stream:
            for event, element in parser:
                if root is None:
                    root = element
                if event != "end" or _local(element.tag) != "page":
                    continue
                pages += 1
                fields = {_local(child.tag): child for child in element}
                title = (fields["title"].text or "") if "title" in fields else ""
                namespace = (fields["ns"].text or "") if "ns" in fields else "0"
                revision = fields.get("revision")
                text_node = None
                if revision is not None:
                    text_node = next((c for c in revision if _local(c.tag) == "text"), None)
                text = (text_node.text or "") if text_node is not None else ""
                if namespace.strip() != "0":
                    stats.add("wiki pages outside the article namespace")
                elif "redirect" in fields or is_redirect_text(text):
                    stats.add("wiki redirect pages")
                elif text.strip():
                    yield RawDocument(source, title or str(pages), text, markup=WIKITEXT, title=title)
                element.clear()
                root.clear()  # drop references to finished pages: constant memory
    except ET.ParseError as error:
        line, column = error.position
        raise DataError(f"{path}:{line}: malformed XML at column {column} after {pages:,} pages: {error.msg if hasattr(error, 'msg') else error}") from None
    except _STREAM_ERRORS as error:
        raise _compressed_error(path, raw, error, f"{pages:,} pages") from None


# ---------------------------------------------------------------- Gigaword SGML

_DOC_OPEN = re.compile(r"<DOC\b([^>]*)>", re.IGNORECASE)
_ATTRIBUTE = re.compile(r'(\w+)\s*=\s*"([^"]*)"')
_TAG = re.compile(r"</?(HEADLINE|DATELINE|TEXT|P|DOC)\s*>", re.IGNORECASE)
_UPPER_ENTITY = re.compile(r"&([A-Z]+);")


def _unescape(text: str) -> str:
    # LDC's older releases write entities in upper case (&AMP;).
    return html.unescape(_UPPER_ENTITY.sub(lambda m: f"&{m.group(1).lower()};", text))


def read_gigaword(path: Path, options: ReadOptions, stats: ReadStats) -> Iterator[RawDocument]:
    """LDC Gigaword: ``<DOC>`` with ``<HEADLINE>`` and ``<TEXT>`` of ``<P>`` paragraphs."""
    source = str(path)
    keep = {t.lower() for t in options.doc_types}
    doc = None  # (id, type, start line)
    section = None
    headline: list[str] = []
    paragraphs: list[str] = []
    current: list[str] = []

    def close_paragraph():
        if current:
            text = " ".join(current).strip()
            if text:
                paragraphs.append(_unescape(text))
            current.clear()

    number = 0
    for number, line in iter_lines(path, options.errors, stats):
        stripped = line.strip()
        opening = _DOC_OPEN.match(stripped)
        if opening:
            if doc is not None:
                raise DataError(f"{path}:{number}: <DOC> opened inside DOC {doc[0]!r} that started at line {doc[2]}")
            attributes = dict(_ATTRIBUTE.findall(opening.group(1)))
            doc = (attributes.get("id", f"line-{number}"), attributes.get("type", "story").lower(), number)
            section, headline, paragraphs = None, [], []
            continue
        tag = _TAG.fullmatch(stripped)
        if tag:
            name, closing = tag.group(1).upper(), stripped.startswith("</")
            if doc is None:
                raise DataError(f"{path}:{number}: <{'/' if closing else ''}{name}> outside any <DOC>")
            if name == "DOC":
                close_paragraph()
                if keep != {"all"} and doc[1] not in keep:
                    stats.add(f"gigaword documents of type {doc[1]!r} skipped")
                elif paragraphs:
                    body = tuple(([" ".join(headline)] if headline else []) + paragraphs)
                    yield RawDocument(source, doc[0], body, title=" ".join(headline) or None)
                doc, section = None, None
            elif name in ("HEADLINE", "DATELINE", "TEXT"):
                close_paragraph()
                section = None if closing else name
            elif name == "P":
                close_paragraph()
            continue
        if doc is None or not stripped:
            if doc is not None and section == "TEXT":
                close_paragraph()  # blank line separates paragraphs in <TEXT> without <P>
            continue
        if section == "HEADLINE":
            headline.append(_unescape(stripped))
        elif section == "TEXT":
            current.append(stripped)
    if doc is not None:
        raise DataError(f"{path}: file ends inside DOC {doc[0]!r} that started at line {doc[2]} (truncated?)")


# ---------------------------------------------------------------- dispatch


def read_source(spec: str, options: ReadOptions, stats: ReadStats) -> Iterator[RawDocument]:
    """All documents of one source: a path, folder, glob or ``hf:`` spec."""
    if spec.startswith("hf:") or options.format == "hf":
        yield from read_hf(spec.removeprefix("hf:"), options, stats)
        return
    for path in expand_paths(spec):
        if os.path.getsize(path) == 0:
            stats.add("empty files skipped")
            continue
        kind = sniff_format(path) if options.format == "auto" else options.format
        if kind == "hf":
                yield from read_hf(str(path), options, stats)
        elif kind in ("csv", "tsv"):
            yield from read_delimited(path, options, stats, "," if kind == "csv" else "\t")
        else:
            yield from _READERS[kind](path, options, stats)


_READERS = {
    "text": read_text,
    "wikitext": read_wikitext,
    "jsonl": read_jsonl,
    "json": read_json,
    "mediawiki": read_mediawiki,
    "gigaword": read_gigaword,
}

__all__ = ["FORMATS", "PLAIN", "WIKITEXT", "ReadOptions", "RawDocument", "ReadStats", "expand_paths", "read_source", "sniff_format"]
