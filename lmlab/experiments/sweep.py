"""Running an experiment: runs one after another, each in its own ordinary run folder; resumable.

Output folder (default ``runs/compare/<name>``)::

    experiment.json        the resolved plan: every run's complete training config
    runs/<run id>/         an ordinary lmlab run folder (lmlab eval / generate work on it)
        trained.json       the trainer's results and timing, before evaluation
        evaluated.json     the evaluation (bits per byte; masked-LM scores for an encoder)
        finetune/, finetuned.json   with a finetune section: the fine-tuned classifier, its test metrics
        done.json          the run's record, written atomically once it is evaluated
    results.csv, results.md, report.md, *.png   (see lmlab.experiments.report)

Everything is checked before the first run starts: the file, the data (made
by the ``prepare`` section when missing), every run's config and budget, and
that runs already on disk were made with the same configs (and fine-tuned with
the same ``finetune`` section). A re-run of the
same command skips runs with ``done.json``, resumes a half-trained neural run
exactly from its last checkpoint (the trainer's resume), evaluates a trained
one, and recounts an n-gram whose count did not finish. With a finetune section
(:mod:`lmlab.experiments.finetune`) each run is then fine-tuned and tested; a
fine-tuning cut short starts over without pretraining again.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from lmlab.core.errors import ConfigError, DataError
from lmlab.core.io import atomic_open, read_json, read_text, write_json
from lmlab.data.prepare import prepare
from lmlab.data.readers import expand_paths
from lmlab.data.shards import MANIFEST, load_manifest
from lmlab.evaluation.perplexity import evaluate_run
from lmlab.experiments.budget import PlannedRun, resolve_runs
from lmlab.experiments.finetune import check_finetuned, run_finetune
from lmlab.experiments.records import DONE, EVALUATED, TRAINED, make_record, read_record
from lmlab.experiments.report import write_report
from lmlab.experiments.spec import Experiment, expand_path, load_experiment
from lmlab.experiments.table import duration
from lmlab.tokenizers.wordpiece import train_wordpiece
from lmlab.training.config import upgrade_fields
from lmlab.training.trainer import train

PLAN = "experiment.json"
RUNS = "runs"


@dataclass
class SweepResult:
    out: Path
    records: list  # done records of the experiment's runs, in file order
    missing: list  # ids of runs not done yet (not selected, or a dry run)
    planned: list  # PlannedRun of the selected runs
    report: Path | None = None


def run_experiment(experiment, out=None, *, scale: float = 1.0, only=(), data=None, dry_run: bool = False,
                   progress: bool = False, log=print) -> SweepResult:
    """Python API for ``lmlab compare``: check, run (or resume) every run, then write the report.

    ``experiment`` is a path to a YAML file or an :class:`Experiment`; ``scale``
    multiplies every budget (and warm-up) for smoke runs; ``only`` keeps the runs
    whose id, configuration or name matches a glob; ``data`` replaces the
    file's data folder; ``dry_run`` checks and prints the plan without training.
    """

    experiment = experiment if isinstance(experiment, Experiment) else load_experiment(experiment)
    if data:
        experiment = dataclasses.replace(experiment, data=expand_path(str(data)), prepare=None)
    selected = {r.id for r in experiment.select(only).runs}
    out = Path(out) if out else Path("runs") / "compare" / experiment.name
    manifest = _data(experiment, dry_run, log)
    if manifest is None:  # a dry run without the data: only what the file alone says
        for run in experiment.runs:
            if run.id in selected:
                what = (f"{run.family} {run.fields.get('shape', 'shakespeare-char')} ({run.budget.describe()})"
                        if run.family != "ngram" else "ngram (counted in one pass, no budget)")
                log(f"  {run.id}: {what}")
        _log_finetune(experiment, log)
        return SweepResult(out, [], sorted(selected), [])
    every = resolve_runs(experiment, manifest, scale)
    planned = [p for p in every if p.id in selected]
    for run in planned:
        _check_existing(run, out / RUNS / run.id)
        check_finetuned(experiment.finetune, run.config.family, out / RUNS / run.id, scale)
    done = sum((out / RUNS / p.id / DONE).exists() for p in planned)
    log(f"experiment {experiment.name}: {len(planned)} run(s), {done} already done; budget per run "
        f"{experiment.budget.describe()}{f' x {scale:g}' if scale != 1 else ''}; data {experiment.data} -> {out}")
    if dry_run:
        for run in planned:
            log(f"  {run.id}: {run.describe()}")
        _log_finetune(experiment, log)
        return SweepResult(out, [], [p.id for p in planned], planned)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / PLAN, {"name": experiment.name, "source": experiment.source, "data": experiment.data,
                            "scale": scale, "evaluate": experiment.evaluate, "finetune": experiment.finetune,
                            "runs": [{"id": p.id, "key": p.spec.key, "train": p.config.to_dict(),
                                      "parameters": p.parameters, "flops_per_token": p.flops_per_token,
                                      "tokens_per_step": p.tokens_per_step} for p in every]})
    started = time.perf_counter()
    for number, run in enumerate(planned, 1):
        folder = out / RUNS / run.id
        state = "done, skipped" if (folder / DONE).exists() else (
            "resuming" if (folder / "config.json").exists() else "starting")
        log(f"[{number}/{len(planned)}] {run.id} ({state}): {run.describe()}")
        record = execute(experiment, run, folder, progress, log, scale)
        log(f"[{number}/{len(planned)}] {run.id}: {_scores(record)}; {duration(record['wall_s'])} of training; "
            f"sweep {duration(time.perf_counter() - started)} so far")
    records, missing = [], []
    for run in every:
        path = out / RUNS / run.id / DONE
        if path.exists():
            records.append(read_record(path))
        else:
            missing.append(run.id)
    report = write_report(out, experiment, records, missing, manifest, scale)
    log(f"report: {report} ({len(records)} run(s){f', {len(missing)} not run yet' if missing else ''})")
    return SweepResult(out, records, missing, planned, report)


def execute(experiment: Experiment, run: PlannedRun, folder: Path, progress: bool = False, log=print,
            scale: float = 1.0) -> dict:
    """Train (or resume), evaluate (and fine-tune) one run; return its record. Idempotent."""

    if (folder / DONE).exists():
        return read_record(folder / DONE)
    trained = _trained(run, folder)
    if trained is None:
        say = lambda message: log("    " + message)  # noqa: E731 - indent the trainer's lines
        if run.neural:
            resume = (folder / "config.json").exists()
            trained = train(run.config, folder, resume=resume, progress=progress, log=say)
        else:
            shutil.rmtree(folder, ignore_errors=True)  # a count cut short: count again (one pass, seconds)
            start = time.perf_counter()
            trained = train(run.config, folder, log=say)

            trained |= {"wall_s": time.perf_counter() - start,
                        "tokens_seen": load_manifest(run.config.data)["splits"]["train"]["tokens"]}
        write_json(folder / TRAINED, trained)
    options = experiment.evaluate
    if (folder / EVALUATED).exists():
        evaluation = read_json(folder / EVALUATED, "evaluation")
    else:
        evaluation = evaluate_run(folder, split=options["split"], stride=options["stride"],
                                  batch_size=options["batch_size"], checkpoint=options["checkpoint"])
        evaluation |= {"split": options["split"]}
        write_json(folder / EVALUATED, evaluation)
    finetuned = None
    if experiment.finetune is not None:
        log(f"    fine-tuning for {experiment.finetune['config']['task']} ...")
        finetuned = run_finetune(experiment.finetune, run.config.family, folder, options["checkpoint"], scale, log)
    record = make_record(experiment.name, run, folder, trained, evaluation, finetuned)
    write_json(folder / DONE, record)
    return record


def _log_finetune(experiment: Experiment, log) -> None:
    if experiment.finetune is None:
        return
    f, c = experiment.finetune, experiment.finetune["config"]
    length = f"{c['max_steps']:,} steps" if c["max_steps"] else f"{c['epochs']:g} epoch(s)"
    limit = f" (first {f['options']['limit']:,} examples)" if f["options"].get("limit") else ""
    log(f"  then each run fine-tuned for {c['task']} on {f['files']['train']}{limit}, {length} of {c['batch_size']}, "
        f"pooling {f['pooling']}; tested on {f['files']['test']}: ranked by that accuracy")


def _scores(record: dict) -> str:
    """The run's line in the log: what it reached (the fine-tuned accuracy first, when there is one)."""
    e = record["eval"]
    parts = []
    if record.get("finetune"):
        parts.append(f"test accuracy {record['finetune']['accuracy']:.2f}% after fine-tuning")
    if e.get("bits_per_byte") is not None:
        parts.append(f"{e['split']} {e['bits_per_byte']:.4f} bits/byte, perplexity {e['perplexity']:.2f}")
    if e.get("masked_accuracy") is not None:
        parts.append(f"{e['split']} masked accuracy {100 * e['masked_accuracy']:.2f}%, masked loss "
                     f"{e['masked_loss']:.4f}")
    return "; ".join(parts)


def _trained(run: PlannedRun, folder: Path) -> dict | None:
    """The training results if training finished (for any reason), else None."""
    if (folder / TRAINED).exists():
        return read_json(folder / TRAINED, "training results")
    if run.neural and (folder / "results.json").exists():  # killed between the trainer's end and TRAINED
        return read_json(folder / "results.json", "training results")
    return None


def _check_existing(run: PlannedRun, folder: Path) -> None:
    """A run already on disk must have been made with the config the file now gives it."""
    path = folder / "config.json"
    if not path.exists():
        return
    wanted = run.config.to_dict()
    # A field lmlab gained after the run was made counts as its default (what the run used).
    defaults = {f.name: f.default for f in dataclasses.fields(run.config) if f.default is not dataclasses.MISSING}
    saved_train = upgrade_fields(read_json(path, "run config").get("train", {}), str(path))  # preset: shape's old name
    saved = {k: v for k, v in defaults.items() if k in wanted} | saved_train
    if Path(saved.get("data", "")).resolve() != Path(wanted["data"]).resolve():
        differ = ["data"]
    else:
        # An n-gram is counted from its data and model options alone; the training fields do not touch it.
        fields = [k for k in wanted if k != "data" and (run.neural or k in ("family", "model"))]
        differ = sorted(k for k in fields if saved.get(k) != wanted[k]
                        and not (k == "precision" and wanted[k] == "auto"))  # auto is saved as what it chose
    if differ:
        details = ", ".join(f"{k}: {saved.get(k)!r} on disk, {wanted[k]!r} now" for k in differ)
        raise ConfigError(f"{folder} was made with another config ({details}); keep the file as it was, "
                          "choose another --out, or delete that run folder")


def _data(experiment: Experiment, dry_run: bool, log) -> dict | None:
    """The data's manifest, made by the prepare section when the folder has none yet."""

    folder = Path(experiment.data)
    if not (folder / MANIFEST).exists():
        if experiment.prepare is None:
            try:
                load_manifest(folder)
            except DataError as error:
                raise DataError(f"{experiment.source}: data: {error}; prepare it with lmlab prepare or add a "
                                "prepare section to the experiment") from None
        if dry_run:
            log(f"{experiment.data} will be prepared from {', '.join(experiment.prepare['sources'])}; "
                "checks that need the data are left for the real run")
            return None

        options = dict(experiment.prepare)
        sources, workers = options.pop("sources"), options.pop("workers")
        if "wordpiece" in options:
            options["tokenizer"] = str(_wordpiece(folder, options.pop("wordpiece"), log))
        log(f"preparing {experiment.data} from {', '.join(sources)} ...")
        prepare(sources, folder, workers=workers, log=lambda m: log("    " + m), **options)
    return load_manifest(folder)


def _wordpiece(folder: Path, options: dict, log) -> Path:
    """``prepare.wordpiece``: a WordPiece tokenizer (with [MASK]) trained on the training files, beside the data."""

    path = folder.with_name(folder.name + ".wordpiece.json")
    if path.exists():
        return path
    files = [p for spec in options["texts"] for p in expand_paths(spec)]
    log(f"training a WordPiece tokenizer ({options['vocab_size']:,} tokens) on {', '.join(map(str, files))} ...")
    lines = (line for f in files for line in read_text(Path(f), "text file").splitlines() if line.strip())
    text = train_wordpiece(lines, options["vocab_size"], options["lowercase"], options["min_freq"])
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path
