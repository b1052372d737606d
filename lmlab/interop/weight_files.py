"""Hugging Face weight files, read and written as safetensors only: no pickle, no code.

A checkpoint folder holds ``model.safetensors``, or shards listed in
``model.safetensors.index.json`` (``weight_map``: tensor name → shard file).
A safetensors file is an 8-byte little-endian header length, a JSON header
(name → dtype, shape, byte range) and the raw little-endian data, so a tensor
is read by memory-mapping its byte range: nothing is executed, and only the
tensors asked for are paged in. F32, F16, BF16 (widened to float32 by shifting
its bits) and F64 are read as float32.

A ``pytorch_model.bin`` (or any ``.bin``/``.pt``/``.pth``/``.ckpt``) is a Python
pickle, which runs code when loaded: such a folder is refused with an
explanation, and the file is never opened.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
from pathlib import Path

import numpy as np

from lmlab.core.errors import ConfigError, DataError
from lmlab.core.io import atomic_open, read_json

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
MAX_HEADER_BYTES = 100 << 20  # the format's own limit
_READABLE = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "BF16": "<u2"}


class SafetensorsFile:
    """The tensors of one safetensors file, read lazily through a memory map."""

    def __init__(self, path):
        self.path = Path(path)
        try:
            self._file = open(self.path, "rb")
        except OSError as error:
            raise DataError(f"{self.path}: cannot open weights: {error.strerror or error}") from None
        size = os.fstat(self._file.fileno()).st_size
        raw = self._file.read(8)
        if len(raw) < 8:
            raise DataError(f"{self.path}: not a safetensors file (shorter than its 8-byte header length)")
        (header_size,) = struct.unpack("<Q", raw)
        if header_size > min(MAX_HEADER_BYTES, size - 8):
            raise DataError(f"{self.path}: not a safetensors file (header length {header_size:,} "
                            f"in a file of {size:,} bytes)")
        try:
            header = json.loads(self._file.read(header_size))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise DataError(f"{self.path}: safetensors header is not valid JSON ({error})") from None
        if not isinstance(header, dict):
            raise DataError(f"{self.path}: safetensors header is not a JSON object")
        self.metadata = header.pop("__metadata__", None) or {}
        self._start = 8 + header_size
        self._entries = {}
        for name, entry in header.items():
            try:
                dtype, shape = entry["dtype"], tuple(int(n) for n in entry["shape"])
                begin, end = (int(n) for n in entry["data_offsets"])
            except (KeyError, TypeError, ValueError):
                raise DataError(f"{self.path}: malformed header entry for tensor {name!r}") from None
            if dtype in _READABLE and end - begin != math.prod(shape) * np.dtype(_READABLE[dtype]).itemsize:
                raise DataError(f"{self.path}: tensor {name!r} has {end - begin:,} bytes for shape {shape} {dtype}")
            if not 0 <= begin <= end <= size - self._start:
                raise DataError(f"{self.path}: tensor {name!r} lies outside the file (truncated download?)")
            self._entries[name] = (dtype, shape, begin, end)
        self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) if size else None

    @property
    def names(self) -> list[str]:
        return list(self._entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entries[name][1]

    def dtype(self, name: str) -> str:
        return self._entries[name][0]

    def read(self, name: str) -> np.ndarray:
        """Tensor ``name`` as a new float32 array."""
        dtype, shape, begin, end = self._entries[name]
        if dtype not in _READABLE:
            raise DataError(f"{self.path}: tensor {name!r} is {dtype}; lmlab reads F32, F16, BF16 and F64 weights")
        count = math.prod(shape)
        if count == 0:
            return np.zeros(shape, np.float32)
        raw = np.frombuffer(self._map, dtype=_READABLE[dtype], count=count, offset=self._start + begin)
        if dtype == "BF16":  # bfloat16 is the top half of a float32
            return (raw.astype(np.uint32) << 16).view(np.float32).reshape(shape)
        return raw.astype(np.float32).reshape(shape)

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
        self._file.close()


class CheckpointTensors:
    """Every tensor of a Hugging Face checkpoint folder, by name, over one or more shards."""

    def __init__(self, files: dict[str, SafetensorsFile]):
        self._files = files  # tensor name -> the file holding it

    @classmethod
    def open(cls, folder) -> "CheckpointTensors":
        folder = Path(folder)
        if (folder / SINGLE_FILE).exists():
            shard = SafetensorsFile(folder / SINGLE_FILE)
            return cls({name: shard for name in shard.names})
        if (folder / INDEX_FILE).exists():
            return cls._open_sharded(folder)
        refuse_pickles(folder)
        raise ConfigError(f"{folder}: no {SINGLE_FILE} nor {INDEX_FILE}; lmlab reads Hugging Face checkpoints "
                          "saved as safetensors")

    @classmethod
    def _open_sharded(cls, folder: Path) -> "CheckpointTensors":
        index = read_json(folder / INDEX_FILE, "safetensors index")
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise DataError(f"{folder / INDEX_FILE}: no weight_map (tensor name -> shard file)")
        shards: dict[str, SafetensorsFile] = {}
        files = {}
        for name, shard_name in weight_map.items():
            if not isinstance(shard_name, str) or Path(shard_name).name != shard_name:
                raise DataError(f"{folder / INDEX_FILE}: tensor {name!r} names shard {shard_name!r}, "
                                "which is not a file name in this folder")
            if shard_name not in shards:
                if not (folder / shard_name).exists():
                    raise DataError(f"{folder / INDEX_FILE} lists shard {shard_name}, which is missing")
                shards[shard_name] = SafetensorsFile(folder / shard_name)
            if name not in shards[shard_name].names:
                raise DataError(f"{folder / INDEX_FILE} places tensor {name!r} in {shard_name}, which lacks it")
            files[name] = shards[shard_name]
        for shard_name, shard in shards.items():
            unlisted = sorted(set(shard.names) - set(weight_map))
            if unlisted:
                raise DataError(f"{folder / shard_name} holds {', '.join(unlisted[:3])}, which "
                                f"{INDEX_FILE} does not list")
        return cls(files)

    @property
    def names(self) -> list[str]:
        return list(self._files)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._files[name].shape(name)

    def dtypes(self) -> set[str]:
        return {self._files[name].dtype(name) for name in self._files}

    def read(self, name: str) -> np.ndarray:
        return self._files[name].read(name)

    def close(self) -> None:
        for shard in {id(f): f for f in self._files.values()}.values():
            shard.close()


def refuse_pickles(folder: Path) -> None:
    """Raise for a folder whose weights are only pickles (never opening them)."""
    pickles = sorted(p.name for p in Path(folder).iterdir() if p.suffix in PICKLE_SUFFIXES and p.is_file())
    if pickles:
        raise ConfigError(
            f"{folder}: its weights are in {', '.join(pickles[:3])}, a PyTorch pickle; unpickling runs "
            "whatever code the file holds, so lmlab never loads one. Convert it to safetensors where you "
            "trust its source (transformers: AutoModelForCausalLM.from_pretrained(DIR).save_pretrained(OUT) "
            "writes model.safetensors), then import OUT")
    others = sorted(p.name for p in Path(folder).iterdir() if p.suffix in (".h5", ".msgpack", ".gguf"))
    if others:
        raise ConfigError(f"{folder}: holds {', '.join(others)}; lmlab imports safetensors weights only")


def write_safetensors(path, tensors, metadata: dict[str, str] | None = None, shapes: dict | None = None) -> None:
    """Write float32 tensors as a safetensors file, atomically (a temporary file renamed into place).

    ``tensors``: a dict name → array, or, with ``shapes`` (name → shape, in
    file order), an iterable of ``(name, array)`` pairs in that order, each
    produced only when its turn comes: the header is written from ``shapes``
    first, so a checkpoint is written one tensor at a time in little memory.
    """
    if shapes is None:
        shapes = {name: tuple(np.shape(value)) for name, value in tensors.items()}
        tensors = tensors.items()
    header, offset = {}, 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, shape in shapes.items():
        size = math.prod(shape) * 4
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    with atomic_open(path, "wb") as handle:  # a temporary file, synced and renamed: never half a file
        handle.write(struct.pack("<Q", len(encoded)) + encoded)
        expected = iter(shapes.items())
        for name, value in tensors:
            wanted, shape = next(expected, (None, None))
            value = np.asarray(value, dtype="<f4")
            value = value if value.flags.c_contiguous else value.copy(order="C")
            if name != wanted or value.shape != tuple(shape):
                raise ValueError(f"tensor {name} {value.shape} does not follow the header ({wanted} {shape})")
            handle.write(value.reshape(-1).view(np.uint8))
        if next(expected, None) is not None:
            raise ValueError(f"{path}: fewer tensors than the header lists")
