"""Synonyms for any language: nearest neighbours in a trained lmlab model's token embeddings.

The embedding table is read straight from the run's checkpoint
(``token_embedding/embeddings`` in ``model.safetensors``), so no model is
built. A word has neighbours when the tokenizer gives it one token (for a
byte-level BPE, the word with its leading space, as it appears mid-sentence);
its neighbours are the tokens whose text is a word (letters or CJK
characters) with the highest cosine similarity, itself excluded. With a
character-level model only single characters have neighbours.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lmlab.core.errors import ConfigError, DataError
from lmlab.core.io import read_json
from lmlab.runs.checkpoint import MODEL_FILE, read_pointed
from lmlab.tokenizers import load_tokenizer

EMBEDDING_KEY = "token_embedding/embeddings"


def _is_word(text: str) -> bool:
    return bool(text) and all(ch.isalpha() or ch in "'-" for ch in text) and any(ch.isalpha() for ch in text)


class EmbeddingNeighbours:
    def __init__(self, run, k: int = 10, checkpoint: str = "best"):
        from safetensors.numpy import load_file

        run = Path(run)
        if not (run / "config.json").exists():
            raise ConfigError(f"{run}: not a run folder (no config.json) for embedding neighbours")
        config = read_json(run / "config.json", "run config")
        if config.get("model", {}).get("family") == "ngram":
            raise ConfigError(f"{run}: an n-gram model has no embeddings; use a neural run for neighbours")
        # Read whole through the pointer, so a run that is still training rotates no checkpoint away mid-read.
        found = read_pointed(run, checkpoint, fallback="last", read=lambda path: load_file(str(path / MODEL_FILE)))
        if found is None:
            raise ConfigError(f"{run}: the run has no checkpoint yet")
        folder, tensors = found
        if EMBEDDING_KEY not in tensors:
            raise DataError(f"{folder / MODEL_FILE}: no {EMBEDDING_KEY} tensor")
        self.tokenizer = load_tokenizer(run / "tokenizer.json")
        table = tensors[EMBEDDING_KEY].astype(np.float32)  # (V, d)
        texts = [self.tokenizer.decode([i]).strip() for i in range(min(len(table), self.tokenizer.vocab_size))]
        self.candidates = np.array([i for i, t in enumerate(texts) if _is_word(t)], dtype=np.int64)
        self.texts = texts
        unit = table / np.maximum(np.linalg.norm(table, axis=1, keepdims=True), 1e-8)
        self.unit = unit
        self.k = k
        self._cache: dict[str, list[str]] = {}

    def token_of(self, word: str) -> int | None:
        for form in (word, " " + word):
            ids = self.tokenizer.encode(form)
            if len(ids) == 1 and self.texts[ids[0]] == word:
                return ids[0]
        return None

    def synonyms(self, word: str) -> list[str]:
        if word in self._cache:
            return self._cache[word]
        token = self.token_of(word)
        result: list[str] = []
        if token is not None and len(self.candidates):
            similarity = self.unit[self.candidates] @ self.unit[token]  # (candidates,)
            for position in np.argsort(-similarity, kind="stable"):
                text = self.texts[self.candidates[position]]
                if text.lower() != word.lower() and text not in result:
                    result.append(text)
                if len(result) == self.k:
                    break
        self._cache[word] = result
        return result
