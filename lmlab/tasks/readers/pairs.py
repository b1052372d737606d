"""Readers for source → target data: Tatoeba pairs, LCSTS line files, JSONL; and the dispatcher.

- Tatoeba / manythings.org (``cmn.txt``): ``English<TAB>Chinese<TAB>attribution``
  per line; ``swap=True`` translates the second column into the first.
- LCSTS: ``NAME.src.txt`` and ``NAME.tgt.txt``, line ``i`` of one summarised by
  line ``i`` of the other. Either file, or the common prefix, may be given.
- JSONL: one object per line; every string field can fill the template and
  ``target_field`` (a string or a list of strings) gives the reference(s).
- SQuAD JSON: see :mod:`lmlab.tasks.readers.squad`.
"""

from __future__ import annotations

from pathlib import Path

from lmlab.core.errors import ConfigError, DataError
from lmlab.core.io import read_text
from lmlab.tasks.readers.examples import TaskExample
from lmlab.tasks.readers.squad import read_squad
from lmlab.tasks.readers.tables import json_records

PAIR_FORMATS = ("squad", "tatoeba", "lcsts", "jsonl")


def read_task_examples(path, format: str = "auto", swap: bool = False, target_field: str = "target",
                       limit: int | None = None) -> list[TaskExample]:
    """Prompt/completion examples from any supported file; ``format`` auto-detects by name and content."""
    path = Path(path)
    format = detect_pair_format(path) if format == "auto" else format
    if format == "squad":
        examples = read_squad(path)
    elif format == "tatoeba":
        examples = read_tatoeba(path, swap)
    elif format == "lcsts":
        examples = read_lcsts(path)
    elif format == "jsonl":
        examples = read_jsonl_pairs(path, target_field)
    else:
        raise ConfigError(f"unknown data format {format!r}: expected auto or one of {', '.join(PAIR_FORMATS)}")
    return examples[:limit] if limit else examples


def detect_pair_format(path: Path) -> str:
    name = path.name.lower()
    if ".src" in name or ".tgt" in name or _lcsts_files(path) is not None:
        return "lcsts"
    if name.endswith(".jsonl"):
        return "jsonl"
    if name.endswith(".json"):
        return "squad"
    return "tatoeba"


def read_tatoeba(path: Path, swap: bool = False) -> list[TaskExample]:
    examples = []
    for number, line in enumerate(read_text(path, "sentence-pair file").splitlines(), 1):
        if not line.strip():
            continue
        columns = line.split("\t")
        if len(columns) < 2 or not columns[0].strip() or not columns[1].strip():
            raise DataError(f"{path}:{number}: expected two tab-separated sentences (and an optional attribution)")
        source, target = columns[0].strip(), columns[1].strip()
        if swap:
            source, target = target, source
        examples.append(TaskExample({"source": source}, target, (target,), str(number), f"{path}:{number}"))
    if not examples:
        raise DataError(f"{path}: the file is empty")
    return examples


def _lcsts_files(path: Path) -> tuple[Path, Path] | None:
    name = path.name
    for marker in (".src", ".tgt"):
        if marker in name:
            return (path.with_name(name.replace(marker, ".src")), path.with_name(name.replace(marker, ".tgt")))
    src, tgt = path.with_name(name + ".src.txt"), path.with_name(name + ".tgt.txt")
    return (src, tgt) if src.exists() else None


def read_lcsts(path: Path) -> list[TaskExample]:
    files = _lcsts_files(path)
    if files is None:
        raise DataError(f"{path}: not an LCSTS pair (expected NAME.src.txt and NAME.tgt.txt)")
    src_path, tgt_path = files
    sources = read_text(src_path, "source file").splitlines()
    targets = read_text(tgt_path, "target file").splitlines()
    if len(sources) != len(targets):
        raise DataError(f"{src_path} has {len(sources):,} lines but {tgt_path} has {len(targets):,}: "
                        f"line i of one must pair with line i of the other")
    examples = []
    for number, (source, target) in enumerate(zip(sources, targets), 1):
        source, target = source.strip(), target.strip()
        if not source or not target:
            raise DataError(f"{src_path if not source else tgt_path}:{number}: empty line")
        examples.append(TaskExample({"source": source}, target, (target,), str(number), f"{src_path}:{number}"))
    if not examples:
        raise DataError(f"{src_path}: the file is empty")
    return examples


def read_jsonl_pairs(path: Path, target_field: str = "target") -> list[TaskExample]:
    examples = []
    for number, record in json_records(path, read_text(path, "JSONL file")):
        where = f"{path}:{number}"
        if target_field not in record:
            raise DataError(f"{where}: no field {target_field!r} (fields: {', '.join(record)}); "
                            f"--target-field chooses")
        value = record[target_field]
        references = tuple(value) if isinstance(value, list) else (value,)
        if not all(isinstance(r, str) for r in references):
            raise DataError(f"{where}: {target_field!r} must be a string or a list of strings")
        fields = {k: v for k, v in record.items() if isinstance(v, str) and k != target_field}
        target = references[0].strip() if references else ""
        examples.append(TaskExample(fields, target, tuple(r.strip() for r in references),
                                    str(record.get("id", number)), where))
    if not examples:
        raise DataError(f"{path}: the file is empty")
    return examples


def group_references(examples: list[TaskExample]) -> list[TaskExample]:
    """Merge examples with the same input: each becomes a reference of one example (first order kept).

    Tatoeba translates "Hi." both as 嗨。 and 你好。; scoring either against the
    other would punish a correct translation.
    """
    merged: dict[tuple, TaskExample] = {}
    for example in examples:
        key = tuple(sorted(example.fields.items()))
        if key in merged:
            first = merged[key]
            extra = tuple(r for r in example.references if r not in first.references)
            merged[key] = TaskExample(first.fields, first.target, first.references + extra, first.id, first.where,
                                      first.extra)
        else:
            merged[key] = example
    return list(merged.values())
