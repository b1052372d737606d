"""Sentence splitting for English and Chinese, and Chinese word segmentation.

Holds :func:`split_sentences` (with :func:`detect_lang`) and
:func:`segment_words`.

Sentence splitting is rule based. English follows the Moses splitter
(``split-sentences.perl``): a run of terminators and closing quotes or
brackets, then whitespace and a capital, digit or opening quote, unless the
period ends an abbreviation or an initial (its "nonbreaking prefixes").
Chinese follows GB/T 15834 (punctuation usage): 。！？ end a sentence
whatever follows, together with the quotes and brackets that close it.
Every sentence is a slice of the input, so joining them gives the input
back up to whitespace; one regex scan finds the candidates and each is
judged in constant time, so a split is linear in the text.

Word segmentation is jieba's (https://github.com/fxsjy/jieba) ``lcut`` with
the HMM for unknown words.
"""

from __future__ import annotations

import logging
import re
import threading

from lmlab.core.errors import ConfigError

__all__ = ["detect_lang", "split_sentences", "segment_words"]

LANGS = ("auto", "en", "zh")

# CJK Unified Ideographs, extension A, compatibility, and extensions B–H.
CJK_RE = re.compile(
    "[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef\U00030000-\U000323af]"
)
LETTER_RE = re.compile(r"[^\W\d_]")
ZH_SHARE = 0.3  # above this share of ideographs among letters, text is Chinese

CJK_TERMINATORS = frozenset("。！？｡")  # end a sentence whatever follows
ZH_TERMINATORS = frozenset("!?…")  # in Chinese text these end one as well
TERMINATORS = ".!?…。！？｡"
CLOSERS = "\"'”’」』）》)]"
OPENERS = "\"'“‘(「『《（["
# A run of terminators with the closers that follow, e.g. `?!”` or `！”。`.
# Possessive quantifiers (Python 3.11) keep the scan from backtracking.
_T, _C = re.escape(TERMINATORS), re.escape(CLOSERS)
CANDIDATE_RE = re.compile(f"[{_T}]++(?:[{_C}]++[{_T}]++)*+[{_C}]*+")
SPACE_RE = re.compile(r"\s*+")
# A blank line always ends a sentence (paragraphs, WikiText-2 headings).
BLANK_LINE_RE = re.compile(r"\n[^\S\n]*+\n")

ABBREVIATIONS = frozenset(
    """mr mrs ms dr prof st jr sr vs etc inc ltd co corp no fig gen col lt sgt
    capt mt jan feb mar apr jun jul aug sep sept oct nov dec""".split()
)
# "U.S", "e.g", "i.e", "Ph.D": the token before the final period.
DOTTED_ABBREVIATION_RE = re.compile(r"(?:[A-Za-z]{1,2}\.)++[A-Za-z]{1,2}")
TOKEN_LOOKBACK = 20  # longer tokens are never abbreviations
ABBREVIATION_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.")


def detect_lang(text: str) -> str:
    """'zh' when CJK ideographs are more than 30% of the letters, else 'en'."""
    letters = len(text) - len(LETTER_RE.sub("", text))
    ideographs = len(text) - len(CJK_RE.sub("", text))
    return "zh" if letters and ideographs > ZH_SHARE * letters else "en"


def split_sentences(text: str, lang: str = "auto") -> list[str]:
    """Split text into stripped, non-empty sentences.

    ``lang`` is "en", "zh" or "auto" (:func:`detect_lang`). Either way the
    unambiguous Chinese terminators split, and so does an English period
    followed by a new sentence, so mixed text splits at both.
    """
    if lang not in LANGS:
        raise ConfigError(f"unknown language {lang!r} for sentence splitting; use one of {LANGS}")
    if lang == "auto":
        lang = detect_lang(text)
    sentences = []
    for block in BLANK_LINE_RE.split(text):
        pieces = (block[start:end].strip() for start, end in _spans(block, lang == "zh"))
        sentences.extend(piece for piece in pieces if piece)
    return sentences


def _spans(text: str, chinese: bool):
    """Yield (start, end) of each sentence; together they cover the text."""
    start = 0
    quotes = 0  # ASCII '"' seen in text[start:counted]
    counted = 0
    for match in CANDIDATE_RE.finditer(text):
        terms = match.group().rstrip(CLOSERS)
        close_start = match.start() + len(terms)
        end = match.end()
        if chinese:
            # An ASCII '"' with an even count before it opens the next sentence.
            quotes += text.count('"', counted, close_start)
            counted = close_start
            end = _closing_end(text, close_start, end, quotes)
        if _ends_sentence(text, match.start(), terms, end, end > close_start, chinese):
            yield start, end
            start = counted = end
            quotes = 0
    yield start, len(text)


def _closing_end(text: str, close_start: int, end: int, quotes: int) -> int:
    """End of the closers that close the sentence (Chinese ASCII-quote rule)."""
    for i in range(close_start, end):
        if text[i] == '"':
            if quotes % 2 == 0:
                return i
            quotes += 1
    return end


def _ends_sentence(
    text: str, term_start: int, terms: str, end: int, closed: bool, chinese: bool
) -> bool:
    """Whether the candidate terminator ``terms`` ends a sentence at ``end``."""
    if end >= len(text):
        return False  # the last sentence ends anyway
    if not CJK_TERMINATORS.isdisjoint(terms):
        return True
    if chinese and not ZH_TERMINATORS.isdisjoint(terms):
        return True
    gap = SPACE_RE.match(text, end).end()
    if gap == end or gap >= len(text) or not _starts_sentence(text[gap]):
        return False
    if terms == "." and not closed:
        return not _is_abbreviation(_token_before(text, term_start))
    return True


def _starts_sentence(ch: str) -> bool:
    return ch.isupper() or ch.isdigit() or ch in OPENERS or CJK_RE.match(ch) is not None


def _token_before(text: str, pos: int) -> str:
    """The Latin-letter-and-dot run just before ``pos``, e.g. "Mr", "U.S".

    Empty when that run ends a longer word ("ÖST", "B12"), so only whole
    words are taken for abbreviations; CJK text may run right up to it.
    """
    lo = max(0, pos - TOKEN_LOOKBACK)
    i = pos
    while i > lo and text[i - 1] in ABBREVIATION_CHARS:
        i -= 1
    if i > 0 and text[i - 1].isalnum() and not CJK_RE.match(text[i - 1]):
        return ""
    return text[i:pos]


def _is_abbreviation(token: str) -> bool:
    """Mr, etc, U.S, e.g, or an initial as in "J. R. R. Tolkien"."""
    if not token or len(token) >= TOKEN_LOOKBACK:
        return False  # "2011 ." in WikiText-2 style: a real full stop
    if len(token) == 1:
        return token.isupper()
    return token.lower() in ABBREVIATIONS or DOTTED_ABBREVIATION_RE.fullmatch(token) is not None


# --- word segmentation -----------------------------------------------------

_jieba = None
_jieba_lock = threading.Lock()
WHITESPACE_SPLIT_RE = re.compile(r"(\s+)")


def _load_jieba():
    """Import and initialise jieba once per process, silently."""
    global _jieba
    if _jieba is not None:
        return _jieba
    with _jieba_lock:
        if _jieba is None:
            import jieba  # slow to import and load; only pay when used

            # jieba logs "Building prefix dict…" at DEBUG to stderr.
            jieba.setLogLevel(logging.WARNING)
            jieba.initialize()
            _jieba = jieba
    return _jieba


def segment_words(text: str) -> list[str]:
    """Segment text into words with jieba (HMM on).

    Whitespace runs become one " " token, so ``"".join(segment_words(t))``
    equals ``t`` with each whitespace run replaced by a single space.
    """
    words: list[str] = []
    for token in _load_jieba().lcut(text, HMM=True):
        # Odd pieces of a capturing split are the whitespace runs.
        for i, piece in enumerate(WHITESPACE_SPLIT_RE.split(token)):
            if i % 2 and words and words[-1] == " ":
                continue
            if piece:
                words.append(" " if i % 2 else piece)
    return words
