"""Minimal pairs: does a model give the acceptable sentence the higher probability? (BLiMP and your own pairs)

A pair is right when the good sentence's total log-probability (:mod:`lmlab.evaluation.score`: the
chain rule for decoders, back-off probabilities for n-grams, the pseudo-log-likelihood for masked
LMs) is strictly higher than the bad one's: BLiMP's full-sentence method (Warstadt et al. 2020). A
tie is wrong (BLiMP has 7 pairs whose two sentences are identical; no model is right on them).
Accuracy is reported overall, per field and per paradigm. A pair with a sentence that cannot be scored
(no token left after tokenizing) counts as wrong and is counted in ``unscored``.

Formats (a file, or a folder of ``.jsonl``/``.csv`` files read in name order):

* BLiMP's JSONL: ``sentence_good``, ``sentence_bad``, ``field``, ``linguistics_term``, ``UID`` (the
  paradigm; one file per paradigm in the release);
* generic JSONL: ``good``, ``bad``, optional ``group`` (the paradigm) and ``field``;
* CSV with a header row naming the same columns (``good``, ``bad``, optional ``group``, ``field``).

Without a paradigm a pair's group is its file's name without the extension. A line that cannot be
read (not JSON, a missing or empty sentence) stops with its file and line number.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lmlab.core.errors import DataError
from lmlab.core.io import atomic_open, write_json
from lmlab.evaluation.score import Line, score_lines, scorer_for
from lmlab.runs.load import LoadedRun, load_run


@dataclass
class Pair:
    good: str
    bad: str
    group: str  # the paradigm (BLiMP's UID)
    field: str = ""
    term: str = ""  # BLiMP's linguistics_term


def _pair(record, where: str, default_group: str) -> Pair:
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected an object with good and bad sentences")
    good, bad = record.get("sentence_good", record.get("good")), record.get("sentence_bad", record.get("bad"))
    for name, value in (("good", good), ("bad", bad)):
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"{where}: the {name} sentence is missing or empty")
    group = record.get("UID") or record.get("group") or default_group
    return Pair(good, bad, str(group), str(record.get("field") or ""), str(record.get("linguistics_term") or ""))


def read_pair_file(path: Path) -> list[Pair]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 (byte {error.start})") from None
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames or not {"good", "bad"} <= set(reader.fieldnames):
            raise DataError(f"{path}: a pair CSV needs a header row with good and bad columns")
        return [_pair(row, f"{path}:{n}", path.stem) for n, row in enumerate(reader, 2)]
    pairs = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as error:
            raise DataError(f"{path}:{n}: not JSON ({error})") from None
        pairs.append(_pair(record, f"{path}:{n}", path.stem))
    return pairs


def read_pairs(source, limit: int | None = None) -> list[Pair]:
    """The pairs of a file or a folder of them; ``limit``: the first ``limit`` pairs of each paradigm."""
    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in (".jsonl", ".csv", ".json"))
        if not files:
            raise DataError(f"{source}: no .jsonl or .csv pair files")
    elif source.exists():
        files = [source]
    else:
        raise DataError(f"{source}: no such file or folder")
    pairs, seen = [], defaultdict(int)
    for path in files:
        for pair in read_pair_file(path):
            if limit is None or seen[pair.group] < limit:
                seen[pair.group] += 1
                pairs.append(pair)
    if not pairs:
        raise DataError(f"{source}: no pairs")
    return pairs


def _accuracy(rights: list[bool]) -> dict:
    return {"accuracy": sum(rights) / len(rights), "pairs": len(rights)}


def evaluate_pairs(run, pairs: list[Pair], batch_size: int = 32, checkpoint: str = "best", progress: bool = False,
                   keep_scores: bool = False) -> dict:
    """Accuracy of a run (a folder or a loaded run) on minimal pairs, overall, per field and per paradigm.

    ``keep_scores``: also return each pair's two log-probabilities (``scores``: ``[good, bad]``)."""
    if not isinstance(run, LoadedRun):
        run = load_run(run, checkpoint)
    scorer = scorer_for(run, batch_size)
    lines = (Line(n, text) for n, text in enumerate((s for p in pairs for s in (p.good, p.bad)), 1))
    records = score_lines(scorer, lines, progress=progress, total=2 * len(pairs))
    right, scores, unscored = [], [], 0
    for pair in pairs:
        good, bad = next(records), next(records)
        if "error" in good or "error" in bad:  # e.g. no token left after tokenizing: counted, and wrong
            unscored += 1
        scores.append([good.get("logprob"), bad.get("logprob")])
        right.append("error" not in good and "error" not in bad and good["logprob"] > bad["logprob"])
    by_field, by_group, about = defaultdict(list), defaultdict(list), {}
    for pair, ok in zip(pairs, right):
        by_group[pair.group].append(ok)
        about[pair.group] = {"field": pair.field, "term": pair.term}
        if pair.field:
            by_field[pair.field].append(ok)
    result = {"run": str(run.folder), "checkpoint": run.checkpoint.name, "method": scorer.method,
              **_accuracy(right), "unscored": unscored,
              "fields": {f: _accuracy(v) for f, v in sorted(by_field.items())},
              "paradigms": {g: {**about[g], **_accuracy(v)} for g, v in sorted(by_group.items())}}
    if keep_scores:
        result["scores"] = scores
    return result


def table(result: dict) -> str:
    """A markdown table: overall, then each field, then each paradigm."""
    rows = ["| | pairs | accuracy (%) |", "|---|---:|---:|",
            f"| **overall** | {result['pairs']:,} | {100 * result['accuracy']:.1f} |"]
    rows += [f"| field: {name} | {v['pairs']:,} | {100 * v['accuracy']:.1f} |" for name, v in result["fields"].items()]
    rows += [f"| {name} | {v['pairs']:,} | {100 * v['accuracy']:.1f} |" for name, v in result["paradigms"].items()]
    return "\n".join(rows)


def plot(result: dict, path) -> Path:
    """A horizontal bar chart of each paradigm's accuracy (coloured by field), chance and overall marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(result["paradigms"], key=lambda g: (result["paradigms"][g]["field"], g))
    fields = sorted({result["paradigms"][g]["field"] for g in names})
    colours = {f: plt.get_cmap("tab10")(i % 10) for i, f in enumerate(fields)}
    figure, axes = plt.subplots(figsize=(8, max(2.5, 0.22 * len(names) + 1)))
    axes.barh(range(len(names)), [100 * result["paradigms"][g]["accuracy"] for g in names],
              color=[colours[result["paradigms"][g]["field"]] for g in names])
    axes.set_yticks(range(len(names)), names, fontsize=7)
    axes.invert_yaxis()
    axes.axvline(50, color="grey", linestyle=":", label="chance")
    axes.axvline(100 * result["accuracy"], color="black", linestyle="--",
                 label=f"overall {100 * result['accuracy']:.1f}%")
    for field in fields if any(fields) else ():
        axes.barh([0], [0], color=colours[field], label=field)
    axes.set_xlim(0, 100)
    axes.set_xlabel("accuracy (%)")
    axes.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    path = Path(path)
    with atomic_open(path, "wb") as handle:
        figure.savefig(handle, format="png", dpi=120)
    plt.close(figure)
    return path


def write_results(result: dict, out, source: str, log: Callable[[str], None] = lambda m: None) -> Path:
    """``results.json``, ``results.md`` (the table) and ``accuracy.png`` in folder ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", {**result, "data": source})
    with atomic_open(out / "results.md", "w", encoding="utf-8") as handle:
        handle.write(f"# Minimal pairs: {result['run']}\n\n{result['pairs']:,} pairs from `{source}`, "
                     f"scored by `{result['method']}`; right when the good sentence has the higher total "
                     f"log-probability.\n\n{table(result)}\n")
    plot(result, out / "accuracy.png")
    log(f"wrote {out / 'results.json'}, {out / 'results.md'} and {out / 'accuracy.png'}")
    return out


def chance_note(result: dict) -> str:
    """How far the overall accuracy is from chance, in standard errors (a quick sanity line)."""
    n = result["pairs"]
    return f"{(result['accuracy'] - 0.5) / math.sqrt(0.25 / n):+.1f} standard errors from chance ({n:,} pairs)"
