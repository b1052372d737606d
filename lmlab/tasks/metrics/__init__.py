"""Task metrics, each computed as its official implementation does (checked against it in
tests/test_metrics_official.py): classification (scikit-learn), ROUGE (``rouge_score``), BLEU
(sacrebleu itself), SQuAD EM/F1 (the v1.1/v2.0 scripts) and Chinese EM/F1 (the CMRC 2018 script)."""

from __future__ import annotations

from typing import Sequence

from lmlab.core.errors import ConfigError
from lmlab.tasks.metrics.bleu import corpus_bleu
from lmlab.tasks.metrics.classification import classification_metrics
from lmlab.tasks.metrics.rouge import corpus_rouge
from lmlab.tasks.metrics.squad import squad_scores

# "rouge-stemmed": ROUGE with the Porter stemmer (rouge_score's use_stemmer=True), keys suffixed "_stemmed".
GENERATION_METRICS = ("rouge", "rouge-stemmed", "bleu", "squad")


def generation_metrics(names: Sequence[str], predictions: Sequence[str], references: Sequence[Sequence[str]],
                       lang: str) -> dict:
    """The named metrics of predictions against their references (percentages)."""
    unknown = [n for n in names if n not in GENERATION_METRICS]
    if unknown:
        raise ConfigError(f"unknown metric(s) {', '.join(unknown)}: expected {', '.join(GENERATION_METRICS)}")
    result: dict = {}
    if "rouge" in names:
        result.update(corpus_rouge(predictions, references, lang))
    if "rouge-stemmed" in names:
        stemmed = corpus_rouge(predictions, references, lang, stem=True)
        result.update({f"{key}_stemmed": value for key, value in stemmed.items()})
    if "bleu" in names:
        result.update(corpus_bleu(predictions, references, lang))
    if "squad" in names:
        result.update(squad_scores(predictions, references, lang))
    return result


__all__ = ["GENERATION_METRICS", "classification_metrics", "corpus_rouge", "generation_metrics", "squad_scores"]
