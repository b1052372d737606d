"""``lmlab plan``: a compute-optimal Transformer for a budget, a data set and this machine.

The arithmetic (Hoffmann et al. 2022, "Training Compute-Optimal Large Language
Models", the Chinchilla rule; Kaplan et al. 2020 for the FLOPs):

- training costs ``C = f · D`` FLOPs for ``D`` tokens at ``f`` FLOPs per token,
  ``f = 6N + 12·L·d·T`` (the model's own count: ``N`` weights, ``L`` layers of
  width ``d``, context ``T``; see :func:`lmlab.models.transformer.estimate_flops_per_token`);
- compute-optimal models see about ``k = 20`` tokens per parameter, so with
  ``f ≈ 6N``: ``N = sqrt(C / 6k)`` and ``D = k·N``;
- data is finite: a data set of ``D₀`` training tokens is worth at most
  ``E = 4`` epochs (Muennighoff et al. 2023: up to about 4 repeats cost almost
  nothing against fresh data). When ``k·N > E·D₀`` the plan is data-limited: it
  sizes the model for ``E·D₀`` tokens at ``k`` tokens per parameter and uses only
  part of the budget rather than overfit a larger model.

The shape: among Transformer shapes (layers 1–48, width a multiple of 32,
heads of 32 — 64 from width 512 — and 16 to 128 wide per layer), those whose
tokens per parameter come within 25% of the best match (the optimum is flat), and of them the one
nearest 64 wide per layer (GPT-2's ratio). Batch: about 2,000 steps, as the
default schedule expects. Time: the FLOPs at this machine's measured FLOP/s,
read from earlier runs (the median tokens/s each logged × its FLOPs per token)
or a compare ``results.csv``, or measured by a short calibration.
"""

from __future__ import annotations

import csv
import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lmlab.core.errors import ConfigError, LmlabError
from lmlab.core.io import read_json
from lmlab.experiments.records import train_rate
from lmlab.models import registry
from lmlab.training.config import TrainConfig
from lmlab.training.optimizer import build_optimizer

TOKENS_PER_PARAMETER = 20.0  # Chinchilla
MAX_EPOCHS = 4.0  # Muennighoff et al. 2023
TARGET_STEPS = 2000
PREFERRED_ASPECT = 64  # width per layer: GPT-2 small 768 / 12
MATCH = math.log(1.25)  # shapes within 25% of the best tokens-per-parameter match (the optimum is flat)


@dataclass(frozen=True)
class Throughput:
    flops_per_second: float
    source: str  # where the figure comes from, for the printout
    samples: int = 1


@dataclass(frozen=True)
class Shape:
    n_layer: int
    d_model: int
    n_head: int
    block_size: int
    vocab_size: int
    style: str
    parameters: int  # N of the FLOPs formula (non-embedding count: the tied token embedding is the output layer)
    flops_per_token: int

    def overrides(self) -> dict:
        return {"style": self.style, "n_layer": self.n_layer, "d_model": self.d_model, "n_head": self.n_head,
                "block_size": self.block_size}


@dataclass(frozen=True)
class Plan:
    budget_flops: float
    budget_seconds: float | None
    throughput: Throughput | None
    train_tokens: int
    optimal_parameters: float  # the Chinchilla optimum for the budget (f ≈ 6N)
    optimal_tokens: float
    data_limited: bool
    shape: Shape
    tokens: int  # tokens to train on: steps × batch × block
    batch_size: int
    steps: int
    warmup_steps: int
    flops: float  # what the plan uses
    seconds: float | None  # estimated wall time of the training steps
    notes: list = field(default_factory=list)

    @property
    def epochs(self) -> float:
        return self.tokens / self.train_tokens if self.train_tokens else math.inf

    @property
    def tokens_per_parameter(self) -> float:
        return self.tokens / self.shape.parameters

    def to_dict(self) -> dict:
        return asdict(self) | {"epochs": self.epochs, "tokens_per_parameter": self.tokens_per_parameter}

    def train_command(self, data: str, out: str = "runs/planned") -> str:
        options = " ".join(f"--set model.{k}={v}" for k, v in self.shape.overrides().items())
        return (f"lmlab train --data {data} --shape shakespeare-char {options} --set batch_size={self.batch_size} "
                f"--set warmup_steps={self.warmup_steps} --max-steps {self.steps} --out {out}")


def chinchilla_optimum(flops: float, tokens_per_parameter: float = TOKENS_PER_PARAMETER) -> tuple[float, float]:
    """(N, D) with ``6·N·D = flops`` and ``D = k·N``: ``N = sqrt(flops / 6k)``."""
    if not flops > 0:
        raise ConfigError(f"the budget must be > 0 FLOPs, got {flops!r}")
    parameters = math.sqrt(flops / (6 * tokens_per_parameter))
    return parameters, tokens_per_parameter * parameters


def shapes(vocab_size: int, block_size: int, style: str = "gpt2") -> list[Shape]:
    """Candidate Transformer shapes with their parameter and FLOPs counts (the model's own formulas)."""
    from lmlab.models.transformer import TransformerConfig, count_parameters, estimate_flops_per_token

    found = []
    for n_layer in range(1, 49):
        for d_model in range(32, 4097, 32):
            if not 16 <= d_model / n_layer <= 128:
                continue
            head = 64 if d_model >= 512 and d_model % 64 == 0 else 32
            config = TransformerConfig(vocab_size=vocab_size, block_size=block_size, n_layer=n_layer,
                                       n_head=d_model // head, d_model=d_model, style=style)
            found.append(Shape(n_layer, d_model, d_model // head, block_size, vocab_size, style,
                               count_parameters(config, non_embedding=True), estimate_flops_per_token(config)))
    return found


def plan_budget(train_tokens: int, vocab_size: int, flops: float | None = None, seconds: float | None = None,
                throughput: Throughput | None = None, block_size: int = 256, style: str = "gpt2",
                tokens_per_parameter: float = TOKENS_PER_PARAMETER, max_epochs: float = MAX_EPOCHS) -> Plan:
    """Python API for ``lmlab plan``: size a Transformer for ``flops`` (or ``seconds`` at ``throughput``)."""
    if (flops is None) == (seconds is None):
        raise ConfigError("give the budget as FLOPs or as seconds, one of the two")
    if seconds is not None:
        if not seconds > 0:
            raise ConfigError(f"the time budget must be > 0 seconds, got {seconds!r}")
        if throughput is None:
            raise ConfigError("a time budget needs this machine's throughput: no measured runs found")
        flops = seconds * throughput.flops_per_second
    if train_tokens < 1:
        raise ConfigError("the data has no training tokens")
    optimal_n, optimal_d = chinchilla_optimum(flops, tokens_per_parameter)
    cap = max_epochs * train_tokens

    def tokens_for(shape: Shape) -> float:
        return min(flops / shape.flops_per_token, cap)

    def mismatch(shape: Shape) -> float:  # |ln(tokens per parameter / k)|
        return abs(math.log(tokens_for(shape) / (tokens_per_parameter * shape.parameters)))

    candidates = shapes(vocab_size, block_size, style)
    best = min(mismatch(s) for s in candidates)
    close = [s for s in candidates if mismatch(s) <= best + MATCH]
    shape = min(close, key=lambda s: (abs(math.log(s.d_model / s.n_layer / PREFERRED_ASPECT)), mismatch(s)))
    notes = []
    tokens = tokens_for(shape)
    data_limited = optimal_d > cap
    if data_limited:
        notes.append(f"data-limited: the optimum wants {optimal_d:,.0f} tokens, the data gives {train_tokens:,} "
                     f"(at most {max_epochs:g} epochs = {cap:,.0f}); the model is sized for the data and uses "
                     "part of the budget")
    ratio = tokens / (tokens_per_parameter * shape.parameters)
    if ratio > 1.5:
        notes.append("the largest shape searched (48 layers) is small for this budget: it sees more tokens per "
                     "parameter than the rule asks")
    elif ratio < 1 / 1.5:
        notes.append(f"the {'data is' if data_limited else 'budget is'} small even for the smallest shapes (one layer "
                     f"of width 32 has {min(s.parameters for s in candidates):,} weights): fewer tokens per parameter "
                     "than the rule asks")
    batch_size = max(1, min(512, round(tokens / (block_size * TARGET_STEPS))))
    if batch_size > 8:
        batch_size = 4 * round(batch_size / 4)
    steps = max(1, math.ceil(tokens / (batch_size * block_size)))
    used = float(shape.flops_per_token) * steps * batch_size * block_size
    estimate = used / throughput.flops_per_second if throughput else None
    if steps < 200:
        notes.append(f"only {steps} steps: the budget is very small for a learning-rate schedule")
    return Plan(budget_flops=float(flops), budget_seconds=seconds, throughput=throughput, train_tokens=train_tokens,
                optimal_parameters=optimal_n, optimal_tokens=optimal_d, data_limited=data_limited, shape=shape,
                tokens=steps * batch_size * block_size, batch_size=batch_size, steps=steps,
                warmup_steps=min(100, steps // 10), flops=used, seconds=estimate, notes=notes)


# ------------------------------------------------------------------ this machine's throughput


def measured_throughput(paths) -> Throughput | None:
    """Median FLOP/s of earlier neural runs under ``paths`` (run folders, folders of them, compare results.csv).

    Each run gives its median logged training tokens/s × its FLOPs per token;
    Transformer runs are preferred when there are any (the plan sizes one).
    """

    found: list[tuple[str, float]] = []  # (family, FLOP/s)
    for path in map(Path, paths):
        if path.is_file() and path.suffix == ".csv":
            found += _from_results_csv(path)
            continue
        configs = [path / "config.json"] if (path / "config.json").exists() else sorted(path.rglob("config.json"))
        for config_path in configs[:2000]:
            try:
                config = read_json(config_path, "run config")
            except LmlabError:
                continue
            per_token = config.get("flops_per_token") if isinstance(config, dict) else None
            rate = train_rate(config_path.parent) if per_token else None
            if rate:
                found.append((config.get("model", {}).get("family", "transformer"), rate * per_token))
    if not found:
        return None
    chosen = [f for family, f in found if family == "transformer"] or [f for _, f in found]
    kind = "Transformer" if any(family == "transformer" for family, _ in found) else "neural"
    where = ", ".join(str(p) for p in paths)
    return Throughput(statistics.median(chosen), f"median of {len(chosen)} {kind} run(s) under {where}", len(chosen))


def _from_results_csv(path: Path) -> list[tuple[str, float]]:
    """``lmlab compare`` results: the training steps' rate (else the wall-clock one, evaluations included)."""
    rows = []
    with open(path, encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            try:
                rate = float(row.get("train_tokens_per_s") or row.get("tokens_per_s") or 0)
                per_token = float(row.get("flops_per_token") or 0)
            except ValueError:
                continue
            if rate > 0 and per_token > 0:
                rows.append((row.get("family", ""), rate * per_token))
    return rows


def calibrate(vocab_size: int, block_size: int = 256, batch_size: int = 8, steps: int = 8) -> Throughput:
    """Measure this machine: a few training steps of a small Transformer on random tokens (after compiling)."""
    import numpy as np

    from lmlab.training.steps import Stepper

    model_config = registry.model_config("transformer", "shakespeare-char", vocab_size,
                                         {"block_size": block_size, "n_layer": 4, "d_model": 256, "n_head": 8})
    model = registry.build_model(model_config, seed=0)
    optimizer, _ = build_optimizer(TrainConfig(max_steps=1000), model)
    stepper = Stepper(model, optimizer)
    rng = np.random.default_rng(0)
    x = rng.integers(0, vocab_size, (1, batch_size, block_size)).astype(np.int32)
    stepper.train(x, x)  # compile
    start = time.perf_counter()
    for _ in range(steps):
        stepper.train(x, x)
    elapsed = time.perf_counter() - start
    rate = steps * batch_size * block_size / elapsed
    return Throughput(rate * model.flops_per_token(),
                      f"calibration: {steps} steps of a 4 x 256 Transformer, {rate:,.0f} tokens/s", steps)


def parse_duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``30m``, ``1.5h``."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = str(text).strip().lower()
    scale = units.get(text[-1:], None)
    try:
        value = float(text[:-1] if scale else text)
    except ValueError:
        raise ConfigError(f"a duration is a number with s, m or h (e.g. 45m, 1.5h), got {text!r}") from None
    return value * (scale or 1)


def describe(plan: Plan, data: str | None = None) -> str:
    s = plan.shape
    lines = []
    if plan.budget_seconds is not None:
        lines.append(f"budget: {plan.budget_seconds / 60:,.1f} min at {plan.throughput.flops_per_second / 1e9:,.1f} "
                     f"GFLOP/s ({plan.throughput.source}) = {plan.budget_flops:.3g} FLOPs")
    else:
        lines.append(f"budget: {plan.budget_flops:.3g} FLOPs")
    lines.append(f"Chinchilla optimum (6N FLOPs per token, {plan.optimal_tokens / plan.optimal_parameters:g} tokens per "
                 f"parameter): {plan.optimal_parameters:,.0f} parameters on {plan.optimal_tokens:,.0f} tokens")
    lines.append(f"data: {plan.train_tokens:,} training tokens, vocabulary {s.vocab_size:,}")
    lines.append(f"suggested model: {s.style} Transformer, {s.n_layer} layers, width {s.d_model}, {s.n_head} heads, "
                 f"context {s.block_size}: {s.parameters:,} parameters, {s.flops_per_token:,} FLOPs/token "
                 "(6N + attention)")
    lines.append(f"training: {plan.steps:,} steps of batch {plan.batch_size} x {s.block_size} = {plan.tokens:,} tokens "
                 f"({plan.epochs:.2f} epochs, {plan.tokens_per_parameter:.1f} tokens per parameter), "
                 f"{plan.flops:.3g} FLOPs ({plan.flops / plan.budget_flops:.0%} of the budget)")
    if plan.seconds is not None:
        lines.append(f"estimated time: {plan.seconds / 60:,.1f} min of training steps at "
                     f"{plan.throughput.flops_per_second / 1e9:,.1f} GFLOP/s (evaluations and compilation not "
                     f"included; {plan.throughput.source})")
    else:
        lines.append("estimated time: unknown (no measured throughput: give --runs, --flops-per-second or --calibrate)")
    lines += [f"note: {n}" for n in plan.notes]
    if data:
        lines.append(f"command: {plan.train_command(data)}")
    return "\n".join(lines)
