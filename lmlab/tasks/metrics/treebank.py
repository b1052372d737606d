"""NLTK's word tokenizer (``nltk.word_tokenize``'s ``NLTKWordTokenizer``, an improved Penn Treebank tokenizer).

The CMRC 2018 evaluation script splits the runs of non-Chinese text in an answer
with ``nltk.word_tokenize``; this module is that tokenizer's rules, ported from
NLTK 3.10 (``nltk/tokenize/destructive.py``, Apache-2.0, (c) the NLTK Project)
so that Chinese span F1 needs no NLTK and counts tokens as the script does:
``3.5`` and ``1,000`` stay whole, ``don't`` is ``do n't``, ``"`` becomes
`````` or ``''``, a final full stop and ``? ! ; @ # $ % &`` are split off.
Like ``word_tokenize(text, preserve_line=True)`` the text is one sentence:
NLTK's default first splits sentences with its Punkt model, which changes
tokens only where a full stop inside the text is followed by more text.
tests/test_metrics_official.py checks it against NLTK itself.
"""

from __future__ import annotations

import re

STARTING_QUOTES = (
    (re.compile("([«“‘„]|[`]+)"), r" \1 "),
    (re.compile(r"^\""), r"``"),
    (re.compile(r"(``)"), r" \1 "),
    (re.compile(r"([ \(\[{<])(\"|\'{2})"), r"\1 `` "),
    (re.compile(r"(?i)(?<!\w)(\')(?!(?:re|ve|ll|m|t|s|d|n)\b)(?=\w)"), r"\1 "),
)
PUNCTUATION = (
    (re.compile(r'([^\.])(\.)([\]\)}>"\'' "»”’ " r"]*+)\s*$"), r"\1 \2 \3 "),
    (re.compile(r"([:,])([^\d])"), r" \1 \2"),
    (re.compile(r"([:,])$"), r" \1 "),
    (re.compile(r"\.{2,}"), r" \g<0> "),
    (re.compile(r"[;@#$%&]"), r" \g<0> "),
    (re.compile(r"[\u2012-\u2015]"), r" \g<0> "),  # figure dash, en and em dashes, horizontal bar
    (re.compile(r'([^\.])(\.)([\]\)}>"\']*)\s*$'), r"\1 \2\3 "),  # the final full stop
    (re.compile(r"[?!]"), r" \g<0> "),
    (re.compile(r"([^'])' "), r"\1 ' "),
    (re.compile(r"[*]"), r" \g<0> "),
)
PARENS_BRACKETS = (re.compile(r"[\]\[\(\)\{\}\<\>]"), r" \g<0> ")
DOUBLE_DASHES = (re.compile(r"--"), r" -- ")
ENDING_QUOTES = (
    (re.compile("([»”’])"), r" \1 "),
    (re.compile(r"''"), " '' "),
    (re.compile(r'"'), " '' "),
    (re.compile(r"\s+"), " "),
    (re.compile(r"([^' ])('[sS]|'[mM]|'[dD]|') "), r"\1 \2 "),
    (re.compile(r"([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) "), r"\1 \2 "),
)
# Robert MacIntyre's contractions, as NLTK lists them (its CONTRACTIONS4 is unused there too).
CONTRACTIONS = tuple(re.compile(p) for p in (
    r"(?i)\b(can)(?#X)(not)\b", r"(?i)\b(d)(?#X)('ye)\b", r"(?i)\b(gim)(?#X)(me)\b", r"(?i)\b(gon)(?#X)(na)\b",
    r"(?i)\b(got)(?#X)(ta)\b", r"(?i)\b(lem)(?#X)(me)\b", r"(?i)\b(more)(?#X)('n)\b", r"(?i)\b(wan)(?#X)(na)(?=\s)",
    r"(?i) ('t)(?#X)(is)\b", r"(?i) ('t)(?#X)(was)\b",
))


def word_tokenize(text: str) -> list[str]:
    """``nltk.word_tokenize(text, preserve_line=True)``: the rules applied in NLTK's order."""
    for regexp, substitution in (*STARTING_QUOTES, *PUNCTUATION, PARENS_BRACKETS, DOUBLE_DASHES):
        text = regexp.sub(substitution, text)
    text = f" {text} "
    for regexp, substitution in ENDING_QUOTES:
        text = regexp.sub(substitution, text)
    for regexp in CONTRACTIONS:
        text = regexp.sub(r" \1 \2 ", text)
    return text.split()
