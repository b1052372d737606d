"""An experiment's ``finetune`` section: every pretrained run fine-tuned and tested on one labelled task.

A masked-LM encoder's pseudo-perplexity is not a decoder's perplexity (each
token sees both sides), so encoders and decoders are ranked together only by
what both can do after pretraining at the same budget: classify, here
through :func:`lmlab.tasks.finetune` and :func:`lmlab.tasks.evaluate_task`::

    finetune:
      task: classify                      # the one task compare ranks by (accuracy)
      train: $LMLAB_DATA/sst2/train.tsv   # labelled file (lmlab finetune --train)
      valid: ...                          # optional; else valid_fraction of train is held out
      test: $LMLAB_DATA/sst2/dev.tsv      # scored after fine-tuning: the accuracy column
      limit: 4000                         # the first N training examples (optional)
      test_limit: 500                     # the first N test examples (optional)
      steps: 200                          # or epochs: 1
      pooling: auto                       # cls for encoders, last for decoders; or last, mean, cls
      batch_size: 32                      # and other FinetuneConfig fields

Each run's fine-tuning goes to ``RUN/finetune/`` and its completion (with the
test metrics and the section it was made with) to ``RUN/finetuned.json``, so a
sweep interrupted there neither pretrains nor evaluates again. As for the
pretraining config, a run fine-tuned with another section (or without one, or
with one that the file no longer has) is refused before any run starts, naming
the field (:func:`check_finetuned`).
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from lmlab.core.errors import ConfigError
from lmlab.core.io import read_json, write_json
from lmlab.experiments.fields import as_mapping, at, check_known, expand_path, positive_int
from lmlab.experiments.records import DONE
from lmlab.models import registry
from lmlab.tasks.config import FinetuneConfig
from lmlab.tasks.finetune import finetune as finetune_run
from lmlab.tasks.folder import CONFIG

FOLDER = "finetune"  # RUN/finetune: an ordinary lmlab finetune output folder
FINETUNED = "finetuned.json"  # the stage is done: fine-tuning results and test metrics
FILE_KEYS = ("train", "valid", "test")
DATA_KEYS = ("format", "text_column", "label_column", "limit", "test_limit")
RENAMED = {"steps": "max_steps"}  # the section's spelling -> FinetuneConfig's
SPELLED = {v: k for k, v in RENAMED.items()}  # FinetuneConfig's name -> the section's
POOLING_AUTO = {"encoder": "cls"}  # every other family: last (the end token has seen the whole text)


def _config_keys() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(FinetuneConfig) if f.name != "max_steps") + tuple(RENAMED)


def parse_finetune(data, place: str) -> dict:
    """Check the section (fields, task, files, FinetuneConfig values); returns what the sweep needs."""

    data = as_mapping(data, place, "finetune")
    check_known(data, FILE_KEYS + DATA_KEYS + _config_keys(), place, "field(s)")
    task = data.get("task", "classify")
    if task != "classify":
        raise ConfigError(f"{place}.task: compare ranks runs by classification accuracy after fine-tuning, so the "
                          f"task must be classify, got {task!r}")
    files = {}
    for key in FILE_KEYS:
        if key not in data:
            if key == "valid":
                continue
            raise ConfigError(f"{place}.{key}: give the labelled {key} file (e.g. $LMLAB_DATA/sst2/"
                              f"{'train' if key == 'train' else 'dev'}.tsv)")
        if not isinstance(data[key], str) or not data[key]:
            raise ConfigError(f"{place}.{key} must be a file path, got {data[key]!r}")
        path = expand_path(data[key])
        if not Path(path).is_file():
            raise ConfigError(f"{place}.{key}: no such file {path}")
        files[key] = path
    options = {k: data[k] for k in DATA_KEYS if k in data}
    for key in ("limit", "test_limit"):
        if key in options:
            positive_int(options[key], f"{place}.{key}")
    fields = {RENAMED.get(k, k): v for k, v in data.items() if k not in FILE_KEYS + DATA_KEYS}
    pooling = fields.pop("pooling", "auto")
    with at(place):
        config = FinetuneConfig(**fields, pooling="last" if pooling == "auto" else pooling)
    return {"files": files, "options": options, "pooling": pooling, "config": config.to_dict()}


def check_run_for_finetune(run, finetune: dict, place: str) -> None:
    """What each run must be to be fine-tuned: neural, and a pooling that reads its whole text."""

    if not registry.family(run.family).neural:
        raise ConfigError(f"{place}: an n-gram cannot be fine-tuned for classification; drop the run or the "
                          "finetune section")
    if finetune["pooling"] == "cls" and run.family != "encoder":
        raise ConfigError(f"{place}: finetune.pooling cls reads the first token's state, which a causal "
                          f"{run.family} computes from that token alone; use pooling auto (cls for encoders, "
                          "last for decoders), last or mean")


def config_for(finetune: dict, family: str, scale: float = 1.0):
    """The run's FinetuneConfig: ``pooling auto`` becomes cls for an encoder, last for a decoder.

    ``scale`` (a smoke run's ``--scale``) shortens the fine-tuning as it shortens pretraining.
    """

    fields = dict(finetune["config"])
    if fields["pooling"] == "last" and finetune["pooling"] == "auto":
        fields["pooling"] = POOLING_AUTO.get(family, "last")
    if scale != 1:
        if fields["max_steps"]:
            fields["max_steps"] = max(1, round(fields["max_steps"] * scale))
        else:
            fields["epochs"] = fields["epochs"] * scale
        fields["eval_interval"] = min(fields["eval_interval"], fields["max_steps"]) if fields["max_steps"] else 0
    return FinetuneConfig.from_dict(fields)


def run_finetune(finetune: dict, family: str, run_folder: Path, checkpoint: str = "best", scale: float = 1.0,
                 log=print) -> dict:
    """Fine-tune ``run_folder`` and test it; idempotent (``FINETUNED`` records completion).

    A fine-tuning cut short leaves ``RUN/finetune`` without ``FINETUNED``: it starts over (it has no resume),
    while the pretrained run is kept.
    """
    from lmlab.tasks.evaluate import evaluate_task

    run_folder = Path(run_folder)
    if (run_folder / FINETUNED).exists():
        return read_json(run_folder / FINETUNED, "fine-tuning record")
    out = run_folder / FOLDER
    shutil.rmtree(out, ignore_errors=True)
    config = config_for(finetune, family, scale)
    files, options = finetune["files"], finetune["options"]
    data_options = {k: v for k, v in options.items() if k != "test_limit"}
    trained = finetune_run(run_folder, out, files["train"], files.get("valid"), config, data_options,
                           checkpoint=checkpoint, log=lambda m: log("    " + m))
    test_options = {k: v for k, v in options.items() if k in ("format", "text_column", "label_column")}
    tested = evaluate_task(out, files["test"], task="classify", limit=options.get("test_limit"),
                           out=out / "test_metrics.json", data_options=test_options)
    record = {"task": "classify", "pooling": config.pooling, "steps": trained.get("steps"),
              "seconds": trained.get("seconds"), "val_accuracy": trained.get("val_accuracy"),
              "test": files["test"], "test_examples": tested.get("examples"),
              "accuracy": tested.get("accuracy"), "macro_f1": tested.get("macro_f1"),
              "confusion_matrix": tested.get("confusion_matrix"), "labels": tested.get("labels"),
              "section": section_of(finetune, config)}
    write_json(run_folder / FINETUNED, record)
    return record


def section_of(finetune: dict, config) -> dict:
    """What a run is fine-tuned with, by the section's field names: the files, the data options (None when not
    given) and the run's FinetuneConfig (pooling auto resolved, steps scaled by ``--scale``)."""
    return ({k: finetune["files"].get(k) for k in FILE_KEYS} | {k: finetune["options"].get(k) for k in DATA_KEYS}
            | {SPELLED.get(k, k): v for k, v in config.to_dict().items()})


def check_finetuned(finetune: dict | None, family: str, run_folder: Path, scale: float = 1.0) -> None:
    """A run already fine-tuned must have been fine-tuned with the section the file now gives (or none without one).

    As ``sweep._check_existing`` for the pretraining config: a difference is an error naming the field, since the
    sweep would otherwise reuse the old result. A fine-tuning cut short is not checked: it starts over anyway.
    """
    run_folder = Path(run_folder)
    if (run_folder / FINETUNED).exists():
        record = read_json(run_folder / FINETUNED, "fine-tuning record")
    elif (run_folder / DONE).exists():
        record = read_json(run_folder / DONE, "run record").get("finetune")
    else:
        return
    again = (f"keep the file as it was, choose another --out, or delete {run_folder / DONE} and "
             f"{run_folder / FINETUNED} to fine-tune it again (the pretrained run is kept)")
    if record is None and finetune is None:
        return
    if record is None:
        raise ConfigError(f"{run_folder} was done without fine-tuning, but the experiment now has a finetune "
                          f"section; {again}")
    if finetune is None:
        raise ConfigError(f"{run_folder} was fine-tuned, but the experiment now has no finetune section; {again}")
    wanted = section_of(finetune, config_for(finetune, family, scale))
    saved = _saved_section(record, run_folder)
    differ = [k for k in wanted if k in saved and not _same(k, saved[k], wanted[k])]
    if differ:
        details = ", ".join(f"finetune.{k}: {saved[k]!r} on disk, {wanted[k]!r} now" for k in differ)
        raise ConfigError(f"{run_folder} was fine-tuned with another finetune section ({details}); {again}")


def _saved_section(record: dict, run_folder: Path) -> dict:
    """The section a run was fine-tuned with; a FinetuneConfig field missing on disk counts as its default.

    A record from before lmlab kept ``section`` is read from ``RUN/finetune/config.json`` (the config and the
    training files) and the record's test file; its data options are unknown, so they are not compared.
    """

    defaults = {SPELLED.get(f.name, f.name): f.default for f in dataclasses.fields(FinetuneConfig)}
    if "section" in record:
        return defaults | record["section"]
    stored = {"test": record.get("test")}
    path = run_folder / FOLDER / CONFIG
    if path.exists():
        config = read_json(path, "fine-tuned config")
        stored |= {SPELLED.get(k, k): v for k, v in config.get("finetune", {}).items()}
        stored |= {"train": config.get("train_file"), "valid": config.get("valid_file")}
    return defaults | stored


def _same(key: str, saved, wanted) -> bool:
    if key in FILE_KEYS and saved is not None and wanted is not None:
        return Path(saved).resolve() == Path(wanted).resolve()
    return saved == wanted
