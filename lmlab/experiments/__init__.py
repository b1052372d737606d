"""Experiments: several models and settings trained under one budget, compared in a report.

- :mod:`~lmlab.experiments.spec`: the experiment file (YAML), checked before anything runs;
- :mod:`~lmlab.experiments.budget`: a budget (tokens, steps, FLOPs, seconds) to each run's config;
- :mod:`~lmlab.experiments.sweep`: the runs, one after another, resumable (``lmlab compare``);
- :mod:`~lmlab.experiments.finetune`: the optional finetune section (every run fine-tuned and tested,
  the ranking by accuracy: how encoders are compared with decoders);
- :mod:`~lmlab.experiments.records`, :mod:`~lmlab.experiments.table`, :mod:`~lmlab.experiments.plots`,
  :mod:`~lmlab.experiments.report`: what a finished run reached, the tables, figures and written report;
- :mod:`~lmlab.experiments.plan`: compute-optimal sizing for a budget (``lmlab plan``).

Nothing heavy is imported here: TensorFlow loads only when a run trains.
"""

from lmlab.experiments.spec import Experiment, load_experiment, parse_experiment
from lmlab.experiments.sweep import SweepResult, run_experiment

__all__ = ["Experiment", "SweepResult", "load_experiment", "parse_experiment", "run_experiment"]
