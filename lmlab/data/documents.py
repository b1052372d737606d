"""The unit every reader yields: a raw document before cleaning.

A reader only splits a corpus into documents; turning markup into clean
paragraphs happens later, in the worker processes of ``prepare``, because it is
the expensive part (wikitext parsing) and must run in parallel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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

    def add(self, reason: str, n: int = 1) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + n
