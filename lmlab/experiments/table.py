"""The results table: one CSV row per run, and a Markdown table with mean ± std over seeds."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from lmlab.core.io import atomic_open

# Metrics averaged over the seeds of a configuration.
METRICS = ("parameters", "flops_per_token", "tokens_seen", "training_flops", "wall_s", "tokens_per_s",
           "best_val_loss", "eval_loss", "eval_perplexity", "eval_bits_per_byte", "eval_masked_loss",
           "eval_masked_accuracy", "eval_pseudo_perplexity", "finetune_accuracy", "finetune_macro_f1")
MLM_EVAL = ("masked_loss", "masked_accuracy", "pseudo_perplexity")  # an encoder's scores (lmlab.evaluation.masked)


def flatten(record: dict) -> dict:
    """A record's scalar fields, the evaluation's as ``eval_*``."""
    row = {k: v for k, v in record.items() if k not in ("eval", "history", "grid")}
    row["grid"] = ";".join(f"{k}={v}" for k, v in record.get("grid", {}).items())
    row.update({f"eval_{k}": v for k, v in record["eval"].items() if k in ("loss", "perplexity", "bits_per_byte")
                + MLM_EVAL})
    if isinstance(row.get("eval_masked_accuracy"), (int, float)):
        row["eval_masked_accuracy"] *= 100  # a percentage, as the fine-tuned accuracy
    row["eval_split"] = record["eval"].get("split")
    tuned = record.get("finetune") or {}
    row.update(finetune_accuracy=tuned.get("accuracy"), finetune_macro_f1=tuned.get("macro_f1"),
               finetune_pooling=tuned.get("pooling"), finetune_steps=tuned.get("steps"))
    row.pop("finetune", None)
    return row


def group(records: list[dict]) -> list[dict]:
    """One row per configuration (``key``), in file order: the first seed's fields, metrics as mean and std."""
    groups: dict[str, list[dict]] = {}
    for record in records:
        groups.setdefault(record["key"], []).append(record)
    rows = []
    for key, originals in groups.items():
        members = [flatten(r) for r in originals]
        row = dict(members[0], history=originals[0].get("history", []))  # the first seed's curve
        row["seeds"] = [m["seed"] for m in members]
        for metric in METRICS:
            values = [m[metric] for m in members if isinstance(m.get(metric), (int, float))]
            row[metric] = mean(values)
            row[f"{metric}_std"] = std(values)
        rows.append(row)
    return rows


def mean(values) -> float | None:
    return sum(values) / len(values) if values else None


def std(values) -> float | None:
    """Sample standard deviation (n - 1); None for fewer than two values."""
    if len(values) < 2:
        return None
    m = mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


CSV_COLUMNS = ("experiment", "id", "key", "name", "family", "shape", "seed", "grid", "parameters", "flops_per_token",
               "steps", "tokens_seen", "training_flops", "wall_s", "tokens_per_s", "train_tokens_per_s",
               "best_val_loss", "eval_split",
               "eval_loss", "eval_perplexity", "eval_bits_per_byte", "stopped", "budget", "eval_masked_loss",
               "eval_masked_accuracy", "eval_pseudo_perplexity", "finetune_pooling", "finetune_steps",
               "finetune_accuracy", "finetune_macro_f1")


def write_csv(path: Path, records: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow(flatten(record))
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(buffer.getvalue())


# ------------------------------------------------------------------ formatting


def count(value) -> str:
    """1,234 / 12.3k / 4.56M / 7.89B."""
    if value is None:
        return "—"
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:,.0f}"


def flops(value) -> str:
    return "—" if not value else f"{value:.2e}"


def duration(seconds) -> str:
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {seconds % 60:02.0f} s"
    return f"{int(seconds // 3600)} h {seconds % 3600 / 60:02.0f} min"


def with_std(row: dict, metric: str, digits: int) -> str:
    value, spread = row.get(metric), row.get(f"{metric}_std")
    if value is None:
        return "—"
    return f"{value:.{digits}f}" + (f" ± {spread:.{digits}f}" if spread is not None else "")


def markdown_table(rows: list[dict], split: str, test: str = "test") -> str:
    """One row per configuration; an accuracy column when runs were fine-tuned, masked-LM ones for encoders."""
    tuned = any(r.get("finetune_accuracy") is not None for r in rows)
    masked = any(r.get("eval_masked_loss") is not None for r in rows)
    header = ["run", "family", "parameters", "FLOPs/token", "tokens seen", "wall time", "tokens/s", "best val loss",
              f"{split} perplexity", f"{split} bits/byte"]
    header += [f"{split} masked accuracy %", f"{split} masked loss"] if masked else []
    header += [f"{test} accuracy % (fine-tuned)"] if tuned else []
    lines = ["| " + " | ".join(header + ["seeds"]) + " |", "|" + "---|" * (len(header) + 1)]
    for row in rows:
        cells = [f"`{row['key']}`", f"{row['family']} {row['shape']}", count(row["parameters"]),
                 count(row["flops_per_token"]) if row["flops_per_token"] else "— (counted)", count(row["tokens_seen"]),
                 duration(row["wall_s"]), count(row["tokens_per_s"]), with_std(row, "best_val_loss", 4),
                 with_std(row, "eval_perplexity", 2), with_std(row, "eval_bits_per_byte", 4)]
        cells += [with_std(row, "eval_masked_accuracy", 2), with_std(row, "eval_masked_loss", 4)] if masked else []
        cells += [with_std(row, "finetune_accuracy", 2)] if tuned else []
        lines.append("| " + " | ".join(cells + [", ".join(map(str, row["seeds"]))]) + " |")
    return "\n".join(lines)


def per_seed_table(records: list[dict], split: str) -> str:
    tuned = any(r.get("finetune") for r in records)
    lines = [f"| run | seed | best val loss | {split} perplexity | {split} bits/byte | {split} masked loss | "
             + ("accuracy % (fine-tuned) | " if tuned else "") + "wall time |",
             "|---|---|---|---|---|---|" + ("---|" if tuned else "") + "---|"]
    for r in records:
        e, f = r["eval"], r.get("finetune") or {}
        cells = [f"`{r['key']}`", str(r["seed"]), _fixed(r.get("best_val_loss"), 4), _fixed(e.get("perplexity"), 2),
                 _fixed(e.get("bits_per_byte"), 4), _fixed(e.get("masked_loss"), 4)]
        cells += [_fixed(f.get("accuracy"), 2)] if tuned else []
        lines.append("| " + " | ".join(cells + [duration(r["wall_s"])]) + " |")
    return "\n".join(lines)


def _fixed(value, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"
