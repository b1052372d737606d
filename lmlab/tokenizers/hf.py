"""Tokenizers backed by Hugging Face ``tokenizers``.

* ``bpe``: byte-level BPE trained here (GPT-2's scheme: bytes mapped to
  printable characters, no normaliser, no prefix space), so any text,
  Chinese included, round-trips exactly through encode and decode.
* ``hf``: an existing ``tokenizer.json`` (GPT-2's, Llama's, ...) used as is.

Both are stored as the Hugging Face ``tokenizer.json`` document inside the
lmlab tokenizer JSON, so exporting to Hugging Face later is a copy.
"""

from __future__ import annotations

import json
from typing import Iterable, Sequence

from lmlab.core.errors import ConfigError, DataError
from lmlab.tokenizers.base import FORMAT_KEY, FORMAT_VERSION, Tokenizer

BPE_EOS = "<|endoftext|>"
# End tokens of well-known tokenizer.json files, most specific first.
KNOWN_END_TOKENS = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<|eot_id|>", "<eos>", "[SEP]", "<|im_end|>")


def _backend(hf_json: str):
    from tokenizers import Tokenizer as Backend

    try:
        return Backend.from_str(hf_json)
    except Exception as error:  # tokenizers raises bare Exception for bad JSON
        raise DataError(f"not a valid tokenizer.json: {str(error).splitlines()[0]}") from None


def _unusable(what: str, error: Exception) -> DataError:
    return DataError(f"the tokenizer cannot {what}: {(str(error).splitlines() or [type(error).__name__])[0]}")


class HFTokenizer(Tokenizer):
    def __init__(self, hf_json: str, eos_token: str | None = None, kind: str = "hf"):
        self.kind = kind
        self._json = hf_json
        self._backend = _backend(hf_json)
        added = {t.content: i for i, t in self._backend.get_added_tokens_decoder().items()} if hasattr(
            self._backend, "get_added_tokens_decoder") else {}
        self._special = {content: index for content, index in added.items()}
        if eos_token is None:
            eos_token = next((t for t in KNOWN_END_TOKENS if self._backend.token_to_id(t) is not None), None)
            if eos_token is None:
                raise ConfigError("this tokenizer.json has no known end token; name one with --eos-token")
        eos_id = self._backend.token_to_id(eos_token)
        if eos_id is None:
            raise ConfigError(f"end token {eos_token!r} is not in the tokenizer's vocabulary")
        self._special[eos_token] = eos_id
        self._eos = eos_token

    @classmethod
    def train_bpe(cls, texts: Iterable[str], vocab_size: int = 8000, min_freq: int = 2,
                  eos_token: str = BPE_EOS) -> "HFTokenizer":
        from tokenizers import Tokenizer as Backend
        from tokenizers import decoders, models, pre_tokenizers, trainers

        alphabet = pre_tokenizers.ByteLevel.alphabet()
        if vocab_size < len(alphabet) + 1:
            raise ConfigError(
                f"--vocab-size {vocab_size} is too small for byte-level BPE: it needs the "
                f"{len(alphabet)} byte tokens and the end token {eos_token!r}, at least {len(alphabet) + 1}"
            )
        if min_freq < 1:
            raise ConfigError(f"--min-freq must be >= 1, got {min_freq}")
        backend = Backend(models.BPE())
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        backend.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_freq, special_tokens=[eos_token],
                                      initial_alphabet=alphabet, show_progress=False)
        backend.train_from_iterator(texts, trainer=trainer)
        return cls(backend.to_str(), eos_token, kind="bpe")

    @property
    def vocab_size(self) -> int:
        return self._backend.get_vocab_size(with_added_tokens=True)

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self._special)

    @property
    def eos_token(self) -> str:
        return self._eos

    @property
    def unk_id(self) -> int | None:
        unk = getattr(self._backend.model, "unk_token", None)
        return self._backend.token_to_id(unk) if unk else None

    # A tokenizer.json can load and still be unusable (e.g. an unknown token missing from
    # its vocabulary); the backend then raises a bare Exception on use, reported here.

    def encode(self, text: str) -> list[int]:
        try:
            return self._backend.encode(text, add_special_tokens=False).ids
        except Exception as error:
            raise _unusable("encode", error) from None

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        try:
            encodings = self._backend.encode_batch_fast(list(texts), add_special_tokens=False)
        except Exception as error:
            raise _unusable("encode", error) from None
        return [encoding.ids for encoding in encodings]

    def decode(self, ids: Sequence[int], skip_special: bool = False) -> str:
        try:
            return self._backend.decode(list(ids), skip_special_tokens=skip_special)
        except Exception as error:
            raise _unusable("decode", error) from None

    def id_to_token(self, index: int) -> str:
        try:
            return self._backend.id_to_token(index)
        except Exception as error:
            raise _unusable("look up a token", error) from None

    def hf_json(self) -> str:
        return self._json

    def to_dict(self) -> dict:
        return {FORMAT_KEY: FORMAT_VERSION, "kind": self.kind, "eos_token": self._eos,
                "hf_tokenizer": json.loads(self._json)}
