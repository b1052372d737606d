"""``lmlab fill-mask RUN "text with [MASK]"``: a masked LM's top candidates for each mask.

Inputs are built as in pretraining (:mod:`lmlab.data.masking`):
``[CLS] text [SEP]``, or ``[CLS] first [SEP] second [SEP]`` with segment ids
0 then 1 for a pair, when the tokenizer has those tokens. The mask token is
the tokenizer's own (``[MASK]`` or ``<mask>``); each occurrence in the text is
one masked token.
"""

from __future__ import annotations


import numpy as np

from lmlab.core.errors import ConfigError
from lmlab.tokenizers.specials import SpecialIds, special_ids


def encode_inputs(tokenizer, special: SpecialIds, block_size: int, first: str, second: str | None = None):
    """``(ids, segment_ids)`` int32 ``(T,)`` for one text or a pair; an error if longer than the context."""

    def encode(text: str) -> list[int]:  # the mask token is spliced in, whatever the tokenizer does with its text
        ids: list[int] = []
        for i, piece in enumerate(text.split(special.mask_token)):
            if i:
                ids.append(special.mask)
            if piece.strip():
                ids.extend(tokenizer.encode(piece.strip() if special.wraps else piece))
        return ids

    ids, types = encode(first), []
    if special.wraps:
        ids = [special.cls, *ids, special.sep]
    types = [0] * len(ids)
    if second is not None:
        more = encode(second) + ([special.sep] if special.wraps else [])
        ids, types = ids + more, types + [1] * len(more)
    if len(ids) > block_size:
        what = "the pair" if second is not None else "the text"
        raise ConfigError(f"{what} is {len(ids)} tokens with its special tokens, longer than the model's context "
                          f"of {block_size}; shorten it")
    return np.array(ids, np.int32), np.array(types, np.int32)


def fill_mask(model, tokenizer, text: str, top_k: int = 5, second: str | None = None) -> dict:
    """The ``top_k`` candidates (token, id, probability) at each mask, and the text with the best ones."""
    from keras import ops

    if top_k < 1:
        raise ConfigError(f"top_k must be >= 1, got {top_k}")
    special = special_ids(tokenizer)
    ids, types = encode_inputs(tokenizer, special, model.config.block_size, text, second)
    positions = np.flatnonzero(ids == special.mask)
    if not len(positions):
        raise ConfigError(f"the text has no {special.mask_token}: write it where a token is missing")
    if model.config.type_vocab_size < 2:
        types = np.zeros_like(types)
    logits = ops.convert_to_numpy(model(ids[None, :], types[None, :], training=False))[0]  # (T, V)
    logits = logits[:, :tokenizer.vocab_size]  # a model row past the tokenizer is no token
    masks, filled = [], ids.copy()
    for position in positions:
        row = logits[position] - logits[position].max()
        probs = np.exp(row) / np.exp(row).sum()
        best = np.argsort(-probs)[:top_k]
        masks.append({"position": int(position), "candidates": [
            {"token": tokenizer.id_to_token(int(i)), "id": int(i), "probability": float(probs[i])} for i in best]})
        filled[position] = best[0]
    keep = [i for i in filled.tolist() if i not in (special.cls, special.sep)]
    return {"text": text, "masks": masks, "filled": tokenizer.decode(keep)}
