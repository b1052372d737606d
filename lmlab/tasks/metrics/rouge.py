"""ROUGE-1, ROUGE-2 and ROUGE-L F-measures (Lin 2004), word level for English, character level for Chinese.

Follows Google's ``rouge_score`` package without stemming: English text is
lower-cased and split on anything that is not a letter or digit; the F-measure
is ``2PR / (P + R)``; ROUGE-L uses the longest common subsequence of the
whole texts; with several references the best F-measure counts. Chinese text
(``lang="zh"``) is scored by characters, as LCSTS results are reported
(Hu et al. 2015): every non-space character is a token, with no
normalisation. A corpus score is the mean of the per-example F-measures, in
percent.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Sequence

WORD_RE = re.compile(r"[^a-z0-9]+")


def rouge_tokens(text: str, lang: str) -> list[str]:
    if lang == "zh":
        return [ch for ch in text if not ch.isspace()]
    return [t for t in WORD_RE.split(text.lower()) if t]


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def _f(overlap: int, predicted: int, reference: int) -> float:
    if not overlap:
        return 0.0
    precision, recall = overlap / predicted, overlap / reference
    return 2 * precision * recall / (precision + recall)


def rouge_n(prediction: list[str], reference: list[str], n: int) -> float:
    p, r = _ngrams(prediction, n), _ngrams(reference, n)
    return _f(sum((p & r).values()), sum(p.values()), sum(r.values()))


def lcs_length(a: list[str], b: list[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(prediction: list[str], reference: list[str]) -> float:
    return _f(lcs_length(prediction, reference), len(prediction), len(reference))


def rouge_scores(prediction: str, references: Sequence[str], lang: str = "en") -> dict[str, float]:
    """The best ROUGE-1/2/L F-measures (0..1) of one prediction over its references."""
    p = rouge_tokens(prediction, lang)
    best = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for reference in references:
        r = rouge_tokens(reference, lang)
        scores = {"rouge1": rouge_n(p, r, 1), "rouge2": rouge_n(p, r, 2), "rougeL": rouge_l(p, r)}
        best = {k: max(best[k], scores[k]) for k in best}
    return best


def corpus_rouge(predictions: Sequence[str], references: Sequence[Sequence[str]], lang: str = "en") -> dict:
    """Mean ROUGE-1/2/L F-measures over the corpus, in percent."""
    totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for prediction, refs in zip(predictions, references, strict=True):
        for key, value in rouge_scores(prediction, refs, lang).items():
            totals[key] += value
    n = max(len(predictions), 1)
    return {key: 100 * value / n for key, value in totals.items()}
