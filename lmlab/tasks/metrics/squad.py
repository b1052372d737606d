r"""SQuAD exact match and F1, as the official evaluation scripts compute them.

English: ``normalize_answer`` of the official v1.1/v2.0 script — lower case,
remove punctuation (``string.punctuation``), remove the articles a/an/the,
collapse whitespace — then exact match of the normalised strings and F1 over
their whitespace tokens (bag of tokens). v2.0: when either answer normalises
to nothing (no answer), F1 is 1 if both do and 0 otherwise. The score of a
question is the best over its reference answers; corpus scores are means in
percent.

Chinese (``lang="zh"``): the CMRC 2018 script's rules (``cmrc2018_evaluate.py``).
Exact match compares the answers lower-cased with its punctuation list
removed. F1 uses "mixed segmentation" (each CJK character a token, the text
between them split into words) and counts the longest common *substring* of
the two token lists as the overlap. The script splits the non-CJK runs with
NLTK's ``word_tokenize``; here a run is split into words and single
punctuation marks (``\w+|[^\w\s]``), which agrees on numbers, names and
plain English words.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Sequence

PUNCTUATION = set(string.punctuation)
ARTICLES_RE = re.compile(r"\b(a|an|the)\b")
# cmrc2018_evaluate.py's sp_char, in its order.
CMRC_PUNCTUATION = ("-", ":", "_", "*", "^", "/", "\\", "~", "`", "+", "=", "，", "。", "：", "？", "！", "“", "”",
                    "；", "’", "《", "》", "……", "·", "、", "「", "」", "（", "）", "－", "～", "『", "』")
CMRC_CHARS = frozenset(CMRC_PUNCTUATION)
RUN_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
# The CMRC script's test for a Chinese character.
CMRC_CJK_RE = re.compile("[\u4e00-\u9fa5]")


def normalize_answer(text: str) -> str:
    """The official SQuAD normalisation."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in PUNCTUATION)
    text = ARTICLES_RE.sub(" ", text)
    return " ".join(text.split())


def _cmrc_remove_punctuation(text: str) -> str:
    return "".join(ch for ch in text.lower().strip() if ch not in CMRC_CHARS)


def _cmrc_segments(text: str) -> list[str]:
    """``mixed_segmentation(text, rm_punc=True)``."""
    tokens, run = [], ""
    for ch in text.lower().strip():
        if ch in CMRC_CHARS:
            continue
        if CMRC_CJK_RE.match(ch):
            tokens.extend(RUN_TOKEN_RE.findall(run))
            run = ""
            tokens.append(ch)
        else:
            run += ch
    tokens.extend(RUN_TOKEN_RE.findall(run))
    return tokens


def _longest_common_substring(a: list[str], b: list[str]) -> int:
    best, previous = 0, [0] * (len(b) + 1)
    for x in a:
        current = [0] * (len(b) + 1)
        for j, y in enumerate(b):
            if x == y:
                current[j + 1] = previous[j] + 1
                best = max(best, current[j + 1])
        previous = current
    return best


def exact_match(prediction: str, reference: str, lang: str = "en") -> float:
    if lang == "zh":
        return float(_cmrc_remove_punctuation(prediction) == _cmrc_remove_punctuation(reference))
    return float(normalize_answer(prediction) == normalize_answer(reference))


def f1_score(prediction: str, reference: str, lang: str = "en") -> float:
    if lang == "zh":
        p, r = _cmrc_segments(prediction), _cmrc_segments(reference)
        common = _longest_common_substring(r, p)
    else:
        p, r = normalize_answer(prediction).split(), normalize_answer(reference).split()
        if not p or not r:
            return float(p == r)  # v2.0: no answer matches only no answer
        common = sum((Counter(p) & Counter(r)).values())
    if not common:
        return 0.0
    precision, recall = common / len(p), common / len(r)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: Sequence[str], references: Sequence[Sequence[str]], lang: str = "en") -> dict:
    """Mean exact match and F1 in percent, each question scored against its best reference."""
    em = f1 = 0.0
    for prediction, refs in zip(predictions, references, strict=True):
        em += max(exact_match(prediction, r, lang) for r in refs)
        f1 += max(f1_score(prediction, r, lang) for r in refs)
    n = max(len(predictions), 1)
    return {"exact_match": 100 * em / n, "f1": 100 * f1 / n}
