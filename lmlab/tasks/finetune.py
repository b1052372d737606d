"""``lmlab finetune``: a pretrained run fine-tuned for classification, conditional generation, extractive QA
or continued pre-training on plain text (``--task lm``, :mod:`lmlab.tasks.lm`).

The loop: batches from :mod:`lmlab.tasks.batching`, compiled steps from
:class:`lmlab.training.steps.TaskStepper`, the optimizer and schedule of pre-training
(:func:`lmlab.training.trainer.build_optimizer`: AdamW, warm-up, cosine
decay, clipping), a validation every ``eval_interval`` steps (default: each
epoch) and a checkpoint whenever it improves (classification: accuracy;
generation: completion loss; lm: token loss), written by :mod:`lmlab.tasks.folder`. With
``lora_rank`` the language model is frozen and only LoRA adapters on its
projections (:mod:`lmlab.models.lora`) and the task head train; the
checkpoints then hold only those.

Exact resume (``--resume``), as :mod:`lmlab.training.trainer` has it: every
``checkpoint_interval`` steps (default: at each validation) a resume checkpoint
goes to ``OUT/resume/checkpoints/`` through :func:`lmlab.runs.checkpoint.save_checkpoint`
(atomic, rotated): the trained variables and the random generators' states, the
optimizer's variables (its step too), the best-validation bookkeeping and the
length of ``log.jsonl`` then. Batch ``s`` is a pure function of ``(seed, s)``
(epoch ``s // steps_per_epoch``, position ``s % steps_per_epoch``), so a run
killed and resumed logs the same losses as one never interrupted. A resume
whose settings or data differ from the run's is refused by name. The folder
goes when the run finishes: ``results.json`` then marks it done.
"""

from __future__ import annotations

import itertools
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np

from lmlab.core.errors import ConfigError, DataError
from lmlab.core.io import read_json, sha256_file, write_json
from lmlab.core.progress import progress_bar
from lmlab.models.lora import enable_lora
from lmlab.runs.checkpoint import STATE_FILE, find_checkpoint, load_optimizer, load_tensors, save_checkpoint
from lmlab.runs.load import load_run
from lmlab.tasks.batching import check_neural, input_prefix, is_masked_lm
from lmlab.tasks.classify import ClassifyTask
from lmlab.tasks.config import FinetuneConfig
from lmlab.tasks.folder import CONFIG, lm_files, read_config, save_weights
from lmlab.tasks.generate import GenerateTask
from lmlab.tasks.lm import LanguageModelTask, check_causal
from lmlab.training.config import TrainConfig
from lmlab.training.optimizer import build_optimizer

RESUME = "resume"  # OUT/resume/checkpoints/: the last resume checkpoint (lmlab.runs.checkpoint), until the end
VARIABLES_FILE = "variables.safetensors"  # a resume checkpoint's model part (_resume_variables)


def finetune(base_run, out, train, valid=None, config: FinetuneConfig | None = None, data_options: dict | None = None,
             checkpoint: str = "best", overwrite: bool = False, log=print, progress: bool = False,
             resume: bool = False) -> dict:
    """Fine-tune ``base_run`` on ``train`` (and ``valid``) into the new folder ``out``; returns the results.

    ``data_options``: ``format``, ``text_column``, ``label_column`` (classification),
    ``swap``, ``target_field``, ``limit`` (generation; for lm: documents), ``doc_sep`` (lm: blank, line or
    file, as ``lmlab data prepare`` splits documents), and the augmentation's
    synonym sources ``wordnet``, ``cilin``, ``neighbours``. ``progress``: a bar over the steps on stderr.
    ``resume``: continue the interrupted fine-tune in ``out`` from its last resume checkpoint, with the
    same arguments it was started with (a change that would change the numbers is refused by name); the
    losses, weights and metrics are those of a run never interrupted. A finished ``out`` is left as it is.
    """
    import keras

    from lmlab.training.steps import TaskStepper

    config = config or FinetuneConfig()
    options = dict(data_options or {})
    out = Path(out)
    if resume:
        if overwrite:
            raise ConfigError("--resume continues the fine-tune in --out and --overwrite replaces it: choose one")
        saved = _resumable(out)
        if (out / "results.json").exists():
            log(f"{out}: the fine-tune already finished; nothing to resume (results in {out / 'results.json'})")
            return read_json(out / "results.json", "fine-tuning results")
        point = find_checkpoint(out / RESUME, "last")
        if point is None:
            raise ConfigError(f"{out}: no resume checkpoint yet (the fine-tune stopped before its first one); "
                              "start it again with --overwrite")
        _check_unchanged(out, saved, {"finetune": config.to_dict(), **_data_record(train, valid, options)})
    else:
        _check_out(out, overwrite)
    base = load_run(base_run, checkpoint)
    check_neural(base.model)
    if config.task == "classify":
        task = ClassifyTask(config, base.tokenizer, base.model.config.block_size, options, log,
                            prefix=input_prefix(base.model, base.tokenizer))
    elif config.task == "span":
        from lmlab.tasks.span import SpanTask

        task = SpanTask(config, base.tokenizer, base.model.config.block_size, options, log)
    elif config.task == "lm":
        check_causal(base.model, base_run)
        task = LanguageModelTask(config, base.tokenizer, base.model.config.block_size, options, log)
    elif is_masked_lm(base.model):
        raise ConfigError("an encoder (masked language model) does not generate text: fine-tune it with "
                          "--task classify or --task span")
    else:
        task = GenerateTask(config, base.tokenizer, base.model.config.block_size, options, log)
    task.read(train, valid)

    keras.utils.set_random_seed(config.seed)
    model = task.build(base.model)
    lora = _enable_lora(task.lm, config, log) if config.lora_rank else None
    _seed_generators(model, config.seed)
    per_epoch = task.train_data.steps_per_epoch(config.batch_size)
    total = config.max_steps or max(1, math.ceil(config.epochs * per_epoch))
    warmup = min(int(config.warmup_ratio * total), total - 1)
    optimizer, schedule = build_optimizer(TrainConfig(
        batch_size=config.batch_size, max_steps=total, learning_rate=config.learning_rate,
        min_learning_rate=config.learning_rate / 10, warmup_steps=warmup, weight_decay=config.weight_decay,
        grad_clip=config.grad_clip, seed=config.seed), model)
    stepper = TaskStepper(model, optimizer, return_outputs=config.task not in ("generate", "lm"),
                          **({"loss_fn": task.loss_fn} if hasattr(task, "loss_fn") else {}))
    interval = config.eval_interval or per_epoch
    every = config.checkpoint_interval or interval  # resume checkpoints

    run_config = {
        # "train" and "model" as in the base run, so lmlab.runs.load.load_run reads this folder too.
        "task": config.task, "train": base.config["train"], "model": base.config["model"],
        "data": base.config.get("data"),
        "finetune": config.to_dict(), config.task: task.settings(),
        "base": {"run": str(Path(base_run).resolve()), "checkpoint": base.checkpoint.name, "step": base.step},
        "train_file": str(train), "valid_file": str(valid) if valid else None,
        **_data_record(train, valid, options),
        "parameters": {"total": int(model.count_params()),
                       "trainable": int(sum(np.prod(v.shape) for v in model.trainable_variables))},
        **({"lora": lora} if lora else {}),
    }
    best, stale, step = -math.inf, 0, 0
    best_metrics: dict = {}
    elapsed = 0.0
    resumable = _resume_variables(model)
    if resume:
        _check_unchanged(out, saved, run_config)
        state = _restore(point, resumable, optimizer)
        stepper.reload()
        step, stale, best_metrics, elapsed = state["step"], state["stale"], state["best_metrics"], state["elapsed_s"]
        best = -math.inf if state["best"] is None else state["best"]
        total = state["total"]
        _truncate(out / "log.jsonl", state["log_bytes"])  # drop what the killed run logged after its checkpoint
        log(f"resumed {out} at step {step} of {total:,}")
    else:
        if overwrite and (out / CONFIG).exists():
            shutil.rmtree(out)  # only now that the data has been read: bad input leaves the old model in place
        out.mkdir(parents=True, exist_ok=True)
        base.tokenizer.save(out / "tokenizer.json")
        write_json(out / CONFIG, run_config)
    log(f"fine-tuning {base_run} ({base.checkpoint.name}) for {config.task}: {total:,} steps of {config.batch_size} "
        f"({per_epoch:,} per epoch), {_trained(config)}, "
        f"validation every {interval:,} steps")

    started = time.perf_counter() - elapsed  # loop seconds so far = perf_counter() - started, across resumes
    log_every = max(1, min(interval, total) // 5)
    with (open(out / "log.jsonl", "a", encoding="utf-8") as log_file,
          progress_bar(progress, "finetune", " step", total, step) as bar):
        epoch, skip = divmod(step, per_epoch)  # each epoch is exactly per_epoch batches, a function of (seed, epoch)
        while step < total:
            batches = task.train_data.batches(config.batch_size, shuffle=True, seed=config.seed, epoch=epoch)
            for batch in itertools.islice(batches, skip, None):
                loss, norm = stepper.train(batch.inputs, batch.targets, batch.weights)
                step += 1
                bar.update(1)
                if not math.isfinite(loss):
                    raise ConfigError(f"the loss became {loss} at step {step}; lower --lr")
                if step % log_every == 0:
                    log_file.write(json.dumps({"step": step, "loss": loss, "grad_norm": norm,
                                               "learning_rate": float(schedule(step - 1))}) + "\n")
                    log_file.flush()
                    bar.set_postfix(loss=f"{loss:.4f}")
                if step % interval == 0 or step == total:
                    metrics = task.validate(stepper)
                    improved = metrics["val_score"] > best
                    record = {"step": step, "epoch": round(step / per_epoch, 3), "train_loss": loss, **metrics}
                    log_file.write(json.dumps({k: v for k, v in record.items() if k != "valid_metrics"}) + "\n")
                    log_file.flush()
                    log(f"step {step}: train loss {loss:.4f}, " + task.describe(metrics)
                        + (" (best)" if improved else ""))
                    if improved:
                        best, stale, best_metrics = metrics["val_score"], 0, record
                        stepper.sync()
                        save_weights(out, step, lm_files(task.lm, bool(lora)), task.head,
                                     {k: v for k, v in record.items() if k != "valid_metrics"})
                    else:
                        stale += 1
                    if config.early_stopping and stale >= config.early_stopping:
                        log(f"early stopping: no improvement in {stale} validations")
                        total = step
                if step % every == 0 and step < total:
                    stepper.sync()
                    save_checkpoint(out / RESUME, step, None, optimizer, {
                        "epoch": epoch, "total": total, "best": None if best == -math.inf else best,
                        "stale": stale, "best_metrics": best_metrics, "log_bytes": log_file.tell(),
                        "elapsed_s": time.perf_counter() - started}, keep=1,
                        files={VARIABLES_FILE: {f"{i:05d}": np.asarray(v.numpy()) for i, v in enumerate(resumable)}})
                if step >= total:
                    break
            epoch, skip = epoch + 1, 0
    if "valid_metrics" in best_metrics:
        write_json(out / "valid_metrics.json", best_metrics["valid_metrics"])
    result = {k: v for k, v in best_metrics.items() if k != "valid_metrics"}
    result.update(steps=step, seconds=round(time.perf_counter() - started, 1), out=str(out))
    write_json(out / "results.json", result)
    shutil.rmtree(out / RESUME, ignore_errors=True)  # finished: results.json now says so, and resuming is a no-op
    return result


def _resume_variables(model) -> list:
    """What a resume checkpoint holds of the task model: the trainable variables (every weight, or with
    LoRA the adapters and the head; frozen weights come back from the base run) and the random
    generators' states (dropout), in the model's order."""
    return [v for v in model.variables if v.trainable or "seed_generator" in v.path]


def _seed_generators(model, seed: int) -> None:
    """Dropout's random streams from the fine-tuning seed: the base model was built without one, so its
    generators drew their seeds at random (a run could not be repeated, nor compared with a resumed one)."""
    rng = np.random.default_rng([seed, 0x5EED])
    for variable in model.variables:
        if "seed_generator" in variable.path and tuple(variable.shape) == (2,):
            variable.assign(np.array([rng.integers(1, 2**31), 0]).astype(variable.dtype))


def _restore(path: Path, variables: list, optimizer) -> dict:
    state = read_json(path / STATE_FILE, "checkpoint state")
    missing = [k for k in ("step", "epoch", "total", "best", "stale", "best_metrics", "log_bytes", "elapsed_s")
               if k not in state]
    if missing:
        raise DataError(f"{path / STATE_FILE}: not a fine-tuning resume checkpoint (no {', '.join(missing)})")
    tensors = load_tensors(path / VARIABLES_FILE)
    if len(tensors) != len(variables):
        raise ConfigError(f"{path / VARIABLES_FILE}: {len(tensors)} tensors, the model has {len(variables)} to "
                          "restore; was it saved with other settings?")
    for i, variable in enumerate(variables):
        value = tensors.get(f"{i:05d}")
        if value is None or tuple(value.shape) != tuple(variable.shape):
            raise ConfigError(f"{path / VARIABLES_FILE}: tensor {i} ({variable.path}) is missing or of the wrong "
                              f"shape (expected {tuple(variable.shape)})")
    for i, variable in enumerate(variables):
        variable.assign(tensors[f"{i:05d}"].astype(variable.dtype))
    load_optimizer(path, optimizer)
    return state


def _resumable(out: Path) -> dict:
    """The saved config of the fine-tune in ``out``, which ``--resume`` continues."""
    if not (out / CONFIG).exists():
        raise ConfigError(f"{out}: no fine-tune to resume here (no {CONFIG}); start one without --resume")
    return read_config(out)


# What may differ on a resume: it changes no number.
RESUME_MAY_CHANGE = ("checkpoint_interval",)


def _check_unchanged(out: Path, saved: dict, now: dict) -> None:
    """Refuse a resume whose settings, data or base differ from the run's, naming the first difference.

    ``now``: the config the resumed run would write, or the part of it known before anything is read."""
    started = dict(saved.get("finetune") or {})
    for name, value in now["finetune"].items():
        if name not in RESUME_MAY_CHANGE and started.get(name) != value:
            raise ConfigError(f"cannot resume {out} with {name}={value!r}: it was started with "
                              f"{name}={started.get(name)!r}, and a change would change the numbers; resume with "
                              f"the same settings, or start again with --overwrite")
    task = now.get("task")
    for name in ("data_files", "data_options", "base", "model", task, "parameters", "lora"):
        if name in now and saved.get(name) != now.get(name):
            what = {"base": "the base run's checkpoint", "data_files": "the data files' contents",
                    "data_options": "the data options", task: f"the {task} settings read from the data"}.get(name, name)
            raise ConfigError(f"cannot resume {out}: {what} changed since it started ({_short(saved.get(name))} then, "
                              f"{_short(now.get(name))} now); resume with the same base run and data, or start "
                              "again with --overwrite")


def _data_record(train, valid, options: dict) -> dict:
    """What a resume checks of the data: the files' contents and the options that read them."""
    return {"data_files": {"train": _fingerprint(train), "valid": _fingerprint(valid)},
            "data_options": {k: v if v is None or isinstance(v, (str, int, float, bool)) else str(v)
                             for k, v in sorted(options.items())}}


def _short(value) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= 120 else text[:117] + "..."


def _fingerprint(path) -> str | None:
    """A file's SHA-256 (a resume refuses changed data), None for no file."""
    return sha256_file(path) if path is not None and Path(path).is_file() else None


def _truncate(path: Path, size: int) -> None:
    if path.exists() and path.stat().st_size > size:
        with open(path, "r+b") as handle:
            handle.truncate(size)


def _enable_lora(lm, config: FinetuneConfig, log) -> dict:
    """Adapters on the language model (after the task head is built: its ``trainable`` setter would undo them)."""
    lora = enable_lora(lm, config.lora_rank, config.lora_alpha or config.lora_rank, config.lora_targets, config.seed)
    log(f"LoRA rank {lora['rank']} (alpha {lora['alpha']:g}) on {','.join(lora['targets'])}: "
        f"{lora['adapted_layers']} projections, {lora['trainable']:,} adapter parameters = {lora['percent']:.3f}% "
        f"of the language model's {lora['base_parameters']:,}")
    return lora


def _trained(config: FinetuneConfig) -> str:
    if config.lora_rank:
        return "LoRA adapters" + (" and the head" if config.task not in ("generate", "lm") else "")
    return "head only" if config.task == "classify" and config.freeze else "all weights"


def _check_out(out: Path, overwrite: bool) -> None:
    if (out / CONFIG).exists():
        if not overwrite:
            raise ConfigError(f"{out} already holds a fine-tuned model; continue it with --resume, choose another "
                              "--out or pass --overwrite")
        read_config(out)  # only ever replace a folder that is a fine-tuned one
    elif out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} exists and is not empty; choose another --out")
