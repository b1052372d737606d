"""Held-out scores of a masked language model: masked-token loss and accuracy, pseudo-perplexity.

* Masked-token loss and accuracy: the text is cut into consecutive rows wrapped
  as in training (:func:`lmlab.data.masking.sequential_rows`) and masked as
  in training (15%, 80/10/10, whole words if the model was trained so) with a
  fixed seed, so two runs are scored on the same masks; mean negative
  log-likelihood (nats) and top-1 accuracy over the selected tokens. A model
  pretrained on sentence pairs (``packing="pairs"``) is scored on sentence-pair
  rows with their token types (:func:`lmlab.data.masking.sequential_pairs`,
  split points from the same fixed seed), the input it was trained on.
* Pseudo-perplexity (Salazar et al. 2020, "Masked Language Model Scoring"):
  every token is masked in turn, on its own, and scored with the rest of its
  row visible; ``exp`` of the mean negative log-likelihood. Caveat: it is not a
  perplexity of a probability distribution over texts; each token sees both
  sides, so it is not comparable with a causal model's perplexity (it is usually
  far lower), only between masked LMs with the same tokenizer. It costs one
  forward pass per token, so it covers the first ``pppl_tokens`` tokens only.
"""

from __future__ import annotations

import math
import weakref

import numpy as np

from lmlab.core.backend import compile_function
from lmlab.core.errors import DataError
from lmlab.core.progress import progress_bar
from lmlab.data.masking import check_pairs, mask_tokens, sequential_pairs, sequential_rows
from lmlab.tokenizers.specials import WordBoundaries, sentence_end_ids, special_ids


def _nll_and_hits(model, x, y, types=None):
    from keras import ops

    logits = ops.convert_to_numpy(model(x, types, training=False)).astype(np.float64)  # (B, T, V)
    top = logits.max(-1, keepdims=True)
    log_z = np.log(np.exp(logits - top).sum(-1)) + top[..., 0]
    picked = np.take_along_axis(logits, y[..., None], -1)[..., 0]
    return log_z - picked, logits.argmax(-1) == y


def masked_scores(model, rows: np.ndarray, tokenizer, special, batch_size: int = 8, seed: int = 0,
                  types: np.ndarray | None = None, progress: bool = False) -> dict:
    """``types``: the rows' token types (sentence pairs); default all 0. ``progress``: a bar over the rows."""
    boundaries = WordBoundaries(tokenizer) if model.config.whole_word else None
    total = hits = count = 0.0
    with progress_bar(progress, "eval masked", " rows", len(rows)) as bar:
        for start in range(0, len(rows), batch_size):
            rng = np.random.default_rng((seed, start))
            x, y, w = mask_tokens(rows[start:start + batch_size], rng, special, tokenizer.vocab_size,
                                  model.config.mask_prob, boundaries)
            nll, hit = _nll_and_hits(model, x, y, None if types is None else types[start:start + batch_size])
            total, hits, count = total + (nll * w).sum(), hits + (hit * w).sum(), count + w.sum()
            bar.update(len(x))
    if not count:
        raise DataError("no token was selected for masking: the text is too short to score")
    return {"masked_loss": float(total / count), "masked_accuracy": float(hits / count), "masked_tokens": int(count)}


def pseudo_perplexity(model, rows: np.ndarray, special, max_tokens: int = 256, batch_size: int = 32,
                      types: np.ndarray | None = None, progress: bool = False) -> dict:
    """Each of the first ``max_tokens`` non-special tokens masked alone and scored (Salazar et al. 2020).

    ``progress``: a bar over the tokens scored."""
    scorable = ~np.isin(rows, special.all)
    where = np.argwhere(scorable)[:max_tokens]  # (N, 2): row, position
    total = 0.0
    with progress_bar(progress, "eval pseudo-perplexity", " tokens", len(where)) as bar:
        for start in range(0, len(where), batch_size):
            chunk = where[start:start + batch_size]
            x = rows[chunk[:, 0]].copy()
            y = rows[chunk[:, 0]]
            x[np.arange(len(chunk)), chunk[:, 1]] = special.mask
            nll, _ = _nll_and_hits(model, x, y, None if types is None else types[chunk[:, 0]])
            total += nll[np.arange(len(chunk)), chunk[:, 1]].sum()
            bar.update(len(chunk))
    n = len(where)
    if not n:
        raise DataError("no token to score for pseudo-perplexity")
    return {"pseudo_perplexity": math.exp(total / n), "pseudo_loss": float(total / n), "pseudo_tokens": int(n)}


def evaluate_mlm(model, tokenizer, split, batch_size: int = 8, max_rows: int = 256, pppl_tokens: int = 256,
                 seed: int = 0, progress: bool = False) -> dict:
    """``lmlab eval`` for an encoder: masked-token loss and accuracy on up to ``max_rows`` rows, and
    pseudo-perplexity on the first ``pppl_tokens`` tokens (``progress``: a bar for each on stderr)."""
    special = special_ids(tokenizer)
    block = model.config.block_size
    if model.config.packing == "pairs":
        check_pairs(special, tokenizer, block)
        rows, types = sequential_pairs(split, block, special, sentence_end_ids(tokenizer), seed)
        rows, types = rows[:max_rows], types[:max_rows]
    else:
        rows, types = sequential_rows(split, block, special)[:max_rows], None
    if not len(rows):
        raise DataError(f"the {split.name} text is shorter than one row of {block} tokens")
    result = masked_scores(model, rows, tokenizer, special, batch_size, seed, types, progress)
    result |= pseudo_perplexity(model, rows, special, pppl_tokens, types=types, progress=progress)
    result |= {"rows": int(len(rows)), "block_size": block, "whole_word": model.config.whole_word,
               "packing": model.config.packing,
               "note": "pseudo-perplexity (Salazar et al. 2020) sees both sides of each token: compare it only "
                       "between masked LMs with the same tokenizer, never with a causal model's perplexity"}
    return result


PLL_FUNCTIONS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> its compiled PLL step


def token_pseudo_log_likelihoods(model, rows: list[np.ndarray], special, batch_size: int = 32,
                                 on_rows=None) -> list[np.ndarray]:
    """Pseudo-log-likelihood terms of each row (Salazar et al. 2020), for scoring sentences one by one.

    ``rows``: wrapped rows of different lengths (``[CLS] tokens [SEP]``), each at most the block size.
    Every non-special token of a row is masked alone, the others visible, and ``log p(token | rest)``
    (nats, float64) is returned per row in order of position. Masked copies are batched across rows,
    right-padded to a power of two (few compiled shapes), with the padding hidden from attention
    (``lengths``). ``on_rows(n)``: called as rows are finished. :func:`pseudo_perplexity` is the same
    score over fixed rows of a split.
    """
    from keras import ops

    fn = PLL_FUNCTIONS.get(model)
    if fn is None:
        def log_prob(x, lengths, one_hot, targets):
            hidden = model.hidden_states(x, training=False, lengths=lengths)  # (B, T, d)
            picked = ops.einsum("bt,btd->bd", ops.cast(one_hot, hidden.dtype), hidden)[:, None, :]  # (B, 1, d)
            logits = ops.cast(model.logits(picked), "float32")[:, 0, :]  # (B, V)
            return -ops.sparse_categorical_crossentropy(targets, logits, from_logits=True)

        fn = PLL_FUNCTIONS[model] = compile_function(log_prob)
    pad = special.pad if special.pad is not None else 0
    out = [np.zeros(int((~np.isin(r, special.all)).sum()), np.float64) for r in rows]
    # (row, position, index in the row's output), longest rows first so a batch shares one width.
    jobs = [(i, int(p), k) for i, r in enumerate(rows) for k, p in enumerate(np.flatnonzero(~np.isin(r, special.all)))]
    jobs.sort(key=lambda job: -len(rows[job[0]]))
    left = np.array([len(o) for o in out])
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start:start + batch_size]
        width = min(1 << max(3, (len(rows[chunk[0][0]]) - 1).bit_length()), model.config.block_size)
        x = np.full((batch_size, width), pad, np.int32)  # (B, T): full batches, one shape per width
        lengths = np.ones(batch_size, np.int32)
        one_hot = np.zeros((batch_size, width), np.float32)
        targets = np.zeros(batch_size, np.int32)
        for b, (i, p, _) in enumerate(chunk):
            x[b, :len(rows[i])] = rows[i]
            lengths[b] = len(rows[i])
            targets[b] = rows[i][p]
            x[b, p] = special.mask
            one_hot[b, p] = 1.0
        values = np.asarray(ops.convert_to_numpy(fn(x, lengths, one_hot, targets)), np.float64)
        done = 0
        for b, (i, _, k) in enumerate(chunk):
            out[i][k] = values[b]
            left[i] -= 1
            done += int(left[i] == 0)
        if on_rows and done:
            on_rows(done)
    if on_rows:
        empty = int(sum(len(o) == 0 for o in out))
        if empty:
            on_rows(empty)
    return out
