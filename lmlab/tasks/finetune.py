"""``lmlab finetune``: a pretrained run fine-tuned for classification or conditional generation.

The loop: batches from :mod:`lmlab.tasks.batching`, compiled steps from
:class:`lmlab.training.steps.TaskStepper`, the optimizer and schedule of pre-training
(:func:`lmlab.training.trainer.build_optimizer`: AdamW, warm-up, cosine
decay, clipping), a validation every ``eval_interval`` steps (default: each
epoch) and a checkpoint whenever it improves (classification: accuracy;
generation: completion loss), written by :mod:`lmlab.tasks.folder`. With
``lora_rank`` the language model is frozen and only LoRA adapters on its
projections (:mod:`lmlab.models.lora`) and the task head train; the
checkpoints then hold only those.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import numpy as np

from lmlab.core.errors import ConfigError
from lmlab.core.io import write_json
from lmlab.core.progress import progress_bar
from lmlab.models.lora import enable_lora
from lmlab.runs.load import load_run
from lmlab.tasks.batching import check_neural, input_prefix, is_masked_lm
from lmlab.tasks.classify import ClassifyTask
from lmlab.tasks.config import FinetuneConfig
from lmlab.tasks.folder import CONFIG, lm_files, read_config, save_weights
from lmlab.tasks.generate import GenerateTask
from lmlab.training.config import TrainConfig
from lmlab.training.optimizer import build_optimizer


def finetune(base_run, out, train, valid=None, config: FinetuneConfig | None = None, data_options: dict | None = None,
             checkpoint: str = "best", overwrite: bool = False, log=print, progress: bool = False) -> dict:
    """Fine-tune ``base_run`` on ``train`` (and ``valid``) into the new folder ``out``; returns the results.

    ``data_options``: ``format``, ``text_column``, ``label_column`` (classification),
    ``swap``, ``target_field``, ``limit`` (generation), and the augmentation's
    synonym sources ``wordnet``, ``cilin``, ``neighbours``. ``progress``: a bar over the steps on stderr.
    """
    import keras

    from lmlab.training.steps import TaskStepper

    config = config or FinetuneConfig()
    options = dict(data_options or {})
    out = Path(out)
    _check_out(out, overwrite)
    base = load_run(base_run, checkpoint)
    check_neural(base.model)
    if config.task == "classify":
        task = ClassifyTask(config, base.tokenizer, base.model.config.block_size, options, log,
                            prefix=input_prefix(base.model, base.tokenizer))
    elif config.task == "span":
        from lmlab.tasks.span import SpanTask

        task = SpanTask(config, base.tokenizer, base.model.config.block_size, options, log)
    elif is_masked_lm(base.model):
        raise ConfigError("an encoder (masked language model) does not generate text: fine-tune it with "
                          "--task classify or --task span")
    else:
        task = GenerateTask(config, base.tokenizer, base.model.config.block_size, options, log)
    task.read(train, valid)

    keras.utils.set_random_seed(config.seed)
    model = task.build(base.model)
    lora = _enable_lora(task.lm, config, log) if config.lora_rank else None
    per_epoch = task.train_data.steps_per_epoch(config.batch_size)
    total = config.max_steps or max(1, math.ceil(config.epochs * per_epoch))
    warmup = min(int(config.warmup_ratio * total), total - 1)
    optimizer, schedule = build_optimizer(TrainConfig(
        batch_size=config.batch_size, max_steps=total, learning_rate=config.learning_rate,
        min_learning_rate=config.learning_rate / 10, warmup_steps=warmup, weight_decay=config.weight_decay,
        grad_clip=config.grad_clip, seed=config.seed), model)
    stepper = TaskStepper(model, optimizer, return_outputs=config.task != "generate",
                          **({"loss_fn": task.loss_fn} if hasattr(task, "loss_fn") else {}))
    interval = config.eval_interval or per_epoch

    if overwrite and (out / CONFIG).exists():
        shutil.rmtree(out)  # only now that the data has been read: bad input leaves the old model in place
    out.mkdir(parents=True, exist_ok=True)
    base.tokenizer.save(out / "tokenizer.json")
    write_json(out / CONFIG, {
        # "train" and "model" as in the base run, so lmlab.runs.load.load_run reads this folder too.
        "task": config.task, "train": base.config["train"], "model": base.config["model"],
        "data": base.config.get("data"),
        "finetune": config.to_dict(), config.task: task.settings(),
        "base": {"run": str(Path(base_run).resolve()), "checkpoint": base.checkpoint.name, "step": base.step},
        "train_file": str(train), "valid_file": str(valid) if valid else None,
        "parameters": {"total": int(model.count_params()),
                       "trainable": int(sum(np.prod(v.shape) for v in model.trainable_variables))},
        **({"lora": lora} if lora else {}),
    })
    log(f"fine-tuning {base_run} ({base.checkpoint.name}) for {config.task}: {total:,} steps of {config.batch_size} "
        f"({per_epoch:,} per epoch), {_trained(config)}, "
        f"validation every {interval:,} steps")

    best, stale, step, epoch = -math.inf, 0, 0, 0
    best_metrics: dict = {}
    started = time.perf_counter()
    log_every = max(1, min(interval, total) // 5)
    with (open(out / "log.jsonl", "a", encoding="utf-8") as log_file,
          progress_bar(progress, "finetune", " step", total) as bar):
        while step < total:
            for batch in task.train_data.batches(config.batch_size, shuffle=True, seed=config.seed, epoch=epoch):
                loss, norm = stepper.train(batch.inputs, batch.targets, batch.weights)
                step += 1
                bar.update(1)
                if not math.isfinite(loss):
                    raise ConfigError(f"the loss became {loss} at step {step}; lower --lr")
                if step % log_every == 0:
                    log_file.write(json.dumps({"step": step, "loss": loss, "grad_norm": norm,
                                               "learning_rate": float(schedule(step - 1))}) + "\n")
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
                if step >= total:
                    break
            epoch += 1
    if "valid_metrics" in best_metrics:
        write_json(out / "valid_metrics.json", best_metrics["valid_metrics"])
    result = {k: v for k, v in best_metrics.items() if k != "valid_metrics"}
    result.update(steps=step, seconds=round(time.perf_counter() - started, 1), out=str(out))
    write_json(out / "results.json", result)
    return result


def _enable_lora(lm, config: FinetuneConfig, log) -> dict:
    """Adapters on the language model (after the task head is built: its ``trainable`` setter would undo them)."""
    lora = enable_lora(lm, config.lora_rank, config.lora_alpha or config.lora_rank, config.lora_targets, config.seed)
    log(f"LoRA rank {lora['rank']} (alpha {lora['alpha']:g}) on {','.join(lora['targets'])}: "
        f"{lora['adapted_layers']} projections, {lora['trainable']:,} adapter parameters = {lora['percent']:.3f}% "
        f"of the language model's {lora['base_parameters']:,}")
    return lora


def _trained(config: FinetuneConfig) -> str:
    if config.lora_rank:
        return "LoRA adapters" + (" and the head" if config.task != "generate" else "")
    return "head only" if config.task == "classify" and config.freeze else "all weights"


def _check_out(out: Path, overwrite: bool) -> None:
    if (out / CONFIG).exists():
        if not overwrite:
            raise ConfigError(f"{out} already holds a fine-tuned model; choose another --out or pass --overwrite")
        read_config(out)  # only ever replace a folder that is a fine-tuned one
    elif out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} exists and is not empty; choose another --out")
