"""Corpus BLEU through sacrebleu (Post 2018), so figures are comparable with published ones.

The tokenizer is sacrebleu's ``13a`` (its default, WMT's) for English and
``zh`` for Chinese. Several references per example are allowed; examples with
fewer are padded with ``None``, which sacrebleu skips.
"""

from __future__ import annotations

from typing import Sequence

from lmlab.core.errors import ConfigError


def corpus_bleu(predictions: Sequence[str], references: Sequence[Sequence[str]], lang: str = "en") -> dict:
    try:
        import sacrebleu
    except ImportError:
        raise ConfigError("BLEU needs sacrebleu: pip install sacrebleu") from None
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} reference sets")
    depth = max((len(r) for r in references), default=1)
    streams = [[refs[i] if i < len(refs) else None for refs in references] for i in range(depth)]
    tokenize = "zh" if lang == "zh" else "13a"
    result = sacrebleu.corpus_bleu(list(predictions), streams, tokenize=tokenize)
    return {"bleu": float(result.score), "bleu_signature": f"nrefs:{depth}|tok:{tokenize}|sacrebleu:{sacrebleu.__version__}",
            "bleu_precisions": [float(p) for p in result.precisions], "bleu_brevity_penalty": float(result.bp)}
