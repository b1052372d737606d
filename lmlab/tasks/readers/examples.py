"""The records task readers produce: labelled texts and prompt/completion examples."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from lmlab.core.errors import ConfigError, DataError


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


def split_off(examples: list, fraction: float, seed: int, what: str) -> tuple[list, list]:
    """A seeded random ``fraction`` of ``examples`` held out for validation (at least one)."""
    if fraction <= 0:
        raise ConfigError("no validation file and valid_fraction is 0: give --valid FILE")
    if len(examples) < 2:
        raise DataError(f"{what}: needs at least 2 examples to hold one out for validation")
    order = np.random.default_rng(seed).permutation(len(examples))
    held = max(1, int(round(fraction * len(examples))))
    valid = sorted(order[:held].tolist())
    keep = sorted(order[held:].tolist())
    return [examples[i] for i in keep], [examples[i] for i in valid]
