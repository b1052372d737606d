"""Chinese synonyms from a Tongyici Cilin (Extended) file (HIT-SCIR 同义词词林扩展版).

Each line is a code and its words, e.g. ``Aa01A01= 人 士 人物 人士``: the
eighth character of the code says what the words are to each other — ``=``
synonyms, ``#`` related words of one kind (not interchangeable), ``@`` a word
alone. Only ``=`` groups give synonyms. The file may be UTF-8 or the
original GB18030 (with CRLF line ends).
"""

from __future__ import annotations

from pathlib import Path

from lmlab.core.errors import ConfigError, DataError

SYNONYM_FLAG = "="


class Cilin:
    def __init__(self, path):
        self.path = Path(path)
        if not self.path.exists():
            raise ConfigError(f"Cilin file not found: {self.path} (give --cilin FILE, e.g. "
                              f"../shared/data/cilin/cilin_ex.utf8.txt)")
        raw = self.path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            try:
                text = raw.decode("gb18030")
            except UnicodeDecodeError as error:
                raise DataError(f"{self.path}: neither UTF-8 nor GB18030 (byte {error.start:,})") from None
        self._synonyms: dict[str, dict[str, None]] = {}
        groups = 0
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip().lstrip("\ufeff")
            if not line:
                continue
            parts = line.split()
            code = parts[0]
            if len(code) != 8 or code[7] not in "=#@":
                raise DataError(f"{self.path}:{number}: not a Cilin line (expected a code like Aa01A01= and words)")
            if code[7] != SYNONYM_FLAG or len(parts) < 3:
                continue
            groups += 1
            words = parts[1:]
            for word in words:
                entry = self._synonyms.setdefault(word, {})
                entry.update((w, None) for w in words if w != word)
        if not groups:
            raise DataError(f"{self.path}: no synonym groups (lines whose code ends in '=')")

    def synonyms(self, word: str) -> list[str]:
        return list(self._synonyms.get(word, ()))
