"""Texts as word tokens that augmentation can change, and back.

English: whitespace tokens (GLUE's SST-2 is already tokenised so), each split
into leading punctuation, a core and trailing punctuation; only the core is
looked up, replaced or protected, so "film," becomes "movie,". Tokens are
joined with single spaces (runs of whitespace become one). Chinese: jieba
words (:func:`lmlab.tokenizers.segment.segment_words`) joined without spaces (a run
of whitespace is one space token, which is never a word).
A token is a word when its core has a letter (CJK characters are letters).
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from lmlab.tokenizers.segment import detect_lang, segment_words

EDGE_PUNCTUATION = string.punctuation + "“”‘’«»…—–"


@dataclass(frozen=True)
class Token:
    lead: str
    core: str
    trail: str

    @property
    def text(self) -> str:
        return self.lead + self.core + self.trail

    @property
    def is_word(self) -> bool:
        return any(ch.isalpha() for ch in self.core)

    def with_core(self, core: str) -> "Token":
        return Token(self.lead, core, self.trail)


def split_words(text: str, lang: str) -> list[Token]:
    if lang == "zh":
        return [Token("", piece, "") for piece in segment_words(text)] if text.strip() else []
    tokens = []
    for piece in text.split():
        core = piece.strip(EDGE_PUNCTUATION)
        if not core or piece.startswith("'") and core.isalpha() and len(piece) <= 4:
            tokens.append(Token("", piece, ""))  # all punctuation, or a clitic such as 's and 're
            continue
        lead = piece[: len(piece) - len(piece.lstrip(EDGE_PUNCTUATION))]
        trail = piece[len(lead) + len(core):]
        tokens.append(Token(lead, core, trail))
    return tokens


def join_words(tokens: list[Token], lang: str) -> str:
    return ("" if lang == "zh" else " ").join(t.text for t in tokens)


def resolve_lang(text: str, lang: str) -> str:
    return detect_lang(text) if lang == "auto" else lang
