"""The unit every reader yields: a raw document before cleaning.

A reader only splits a corpus into documents; turning markup into clean
paragraphs happens later, in the worker processes of ``prepare``, because it is
the expensive part (wikitext parsing) and must run in parallel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lmlab.core.errors import ConfigError, DataError

PLAIN = "paragraphs"  # body is a tuple of paragraphs
WIKITEXT = "wikitext"  # body is MediaWiki markup


@dataclass(frozen=True, slots=True)
class RawDocument:
    source: str
    key: str
    body: tuple[str, ...] | str
    markup: str = PLAIN
    title: str | None = None


@dataclass
class ReadStats:
    """What readers skipped on purpose, for the prepare report."""

    counts: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # what the user should know (said once each)

    def add(self, reason: str, n: int = 1) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + n

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)


FORMATS = ("text", "wikitext", "jsonl", "json", "csv", "tsv", "mediawiki", "gigaword", "hf")
ERROR_POLICIES = ("strict", "replace", "skip")
DOC_SEPARATORS = ("blank", "line", "file")


@dataclass(frozen=True)
class ReadOptions:
    format: str = "auto"
    fields: tuple[str, ...] = ("text",)
    doc_sep: str = "blank"
    errors: str = "strict"
    doc_types: tuple[str, ...] = ("story",)

    def __post_init__(self):
        if self.format != "auto" and self.format not in FORMATS:
            raise ConfigError(f"unknown format {self.format!r}: expected auto or one of {', '.join(FORMATS)}")
        if self.errors not in ERROR_POLICIES:
            raise ConfigError(f"unknown --errors {self.errors!r}: expected {', '.join(ERROR_POLICIES)}")
        if self.doc_sep not in DOC_SEPARATORS:
            raise ConfigError(f"unknown --doc-sep {self.doc_sep!r}: expected {', '.join(DOC_SEPARATORS)}")
        if not self.fields or any(not f for f in self.fields):
            raise ConfigError("--field must name at least one field")


def field_paragraphs(record, fields: tuple[str, ...], where: str) -> tuple[str, ...]:
    """The text of the named fields (or column numbers) of a JSON record or CSV row, as paragraphs."""
    paragraphs: list[str] = []
    for name in fields:
        if isinstance(record, dict):
            if name not in record:
                known = ", ".join(k if k.isprintable() else repr(k) for k in map(str, list(record)[:12]))
                raise DataError(f"{where}: no field {name!r} (fields: {known}); choose one with --field")
            value = record[name]
        else:
            try:
                value = record[int(name)]
            except (ValueError, IndexError):
                raise DataError(f"{where}: no column {name!r} in a row of {len(record)} columns") from None
        if value is None:
            continue
        if isinstance(value, str):
            paragraphs.append(value)
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            paragraphs.extend(value)
        else:
            raise DataError(f"{where}: field {name!r} holds {type(value).__name__}, not text or a list of text")
    return tuple(p for p in paragraphs if p.strip())
