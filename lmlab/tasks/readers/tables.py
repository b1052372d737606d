"""Rows of CSV, TSV, JSONL and plain-text files, with columns chosen by name or by position.

A plain-text file (``.txt`` or format ``text``) has one text a line and no labels.

A column is a header name (``sentence``) or a 0-based index (``0``); indices
mean the file has no header row. TSV is read without quoting (GLUE's files
hold literal quotes), CSV with standard quoting.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Iterator, Sequence

from lmlab.core.errors import ConfigError, DataError
from lmlab.core.io import read_text

FORMATS = ("tsv", "csv", "jsonl", "text")  # text: one text a line, no header (the column is "text", or 0)


def table_format(path: Path, format: str = "auto") -> str:
    if format != "auto":
        if format not in FORMATS:
            raise ConfigError(f"unknown table format {format!r}: expected auto or one of {', '.join(FORMATS)}")
        return format
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    if suffix == ".txt":
        return "text"
    return "tsv"


def parse_columns(spec) -> tuple:
    """``"sentence"`` → ("sentence",); ``"1,2"`` → (1, 2); a tuple passes through."""
    if spec is None:
        return ()
    if isinstance(spec, (list, tuple)):
        parts = [str(p) for p in spec]
    else:
        parts = [p.strip() for p in str(spec).split(",")]
    if any(not p for p in parts):
        raise ConfigError(f"empty column name in {spec!r}")
    return tuple(int(p) if p.isdigit() else p for p in parts)


class Table:
    """The rows of one file: ``header`` (``None`` without one) and ``(line, row)`` pairs."""

    def __init__(self, path, format: str = "auto", header: bool = True):
        self.path = Path(path)
        self.format = table_format(self.path, format)
        text = read_text(self.path, "data file")
        if not text.strip():
            raise DataError(f"{self.path}: the file is empty")
        if self.format == "jsonl":
            self.header, self.rows = None, list(json_records(self.path, text))
        elif self.format == "text":  # the whole line is the text: tabs and commas are part of it
            self.header = ["text"] if header else None
            self.rows = [(number, [line]) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
        else:
            delimiter = "\t" if self.format == "tsv" else ","
            quoting = csv.QUOTE_NONE if self.format == "tsv" else csv.QUOTE_MINIMAL
            reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting)
            rows = []
            try:
                for row in reader:
                    if any(cell.strip() for cell in row):
                        rows.append((reader.line_num, row))
            except csv.Error as error:
                raise DataError(f"{self.path}:{reader.line_num}: malformed {self.format.upper()}: {error}") from None
            self.header = None
            if header and rows:
                self.header = [cell.strip() for cell in rows[0][1]]
                rows = rows[1:]
            self.rows = rows
        if not self.rows:
            raise DataError(f"{self.path}: no data rows{' after the header' if self.header else ''}")

    def columns(self) -> list[str]:
        if self.format == "jsonl":
            seen: dict[str, None] = {}
            for _, row in self.rows[:100]:
                seen.update(dict.fromkeys(row))
            return list(seen)
        return list(self.header or [])

    def resolve(self, wanted: Sequence, candidates: Sequence[str], what: str, option: str) -> tuple:
        """The columns to read: ``wanted`` if given (checked), else the first of ``candidates`` present."""
        columns = self.columns()
        if wanted:
            for column in wanted:
                if isinstance(column, int):
                    if self.format == "jsonl":
                        raise ConfigError(f"{self.path}: JSONL fields are named, not numbered ({option} {column})")
                elif column not in columns:
                    raise DataError(f"{self.path}: no {what} column {column!r}; the columns are "
                                    f"{', '.join(map(str, columns)) or '(none)'} ({option} chooses)")
            return tuple(wanted)
        for name in candidates:
            if name in columns:
                return (name,)
        raise DataError(f"{self.path}: no {what} column among {', '.join(columns) or '(no header)'}; "
                        f"expected one of {', '.join(candidates)} or give {option}")

    def cell(self, line: int, row, column) -> str:
        """One cell as a stripped string; a missing one is an error naming the line."""
        try:
            value = row[column]
        except (IndexError, KeyError):
            raise DataError(f"{self.path}:{line}: the row has no column {column!r}") from None
        if isinstance(value, (list, dict)) or value is None:
            raise DataError(f"{self.path}:{line}: column {column!r} holds {type(value).__name__}, not text")
        return str(value).strip()

    def header_index(self, column) -> int | str:
        """Row key for ``column``: its position under a header, the index itself, or a JSONL name."""
        if self.format == "jsonl" or isinstance(column, int):
            return column
        return self.header.index(column)


def json_records(path, text: str) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` for every non-blank line of a JSONL text; a bad line is an error naming it."""
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}:{number}: not valid JSON: {error.msg}") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
        yield number, record
