"""The training loop: one run directory per run, exact resume, periodic evaluation.

Run directory::

    config.json        the resolved training config, model config and data reference
    tokenizer.json     a copy of the data's tokenizer, so the run stands alone
    log.jsonl          one JSON line per logged step and per evaluation
    tensorboard/       scalars: loss, perplexity, learning rate, gradient norm, tokens/s
    checkpoints/       see :mod:`lmlab.runs.checkpoint`
    results.json       the final summary

Exact resume: batch ``s`` is a pure function of ``(seed, s)``, and the model,
optimizer (with its step counter, hence the learning-rate schedule) and
random-generator variables are all in the checkpoint, so a run killed and
resumed logs the same losses as one never interrupted.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import time
from pathlib import Path

import numpy as np

from lmlab.core.errors import ConfigError, LmlabError
from lmlab.core.faults import poisoned_steps
from lmlab.core.io import write_json
from lmlab.core.progress import progress_bar
from lmlab.data.masking import MaskedWindows
from lmlab.data.shards import load_manifest, open_split
from lmlab.data.windows import RandomWindows
from lmlab.models import registry
from lmlab.runs.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from lmlab.runs.folder import RUN_CONFIG, data_reference, read_run_config, write_run_config
from lmlab.tokenizers import load_tokenizer
from lmlab.training.config import TrainConfig
from lmlab.training.distribute import is_chief_process, placement_for
from lmlab.training.ngram import train_ngram
from lmlab.training.optimizer import build_optimizer

MAX_BAD_BATCHES_IN_A_ROW = 10  # with skip_bad_batches: this many in a row means the model itself diverged


class TrainingDiverged(LmlabError):
    """The loss became NaN or infinite."""


class Trainer:
    def __init__(self, config: TrainConfig, run_dir, resume: bool = False, progress: bool = False, log=print):
        self.run_dir, self.progress, self.log = Path(run_dir), progress, log
        if resume:
            if not (self.run_dir / RUN_CONFIG).exists():
                raise ConfigError(f"{self.run_dir}: no run to resume here (no {RUN_CONFIG})")
            saved = read_run_config(self.run_dir)
            if (saved.get("inference") or {}).get("dtype", "float32") != "float32":  # lmlab export --dtype
                raise ConfigError(f"{self.run_dir} holds {saved['inference']['dtype']} weights for inference; "
                                  "resume the float32 run it was exported from")
            saved_config = TrainConfig.from_dict(saved["train"])
            if config.skip_bad_batches:  # the one setting a resume may add (to get past a bad batch)
                saved_config = dataclasses.replace(saved_config, skip_bad_batches=True)
            # Where a run runs is chosen at each start (a checkpoint loads on any placement); its maths is not.
            config = dataclasses.replace(saved_config, distribute=config.distribute, mesh=config.mesh)
        elif (self.run_dir / RUN_CONFIG).exists() and is_chief_process():
            raise ConfigError(f"{self.run_dir} already holds a run; resume it with --resume or choose another --out")
        if not config.data:
            raise ConfigError("data is not set: give --data DIR (a folder made by lmlab prepare)")
        self.config, self.resume = config, resume

    # ------------------------------------------------------------ setup

    def _setup(self):
        import keras

        config = self.config
        manifest = load_manifest(config.data)
        tokenizer = load_tokenizer(Path(config.data) / "tokenizer.json")
        self.train_split = open_split(config.data, "train")
        self.valid_split = open_split(config.data, "valid") if manifest["splits"]["valid"]["tokens"] else None
        if self.valid_split is None:
            self.log("note: the data has no validation split; evaluation uses the training split")
        self.model_config = registry.model_config(config.family, config.shape, tokenizer.vocab_size, config.model)
        self.placement = placement_for(config, self.model_config)  # before TensorFlow starts: it may split the CPU
        if config.precision == "auto":  # chosen once, at the start; the saved config keeps the choice for resumes
            from lmlab.training.precision import resolve_precision

            width = getattr(self.model_config, "d_model", 0)
            precision, why = resolve_precision("auto", width, config.batch_size * self.model_config.block_size)
            config = self.config = dataclasses.replace(config, precision=precision)
            self.log(f"precision: {precision} ({why})")
        keras.config.set_dtype_policy("float32" if config.precision == "float32" else config.precision)
        keras.utils.set_random_seed(config.seed)
        with self.placement.scope():  # variables created with their devices and layouts
            self.model = registry.build_model(self.model_config, seed=config.seed)
            self.optimizer, self.schedule = build_optimizer(config, self.model)
        if self.placement.kind != "none":
            self.log(f"distributed: {self.placement.describe()}")
        from lmlab.training.steps import Stepper, use_xla

        block = self.model_config.block_size
        if registry.family(config.family).objective == "mlm":  # masked tokens instead of next tokens
            self.batches = MaskedWindows(self.train_split, self.model_config, tokenizer,
                                         config.batch_size * config.grad_accum, config.seed)
            self.valid_batches = MaskedWindows(self.valid_split or self.train_split, self.model_config, tokenizer,
                                               config.batch_size, config.seed + 1)
        else:
            self.batches = RandomWindows(self.train_split, block, config.batch_size * config.grad_accum,
                                         config.seed)
            self.valid_batches = RandomWindows(self.valid_split or self.train_split, block, config.batch_size,
                                               config.seed + 1)
        self.stepper = Stepper(self.model, self.optimizer, config.grad_accum, skip_bad=config.skip_bad_batches,
                               placement=self.placement, max_predictions=getattr(self.batches, "max_predictions", None),
                               jit_compile=use_xla(config.compile, config.precision))
        if not self.resume and self.placement.is_chief:  # other workers of a distributed run write nothing
            self.run_dir.mkdir(parents=True, exist_ok=True)
            tokenizer.save(self.run_dir / "tokenizer.json")
            write_run_config(self.run_dir, config, self.model, data_reference(self.run_dir, config.data, manifest))
        return manifest

    # ------------------------------------------------------------ loop

    def run(self) -> dict:
        import keras

        try:
            return self._run()
        finally:
            keras.config.set_dtype_policy("float32")

    def _run(self) -> dict:
        self._setup()
        config = self.config  # as set up: precision auto resolved
        step, best, stale, elapsed = 0, math.inf, 0, 0.0
        skipped, bad_in_a_row, poison = 0, 0, poisoned_steps()  # bad batches skipped; the fault-injection hook
        if self.resume:
            checkpoint = find_checkpoint(self.run_dir, "last")
            if checkpoint is not None:
                state = load_checkpoint(checkpoint, self.model, self.optimizer)
                self.stepper.reload()
                step, best, stale = state["step"], state.get("best_val_loss", math.inf), state.get("stale_evals", 0)
                skipped = state.get("skipped_batches", 0)
                elapsed = state.get("elapsed_s", 0.0)  # loop time before the checkpoint (max_seconds, history)
                self.log(f"resumed {self.run_dir} at step {step}")
        self.log(f"model: {_describe(self.model_config)}, {self.model.num_parameters():,} parameters, "
                 f"{self.model.flops_per_token():,} FLOPs/token; {self.train_split.tokens:,} training tokens")
        chief = self.placement.is_chief
        writer = _TensorBoard(self.run_dir / "tensorboard" if chief else None)
        bar = progress_bar(self.progress and chief, "train", " step", config.max_steps, step)
        log_file = open(self.run_dir / "log.jsonl" if chief else os.devnull, "a", encoding="utf-8")
        tokens_per_step = config.batch_size * config.grad_accum * self.model_config.block_size
        block, accum = self.model_config.block_size, config.grad_accum
        last_time, last_step = time.perf_counter(), step
        kill_after = int(os.environ.get("LMLAB_TEST_KILL_AFTER_STEPS", "0"))  # fault injection for tests
        result = {"step": step, "best_val_loss": best}  # what a resumed, already finished run reports
        clock = time.perf_counter() - elapsed  # loop seconds so far = perf_counter() - clock, across resumes
        stopped = "max_steps"
        try:
            while step < config.max_steps and not (config.max_seconds and elapsed >= config.max_seconds):
                # Masked LM: a third array (which targets count) and, with sentence pairs, a fourth (token types).
                x, y, *extra = self.batches.batch(step)
                weights, types = [a.reshape(accum, -1, block) for a in extra] + [None] * (2 - len(extra))
                loss, norm = self.stepper.train(x.reshape(accum, -1, block), y.reshape(accum, -1, block),
                                                poison.get(step + 1, 1.0), weights, types)
                step += 1
                if kill_after and step >= kill_after:
                    os.kill(os.getpid(), signal.SIGKILL)
                good = math.isfinite(loss) and math.isfinite(norm)
                bad_in_a_row = 0 if good else bad_in_a_row + 1
                if not good and (not config.skip_bad_batches or bad_in_a_row >= MAX_BAD_BATCHES_IN_A_ROW):
                    last = find_checkpoint(self.run_dir, "last")
                    where = f"the last good checkpoint is {last}" if last else "no checkpoint was saved yet"
                    cause = f"{bad_in_a_row} batches in a row were bad: the model itself diverged. " \
                        if config.skip_bad_batches else ""
                    advice = "" if config.skip_bad_batches else "; or resume with --skip-bad-batches to skip them"
                    raise TrainingDiverged(f"the loss became {loss} (gradient norm {norm}) at step {step}; {where}. "
                                           f"{cause}Lower learning_rate or raise warmup_steps, then resume or restart"
                                           f"{advice}")
                if not good:  # skipped inside the compiled step: no update; counted, logged, not in the loss log
                    skipped += 1
                    log_file.write(json.dumps({"step": step, "skipped_batch": True,
                                               "reason": f"loss {loss}, gradient norm {norm}"}) + "\n")
                    log_file.flush()
                    self.log(f"step {step}: skipped a bad batch (loss {loss}, gradient norm {norm}); "
                             "the weights were not updated")
                bar.update(1)
                elapsed = time.perf_counter() - clock
                timed_out = bool(config.max_seconds) and elapsed >= config.max_seconds
                position = {"tokens": step * tokens_per_step, "elapsed_s": elapsed}  # log only, not TensorBoard
                if good and (step % config.log_interval == 0 or step == config.max_steps or timed_out):
                    now = time.perf_counter()
                    rate = (step - last_step) * tokens_per_step / max(now - last_time, 1e-9)
                    last_time, last_step = now, step
                    record = {"step": step, "loss": loss, "perplexity": math.exp(min(loss, 50)),
                              "learning_rate": float(self.schedule(step - 1 - skipped)), "grad_norm": norm,
                              "tokens_per_s": rate}
                    writer.scalars(step, record)
                    log_file.write(json.dumps(record | position) + "\n")
                    log_file.flush()
                    bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{rate:,.0f}")
                if step % config.eval_interval == 0 or step == config.max_steps or timed_out:
                    val_loss = self.validation_loss()
                    if not math.isfinite(val_loss):  # never checkpoint broken weights over good ones
                        raise TrainingDiverged(f"the validation loss became {val_loss} at step {step}; the last "
                                               f"good checkpoint is {find_checkpoint(self.run_dir, 'last')}")
                    improved = val_loss < best
                    best, stale = (val_loss, 0) if improved else (best, stale + 1)
                    record = {"step": step, "val_loss": val_loss, "val_perplexity": math.exp(min(val_loss, 50)),
                              "best_val_loss": best}
                    writer.scalars(step, record)
                    log_file.write(json.dumps(record | position) + "\n")
                    log_file.flush()
                    train_part = f"train loss {loss:.4f}" if good else "train batch skipped"
                    self.log(f"step {step}: {train_part}, val loss {val_loss:.4f}{' (best)' if improved else ''}")
                    self.stepper.sync()
                    if chief:
                        save_checkpoint(self.run_dir, step, self.model, self.optimizer,
                                        {"val_loss": val_loss, "best_val_loss": best, "stale_evals": stale,
                                         "elapsed_s": elapsed, "skipped_batches": skipped,
                                         "data": self.batches.state() | {"step": step}},
                                        best=improved, keep=config.keep_checkpoints)
                    result = {"step": step, "train_loss": loss if good else None, "val_loss": val_loss,
                              "best_val_loss": best}
                    if config.early_stopping and stale >= config.early_stopping:
                        self.log(f"early stopping: no improvement in {stale} evaluations")
                        stopped = "early_stopping"
                        break
                    if timed_out:
                        self.log(f"time limit: stopped at step {step} after {elapsed:,.0f} s (max_seconds "
                                 f"{config.max_seconds:g})")
                        stopped = "max_seconds"
                        break
        finally:
            bar.close()
            log_file.close()
            writer.close()
        if stopped == "max_steps" and step < config.max_steps:
            stopped = "max_seconds"  # a resumed run that had already used its time
        result.update(parameters=int(self.model.num_parameters()), tokens_seen=step * tokens_per_step,
                      elapsed_s=elapsed, stopped=stopped)
        if chief:
            write_json(self.run_dir / "results.json", result)
        return result

    def validation_loss(self) -> float:
        total = count = 0.0
        for index in range(self.config.eval_batches):
            x, y, *extra = self.valid_batches.batch(index)  # the same windows at every evaluation
            nll, n = self.stepper.evaluate(x, y, extra[0] if extra else np.ones(x.shape, np.float32),
                                           extra[1] if len(extra) > 1 else None)
            total, count = total + nll, count + n
        return total / count


def _describe(model_config) -> str:
    style = getattr(model_config, "style", None) or getattr(model_config, "cell", None)
    return f"{style + ' ' if style else ''}{model_config.family}"


def train(config: TrainConfig, run_dir, resume: bool = False, progress: bool = False, log=print) -> dict:
    """Python API for ``lmlab train``; returns the final metrics."""
    if resume and (Path(run_dir) / RUN_CONFIG).exists():
        saved = read_run_config(run_dir)
        if not registry.family(saved["model"].get("family", "transformer")).neural:
            raise ConfigError(f"{run_dir} is an n-gram run, counted in one pass: there is nothing to resume")
    if not registry.family(config.family).neural:
        return train_ngram(config, run_dir, log, progress=progress)
    return Trainer(config, run_dir, resume, progress, log).run()


class _TensorBoard:
    def __init__(self, folder: Path | None):
        self._writer = None
        if folder is None:  # a distributed run's other workers
            return
        try:
            import tensorflow as tf
            from tensorflow.core.framework.summary_pb2 import DataClass, SummaryMetadata

            self._tf, self._writer = tf, tf.summary.create_file_writer(str(folder))
            self._metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="scalars"),
                                             data_class=DataClass.DATA_CLASS_SCALAR)
        except Exception:  # TensorBoard is optional: never fail a run over it
            self._writer = None

    def scalars(self, step: int, values: dict) -> None:
        if self._writer is None:
            return
        with self._writer.as_default():
            for name, value in values.items():
                if name != "step":
                    # the raw summary op with the scalars plugin's metadata: what tf.summary.scalar
                    # writes, without needing the tensorboard package installed to write it
                    self._tf.summary.write(name, self._tf.constant(float(value), self._tf.float32), step=step,
                                           metadata=self._metadata)

    def close(self):
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
