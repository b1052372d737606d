"""``lmlab train --model ngram``: an n-gram counted from a prepared split (no gradient, one pass).

Sentences are the runs of tokens between end tokens of the training split; the
run folder's model is read back by :mod:`lmlab.runs.ngram`.
"""

from __future__ import annotations

import math
from pathlib import Path

from lmlab.core.errors import ConfigError
from lmlab.core.io import write_json
from lmlab.core.progress import progress_bar
from lmlab.data.shards import load_manifest, open_split
from lmlab.models.ngram.model import NGramConfig, NGramLM
from lmlab.runs.folder import RUN_CONFIG, data_reference
from lmlab.runs.ngram import MODEL_FOLDER, TokenNGram, sentences_of, symbols_of
from lmlab.tokenizers import load_tokenizer


def _counted(sentences, bar, total: int, every: int = 65536):
    """``sentences`` unchanged, with the bar advanced by the tokens they hold (end tokens included), up to
    ``total`` (a trailing piece has no end token)."""
    done = shown = 0
    for sentence in sentences:
        yield sentence
        done += len(sentence) + 1
        if done - shown >= every:
            bar.update(min(done, total) - shown)
            shown = min(done, total)
    if min(done, total) > shown:
        bar.update(min(done, total) - shown)


def train_ngram(config, run_dir, log=print, progress: bool = False) -> dict:
    """``lmlab train --model ngram``: count the training split, save, report validation scores.

    ``progress``: a bar on stderr over the training tokens counted."""
    run_dir = Path(run_dir)
    if (run_dir / RUN_CONFIG).exists():
        raise ConfigError(f"{run_dir} already holds a run; choose another --out")
    manifest = load_manifest(config.data)
    tokenizer = load_tokenizer(Path(config.data) / "tokenizer.json")
    options = {k: v for k, v in config.model.items() if k != "family"}
    ngram_config = NGramConfig(**options) if options else NGramConfig()
    train_split = open_split(config.data, "train")
    log(f"counting {train_split.tokens:,} training tokens for an order-{ngram_config.order} Kneser-Ney model ...")
    with progress_bar(progress, "count", " tokens", train_split.tokens) as bar:
        model = NGramLM.train(_counted(sentences_of(train_split), bar, train_split.tokens), ngram_config,
                              vocabulary=symbols_of(tokenizer))
    run_dir.mkdir(parents=True, exist_ok=True)
    model.save(run_dir / MODEL_FOLDER)
    tokenizer.save(run_dir / "tokenizer.json")
    wrapped = TokenNGram(model, tokenizer)
    result = {"counts": model.counts, "parameters": wrapped.num_parameters()}
    if manifest["splits"]["valid"]["tokens"]:
        nats, count = wrapped.score_split(open_split(config.data, "valid"))
        result.update(val_loss=nats / count, best_val_loss=nats / count)
        log(f"validation loss {nats / count:.4f} (perplexity {math.exp(nats / count):.2f})")
    write_json(run_dir / RUN_CONFIG, {
        "train": config.to_dict(), "model": {"family": "ngram", **ngram_config.to_dict()},
        "data": data_reference(run_dir, config.data, manifest),
        "parameters": wrapped.num_parameters(), "flops_per_token": 0,
    })
    write_json(run_dir / "results.json", result)
    return result
