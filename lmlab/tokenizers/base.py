"""The tokenizer interface every lmlab tokenizer implements.

A tokenizer maps text to integer ids and back, knows its vocabulary size and
special tokens, and saves to / loads from one JSON file (data only: loading
never executes anything from the file). Every tokenizer has an end token
(``eos``) that ``prepare`` writes after each document, paragraph or sentence.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Sequence

from lmlab.core.io import write_json

FORMAT_KEY = "lmlab_tokenizer"
FORMAT_VERSION = 1


class Tokenizer(ABC):
    kind: str = ""

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @property
    @abstractmethod
    def special_tokens(self) -> dict[str, int]:
        """Special token text → id (always includes the end token)."""

    @property
    @abstractmethod
    def eos_token(self) -> str: ...

    @property
    def eos_id(self) -> int:
        return self.special_tokens[self.eos_token]

    @property
    def unk_id(self) -> int | None:
        return None

    @abstractmethod
    def encode(self, text: str) -> list[int]: ...

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(text) for text in texts]

    @abstractmethod
    def decode(self, ids: Sequence[int], skip_special: bool = False) -> str: ...

    @abstractmethod
    def id_to_token(self, index: int) -> str: ...

    @abstractmethod
    def to_dict(self) -> dict:
        """A JSON-serialisable description; ``from_dict`` of it gives an equal tokenizer."""

    def save(self, path) -> None:
        write_json(Path(path), self.to_dict(), indent=None if self.vocab_size > 1000 else 2)

    def fingerprint(self) -> str:
        canonical = json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False).encode("utf-8")
        return hashlib.sha256(canonical).hexdigest()

    def describe(self) -> str:
        return f"{self.kind} tokenizer, {self.vocab_size:,} tokens, end token {self.eos_token!r}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"
