"""Prompt templates: how an example's fields become the prompt a completion follows.

A template is text with ``{field}`` placeholders, filled from the example
(``source``; ``context`` and ``question`` for QA). Spaces at the end of the
rendered prompt are moved to the front of the completion, so a byte-level BPE
sees " Denver" as it did in pre-training rather than a lone space token.

Built in: ``summarize``, ``qa``, ``translate``; any other value is a path to a
UTF-8 file holding the template (one trailing newline is dropped). Each names
the field that may be shortened to fit the context (``truncate_field``) and the
metrics reported by default.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from lmlab.core.errors import ConfigError, DataError
from lmlab.core.io import read_text


@dataclass(frozen=True)
class Template:
    name: str
    text: str
    truncate_field: str
    metrics: tuple[str, ...]

    @property
    def fields(self) -> tuple[str, ...]:
        names = [name for _, name, _, _ in string.Formatter().parse(self.text) if name is not None]
        return tuple(dict.fromkeys(names))

    def render(self, fields: Mapping[str, str], where: str = "") -> tuple[str, str]:
        """The prompt and the prefix of its completion (the prompt's trailing spaces)."""
        missing = [name for name in self.fields if name not in fields]
        if missing:
            raise DataError(f"{where + ': ' if where else ''}template {self.name!r} needs the field(s) "
                            f"{', '.join(missing)}; the example has {', '.join(fields) or 'none'}")
        prompt = self.text.format_map({name: fields[name] for name in self.fields})
        stripped = prompt.rstrip(" ")
        return stripped, prompt[len(stripped):]

    def to_dict(self) -> dict:
        return {"name": self.name, "text": self.text, "truncate_field": self.truncate_field,
                "metrics": list(self.metrics)}

    @classmethod
    def from_dict(cls, data: dict) -> "Template":
        return cls(data["name"], data["text"], data["truncate_field"], tuple(data["metrics"]))


BUILTIN = {
    "summarize": Template("summarize", "Text: {source}\nSummary: ", "source", ("rouge",)),
    "qa": Template("qa", "Context: {context}\nQuestion: {question}\nAnswer: ", "context", ("squad",)),
    "translate": Template("translate", "Translate: {source}\nTranslation: ", "source", ("bleu",)),
}


def load_template(spec: str) -> Template:
    """A built-in template by name, or one read from a file."""
    if spec in BUILTIN:
        return BUILTIN[spec]
    path = Path(spec)
    if not path.exists():
        raise ConfigError(f"unknown template {spec!r}: expected {', '.join(BUILTIN)} or a template file")
    text = read_text(path, "template file")
    text = text[:-1] if text.endswith("\n") else text
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]
    except ValueError as error:
        raise ConfigError(f"{path}: not a valid template ({error}); write literal braces as {{{{ and }}}}") from None
    if not names or any(not name.isidentifier() for name in names):
        raise ConfigError(f"{path}: a template needs {{field}} placeholders naming example fields, got "
                          f"{names or 'none'}")
    fields = tuple(dict.fromkeys(names))
    truncate = next((f for f in ("source", "context") if f in fields), fields[0])
    return Template(str(path), text, truncate, ("rouge", "bleu"))
