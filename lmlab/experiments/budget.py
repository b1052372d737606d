"""From an experiment's runs and its prepared data to complete training configs.

A budget becomes each run's ``max_steps`` (or ``max_seconds``), given the
model the run builds: a step trains on ``batch_size × grad_accum × block_size``
tokens, and a token costs the model's training FLOPs per token (the closed
form each family reports: ``6N`` plus the Transformer's attention term).

- ``steps``: that many optimizer steps;
- ``tokens``: ``floor(tokens / tokens per step)`` steps;
- ``flops``: ``floor(flops / (FLOPs per token × tokens per step))`` steps;
- ``seconds``: the trainer's ``max_seconds`` (it stops, checkpoints and records
  why); ``max_steps`` stays the run's own and sets the learning-rate schedule's
  length, so give a horizon the time can about reach.

Tokens and FLOPs give the same steps on any machine; seconds do not. The
n-gram family is counted in one pass over the whole training split: no
budget applies to it, it is the fixed-cost baseline (its time is measured).
Unless a run sets ``eval_interval``, it is ``ceil(steps / budget.evaluations)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lmlab.core.errors import ConfigError
from lmlab.experiments.spec import Experiment, RunSpec, at, check_model
from lmlab.models import registry
from lmlab.tokenizers import load_tokenizer
from lmlab.tokenizers.specials import special_ids
from lmlab.training.config import TrainConfig


@dataclass(frozen=True)
class PlannedRun:
    spec: RunSpec
    config: TrainConfig
    parameters: int  # 0 for an n-gram until it is counted
    flops_per_token: int  # 0 for an n-gram (no training FLOPs)
    tokens_per_step: int  # 0 for an n-gram

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def neural(self) -> bool:
        return self.tokens_per_step > 0

    def describe(self) -> str:
        c = self.config
        if not self.neural:
            return f"{c.family} order {c.model.get('order', 5)}: counted in one pass over the training split"
        limit = f"up to {c.max_seconds:,.0f} s, " if c.max_seconds else ""
        return (f"{c.family} {c.shape}: {self.parameters:,} parameters, {self.flops_per_token:,} FLOPs/token; "
                f"{limit}{c.max_steps:,} steps x {self.tokens_per_step:,} tokens = "
                f"{c.max_steps * self.tokens_per_step:,} tokens")


def resolve_runs(experiment: Experiment, manifest: dict, scale: float = 1.0) -> list[PlannedRun]:
    """Complete, validated configs for every run; raises naming the run and field on the first problem."""
    if not scale > 0:
        raise ConfigError(f"scale must be > 0, got {scale!r}")
    vocab = manifest["tokenizer"]["vocab_size"]
    split = experiment.evaluate["split"]
    if not manifest["splits"].get(split, {}).get("tokens"):
        raise ConfigError(f"{experiment.source}: evaluate.split: the {split} split of {experiment.data} is empty; "
                          f"prepare a {split} share (e.g. prepare.split: [0.9, 0.05, 0.05]) or evaluate another split")
    longest_shard = max((s["tokens"] for s in manifest["splits"]["train"]["shards"]), default=0)
    encoders = [r for r in experiment.runs if r.family == "encoder"]
    if encoders:
        _check_mask_token(experiment, manifest, encoders[0])
    return [_resolve(experiment, run, vocab, longest_shard, scale) for run in experiment.runs]


def _resolve(experiment: Experiment, run: RunSpec, vocab: int, longest_shard: int, scale: float) -> PlannedRun:
    place = f"{experiment.source}: runs[{run.index}] ({run.key}, seed {run.seed})"
    fields = {**run.fields, "data": str(experiment.data)}

    if not registry.family(run.family).neural:  # counted: only the data and its own options matter
        with at(place):
            config = TrainConfig(data=fields["data"], family=run.family, model=fields.get("model") or {},
                                 seed=run.seed)
        return PlannedRun(run, config, 0, 0, 0)
    with at(f"{place}.model"):
        model = check_model(run.family, fields.get("shape", TrainConfig.shape), fields.get("model") or {}, vocab)
    module = registry.family(run.family).load()
    parameters = int(module.count_parameters(model))
    flops_per_token = int(estimate_flops_per_token(module, model))
    if longest_shard < model.block_size + 1:
        raise ConfigError(f"{place}: the training split of {experiment.data} has no shard of block_size + 1 = "
                          f"{model.block_size + 1} tokens ({longest_shard:,} in its longest)")
    batch = fields.get("batch_size", TrainConfig.batch_size) * fields.get("grad_accum", TrainConfig.grad_accum)
    tokens_per_step = batch * model.block_size
    budget = run.budget.scaled(scale)
    scaled = f" at scale {scale:g}" if scale != 1 else ""
    if budget.kind == "steps":
        steps = int(budget.amount)
    elif budget.kind == "tokens":
        steps = int(budget.amount // tokens_per_step)
    elif budget.kind == "flops":
        steps = int(budget.amount // (flops_per_token * tokens_per_step))
    else:
        steps = fields.get("max_steps", TrainConfig.max_steps)
        if budget.kind == "seconds":
            fields["max_seconds"] = float(budget.amount)
    if steps < 1:
        raise ConfigError(f"{place}: impossible budget: {budget.describe()}{scaled} is less than one optimizer step "
                          f"of {tokens_per_step:,} tokens (batch_size x grad_accum x block_size) at "
                          f"{flops_per_token:,} FLOPs/token")
    warmup = fields.get("warmup_steps", TrainConfig.warmup_steps)
    if scale != 1:
        warmup = min(round(warmup * scale), steps - 1)  # a smoke run keeps the schedule's shape
    if warmup >= steps:
        raise ConfigError(f"{place}: impossible budget: {budget.describe()}{scaled} makes {steps:,} optimizer steps, "
                          f"not more than warmup_steps {warmup}; raise the budget or lower warmup_steps")
    fields.update(max_steps=steps, warmup_steps=warmup)
    if "eval_interval" not in run.fields:
        fields["eval_interval"] = max(1, math.ceil(steps / budget.evaluations))
    with at(place):
        config = TrainConfig(**fields)
    return PlannedRun(run, config, parameters, flops_per_token, tokens_per_step)


def estimate_flops_per_token(module, model) -> int:
    """Training FLOPs per token from the family's own count, without building the model.

    The encoder counts as the decoder does (``EncoderMLM.flops_per_token``: ``6N`` without
    positions and segment types, plus attention ``12·L·H·Q·T``); a test holds the two equal.
    """
    if hasattr(module, "estimate_flops_per_token"):
        return module.estimate_flops_per_token(model)
    if getattr(model, "family", None) == "encoder":
        return (6 * module.count_parameters(model, non_embedding=True)
                + 12 * model.n_layer * model.n_head * model.head_dim * model.block_size)
    raise ConfigError(f"the {getattr(model, 'family', '?')} family has no FLOPs count for a budget")


def _check_mask_token(experiment: Experiment, manifest: dict, run: RunSpec) -> None:
    """An encoder needs a mask token: say so before any run trains, not when the encoder starts."""
    from pathlib import Path

    tokenizer = load_tokenizer(Path(experiment.data) / manifest["tokenizer"].get("file", "tokenizer.json"))
    with at(f"{experiment.source}: runs[{run.index}] ({run.name}): data {experiment.data}"):
        special_ids(tokenizer)
