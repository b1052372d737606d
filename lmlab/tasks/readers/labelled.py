"""Readers for labelled text: GLUE SST-2 and ChnSentiCorp TSV, and any CSV/TSV/JSONL.

Without ``text_column``/``label_column`` the header is searched for the usual
names, which covers GLUE SST-2 (``sentence``, ``label``), ChnSentiCorp
(``label``, ``text_a``; its dev file also has ``qid``) and ChnSentiCorp_htl_all
(``label``, ``review``). Integer columns read a file without a header (AG News:
label 0, text 1,2 — several text columns are joined with a space). Labels are
kept as strings; a file without a label column (GLUE's test split) can be read
for prediction. A row whose text is empty is skipped and listed in the
result's ``skipped`` (ChnSentiCorp_htl_all.csv has one); an empty label is an
error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

from lmlab.core.errors import DataError
from lmlab.tasks.readers.examples import LabelledText
from lmlab.tasks.readers.tables import Table, parse_columns

TEXT_COLUMNS = ("sentence", "text_a", "text", "review", "content", "document", "sentence1")
LABEL_COLUMNS = ("label", "labels", "class", "sentiment", "category")


class LabelledRows(list):
    """The examples of a file; ``skipped`` holds the places of rows with no text."""

    skipped: list[str]

    def note(self) -> str:
        if not self.skipped:
            return ""
        return f"skipped {len(self.skipped):,} row(s) with no text (first: {self.skipped[0]})"


def read_labelled(path, format: str = "auto", text_column=None, label_column=None,
                  require_labels: bool = True) -> LabelledRows:
    """Every row of ``path`` as a :class:`LabelledText`.

    ``require_labels=False`` accepts a file without a label column (labels
    ``None``); with a label column, an empty label is an error either way.
    """
    text_columns, label_columns = parse_columns(text_column), parse_columns(label_column)
    numbered = [c for c in text_columns + label_columns if isinstance(c, int)]
    if numbered and len(numbered) != len(text_columns + label_columns):
        raise DataError(f"{path}: give all columns as names or all as 0-based indices, not a mix")
    table = Table(path, format, header=not numbered)
    texts = table.resolve(text_columns, TEXT_COLUMNS, "text", "--text-column")
    if len(label_columns) > 1:
        raise DataError(f"{path}: one label column, please (got {', '.join(map(str, label_columns))})")
    try:
        labels = table.resolve(label_columns, LABEL_COLUMNS, "label", "--label-column")
    except DataError:
        if require_labels or label_columns:
            raise
        labels = ()
    text_keys = [table.header_index(c) for c in texts]
    label_key = table.header_index(labels[0]) if labels else None
    examples = LabelledRows()
    examples.skipped = []
    for line, row in table.rows:
        where = f"{table.path}:{line}"
        text = " ".join(part for part in (table.cell(line, row, k) for k in text_keys) if part)
        if not text:
            examples.skipped.append(where)
            continue
        label = None
        if label_key is not None:
            label = table.cell(line, row, label_key)
            if not label:
                raise DataError(f"{where}: empty label")
        examples.append(LabelledText(text, label, where))
    if not examples:
        raise DataError(f"{table.path}: every row's text is empty")
    return examples


def label_set(examples: Iterable[LabelledText]) -> list[str]:
    """The distinct labels, in numeric order when all are integers, else sorted as text."""
    labels = {e.label for e in examples if e.label is not None}
    if not labels:
        raise DataError("the training data has no labels")
    if all(_is_int(label) for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def label_ids(examples: Sequence[LabelledText], labels: Sequence[str], what: str = "data") -> list[int]:
    """Each example's label as an index into ``labels``; an unknown label names where it is."""
    index = {label: i for i, label in enumerate(labels)}
    ids = []
    for example in examples:
        if example.label is None:
            raise DataError(f"{example.where}: the {what} has no label for this row")
        if example.label not in index:
            raise DataError(f"{example.where}: unknown label {example.label!r}; the model knows "
                            f"{', '.join(map(repr, labels))}")
        ids.append(index[example.label])
    return ids


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


def describe(examples: Sequence[LabelledText], path) -> str:
    counts: dict[str, int] = {}
    for example in examples:
        counts[str(example.label)] = counts.get(str(example.label), 0) + 1
    shares = ", ".join(f"{label}: {count:,}" for label, count in sorted(counts.items()))
    return f"{Path(path).name}: {len(examples):,} examples ({shares})"
