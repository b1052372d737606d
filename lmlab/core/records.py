"""Validated records: the JSON-able config dataclasses of lmlab, read back with one set of checks.

Every config (model, n-gram, training, fine-tuning) is a frozen dataclass read from JSON, YAML or
the command line. :class:`Record` gives them one ``to_dict``/``from_dict``: ``from_dict`` takes a
mapping with string keys and refuses unknown fields by name, in the same words everywhere; each
class's own ``__post_init__`` then checks its values. :func:`is_int` and :func:`is_real` are the
"a number, not a bool" tests those checks share (``True`` is an ``int`` to Python, not to a user).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import reprlib
from typing import Any, Mapping

from lmlab.core.errors import ConfigError


def is_int(value) -> bool:
    """An integer and not a bool (NumPy integers count)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value, finite: bool = True) -> bool:
    """A real number and not a bool; finite unless ``finite=False``."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and (not finite or math.isfinite(value))


def check_fields(data, known, what: str) -> None:
    """``data`` is a mapping whose keys are all strings among ``known``; else a :class:`ConfigError` naming them."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"a {what} must be a mapping of fields, got {type(data).__name__}")
    if not all(isinstance(key, str) for key in data):
        raise ConfigError(f"{what} field names must be strings, got {reprlib.repr(list(data))}")
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"unknown {what} field(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")


class Record:
    """Mixed into a dataclass: ``to_dict``, ``from_dict`` and ``field_names``; ``record_name`` names it in errors."""

    record_name = ""

    @classmethod
    def what(cls) -> str:
        return cls.record_name or cls.__name__

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls) if f.init)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]):
        """Inverse of :meth:`to_dict`; unknown fields raise :class:`ConfigError` naming them."""
        check_fields(data, cls.field_names(), cls.what())
        return cls(**data)
