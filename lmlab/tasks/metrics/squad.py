r"""SQuAD exact match and F1, as the official evaluation scripts compute them.

English follows the official scripts' ``normalize_answer`` (lower case, remove
``string.punctuation``, remove the articles a/an/the, collapse whitespace);
exact match compares the normalised strings and F1 counts their shared
whitespace tokens (bag of tokens). Two versions, as the two scripts differ:

- ``"1.1"`` (``evaluate-v1.1.py``): F1 is 0 whenever no token is shared, so an
  empty prediction scores F1 0 even against an answer that normalises to
  nothing ("the", "."), while its exact match is 1.
- ``"2.0"`` (``evaluate-v2.0.py``): answers that normalise to nothing are
  dropped (all of them dropped: the question has no answer, ``""``); when
  either side is empty, F1 and exact match are 1 if both are and 0 otherwise.

:func:`squad_scores` uses v2.0 when the set has a no-answer question (every
reference empty, as :func:`lmlab.tasks.readers.squad.read_squad` writes a v2.0
``is_impossible`` question) and v1.1 otherwise, or the ``version`` given. The
score of a question is the best over its references; corpus scores are means
in percent.

Chinese (``lang="zh"``): the CMRC 2018 script's rules (``cmrc2018_evaluate.py``).
Exact match compares the answers lower-cased and stripped with its punctuation
list removed. F1 uses its "mixed segmentation" (each CJK character of
U+4E00..U+9FA5 a token, the runs between them split with NLTK's
``word_tokenize``, :mod:`lmlab.tasks.metrics.treebank`, the punctuation list
removed first) and counts the longest common *substring* of the two token
lists as the overlap. The script's ``word_tokenize`` also splits a run into
sentences with NLTK's Punkt model first; a run is one sentence here, which
differs only where a full stop inside a run is followed by more text.
tests/test_metrics_official.py compares both languages with the official
scripts' functions on every SQuAD v1.1 dev question and on generated Chinese cases.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Sequence

from lmlab.tasks.metrics.treebank import word_tokenize

PUNCTUATION = set(string.punctuation)
ARTICLES_RE = re.compile(r"\b(a|an|the)\b")
VERSIONS = ("1.1", "2.0")
# cmrc2018_evaluate.py's sp_char, in its order ("……" is two characters: the script, comparing one
# character at a time, never removes it, and neither does this list).
CMRC_PUNCTUATION = ("-", ":", "_", "*", "^", "/", "\\", "~", "`", "+", "=", "，", "。", "：", "？", "！", "“", "”",
                    "；", "’", "《", "》", "……", "·", "、", "「", "」", "（", "）", "－", "～", "『", "』")
CMRC_CHARS = frozenset(CMRC_PUNCTUATION)
# The CMRC script's test for a Chinese character.
CMRC_CJK_RE = re.compile("[\u4e00-\u9fa5]")


def normalize_answer(text: str) -> str:
    """The official SQuAD normalisation."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in PUNCTUATION)
    text = ARTICLES_RE.sub(" ", text)
    return " ".join(text.split())


def cmrc_remove_punctuation(text: str) -> str:
    """``remove_punctuation`` of the CMRC 2018 script."""
    return "".join(ch for ch in text.lower().strip() if ch not in CMRC_CHARS)


def cmrc_segments(text: str) -> list[str]:
    """``mixed_segmentation(text, rm_punc=True)`` of the CMRC 2018 script."""
    tokens, run = [], ""
    for ch in text.lower().strip():
        if ch in CMRC_CHARS:
            continue  # removed without ending the run: "ab-cd" is one word
        if CMRC_CJK_RE.match(ch):
            if run:
                tokens.extend(word_tokenize(run))
                run = ""
            tokens.append(ch)
        else:
            run += ch
    if run:
        tokens.extend(word_tokenize(run))
    return tokens


def longest_common_substring(a: list[str], b: list[str]) -> int:
    """The length of the longest run of tokens that ``a`` and ``b`` share (the script's ``find_lcs``)."""
    best, previous = 0, [0] * (len(b) + 1)
    for x in a:
        current = [0] * (len(b) + 1)
        for j, y in enumerate(b):
            if x == y:
                current[j + 1] = previous[j] + 1
                best = max(best, current[j + 1])
        previous = current
    return best


def _check_version(version: str) -> None:
    if version not in VERSIONS:
        raise ValueError(f"SQuAD version {version!r}: expected one of {', '.join(VERSIONS)}")


def exact_match(prediction: str, reference: str, lang: str = "en") -> float:
    if lang == "zh":
        return float(cmrc_remove_punctuation(prediction) == cmrc_remove_punctuation(reference))
    return float(normalize_answer(prediction) == normalize_answer(reference))


def _f1(common: int, predicted: int, reference: int) -> float:
    if common == 0:
        return 0.0
    precision, recall = 1.0 * common / predicted, 1.0 * common / reference
    return (2 * precision * recall) / (precision + recall)


def f1_score(prediction: str, reference: str, lang: str = "en", version: str = "1.1") -> float:
    """F1 of one prediction against one reference (``version`` for English only)."""
    if lang == "zh":
        p, r = cmrc_segments(prediction), cmrc_segments(reference)
        return _f1(longest_common_substring(r, p), len(p), len(r))
    _check_version(version)
    p, r = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if version == "2.0" and (not p or not r):
        return float(p == r)  # no answer matches only no answer
    return _f1(sum((Counter(p) & Counter(r)).values()), len(p), len(r))


def question_scores(prediction: str, references: Sequence[str], lang: str = "en",
                    version: str = "1.1") -> tuple[float, float]:
    """(exact match, F1) of one question: the best over its references."""
    if not references:
        raise ValueError("a question needs at least one reference answer")
    if lang != "zh" and version == "2.0":
        references = [r for r in references if normalize_answer(r)] or [""]
    return (max(exact_match(prediction, r, lang) for r in references),
            max(f1_score(prediction, r, lang, version) for r in references))


def squad_version(references: Sequence[Sequence[str]]) -> str:
    """"2.0" when some question has no answer (only empty references), else "1.1"."""
    return "2.0" if any(refs and not any(refs) for refs in references) else "1.1"


def squad_scores(predictions: Sequence[str], references: Sequence[Sequence[str]], lang: str = "en",
                 version: str | None = None) -> dict:
    """Mean exact match and F1 in percent, each question scored against its best reference.

    ``version`` (English): "1.1" or "2.0" (see the module); by default "2.0" when a question
    has no answer and "1.1" otherwise. The result names the rules used in ``squad_rules``.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} questions")
    version = version or squad_version(references)
    _check_version(version)
    em = f1 = 0.0
    for prediction, refs in zip(predictions, references, strict=True):
        e, f = question_scores(prediction, refs, lang, version)
        em += e
        f1 += f
    n = max(len(predictions), 1)
    rules = "cmrc2018" if lang == "zh" else f"squad-v{version}"
    return {"exact_match": 100.0 * em / n, "f1": 100.0 * f1 / n, "squad_rules": rules}
