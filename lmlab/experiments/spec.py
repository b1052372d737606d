"""The experiment file: what to train, on which data, under which budget.

An experiment is a YAML mapping (see ``experiments/*.yaml`` and the README)::

    name: families-wikitext2           # default: the file name without .yaml
    data: runs/data/wikitext2-word     # a folder made by lmlab prepare
    prepare: {sources: [...], ...}     # optional: makes ``data`` when it is missing
    budget: {flops: 3.6e13, evaluations: 10}   # one of tokens, steps, flops, seconds
    train: {batch_size: 20}            # TrainConfig fields for every run
    seeds: [1337]                      # or repeats: 3
    evaluate: {split: test}
    grid: {learning_rate: [1e-3, 3e-3]}   # optional, crossed with every run
    finetune: {task: classify, train: ..., test: ..., steps: 200}   # optional: accuracy after fine-tuning
    runs:
      - {name: lstm, family: rnn, shape: wikitext2, dropout: ...}
      - {name: bert, family: encoder, shape: small}   # masked-LM pretraining; needs finetune beside decoders

This module parses and checks the file without the data (field names,
families, shapes, model overrides, budget shape, sources to prepare) and
expands grids and seeds into :class:`RunSpec` items. What needs the data
(vocabulary, steps from a budget) is resolved in :mod:`lmlab.experiments.budget`.
Every problem is a :class:`~lmlab.core.errors.ConfigError` that names the file, the
place in it and the field.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path

from lmlab.core.errors import ConfigError
from lmlab.core.io import read_text
from lmlab.data.clean import CleanOptions
from lmlab.data.prepare import PrepareOptions, Source
from lmlab.data.readers import ReadOptions, expand_paths
from lmlab.experiments.fields import as_mapping, at, check_known, expand_path, positive_int
from lmlab.experiments.finetune import check_run_for_finetune, parse_finetune
from lmlab.models import registry
from lmlab.models.ngram.model import NGramConfig
from lmlab.training.config import RENAMED, TrainConfig, upgrade_fields

TOP_KEYS = ("name", "description", "data", "prepare", "budget", "train", "seeds", "repeats", "evaluate", "grid",
            "finetune", "runs")
RUN_KEYS = ("name", "budget", "grid", "seeds", "repeats")  # besides TrainConfig fields
BUDGET_KINDS = ("tokens", "steps", "flops", "seconds")
EVALUATE_KEYS = ("split", "stride", "batch_size", "checkpoint")
# lmlab prepare's options by their Python names (the CLI's with _ for -); `sources` is required.
PREPARE_KEYS = ("sources", "workers", "format", "fields", "doc_sep", "errors", "doc_types", "nfkc", "min_chars",
                "max_chars", "dedup", "tokenizer", "vocab_size", "min_freq", "segmenter", "eos_token", "unit", "lang",
                "split", "split_order", "seed", "shard_tokens", "tokenizer_max_chars", "wordpiece")
WORDPIECE_KEYS = ("vocab_size", "lowercase", "min_freq")  # prepare.wordpiece: lmlab.tokenizers.wordpiece.train_wordpiece
READ_KEYS = ("format", "fields", "doc_sep", "errors", "doc_types")
CLEAN_KEYS = ("nfkc", "min_chars", "max_chars", "dedup")
TRAIN_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name != "data")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
ANY_VOCAB = 1 << 16  # stands in for the tokenizer's vocabulary when checking shapes before the data exists


@dataclass(frozen=True)
class Budget:
    """How much each run may train: ``kind`` is tokens, steps, flops, seconds, or None (each run's max_steps)."""

    kind: str | None = None
    amount: float = 0
    evaluations: int = 10  # validation points per run, unless eval_interval is given

    def scaled(self, factor: float) -> "Budget":
        return dataclasses.replace(self, amount=self.amount * factor) if self.kind else self

    def describe(self) -> str:
        if self.kind is None:
            return "each run's max_steps"
        if self.kind == "seconds":
            return f"{self.amount:,.0f} s of training (wall clock)"
        if self.kind == "flops":
            return f"{self.amount:.3g} training FLOPs"
        return f"{self.amount:,.0f} {'optimizer steps' if self.kind == 'steps' else 'training tokens'}"


@dataclass(frozen=True)
class RunSpec:
    """One run of the sweep: a configuration (``key``) at one seed."""

    id: str  # its folder name: key-s<seed>
    key: str  # the configuration, shared by its seeds: name or name-grid=value-...
    name: str
    index: int  # position in the file's runs list, for error messages
    fields: dict  # the TrainConfig fields the file sets (without data and what the budget sets)
    grid: dict  # the grid values this run takes (for the tables)
    budget: Budget
    seed: int

    @property
    def family(self) -> str:
        return self.fields.get("family", "transformer")


@dataclass(frozen=True)
class Experiment:
    name: str
    source: str  # the file, for messages
    data: str
    prepare: dict | None  # keyword arguments of lmlab.data.prepare.prepare, with `sources`
    evaluate: dict
    runs: tuple[RunSpec, ...]
    description: str = ""
    budget: Budget = field(default_factory=Budget)
    finetune: dict | None = None  # lmlab.experiments.finetune.parse_finetune: files, data options, FinetuneConfig

    def select(self, patterns) -> "Experiment":
        """Only the runs whose id, configuration or name matches one of the glob patterns."""
        patterns = [p for p in (patterns or ()) if p]
        if not patterns:
            return self
        chosen = tuple(r for r in self.runs if any(fnmatch.fnmatchcase(value, p) for p in patterns
                                                   for value in (r.id, r.key, r.name)))
        if not chosen:
            raise ConfigError(f"{self.source}: no run matches {', '.join(patterns)}; runs: "
                              f"{', '.join(r.id for r in self.runs)}")
        return dataclasses.replace(self, runs=chosen)


# ------------------------------------------------------------------ YAML


def _yaml_loader():
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    # YAML 1.1 reads 1e-3 and 3.6e13 (no dot, or no exponent sign) as strings; read them as numbers.
    Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                                 re.compile(r"^[-+]?[0-9][0-9_]*(\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                                 list("-+0123456789"))
    return Loader


def read_yaml(path) -> dict:
    import yaml

    path = Path(path)
    text = read_text(path, "experiment file")
    try:
        data = yaml.load(text, Loader=_yaml_loader())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        place = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{place}: not valid YAML: {getattr(error, 'problem', None) or error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: an experiment file must hold a mapping (name, data, budget, runs, ...)")
    return data


# ------------------------------------------------------------------ checks


def parse_budget(data, place: str, base: Budget | None = None) -> Budget:
    data = as_mapping(data, place, "budget")
    check_known(data, BUDGET_KINDS + ("evaluations",), place, "budget field(s)")
    kinds = [k for k in BUDGET_KINDS if k in data]
    if len(kinds) > 1:
        raise ConfigError(f"{place}: give one of {', '.join(BUDGET_KINDS)}, not {' and '.join(kinds)}")
    budget = base or Budget()
    if kinds:
        kind, amount = kinds[0], data[kinds[0]]
        if not isinstance(amount, (int, float)) or isinstance(amount, bool) or not amount > 0:
            raise ConfigError(f"{place}.{kind}: impossible budget {amount!r}: it must be a number > 0")
        if kind in ("tokens", "steps") and float(amount) != int(amount):
            raise ConfigError(f"{place}.{kind} must be a whole number, got {amount!r}")
        budget = dataclasses.replace(budget, kind=kind, amount=amount)
    if "evaluations" in data:
        budget = dataclasses.replace(budget, evaluations=positive_int(data["evaluations"], f"{place}.evaluations"))
    return budget


def _parse_seeds(data: dict, place: str, base_seed: int, inherited: tuple[int, ...] | None) -> tuple[int, ...]:
    if "seeds" in data and "repeats" in data:
        raise ConfigError(f"{place}: give seeds or repeats, not both")
    if "seeds" in data:
        seeds = data["seeds"]
        if not isinstance(seeds, list) or not seeds or not all(
                isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
            raise ConfigError(f"{place}.seeds must be a non-empty list of integers >= 0, got {seeds!r}")
        if len(set(seeds)) != len(seeds):
            raise ConfigError(f"{place}.seeds repeats a seed: {seeds!r}")
        return tuple(seeds)
    if "repeats" in data:
        return tuple(base_seed + i for i in range(positive_int(data["repeats"], f"{place}.repeats")))
    return inherited if inherited is not None else (base_seed,)


def _check_train_fields(data: dict, place: str) -> None:
    check_known(data, TRAIN_FIELDS, place, "training field(s)")
    if "model" in data:
        as_mapping(data["model"], f"{place}.model", "model")


def _grid(data, place: str) -> dict:
    grid = as_mapping(data, place, "grid")
    for old, new in RENAMED.items():
        if old in grid and new in grid:
            raise ConfigError(f"{place}: a grid over both {old} and {new}; {old} is the old name of {new}: keep {new}")
    for key, values in grid.items():
        name, _, sub = str(key).partition(".")
        name = RENAMED.get(name, name)  # the run ids keep the name the file gives
        if name not in TRAIN_FIELDS or (sub and name != "model"):
            raise ConfigError(f"{place}: unknown grid field {key!r}: a grid runs over training fields "
                              f"({', '.join(TRAIN_FIELDS)}) or model.FIELD")
        if name == "model" and not sub and not all(isinstance(v, dict) for v in values or ()):
            raise ConfigError(f"{place}.model: a grid over model takes mappings of model fields")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{place}.{key}: a grid field needs a non-empty list of values, got {values!r}")
    return grid


def _label(key: str, value) -> str:
    short = key.removeprefix("model.")
    if isinstance(value, dict):
        return "-".join(_label(k, v) for k, v in value.items())
    text = format(value, "g") if isinstance(value, float) else str(value)
    return re.sub(r"[^A-Za-z0-9._+=-]", "_", f"{short}={text}")


def _apply(fields: dict, key: str, value) -> dict:
    fields = {**fields, "model": dict(fields.get("model") or {})}
    name, _, sub = key.partition(".")
    name = RENAMED.get(name, name)
    if name == "model" and sub:
        fields["model"][sub] = value
    elif name == "model":
        fields["model"].update(value)
    else:
        fields[name] = value
    return fields


def check_model(family_name: str, shape: str, model: dict, vocab_size: int = ANY_VOCAB):
    """The family's model config for ``shape`` with ``model`` overrides (raises naming a bad field)."""

    spec = registry.family(family_name)
    if not spec.neural:
        options = {k: v for k, v in model.items() if k != "family"}
        known = [f.name for f in dataclasses.fields(NGramConfig) if f.name != "family"]
        check_known(options, known, "model", "n-gram field(s)")
        return NGramConfig(**options)
    return registry.model_config(family_name, shape, vocab_size, model)


# ------------------------------------------------------------------ parse


def parse_experiment(data: dict, source: str = "experiment", default_name: str = "experiment") -> Experiment:
    """Check an experiment mapping without its data and expand grids and seeds into runs."""

    check_known(data, TOP_KEYS, source, "field(s)")
    name = data.get("name", default_name)
    if not isinstance(name, str) or not NAME.match(name):
        raise ConfigError(f"{source}: name must be letters, digits, '.', '_', '+' or '-', got {name!r}")
    if not isinstance(data.get("data"), str) or not data["data"]:
        raise ConfigError(f"{source}: data must name a folder made by lmlab prepare (the prepare section makes it "
                          "if it is missing)")
    prepare = _parse_prepare(data.get("prepare"), f"{source}: prepare") if data.get("prepare") is not None else None
    evaluate = as_mapping(data.get("evaluate"), f"{source}: evaluate", "evaluate")
    check_known(evaluate, EVALUATE_KEYS, f"{source}: evaluate", "field(s)")
    evaluate = {"split": "test", "stride": None, "batch_size": 8, "checkpoint": "best", **evaluate}
    if evaluate["split"] not in ("train", "valid", "test"):
        raise ConfigError(f"{source}: evaluate.split must be train, valid or test, got {evaluate['split']!r}")
    if evaluate["checkpoint"] not in ("best", "last"):
        raise ConfigError(f"{source}: evaluate.checkpoint must be best or last, got {evaluate['checkpoint']!r}")
    positive_int(evaluate["batch_size"], f"{source}: evaluate.batch_size")
    if evaluate["stride"] is not None:
        positive_int(evaluate["stride"], f"{source}: evaluate.stride")
    budget = parse_budget(data.get("budget"), f"{source}: budget")
    train = upgrade_fields(as_mapping(data.get("train"), f"{source}: train", "train"), f"{source}: train")
    _check_train_fields(train, f"{source}: train")
    top_seeds = _parse_seeds(data, source, train.get("seed", TrainConfig.seed), None)
    top_grid = _grid(data.get("grid"), f"{source}: grid")
    entries = data.get("runs")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{source}: runs must be a non-empty list of runs (family, shape, overrides)")

    runs: list[RunSpec] = []
    for index, entry in enumerate(entries):
        place = f"{source}: runs[{index}]"
        entry = upgrade_fields(as_mapping(entry, place, "a run"), place)  # preset: the old name of shape
        check_known(entry, RUN_KEYS + TRAIN_FIELDS, place, "field(s)")
        fields = {**train, **{k: v for k, v in entry.items() if k in TRAIN_FIELDS}}
        family_name = fields.get("family", TrainConfig.family)
        with at(f"{place}.family"):
            family_name = registry.family(family_name).name
        fields["family"] = family_name
        # The train section's model overrides are for the neural families; an n-gram takes only its own.
        inherited = (train.get("model") or {}) if registry.family(family_name).neural else {}
        fields["model"] = {**inherited, **as_mapping(entry.get("model"), f"{place}.model", "model")}
        run_name = entry.get("name", family_name if not registry.family(family_name).neural
                             else f"{family_name}-{fields.get('shape', TrainConfig.shape)}")
        if not isinstance(run_name, str) or not NAME.match(run_name):
            raise ConfigError(f"{place}.name must be letters, digits, '.', '_', '+' or '-', got {run_name!r}")
        place = f"{source}: runs[{index}] ({run_name})"
        run_budget = parse_budget(entry.get("budget"), f"{place}.budget", budget)
        seeds = _parse_seeds(entry, place, fields.get("seed", TrainConfig.seed), top_seeds)
        if not registry.family(family_name).neural:
            seeds = seeds[:1]  # a count has no randomness: one run stands for every seed
        grid = {**top_grid, **_grid(entry.get("grid"), f"{place}.grid")}
        keys = list(grid)
        for values in itertools.product(*(grid[k] for k in keys)):
            chosen = dict(zip(keys, values))
            run_fields = fields
            for key, value in chosen.items():
                run_fields = _apply(run_fields, key, value)
            key_name = "-".join([run_name] + [_label(k, v) for k, v in chosen.items()])
            where = f"{place}" + (f" [{', '.join(f'{k}={v}' for k, v in chosen.items())}]" if chosen else "")
            _check_run(run_fields, run_budget, where)
            for seed in seeds:
                runs.append(RunSpec(id=f"{key_name}-s{seed}", key=key_name, name=run_name, index=index,
                                    fields={**run_fields, "seed": seed}, grid=chosen, budget=run_budget, seed=seed))
    finetune = None
    if data.get("finetune") is not None:
        finetune = parse_finetune(data["finetune"], f"{source}: finetune")
    _check_families(runs, finetune, source)
    ids = [r.id for r in runs]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ConfigError(f"{source}: runs share the name(s) {', '.join(duplicates)}; give each run its own name")
    return Experiment(name=name, source=source, data=expand_path(data["data"]), prepare=prepare, evaluate=evaluate,
                      runs=tuple(runs), description=str(data.get("description") or ""), budget=budget,
                      finetune=finetune)


def _check_families(runs: list[RunSpec], finetune: dict | None, source: str) -> None:
    """Encoders beside decoders only with a finetune section: pseudo-perplexity is no perplexity."""
    encoders = [r for r in runs if r.family == "encoder"]
    decoders = [r for r in runs if r.family != "encoder"]
    if encoders and decoders and finetune is None:
        raise ConfigError(f"{source}: finetune: runs {encoders[0].name!r} (encoder) and {decoders[0].name!r} "
                          f"({decoders[0].family}) cannot be ranked together: an encoder's masked-LM loss and "
                          "pseudo-perplexity are not comparable with a decoder's bits per byte; add a finetune section "
                          "(task classify, train, test files) to rank every run by accuracy after fine-tuning")
    if finetune is not None:
        for run in runs:
            check_run_for_finetune(run, finetune, f"{source}: runs[{run.index}] ({run.name})")


def _check_run(fields: dict, budget: Budget, place: str) -> None:
    """What can be checked before the data exists: fields, family, shape, model overrides, budget."""
    if budget.kind in ("tokens", "steps", "flops") and "max_steps" in fields:
        raise ConfigError(f"{place}: max_steps is set by budget.{budget.kind}; remove one of them")
    with at(place):
        # The budget sets max_steps (so warm-up is checked later); a stand-in here checks the other fields.
        TrainConfig(**{**fields, "data": "-", "max_steps": max(fields.get("max_steps", 0), 1 << 30)})
    with at(f"{place}.model"):
        check_model(fields["family"], fields.get("shape", TrainConfig.shape), fields.get("model") or {})


def _parse_prepare(data, place: str) -> dict:
    data = {str(k).replace("-", "_"): v for k, v in as_mapping(data, place, "prepare").items()}
    if "field" in data:
        data["fields"] = data.pop("field")
    check_known(data, PREPARE_KEYS, place, "option(s)")
    sources = data.get("sources")
    if isinstance(sources, str):
        sources = [sources]
    if not isinstance(sources, list) or not sources or not all(isinstance(s, str) for s in sources):
        raise ConfigError(f"{place}.sources must list the corpora to prepare (as for lmlab prepare)")
    sources = [expand_path(s) for s in sources]
    wordpiece = _parse_wordpiece(data, sources, place) if "wordpiece" in data else None
    for text in sources:
        source = Source.parse(text)
        if not source.spec.startswith("hf:"):
            with at(f"{place}.sources"):
                expand_paths(source.spec)
    options = {k: v for k, v in data.items() if k not in ("sources", "workers", "wordpiece")}
    for key in ("fields", "doc_types"):
        if isinstance(options.get(key), str):
            options[key] = tuple(p.strip() for p in options[key].split(",") if p.strip())
        elif isinstance(options.get(key), list):
            options[key] = tuple(str(p) for p in options[key])
    read = {k: options.pop(k) for k in READ_KEYS if k in options}
    clean = {k: options.pop(k) for k in CLEAN_KEYS if k in options}
    if isinstance(options.get("split"), list):
        options["split"] = tuple(options["split"])
    with at(place):
        PrepareOptions(tuple(Source.parse(s) for s in sources), ReadOptions(**read), CleanOptions(**clean), **options)
    workers = positive_int(data.get("workers", 1), f"{place}.workers")
    return {"sources": sources, "workers": workers, "read": read, "clean": clean, **options,
            **({"wordpiece": wordpiece} if wordpiece else {})}


def _parse_wordpiece(data: dict, sources: list[str], place: str) -> dict:
    """``prepare.wordpiece``: train a WordPiece tokenizer with [MASK] (what an encoder needs) before preparing."""

    options = as_mapping(data["wordpiece"], f"{place}.wordpiece", "wordpiece") or {}
    check_known(options, WORDPIECE_KEYS, f"{place}.wordpiece", "field(s)")
    if "tokenizer" in data:
        raise ConfigError(f"{place}: give tokenizer or wordpiece, not both (wordpiece trains the tokenizer)")
    options = {"vocab_size": 8000, "lowercase": False, "min_freq": 2, **options}
    positive_int(options["vocab_size"], f"{place}.wordpiece.vocab_size")
    positive_int(options["min_freq"], f"{place}.wordpiece.min_freq")
    if not isinstance(options["lowercase"], bool):
        raise ConfigError(f"{place}.wordpiece.lowercase must be true or false, got {options['lowercase']!r}")
    parsed = [Source.parse(s) for s in sources]
    train = [s.spec for s in parsed if s.split in (None, "train")]
    if not train or any(spec.startswith("hf:") for spec in train):
        raise ConfigError(f"{place}.wordpiece: the tokenizer is trained on the training sources' text files; "
                          "give train=FILE sources (not hf:)")
    return {**options, "texts": train}


def load_experiment(path) -> Experiment:
    """Read and check an experiment file (YAML)."""
    path = Path(path)
    return parse_experiment(read_yaml(path), str(path), path.stem)
