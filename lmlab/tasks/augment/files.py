"""``lmlab augment IN OUT``: augment every text of a labelled file and write the result.

The input is any file :func:`lmlab.tasks.readers.labelled.read_labelled` reads
(labels optional). The output format follows OUT's suffix: ``.jsonl`` (fields
``text``, ``label``, ``source_row`` and ``operation``, null for an original),
``.csv``, or TSV otherwise (``sentence`` and ``label`` columns, GLUE's layout,
tabs and line breaks inside a text written as spaces). Originals come first
in each group, followed by their copies, unless ``keep_original`` is off.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Sequence

from lmlab.core.io import atomic_open
from lmlab.core.progress import progress_bar
from lmlab.tasks.augment.operations import Augmenter
from lmlab.tasks.augment.sources import synonym_sources
from lmlab.tasks.augment.stopwords import default_stop_words
from lmlab.tasks.augment.words import resolve_lang, split_words
from lmlab.tasks.readers.examples import LabelledText
from lmlab.tasks.readers.labelled import read_labelled


def corpus_vocabulary(texts: Sequence[str], lang: str = "auto") -> list[str]:
    """The distinct non-stop words of ``texts`` (what random vocabulary replacement draws from)."""
    words: set[str] = set()
    for text in texts:
        language = resolve_lang(text, lang)
        stop = default_stop_words(language)
        words.update(t.core for t in split_words(text, language) if t.is_word and t.core.lower() not in stop)
    return sorted(words)


def augment_examples(examples: Sequence[LabelledText], augmenter: Augmenter, keep_original: bool = True,
                     progress: bool = False) -> tuple[list[LabelledText], list[str | None], list[int]]:
    """The augmented data set: examples, the operation behind each (None: original), source rows.

    ``progress``: a bar over the texts augmented on stderr."""
    out, operations, rows = [], [], []
    with progress_bar(progress, "augment", " texts", len(examples)) as bar:
        for index, example in enumerate(examples):
            if keep_original:
                out.append(example)
                operations.append(None)
                rows.append(index)
            for new in augmenter.augment(example.text, index):
                out.append(LabelledText(new.text, example.label, f"{example.where} ({new.operation} copy)"))
                operations.append(new.operation)
                rows.append(index)
            bar.update(1)
    return out, operations, rows


def write_examples(path, examples: Sequence[LabelledText], operations: Sequence[str | None],
                   rows: Sequence[int]) -> None:
    path = Path(path)
    has_labels = any(e.label is not None for e in examples)
    suffix = path.suffix.lower()
    buffer = io.StringIO()
    if suffix == ".jsonl":
        for example, operation, row in zip(examples, operations, rows):
            buffer.write(json.dumps({"text": example.text, "label": example.label, "source_row": row,
                                     "operation": operation}, ensure_ascii=False) + "\n")
    elif suffix == ".csv":
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["sentence", "label"] if has_labels else ["sentence"])
        for example in examples:
            writer.writerow([example.text, example.label] if has_labels else [example.text])
    else:
        buffer.write("sentence\tlabel\n" if has_labels else "sentence\n")
        for example in examples:
            text = " ".join(example.text.split())
            buffer.write(f"{text}\t{example.label}\n" if has_labels else f"{text}\n")
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(buffer.getvalue())


def augment_file(source, destination, augmenter_options: dict, keep_original: bool = True, format: str = "auto",
                 text_column=None, label_column=None, progress: bool = False) -> dict:
    """Read, augment and write; returns counts (rows in, copies made per operation, rows out).

    ``progress``: a bar over the texts augmented on stderr."""

    examples = read_labelled(source, format, text_column, label_column, require_labels=False)
    options = dict(augmenter_options)
    sources = synonym_sources(options.pop("wordnet", None), options.pop("cilin", None), options.pop("neighbours", None))
    names = {name for name, _ in options["operations"]}
    vocabulary = corpus_vocabulary([e.text for e in examples], options.get("lang", "auto")) if "rv" in names else None
    augmenter = Augmenter(synonyms=sources, vocabulary=vocabulary, **options)
    out, operations, rows = augment_examples(examples, augmenter, keep_original, progress)
    write_examples(destination, out, operations, rows)
    made: dict[str, int] = {}
    for operation in operations:
        if operation:
            made[operation] = made.get(operation, 0) + 1
    return {"rows_in": len(examples), "copies": made, "rows_out": len(out), "out": str(destination)}
