"""Hugging Face ``datasets`` as a corpus source.

Spec forms (after the ``hf:`` prefix):

    NAME?config=CONFIG&split=SPLIT     a hub data set, streamed (needs internet)
    /path/to/saved                     a folder written by ``Dataset.save_to_disk``
    data/*.parquet                     local parquet, arrow, json(l) or csv files

Hub data sets and local files are opened with ``streaming=True`` so memory
stays bounded; a saved-to-disk data set is memory-mapped Arrow.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qsl

from lmlab.data.documents import RawDocument, ReadOptions, ReadStats, field_paragraphs
from lmlab.core.errors import DataError
from lmlab.core.extras import require

_FILE_BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".json": "json", ".jsonl": "json", ".csv": "csv"}


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    name, _, query = spec.partition("?")
    return name, dict(parse_qsl(query))


def _open(spec: str):
    datasets = require("datasets", f"hf:{spec}: reading a Hugging Face dataset")

    name, params = parse_spec(spec)
    split = params.get("split", "train")
    path = Path(name)
    if path.is_dir() and any((path / marker).exists() for marker in ("state.json", "dataset_dict.json")):
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise DataError(f"hf:{spec}: no split {split!r} (splits: {', '.join(loaded)})")
            loaded = loaded[split]
        return loaded
    files = sorted(glob.glob(name)) if glob.has_magic(name) else ([name] if path.is_file() else [])
    if files:
        suffixes = {os.path.splitext(f)[1].lower() for f in files}
        builders = {_FILE_BUILDERS.get(s) for s in suffixes}
        if len(builders) != 1 or None in builders:
            raise DataError(f"hf:{spec}: expected parquet, arrow, json or csv files, found {', '.join(sorted(suffixes))}")
        return datasets.load_dataset(builders.pop(), data_files=files, split="train", streaming=True)
    if path.exists() or glob.has_magic(name):
        raise DataError(f"hf:{spec}: no data files found there")
    try:
        return datasets.load_dataset(name, params.get("config"), split=split, streaming=True)
    except Exception as error:  # the hub raises many kinds; all mean "cannot load"
        raise DataError(f"hf:{spec}: cannot load data set {name!r}: {str(error).splitlines()[0] if str(error) else type(error).__name__}") from None


def read_hf(spec: str, options: ReadOptions, stats: ReadStats) -> Iterator[RawDocument]:
    dataset = _open(spec)
    source = f"hf:{spec}"
    for index, record in enumerate(dataset):
        paragraphs = field_paragraphs(record, options.fields, f"{source}: row {index}")
        if paragraphs:
            yield RawDocument(source, str(index), paragraphs)
