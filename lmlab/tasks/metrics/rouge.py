"""ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum F-measures (Lin 2004), word level for English, character level for Chinese.

English follows Google's ``rouge_score`` package (``rouge_scorer.RougeScorer``)
exactly: text is lower-cased, everything that is not ``[a-z0-9]`` becomes a
space, and with ``stem=True`` (its ``use_stemmer=True``, as most published
CNN/DailyMail figures use) tokens longer than 3 characters go through NLTK's
Porter stemmer, the one ``rouge_score`` itself calls. The F-measure is
``2PR / (P + R)``. ROUGE-L is the longest common subsequence (LCS) of the
whole texts; ROUGE-Lsum is the summary-level LCS: the texts are split into
sentences on newlines, each reference sentence takes the union of its LCS
with every predicted sentence, and a hit counts at most as often as the
token occurs on both sides (ROUGE-1.5.5's rule, which ``rouge_score``
follows, down to which of several equally long LCSs it picks). With several
references the best F-measure of each type counts.

Chinese text (``lang="zh"``) is scored by characters, as LCSTS results are
reported (Hu et al. 2015): every non-space character is a token, with no
normalisation (``rouge_score`` would drop every Chinese character). A corpus
score is the mean of the per-example F-measures, in percent.
tests/test_metrics_official.py compares all four with ``rouge_score`` on
thousands of English pairs (with and without stemming) and, through a
character tokenizer, on LCSTS.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache
from typing import Sequence

from lmlab.core.errors import ConfigError
from lmlab.core.extras import missing_message

WORD_RE = re.compile(r"[^a-z0-9]+")
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


@lru_cache(maxsize=1)
def _porter():
    try:
        from nltk.stem import porter
    except ImportError:
        raise ConfigError(missing_message("nltk")) from None
    return porter.PorterStemmer()


@lru_cache(maxsize=65536)
def porter_stem(word: str) -> str:
    """NLTK's Porter stem of a word (its default NLTK_EXTENSIONS mode, as ``rouge_score`` uses it)."""
    return _porter().stem(word)


def rouge_tokens(text: str, lang: str, stem: bool = False) -> list[str]:
    if lang == "zh":
        return [ch for ch in text if not ch.isspace()]
    tokens = [t for t in WORD_RE.split(text.lower()) if t]
    if stem:  # rouge_score stems only words longer than 3 characters
        tokens = [porter_stem(t) if len(t) > 3 else t for t in tokens]
        tokens = [t for t in tokens if t and not WORD_RE.search(t)]
    return tokens


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


def lcs_indices(reference: list[str], prediction: list[str]) -> list[int]:
    """The positions in ``reference`` of one LCS with ``prediction``: the one ``rouge_score`` reads out.

    Back from the end of the table, a step left (in ``prediction``) only when it keeps a longer LCS
    than a step up, as its ``_backtrack_norec`` does; which LCS is read out changes the union of
    ROUGE-Lsum.
    """
    table = [[0] * (len(prediction) + 1)]
    for x in reference:
        above, row = table[-1], [0]
        for j, y in enumerate(prediction):
            row.append(above[j] + 1 if x == y else max(above[j + 1], row[j]))
        table.append(row)
    i, j, found = len(reference), len(prediction), []
    while i > 0 and j > 0:
        if reference[i - 1] == prediction[j - 1]:
            found.append(i - 1)
            i, j = i - 1, j - 1
        elif table[i][j - 1] > table[i - 1][j]:
            j -= 1
        else:
            i -= 1
    return found[::-1]


def rouge_lsum(prediction: list[list[str]], reference: list[list[str]]) -> float:
    """Summary-level LCS F-measure of tokenized sentences (ROUGE paper, section 3.2; ROUGE-1.5.5's counting)."""
    m, n = sum(map(len, reference)), sum(map(len, prediction))
    if not m or not n:
        return 0.0
    left_reference = Counter(t for sentence in reference for t in sentence)
    left_prediction = Counter(t for sentence in prediction for t in sentence)
    hits = 0
    for sentence in reference:
        union = sorted(set().union(*(lcs_indices(sentence, p) for p in prediction)))
        for token in (sentence[i] for i in union):
            if left_prediction[token] > 0 and left_reference[token] > 0:  # no token counted twice
                hits += 1
                left_prediction[token] -= 1
                left_reference[token] -= 1
    return _f(hits, n, m)


def rouge_sentences(text: str, lang: str, stem: bool = False) -> list[list[str]]:
    """The tokens of each newline-separated sentence (empty lines dropped), as ROUGE-Lsum reads a summary."""
    return [rouge_tokens(line, lang, stem) for line in text.split("\n") if line]


def rouge_scores(prediction: str, references: Sequence[str], lang: str = "en", stem: bool = False) -> dict[str, float]:
    """The best ROUGE-1/2/L/Lsum F-measures (0..1) of one prediction over its references."""
    p, p_sentences = rouge_tokens(prediction, lang, stem), rouge_sentences(prediction, lang, stem)
    best = dict.fromkeys(ROUGE_TYPES, 0.0)
    for reference in references:
        r = rouge_tokens(reference, lang, stem)
        scores = {"rouge1": rouge_n(p, r, 1), "rouge2": rouge_n(p, r, 2), "rougeL": rouge_l(p, r),
                  "rougeLsum": rouge_lsum(p_sentences, rouge_sentences(reference, lang, stem))}
        best = {k: max(best[k], scores[k]) for k in best}
    return best


def corpus_rouge(predictions: Sequence[str], references: Sequence[Sequence[str]], lang: str = "en",
                 stem: bool = False) -> dict:
    """Mean ROUGE-1/2/L/Lsum F-measures over the corpus, in percent."""
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for prediction, refs in zip(predictions, references, strict=True):
        for key, value in rouge_scores(prediction, refs, lang, stem).items():
            totals[key] += value
    n = max(len(predictions), 1)
    return {key: 100 * value / n for key, value in totals.items()}
