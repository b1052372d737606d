"""Token shards on disk: flat binary token arrays plus a JSON manifest.

Layout of a prepared folder::

    manifest.json          written last: its presence means the folder is complete
    tokenizer.json         the tokenizer (lmlab tokenizer JSON)
    train-00000.bin ...    little-endian uint16 (vocabulary <= 65,536) or uint32 tokens
    valid-00000.bin ...
    test-00000.bin ...

A shard holds whole units (documents, paragraphs or sentences), each followed
by the tokenizer's end token. Each shard is written under a temporary name,
its SHA-256 computed while writing, and renamed into place when closed.
Readers check every shard's size and checksum against the manifest before
using it, so a truncated or corrupted shard is never read as good.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmlab.core.errors import DataError, LmlabError
from lmlab.core.io import read_json, sha256_file, temporary_path

FORMAT = "lmlab-token-shards"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TOKENIZER = "tokenizer.json"
SPLITS = ("train", "valid", "test")


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:05d}.bin"


class ShardWriter:
    """Appends tokens of one split to the open shard; ``close`` publishes it."""

    def __init__(self, folder: Path, split: str, dtype: np.dtype, next_index: int = 0):
        self.folder, self.split, self.dtype = Path(folder), split, np.dtype(dtype)
        self.next_index = next_index
        self.tokens = 0
        self._handle = None
        self._digest = None
        self._path = None

    def append(self, tokens: np.ndarray) -> None:
        if self._handle is None:
            self._path = self.folder / shard_name(self.split, self.next_index)
            try:
                self._handle = open(temporary_path(self._path), "wb")
            except OSError as error:
                raise LmlabError(f"cannot write {self._path}: {error.strerror or error}") from None
            self._digest = hashlib.sha256()
            self.tokens = 0
        data = np.ascontiguousarray(tokens, dtype=self.dtype).tobytes()
        try:
            self._handle.write(data)
        except OSError as error:
            self.abort()
            raise LmlabError(f"cannot write {self._path}: {error.strerror or error}") from None
        self._digest.update(data)
        self.tokens += len(tokens)

    def close(self) -> dict | None:
        """Finish the open shard (if any tokens were written); return its manifest entry."""
        if self._handle is None:
            return None
        tmp = temporary_path(self._path)
        try:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            os.replace(tmp, self._path)
        except OSError as error:
            self.abort()
            raise LmlabError(f"cannot write {self._path}: {error.strerror or error}") from None
        entry = {"file": self._path.name, "tokens": self.tokens, "sha256": self._digest.hexdigest()}
        self._handle = None
        self.next_index += 1
        self.tokens = 0
        return entry

    def abort(self) -> None:
        if self._handle is not None:
            self._handle.close()
            temporary_path(self._path).unlink(missing_ok=True)
            self._handle = None
            self.tokens = 0


# ---------------------------------------------------------------- reading


def load_manifest(folder) -> dict:
    """Read and check ``manifest.json`` of a prepared folder."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.is_dir():
        raise DataError(f"{folder}: no such prepared data folder")
    if not path.exists():
        if (folder / ".prepare").exists():
            raise DataError(f"{folder}: lmlab prepare did not finish here (no {MANIFEST}); "
                            "run the same prepare command again to finish it")
        raise DataError(f"{folder}: not a prepared data folder (no {MANIFEST})")
    manifest = read_json(path, "manifest")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{path}: not an lmlab token-shard manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{path}: format version {manifest.get('format_version')!r} is not supported "
                        f"(this lmlab reads version {FORMAT_VERSION})")
    problem = _manifest_problem(manifest)
    if problem:
        raise DataError(f"{path}: manifest is malformed: {problem}")
    return manifest


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _plain_name(value) -> bool:
    return (isinstance(value, str) and value not in ("", ".", "..") and Path(value).name == value
            and "\\" not in value and value.isprintable())


def _manifest_problem(manifest: dict) -> str | None:
    """What makes a manifest unusable (every field later code relies on), or None."""
    if manifest.get("dtype") not in ("<u2", "<u4"):
        return f"dtype {manifest.get('dtype')!r} is not <u2 or <u4"
    tokenizer = manifest.get("tokenizer")
    if not isinstance(tokenizer, dict):
        return "no tokenizer entry"
    if not _count(tokenizer.get("eos_id")) or not _count(tokenizer.get("vocab_size")):
        return "the tokenizer entry needs integer eos_id and vocab_size"
    if not _plain_name(tokenizer.get("file", TOKENIZER)) or not isinstance(tokenizer.get("kind", ""), str):
        return "the tokenizer entry's file must be a plain file name and its kind a string"
    if not isinstance(tokenizer.get("sha256"), (str, type(None))) or not isinstance(manifest.get("unit", ""), str):
        return "the tokenizer checksum and the unit must be strings"
    splits = manifest.get("splits")
    if not isinstance(splits, dict) or any(name not in splits for name in SPLITS):
        return f"splits must map each of {', '.join(SPLITS)} to its entry"
    for name, split in splits.items():
        if not isinstance(split, dict) or not isinstance(split.get("shards"), list):
            return f"split {name!r} has no list of shards"
        for key in ("tokens", "documents", "units", "utf8_bytes"):
            if not _count(split.get(key)):
                return f"split {name!r}: {key} must be an integer >= 0, got {split.get(key)!r}"
        for shard in split["shards"]:
            if not isinstance(shard, dict) or not _plain_name(shard.get("file")):
                return f"split {name!r}: a shard entry lacks a plain file name"
            if not _count(shard.get("tokens")) or not isinstance(shard.get("sha256"), str):
                return f"{shard['file']}: a shard needs an integer token count and a sha256 string"
    return None


def check_shard(folder: Path, shard: dict, dtype: np.dtype, checksum: bool = True) -> str | None:
    """Return what is wrong with one shard, or None when it matches the manifest."""
    path = Path(folder) / shard["file"]
    if Path(shard["file"]).name != shard["file"]:
        return f"{path}: shard name must be a plain file name"
    if not path.exists():
        return f"{path}: shard is missing"
    size = path.stat().st_size
    expected = shard["tokens"] * dtype.itemsize
    if size != expected:
        return f"{path}: shard has {size:,} bytes, the manifest says {expected:,} (truncated or overwritten)"
    if checksum and sha256_file(path) != shard["sha256"]:
        return f"{path}: shard checksum does not match the manifest (corrupted)"
    return None


def verify(folder) -> list[str]:
    """Check every file of a prepared folder; return the problems found (empty: all good)."""
    folder = Path(folder)
    manifest = load_manifest(folder)
    dtype = np.dtype(manifest["dtype"])
    problems = []
    tokenizer = manifest.get("tokenizer", {})
    tokenizer_path = folder / tokenizer.get("file", TOKENIZER)
    if not tokenizer_path.exists():
        problems.append(f"{tokenizer_path}: tokenizer is missing")
    elif tokenizer.get("sha256") and sha256_file(tokenizer_path) != tokenizer["sha256"]:
        problems.append(f"{tokenizer_path}: tokenizer checksum does not match the manifest")
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            problem = check_shard(folder, shard, dtype)
            if problem:
                problems.append(problem)
    return problems


@dataclass
class TokenSplit:
    """The shards of one split, memory-mapped read-only."""

    name: str
    arrays: list[np.ndarray]
    eos_id: int
    utf8_bytes: int
    documents: int

    @property
    def tokens(self) -> int:
        return sum(len(a) for a in self.arrays)

    def __len__(self) -> int:
        return self.tokens


def open_split(folder, split: str = "train", checksum: bool = True) -> TokenSplit:
    """Memory-map one split after checking sizes (and checksums unless ``checksum=False``)."""
    folder = Path(folder)
    manifest = load_manifest(folder)
    if split not in manifest["splits"]:
        raise DataError(f"{folder}: no split {split!r} (splits: {', '.join(manifest['splits'])})")
    entry = manifest["splits"][split]
    dtype = np.dtype(manifest["dtype"])
    arrays = []
    for shard in entry["shards"]:
        problem = check_shard(folder, shard, dtype, checksum)
        if problem:
            raise DataError(problem + "; run lmlab data verify, then prepare again")
        if shard["tokens"]:
            arrays.append(np.memmap(folder / shard["file"], dtype=dtype, mode="r"))
    return TokenSplit(split, arrays, int(manifest["tokenizer"]["eos_id"]), int(entry.get("utf8_bytes", 0)),
                      int(entry.get("documents", 0)))
