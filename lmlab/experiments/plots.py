"""The report's figures (matplotlib, Agg backend: no display needed).

- validation loss against tokens seen, and against wall-clock time, for every run;
- evaluation bits per byte against parameters, and against training compute
  (log scales: both span orders of magnitude).

A configuration keeps one colour across its seeds and across figures; each
figure has one legend. The n-gram has no training FLOPs: on the compute figure
it is a dashed horizontal line, its validation curve a single point (counted once).
An encoder's validation curve is its masked-LM loss, dashed and labelled so (it is not a
next-token loss); it has no bits per byte, so the bits-per-byte figures leave it out. With a
finetune section, a figure of the fine-tuned accuracy against training compute is added.
"""

from __future__ import annotations

from pathlib import Path

from lmlab.experiments.table import group

MARKERS = {"transformer": "o", "rnn": "s", "gated_cnn": "^", "ngram": "*", "encoder": "D"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colors(records: list[dict]) -> dict[str, tuple]:
    plt = _pyplot()
    keys = list(dict.fromkeys(r["key"] for r in records))
    cmap = plt.get_cmap("tab10" if len(keys) <= 10 else "tab20")
    return {key: cmap(i % cmap.N) for i, key in enumerate(keys)}


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    tmp.replace(path)
    _pyplot().close(fig)
    return path


def curves(records: list[dict], x: str, path: Path, title: str) -> Path:
    """Validation loss per run against ``x``: ``tokens`` or ``elapsed_s``."""
    plt = _pyplot()
    colors = _colors(records)
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    labelled = set()
    longest = max((p["elapsed_s"] or 0 for r in records for p in r["history"]), default=0)
    minutes = x == "elapsed_s" and longest > 120
    for record in records:
        points = [p for p in record["history"] if p.get(x) is not None]
        if not points:
            continue
        xs = [p[x] / 60 if minutes else p[x] for p in points]
        ys = [p["val_loss"] for p in points]
        masked = record["family"] == "encoder"
        label = None if record["key"] in labelled else record["key"] + (" (masked-LM loss)" if masked else "")
        labelled.add(record["key"])
        marker = MARKERS.get(record["family"], "o")
        if len(points) == 1:
            ax.plot(xs, ys, linestyle="none", marker=marker, markersize=11, color=colors[record["key"]], label=label)
        else:
            ax.plot(xs, ys, marker=marker, markersize=3.5, linewidth=1.4, color=colors[record["key"]], label=label,
                    linestyle="--" if masked else "-")
    _log_if_wide(ax, [p[x] / 60 if minutes else p[x] for r in records for p in r["history"] if p.get(x)])
    ax.set_xlabel("tokens seen in training" if x == "tokens" else
                  f"training wall-clock time ({'minutes' if minutes else 'seconds'})")
    ax.set_ylabel("validation loss (nats per token)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if labelled:
        ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


def _log_if_wide(ax, values) -> None:
    """A log axis when the values span more than 30x (an n-gram's whole pass beside short neural runs)."""
    values = [v for v in values if v > 0]
    if values and max(values) / min(values) > 30:
        ax.set_xscale("log")


def scaling(records: list[dict], x: str, path: Path, title: str, split: str,
            metric: str = "eval_bits_per_byte") -> Path:
    """Mean ``metric`` (± std over seeds) per configuration against ``parameters`` or ``training_flops``.

    ``metric``: evaluation bits per byte (runs without it, encoders, are left out) or ``finetune_accuracy``.
    """
    plt = _pyplot()
    colors = _colors(records)
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    any_point = False
    for row in group(records):
        y, spread = row[metric], row[f"{metric}_std"]
        if y is None:
            continue
        if row[x] and row[x] > 0:
            ax.errorbar([row[x]], [y], yerr=[spread] if spread else None, linestyle="none", capsize=3,
                        marker=MARKERS.get(row["family"], "o"), markersize=8, color=colors[row["key"]],
                        label=row["key"])
            any_point = True
        else:  # no training compute (the n-gram): a reference line across the figure
            ax.axhline(y, linestyle="--", linewidth=1.2, color=colors[row["key"]],
                       label=f"{row['key']} (counted, no training FLOPs)")
    if any_point:
        ax.set_xscale("log")
        low, high = ax.get_xlim()
        if high / low < 10:  # show at least a decade, so the log axis has labelled ticks
            middle = (low * high) ** 0.5
            ax.set_xlim(middle / 10 ** 0.5, middle * 10 ** 0.5)
    counted = any(r["family"] == "ngram" for r in records)
    ax.set_xlabel(("parameters (n-gram: its probabilities and back-off weights)" if counted else "parameters")
                  if x == "parameters" else "training compute (FLOPs = FLOPs per token × tokens seen)")
    ax.set_ylabel(f"{split} bits per byte (lower is better)" if metric == "eval_bits_per_byte" else
                  "test accuracy after fine-tuning, % (higher is better)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


def write_plots(out: Path, records: list[dict], name: str, split: str) -> list[Path]:
    if not records:
        return []
    figures = []
    if any(r.get("finetune") for r in records):
        figures.append(scaling(records, "training_flops", out / "accuracy_vs_compute.png",
                               f"{name}: accuracy after fine-tuning against pretraining compute", split,
                               "finetune_accuracy"))
    if not any(r["eval"].get("bits_per_byte") is not None for r in records):  # encoders only
        return figures + [curves(records, "tokens", out / "val_loss_vs_tokens.png",
                                 f"{name}: validation loss against tokens")]
    return figures + [
        curves(records, "tokens", out / "val_loss_vs_tokens.png", f"{name}: validation loss against tokens"),
        curves(records, "elapsed_s", out / "val_loss_vs_time.png", f"{name}: validation loss against time"),
        scaling(records, "parameters", out / "bits_per_byte_vs_parameters.png",
                f"{name}: {split} bits per byte against model size", split),
        scaling(records, "training_flops", out / "bits_per_byte_vs_compute.png",
                f"{name}: {split} bits per byte against training compute", split),
    ]
