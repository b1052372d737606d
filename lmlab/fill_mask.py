"""``lmlab fill-mask RUN "text with [MASK]"``: a masked LM's top candidates for each mask.

Inputs are built as in pretraining (:mod:`lmlab.training.masking`):
``[CLS] text [SEP]``, or ``[CLS] first [SEP] second [SEP]`` with segment ids
0 then 1 for a pair, when the tokenizer has those tokens. The mask token is
the tokenizer's own (``[MASK]`` or ``<mask>``); each occurrence in the text is
one masked token.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from lmlab.errors import ConfigError
from lmlab.training.masking import SpecialIds, special_ids


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


def cmd_fill_mask(args) -> int:
    from lmlab.runs import load_run

    run = load_run(args.run, args.checkpoint)
    if run.config["model"].get("family") != "encoder":
        raise ConfigError(f"{args.run} is a {run.config['model'].get('family', 'transformer')} run; fill-mask needs "
                          "a masked language model (--model encoder)")
    result = fill_mask(run.model, run.tokenizer, args.text, args.top_k, args.second)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
        return 0
    for mask in result["masks"]:
        shown = ", ".join(f"{c['token']} {c['probability']:.3f}" for c in mask["candidates"])
        print(f"position {mask['position']}: {shown}")
    print(f"filled: {result['filled']}")
    sys.stdout.flush()
    return 0


def add_command(commands) -> None:
    p = commands.add_parser("fill-mask", help="top candidates for each [MASK] in a text (encoder runs)",
                            description="Fills each mask token ([MASK] or <mask>, as the tokenizer has it) of TEXT "
                            "with a masked language model's top candidates.")
    p.add_argument("run")
    p.add_argument("text", help='e.g. "The capital of France is [MASK] ."')
    p.add_argument("--second", help="a second text: the input is the pair [CLS] TEXT [SEP] SECOND [SEP]")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--checkpoint", default="best", help="best (default) or last")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_fill_mask)
