"""The records task readers produce: labelled texts and prompt/completion examples."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping


@dataclass(frozen=True)
class LabelledText:
    """A text with its class label (``None`` when the file has no labels, e.g. a test set)."""

    text: str
    label: str | None
    where: str  # "file:line", for error messages


@dataclass(frozen=True)
class TaskExample:
    """An input for conditional generation and what it should produce.

    ``fields`` fill the prompt template (``source``; ``context`` and ``question``
    for QA). ``target`` is the completion trained on (the first reference);
    ``references`` are all acceptable outputs, scored against by the metrics
    (SQuAD's several answers, Tatoeba's several translations of one sentence).
    An empty target means "no answer" (SQuAD v2.0). ``starts`` (extractive QA) gives
    each reference's character offset in ``fields["context"]``, ``None`` where the
    file gives none; empty for other data.
    """

    fields: Mapping[str, str]
    target: str
    references: tuple[str, ...]
    id: str
    where: str
    extra: Mapping[str, str] = field(default_factory=dict)
    starts: tuple[int | None, ...] = ()
