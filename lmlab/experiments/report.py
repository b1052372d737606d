"""The report folder: results.csv, results.md, the figures, and report.md written from the numbers.

``report.md`` says what a reader would ask first: the ranking by evaluation
bits per byte, the relative gaps (to the best, and to the n-gram baseline if
there is one, else to the file's first run), what each budget bought (tokens,
epochs, time, FLOPs, and whether the validation loss was still falling when
it ran out), and whether gaps exceed the spread over seeds.

With a finetune section the ranking is by test accuracy after fine-tuning
instead (the one score encoders and decoders share), and the report says why:
an encoder's masked-LM loss and pseudo-perplexity are not a decoder's
perplexity. Encoders alone, without one, are ranked by masked-LM loss.
"""

from __future__ import annotations

import math
from pathlib import Path

from lmlab.experiments.plots import write_plots
from lmlab.experiments.table import count, duration, flops, group, markdown_table, per_seed_table, write_csv
from lmlab.core.io import atomic_open

STILL_FALLING = 0.01  # relative drop of the validation loss over the last quarter of a run's tokens


def write_report(out, experiment, records: list[dict], missing: list[str], manifest: dict, scale: float = 1.0) -> Path:
    out = Path(out)
    split = experiment.evaluate["split"]
    write_csv(out / "results.csv", records)
    rows = group(records)
    figures = write_plots(out, records, experiment.name, split)
    header = _header(experiment, manifest, scale)
    test = Path(experiment.finetune["files"]["test"]).name if experiment.finetune else "test"
    results = [f"# {experiment.name}: results", "", *header, "", markdown_table(rows, split, test)]
    if any(len(r["seeds"]) > 1 for r in rows):
        results += ["", "Each run:", "", per_seed_table(records, split)]
    if missing:
        results += ["", f"Not run yet: {', '.join(f'`{m}`' for m in missing)}."]
    _write(out / "results.md", "\n".join(results) + "\n")
    text = [f"# {experiment.name}", ""]
    if experiment.description:
        text += [experiment.description.strip(), ""]
    text += [*header, ""]
    if any(r.get("finetune_accuracy") is not None for r in rows):
        text += accuracy_comparison(rows, manifest, split, experiment.finetune)
    elif rows and all(r["family"] == "encoder" for r in rows):
        text += masked_comparison(rows, manifest, split)
    else:
        text += comparison(rows, manifest, split)
    if missing:
        text += [f"Not run yet (the numbers above leave them out): {', '.join(f'`{m}`' for m in missing)}.", ""]
    text += ["## Tables and figures", "", "The full table is in [results.md](results.md) (one row per run in "
             "[results.csv](results.csv)).", ""]
    text += [f"![{f.stem.replace('_', ' ')}]({f.name})" for f in figures]
    _write(out / "report.md", "\n".join(text) + "\n")
    return out / "report.md"


def _header(experiment, manifest: dict, scale: float) -> list[str]:
    tokenizer, split = manifest["tokenizer"], experiment.evaluate["split"]
    evaluated = manifest["splits"][split]
    lines = [f"Data: `{experiment.data}` ({tokenizer['kind']} tokenizer, vocabulary {tokenizer['vocab_size']:,}; "
             f"{manifest['splits']['train']['tokens']:,} training tokens). Evaluated on the {split} split "
             f"({evaluated['tokens']:,} tokens, {evaluated['utf8_bytes']:,} UTF-8 bytes) from each run's "
             f"{experiment.evaluate['checkpoint']} checkpoint; bits per byte compare models across tokenizers.",
             f"Budget per run: {experiment.budget.describe()}"
             + (f", scaled by {scale:g} (a smoke run, not the experiment's figures)" if scale != 1 else "") + "."]
    own = {r.key: r.budget.describe() for r in experiment.runs if r.budget != experiment.budget}
    if own:
        lines[-1] += " Runs with their own: " + "; ".join(f"`{k}` {v}" for k, v in own.items()) + "."
    ngrams = [r.key for r in experiment.runs if r.family == "ngram"]
    if ngrams:
        lines[-1] += (f" The n-gram ({', '.join(f'`{k}`' for k in dict.fromkeys(ngrams))}) has no budget: it is "
                      "counted in one pass over the whole training split.")
    return lines


CAVEAT = ("An encoder is pretrained to fill in masked tokens, seeing both sides of each; its masked-LM loss and "
          "pseudo-perplexity (Salazar et al. 2020) are not a perplexity of the text, so they are never set against a "
          "decoder's perplexity or bits per byte. Runs are compared by what all of them can do after pretraining "
          "at the same budget: classify, after the same fine-tuning.")


def accuracy_comparison(rows: list[dict], manifest: dict, split: str, finetune: dict | None) -> list[str]:
    """Ranking by test accuracy after fine-tuning (higher is better), with the masked-LM caveat."""
    tuned = [r for r in rows if r.get("finetune_accuracy") is not None]
    ranked = sorted(tuned, key=lambda r: -r["finetune_accuracy"])
    best = ranked[0]
    test = Path(finetune["files"]["test"]).name if finetune else "the test file"
    config = (finetune or {}).get("config", {})
    done = sorted({r["finetune_steps"] for r in tuned if r.get("finetune_steps")})  # what ran (--scale shortens it)
    steps = f"{' or '.join(f'{s:,}' for s in done)} steps" if done else f"{config.get('epochs', 0):g} epoch(s)"
    lines = ["## Ranking", "",
             f"By accuracy on {test} after fine-tuning each pretrained run for classification ({steps} of batch "
             f"{config.get('batch_size', '?')}, pooling {(finetune or {}).get('pooling', 'auto')}; higher is better):",
             ""]
    for place, row in enumerate(ranked, 1):
        text = (f"{place}. `{row['key']}` ({row['family']} {row['shape']}, {row.get('finetune_pooling')} pooling): "
                f"{row['finetune_accuracy']:.2f}% accuracy, macro-F1 {row['finetune_macro_f1']:.2f}%")
        text += " — the best" if row is best else (f" — {row['finetune_accuracy'] - best['finetune_accuracy']:+.2f} "
                                                     "points against the best")
        lines.append(text + ".")
    lines += ["", "## Encoders and decoders", "", CAVEAT, ""]
    lines += _pretraining_scores(rows, split)
    lines += ["## What each budget bought", ""]
    train_tokens = manifest["splits"]["train"]["tokens"]
    lines += [f"- {_bought(row, train_tokens)}" for row in rows] + [""]
    spread = [r for r in ranked if r.get("finetune_accuracy_std") is not None]
    if spread:
        stds = [r["finetune_accuracy_std"] for r in spread]
        lines += ["## Seeds", "", f"Over seeds, the {len(spread)} repeated configuration(s) vary by {min(stds):.2f} to "
                  f"{max(stds):.2f} accuracy points (standard deviation).", ""]
    return lines


def masked_comparison(rows: list[dict], manifest: dict, split: str) -> list[str]:
    """Encoders only: ranking by masked-LM loss (same tokenizer and masking), lower is better."""
    ranked = sorted(rows, key=lambda r: r["eval_masked_loss"])
    lines = ["## Ranking", "", f"By {split} masked-LM loss (lower is better; comparable only between encoders with the "
             "same tokenizer and masking settings, as here):", ""]
    for place, row in enumerate(ranked, 1):
        lines.append(f"{place}. `{row['key']}` ({row['family']} {row['shape']}): masked loss "
                     f"{row['eval_masked_loss']:.4f}, masked accuracy {row['eval_masked_accuracy']:.2f}%.")
    lines += ["", "## What each budget bought", ""]
    train_tokens = manifest["splits"]["train"]["tokens"]
    return lines + [f"- {_bought(row, train_tokens)}" for row in rows] + [""]


def _pretraining_scores(rows: list[dict], split: str) -> list[str]:
    """Each family's own pretraining score, side by side but never ranked against the other's."""
    lines = []
    decoders = [r for r in rows if r.get("eval_bits_per_byte") is not None]
    encoders = [r for r in rows if r.get("eval_masked_loss") is not None]
    if decoders:
        lines += [f"Decoders, {split} split (next-token): "
                  + "; ".join(f"`{r['key']}` {r['eval_bits_per_byte']:.4f} bits/byte (perplexity "
                              f"{r['eval_perplexity']:.2f})" for r in decoders) + "."]
    if encoders:
        lines += [f"Encoders, {split} split (masked-LM, own columns): "
                  + "; ".join(f"`{r['key']}` masked accuracy {r['eval_masked_accuracy']:.2f}%, masked loss "
                              f"{r['eval_masked_loss']:.4f}, pseudo-perplexity {r['eval_pseudo_perplexity']:.2f}"
                              for r in encoders) + "."]
    return lines + [""] if lines else []


def comparison(rows: list[dict], manifest: dict, split: str) -> list[str]:
    """The written comparison: ranking, gaps, what each budget bought, seed spread."""
    if not rows:
        return ["No run has finished yet.", ""]
    ranked = sorted(rows, key=lambda r: r["eval_bits_per_byte"])
    best = ranked[0]
    lines = ["## Ranking", "", f"By {split} bits per byte (lower is better):", ""]
    for place, row in enumerate(ranked, 1):
        text = (f"{place}. `{row['key']}` ({row['family']} {row['shape']}): {row['eval_bits_per_byte']:.4f} bits/byte, "
                f"perplexity {row['eval_perplexity']:.2f}")
        if row is best:
            text += " — the best"
        else:
            text += (f" — {_percent(row['eval_bits_per_byte'], best['eval_bits_per_byte'])} bits/byte against the "
                     f"best (perplexity {row['eval_perplexity'] / best['eval_perplexity']:.2f}x)")
        lines.append(text + ".")
    lines.append("")
    baseline = next((r for r in rows if r["family"] == "ngram"), None)
    lines += _against(rows, baseline or rows[0], baseline is not None)
    lines += ["## What each budget bought", ""]
    train_tokens = manifest["splits"]["train"]["tokens"]
    for row in rows:
        lines.append(f"- {_bought(row, train_tokens)}")
    lines.append("")
    spread = [r for r in rows if r.get("eval_bits_per_byte_std") is not None]
    if spread:
        lines += _seeds(ranked, spread)
    return lines


def _against(rows: list[dict], baseline: dict, is_ngram: bool) -> list[str]:
    others = [r for r in rows if r is not baseline]
    if not others:
        return []
    what = "the n-gram baseline" if is_ngram else "the file's first run"
    lines = [f"## Against {what}", "",
             f"`{baseline['key']}` reaches {baseline['eval_bits_per_byte']:.4f} bits/byte "
             f"(perplexity {baseline['eval_perplexity']:.2f}) in {duration(baseline['wall_s'])}."]
    better = [r for r in others if r["eval_bits_per_byte"] < baseline["eval_bits_per_byte"]]
    lines.append(f"{len(better)} of {len(others)} other configuration(s) beat it:")
    lines.append("")
    for row in sorted(others, key=lambda r: r["eval_bits_per_byte"]):
        gap = _percent(row["eval_bits_per_byte"], baseline["eval_bits_per_byte"])
        verdict = "beats it" if row in better else "misses it"
        time_ratio = (f", in {row['wall_s'] / baseline['wall_s']:.1f}x its time"
                      if row.get("wall_s") and baseline.get("wall_s") else "")
        lines.append(f"- `{row['key']}` {verdict}: {gap} bits/byte, perplexity "
                     f"{row['eval_perplexity']:.2f} against {baseline['eval_perplexity']:.2f}{time_ratio}.")
    lines.append("")
    return lines


def _bought(row: dict, train_tokens: int) -> str:
    tokens = row["tokens_seen"] or 0
    if row["family"] == "ngram":
        return (f"`{row['key']}`: one counting pass over {count(tokens)} training tokens in {duration(row['wall_s'])} "
                f"({count(row['parameters'])} stored probabilities and back-offs; no training FLOPs) → "
                f"{row['eval_bits_per_byte']:.4f} bits/byte.")
    reached = (f"{row['eval_bits_per_byte']:.4f} bits/byte" if row.get("eval_bits_per_byte") is not None else
               f"masked loss {row['eval_masked_loss']:.4f}, masked accuracy {row['eval_masked_accuracy']:.2f}%")
    if row.get("finetune_accuracy") is not None:
        reached += f", {row['finetune_accuracy']:.2f}% accuracy fine-tuned"
    text = (f"`{row['key']}`: {count(tokens)} tokens ({tokens / max(train_tokens, 1):.2f} epochs) in "
            f"{duration(row['wall_s'])} at {count(row['tokens_per_s'])} tokens/s, {flops(row['training_flops'])} "
            f"training FLOPs, {count(row['parameters'])} parameters → {reached}")
    falling = _still_falling(row)
    if falling is not None:
        text += (f"; the validation {'masked-LM ' if row['family'] == 'encoder' else ''}loss was still falling at the end ({falling:.1%} over the last quarter): "
                 "a larger budget would buy more" if falling > STILL_FALLING else
                 "; the validation loss had levelled off by the end")
    if row.get("stopped") not in (None, "max_steps", "counted"):
        text += f" (stopped by {row['stopped'].replace('_', ' ')})"
    return text + "."


def _still_falling(row: dict) -> float | None:
    """Relative drop of the validation loss over the last quarter of the run's tokens."""
    history = row.get("history") or []
    if len(history) < 2:
        return None
    last = history[-1]
    before = [p for p in history[:-1] if p["tokens"] <= 0.75 * last["tokens"]] or history[:1]
    start = before[-1]["val_loss"]
    return (start - last["val_loss"]) / start if start > 0 else None


def _seeds(ranked: list[dict], spread: list[dict]) -> list[str]:
    stds = [r["eval_bits_per_byte_std"] for r in spread]
    lines = ["## Seeds", "",
             f"Over seeds, the {len(spread)} repeated configuration(s) vary by {min(stds):.4f} to {max(stds):.4f} "
             "bits/byte (standard deviation)."]
    for first, second in zip(ranked, ranked[1:]):
        a, b = first.get("eval_bits_per_byte_std"), second.get("eval_bits_per_byte_std")
        if a is None or b is None:
            continue
        gap = second["eval_bits_per_byte"] - first["eval_bits_per_byte"]
        noise = 2 * math.sqrt(a * a + b * b)
        lines.append(f"- `{first['key']}` ahead of `{second['key']}` by {gap:.4f} bits/byte: "
                     + ("larger than twice the seed spread, a real difference." if gap > noise else
                        "within twice the seed spread, not a reliable difference."))
    lines.append("")
    return lines


def _percent(value: float, reference: float) -> str:
    return f"{(value - reference) / reference:+.1%}"


def _write(path: Path, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
