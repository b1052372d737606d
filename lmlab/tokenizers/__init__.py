"""Tokenizers behind one interface: character, word, byte-level BPE and tokenizer.json.

    from lmlab.tokenizers import train_tokenizer, load_tokenizer
    tok = train_tokenizer("bpe", texts, vocab_size=8000)
    tok.save("tokenizer.json"); tok = load_tokenizer("tokenizer.json")
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from lmlab.core.errors import ConfigError, DataError, LmlabError
from lmlab.core.io import read_json
from lmlab.tokenizers.base import FORMAT_KEY, Tokenizer
from lmlab.tokenizers.hf import HFTokenizer
from lmlab.tokenizers.vocab import CharTokenizer, WordTokenizer

KINDS = ("char", "word", "bpe")


def train_tokenizer(kind: str, texts: Iterable[str], vocab_size: int = 0, min_freq: int = 1,
                    segmenter: str = "whitespace") -> Tokenizer:
    """Train a tokenizer of ``kind`` on an iterable of texts (consumed once)."""
    if kind == "char":
        return CharTokenizer.train(texts, vocab_size, min_freq)
    if kind == "word":
        return WordTokenizer.train(texts, vocab_size, min_freq, segmenter)
    if kind == "bpe":
        return HFTokenizer.train_bpe(texts, vocab_size or 8000, max(min_freq, 1))
    raise ConfigError(f"unknown tokenizer {kind!r}: expected {', '.join(KINDS)} or a path to a tokenizer JSON file")


def tokenizer_from_dict(data, eos_token: str | None = None) -> Tokenizer:
    if not isinstance(data, dict):
        raise DataError("tokenizer JSON must be an object")
    if FORMAT_KEY not in data:
        if "model" in data:  # a Hugging Face tokenizer.json
            return HFTokenizer(json.dumps(data), eos_token, kind="hf")
        raise DataError("not an lmlab tokenizer nor a Hugging Face tokenizer.json")
    kind = data.get("kind")
    try:
        if kind == "char":
            return CharTokenizer(data["vocab"], data["eos_token"], data["unk_token"])
        if kind == "word":
            return WordTokenizer(data["vocab"], data.get("segmenter", "whitespace"), data["eos_token"], data["unk_token"])
        if kind in ("bpe", "hf"):
            return HFTokenizer(json.dumps(data["hf_tokenizer"]), eos_token or data["eos_token"], kind=kind)
    except KeyError as missing:
        raise DataError(f"{kind} tokenizer JSON lacks the field {missing}") from None
    except TypeError as error:
        raise DataError(f"{kind} tokenizer JSON has a field of the wrong type: {error}") from None
    raise DataError(f"unknown tokenizer kind {kind!r} (known: char, word, bpe, hf)")


def load_tokenizer(path, eos_token: str | None = None) -> Tokenizer:
    """Load an lmlab tokenizer JSON or a Hugging Face ``tokenizer.json``."""
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    data = read_json(path, "tokenizer file")
    try:
        return tokenizer_from_dict(data, eos_token)
    except LmlabError as error:
        raise type(error)(f"{path}: {error}") from None


__all__ = ["KINDS", "CharTokenizer", "HFTokenizer", "Tokenizer", "WordTokenizer", "load_tokenizer",
           "tokenizer_from_dict", "train_tokenizer"]
