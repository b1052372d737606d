"""Document cleaning: normalisation, clean-up, length filters and dedup keys.

Steps, in order, each counted in the prepare report:

1. optional Unicode NFKC (full-width Latin and digits to ASCII, compatibility
   forms folded; off by default because it changes text users may want kept);
2. control characters removed (tab and newline kept), ``\\r\\n`` to ``\\n``;
3. spaces and tabs collapsed, lines stripped, empty lines inside a paragraph
   dropped, empty paragraphs dropped;
4. documents shorter than ``min_chars`` or longer than ``max_chars`` dropped;
5. exact duplicates dropped: the key is a 64-bit BLAKE2b of the cleaned text,
   checked by the single writer process so the result never depends on the
   number of workers.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass

from lmlab.core.errors import ConfigError

_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ufffe\uffff]")
_NEWLINES = re.compile(r"\r\n?")
_SPACES = re.compile(r"[ \t]+")
_LINE_EDGES = re.compile(r" *\n[ \n]*")


@dataclass(frozen=True)
class CleanOptions:
    nfkc: bool = False
    min_chars: int = 1
    max_chars: int = 0  # 0: no upper limit
    dedup: bool = True

    def __post_init__(self):
        if self.min_chars < 0:
            raise ConfigError(f"--min-chars must be >= 0, got {self.min_chars}")
        if self.max_chars < 0 or (self.max_chars and self.max_chars < self.min_chars):
            raise ConfigError(f"--max-chars must be 0 (no limit) or >= --min-chars, got {self.max_chars}")


def clean_paragraph(text: str, nfkc: bool = False) -> str:
    if nfkc:
        text = unicodedata.normalize("NFKC", text)
    if text.isprintable():  # fast path, most paragraphs: no control, tab or line break
        return _SPACES.sub(" ", text).strip() if "  " in text else text.strip()
    if "\r" in text:
        text = _NEWLINES.sub("\n", text)
    text = _CONTROL.sub("", text)
    text = _SPACES.sub(" ", text)
    return _LINE_EDGES.sub("\n", text).strip()


def clean_document(paragraphs, options: CleanOptions) -> tuple[tuple[str, ...], str | None]:
    """Clean paragraphs; return them and the reason the document is dropped (or None)."""
    cleaned = tuple(p for p in (clean_paragraph(p, options.nfkc) for p in paragraphs) if p)
    if not cleaned:
        return cleaned, "empty after cleaning"
    length = sum(len(p) for p in cleaned)
    if length < options.min_chars:
        return cleaned, f"shorter than {options.min_chars} characters"
    if options.max_chars and length > options.max_chars:
        return cleaned, f"longer than {options.max_chars} characters"
    return cleaned, None


def document_key(paragraphs: tuple[str, ...]) -> int:
    """A 64-bit content key for exact de-duplication."""
    digest = hashlib.blake2b("\n\n".join(paragraphs).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")
