"""lmlab compare: experiment files, budgets, a resumable sweep, the report folder."""

from __future__ import annotations

import dataclasses

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lmlab.data import prepare
from lmlab.core.errors import ConfigError
from lmlab.experiments import load_experiment, parse_experiment, run_experiment
from lmlab.experiments.budget import resolve_runs
from tests.conftest import REPO, data_path

# A 3-gram and a debug Transformer; the Transformer evaluates (and checkpoints) every 4 steps.
SWEEP = """
name: tiny
data: {data}
budget: {{steps: 12, evaluations: 3}}
train: {{batch_size: 4, warmup_steps: 2, eval_batches: 2, log_interval: 2, learning_rate: 3e-3}}
runs:
  - {{name: kn3, family: ngram, model: {{order: 3}}}}
  - {{name: gpt, shape: debug}}
"""


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compare")
    text = data_path("tinyshakespeare", "input.txt").read_text(encoding="utf-8")[:40_000]
    (folder / "tiny.txt").write_text(text, encoding="utf-8")
    prepare(str(folder / "tiny.txt"), folder / "data", tokenizer="char", unit="paragraph", split=(0.8, 0.1, 0.1),
            split_order="ordered", clean={"dedup": False})
    return folder / "data"


@pytest.fixture(scope="module")
def sweep_file(tiny_data):
    path = tiny_data.parent / "tiny.yaml"
    path.write_text(SWEEP.format(data=tiny_data), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def reference(sweep_file):
    out = sweep_file.parent / "reference"
    lines = []
    result = run_experiment(sweep_file, out, log=lines.append)
    return out, result, lines


def records(out) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(Path(out, "runs").glob("*/done.json"))}


def test_sweep_trains_evaluates_and_writes_the_report(reference, tiny_data):
    out, result, lines = reference
    done = records(out)
    assert sorted(done) == ["gpt-s1337", "kn3-s1337"]
    gpt, kn3 = done["gpt-s1337"], done["kn3-s1337"]
    config = json.loads((out / "runs" / "gpt-s1337" / "config.json").read_text())
    assert gpt["steps"] == 12 and gpt["tokens_seen"] == 12 * 4 * 32  # batch 4, debug block 32
    assert gpt["flops_per_token"] == config["flops_per_token"] > 0  # the budget's count is the model's own
    assert gpt["training_flops"] == gpt["flops_per_token"] * gpt["tokens_seen"]
    assert [p["step"] for p in gpt["history"]] == [4, 8, 12]  # eval_interval = ceil(12 / 3)
    assert [p["tokens"] for p in gpt["history"]] == [512, 1024, 1536]
    assert all(p["elapsed_s"] > 0 for p in gpt["history"]) and gpt["wall_s"] == gpt["history"][-1]["elapsed_s"]
    assert gpt["best_val_loss"] == min(p["val_loss"] for p in gpt["history"])
    manifest = json.loads((tiny_data / "manifest.json").read_text())
    assert kn3["tokens_seen"] == manifest["splits"]["train"]["tokens"] and kn3["flops_per_token"] == 0
    for record in (gpt, kn3):
        assert record["eval"]["split"] == "test" and record["eval"]["tokens"] > 1000
        assert record["eval"]["bits_per_byte"] > 0 and record["eval"]["perplexity"] > 1
    # 12 steps of a tiny model cannot beat a 3-gram counted on all of the training text
    assert kn3["eval"]["bits_per_byte"] < gpt["eval"]["bits_per_byte"]

    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["id"] for r in rows] == ["kn3-s1337", "gpt-s1337"]
    assert float(rows[1]["eval_bits_per_byte"]) == pytest.approx(gpt["eval"]["bits_per_byte"])
    table = (out / "results.md").read_text()
    assert "| `gpt` | transformer debug |" in table and "test bits/byte" in table
    report = (out / "report.md").read_text()
    assert "## Ranking" in report and "1. `kn3`" in report and "## Against the n-gram baseline" in report
    assert "`gpt` misses it" in report and "## What each budget bought" in report
    for name in ("val_loss_vs_tokens", "val_loss_vs_time", "bits_per_byte_vs_parameters", "bits_per_byte_vs_compute"):
        png = (out / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000, name
        assert f"({name}.png)" in report
    assert result.report == out / "report.md" and not result.missing
    assert any(line.startswith("[2/2] gpt-s1337 (starting)") for line in lines)


def test_rerun_skips_finished_runs(reference, sweep_file):
    out, _, _ = reference
    before = {p: p.stat().st_mtime_ns for p in Path(out, "runs").glob("*/done.json")}
    lines = []
    run_experiment(sweep_file, out, log=lines.append)
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert sum("(done, skipped)" in line for line in lines) == 2
    assert not any(line.startswith("    ") for line in lines)  # nothing trained, counted or prepared


def test_killed_sweep_resumes_without_redoing_finished_runs(reference, sweep_file):
    out = sweep_file.parent / "killed"
    env = {**os.environ, "LMLAB_TEST_KILL_AFTER_STEPS": "9"}
    killed = subprocess.run([sys.executable, "-m", "lmlab", "compare", str(sweep_file), "--out", str(out), "--quiet"],
                            cwd=REPO, env=env, capture_output=True)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    assert (out / "runs" / "kn3-s1337" / "done.json").exists()
    assert not (out / "runs" / "gpt-s1337" / "done.json").exists()
    assert json.loads((out / "runs" / "gpt-s1337" / "checkpoints" / "last.json").read_text())["step"] == 8
    finished = (out / "runs" / "kn3-s1337" / "done.json").stat().st_mtime_ns

    lines = []
    run_experiment(sweep_file, out, log=lines.append)
    assert (out / "runs" / "kn3-s1337" / "done.json").stat().st_mtime_ns == finished
    assert "[1/2] kn3-s1337 (done, skipped)" in lines[1]
    assert any("resumed" in line and "at step 8" in line for line in lines)
    # Same seeds, same numbers: the killed-and-resumed sweep equals the uninterrupted one.
    again, first = records(out), records(reference[0])
    for run in first:
        for key in ("best_val_loss", "tokens_seen", "steps", "parameters"):
            assert again[run][key] == pytest.approx(first[run][key], abs=1e-5), (run, key)
        for key in ("loss", "perplexity", "bits_per_byte"):
            assert again[run]["eval"][key] == pytest.approx(first[run]["eval"][key], abs=1e-5), (run, key)
        assert [p["val_loss"] for p in again[run]["history"]] == pytest.approx(
            [p["val_loss"] for p in first[run]["history"]], abs=1e-5)


def test_time_budget_stops_checkpoints_and_says_why(tiny_data, tmp_path):
    from lmlab.training.config import TrainConfig
    from lmlab.training.trainer import train

    config = TrainConfig(data=str(tiny_data), shape="debug", batch_size=4, max_steps=500, warmup_steps=2,
                         eval_interval=100, eval_batches=2, max_seconds=1e-3)
    result = train(config, tmp_path / "run", log=lambda m: None)
    assert result["stopped"] == "max_seconds" and result["step"] == 1  # the first step alone takes longer
    assert json.loads((tmp_path / "run" / "checkpoints" / "last.json").read_text())["step"] == 1
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 1 and "val_loss" in log[-1] and log[-1]["elapsed_s"] >= 1e-3
    with pytest.raises(ConfigError, match="max_seconds"):
        TrainConfig(max_seconds=-1)


def manifest_of(vocab: int, train_tokens: int) -> dict:
    return {"tokenizer": {"vocab_size": vocab, "kind": "char"},
            "splits": {"train": {"tokens": train_tokens, "shards": [{"tokens": train_tokens}]},
                       "valid": {"tokens": 1000}, "test": {"tokens": 1000}}}


def test_budgets_convert_to_steps_with_the_models_flops():
    from lmlab.models.transformer import count_parameters, estimate_flops_per_token, shape

    experiment = parse_experiment({
        "data": "d", "budget": {"flops": 1e12, "evaluations": 4}, "train": {"shape": "debug", "warmup_steps": 3},
        "runs": [{"name": "by-flops"}, {"name": "by-tokens", "budget": {"tokens": 10_000}, "batch_size": 3},
                 {"name": "by-time", "budget": {"seconds": 90}, "max_steps": 700, "eval_interval": 50},
                 {"name": "lr", "grid": {"learning_rate": [1e-3, 3e-3]}, "seeds": [1, 2]}]})
    runs = {r.id: r for r in resolve_runs(experiment, manifest_of(61, 100_000))}
    model = shape("debug", vocab_size=61)
    per_token = estimate_flops_per_token(model)  # 6N + 12 L H Q T
    assert per_token == 6 * count_parameters(model, non_embedding=True) + 12 * 2 * 2 * 16 * 32
    flops = runs["by-flops-s1337"]
    assert flops.flops_per_token == per_token and flops.tokens_per_step == 12 * 32
    assert flops.config.max_steps == int(1e12 // (per_token * 12 * 32))
    assert flops.config.eval_interval == -(-flops.config.max_steps // 4)
    tokens = runs["by-tokens-s1337"].config
    assert tokens.max_steps == 10_000 // (3 * 32) == 104 and tokens.eval_interval == 26
    timed = runs["by-time-s1337"].config
    assert timed.max_seconds == 90 and timed.max_steps == 700 and timed.eval_interval == 50
    assert sorted(r for r in runs if r.startswith("lr")) == [
        "lr-learning_rate=0.001-s1", "lr-learning_rate=0.001-s2", "lr-learning_rate=0.003-s1",
        "lr-learning_rate=0.003-s2"]
    assert runs["lr-learning_rate=0.003-s2"].config.learning_rate == 3e-3
    assert runs["lr-learning_rate=0.003-s2"].config.seed == 2
    scaled = {r.id: r for r in resolve_runs(experiment, manifest_of(61, 100_000), scale=0.1)}
    assert scaled["by-tokens-s1337"].config.max_steps == 1_000 // 96
    assert scaled["by-tokens-s1337"].config.warmup_steps == 0  # round(3 * 0.1)


BAD = [
    ("data: {data}\nbudget: {{steps: 5}}\nrunz: []\n", r"unknown field\(s\) runz"),
    ("data: {data}\nbudget: {{steps: 5}}\nruns: [{{shape: debug, max_step: 3}}]\n", r"runs\[0\].*max_step"),
    ("data: {data}\nruns: [{{family: lstmm}}]\n", r"runs\[0\].family.*unknown model family 'lstmm'"),
    ("data: {data}\nruns: [{{shape: tiny}}]\n", r"runs\[0\].*model.*unknown transformer shape 'tiny'"),
    ("data: {data}\nruns: [{{shape: debug, model: {{n_layers: 2}}}}]\n", r"runs\[0\].*unknown .*n_layers"),
    ("data: {data}\nruns: [{{family: ngram, model: {{order: 9}}}}]\n", r"runs\[0\].*order"),
    ("data: {data}\nbudget: {{tokens: -5}}\nruns: [{{shape: debug}}]\n", r"budget.tokens: impossible budget"),
    ("data: {data}\nbudget: {{tokens: 100}}\nruns: [{{shape: debug}}]\n",
     r"runs\[0\].*impossible budget: 100 training tokens.* less than one optimizer step of 384 tokens"),
    ("data: {data}\nbudget: {{steps: 50}}\nruns: [{{shape: debug}}]\n",
     r"impossible budget.*50 optimizer steps, not more than warmup_steps 100"),
    ("data: {data}\nbudget: {{steps: 5, seconds: 3}}\nruns: [{{shape: debug}}]\n", "one of tokens.*not steps and seconds"),
    ("data: {data}\nbudget: {{steps: 500}}\nruns: [{{shape: debug, max_steps: 9}}]\n", "max_steps is set by budget.steps"),
    ("data: {data}\nruns: [{{shape: debug, grid: {{learning_rat: [1]}}}}]\n", "unknown grid field 'learning_rat'"),
    ("data: {data}\nruns: [{{name: a, shape: debug}}, {{name: a, shape: debug}}]\n", "share the name.*a-s1337"),
    ("data: {data}\nevaluate: {{split: dev}}\nruns: [{{shape: debug}}]\n", "evaluate.split"),
    ("data: {data}/nowhere\nruns: [{{shape: debug}}]\n", r"data: .*nowhere: no such prepared data folder"),
    ("data: {data}\nprepare: {{sources: [/no/such/corpus.txt]}}\nruns: [{{shape: debug}}]\n",
     r"prepare.sources: /no/such/corpus.txt: no such file"),
    ("data: {data}\nruns: [{{shape: debug}}\n", "not valid YAML"),
    ("data: {data}\nruns: [{{preset: debug, shape: gpt2-small}}]\n",
     r"runs\[0\]: preset \('debug'\) and shape \('gpt2-small'\) disagree"),
]


@pytest.mark.parametrize("text,message", BAD)
def test_bad_experiment_files_fail_before_any_run(tiny_data, tmp_path, cli, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text.format(data=tiny_data), encoding="utf-8")
    code, _, err = cli("compare", path, "--out", tmp_path / "out")
    assert code == 1 and err.startswith(f"lmlab: error: {path}"), err
    assert len(err.strip().splitlines()) == 1
    assert re.search(message, err), err
    assert not (tmp_path / "out").exists()  # nothing ran


def test_runs_on_disk_must_match_the_file(reference, sweep_file, tmp_path):
    changed = tmp_path / "changed.yaml"
    changed.write_text(sweep_file.read_text().replace("learning_rate: 3e-3", "learning_rate: 2e-3"))
    with pytest.raises(ConfigError, match="s1337 was made with another config.*learning_rate: 0.003 on disk"):
        run_experiment(changed, reference[0], log=lambda m: None)


def test_fields_added_since_a_run_was_made_count_as_their_defaults(reference, sweep_file, tmp_path):
    out = tmp_path / "older"
    shutil.copytree(reference[0], out)
    path = out / "runs" / "gpt-s1337" / "config.json"
    saved = json.loads(path.read_text())
    del saved["train"]["skip_bad_batches"]  # as written by an lmlab that had no such field
    path.write_text(json.dumps(saved))
    lines = []
    run_experiment(sweep_file, out, log=lines.append)
    assert sum("(done, skipped)" in line for line in lines) == 2


def test_a_sweep_made_when_shape_was_called_preset_still_reads(reference, sweep_file, tmp_path):
    """Issue 20: ``preset`` became ``shape``; an old experiment file, run config.json and done.json still work."""
    out = tmp_path / "older"
    shutil.copytree(reference[0], out)
    for name in ("config.json", "done.json"):
        path = out / "runs" / "gpt-s1337" / name
        saved = json.loads(path.read_text())
        section = saved["train"] if name == "config.json" else saved
        section["preset"] = section.pop("shape")
        path.write_text(json.dumps(saved))
    old = tmp_path / "old.yaml"
    old.write_text(sweep_file.read_text().replace("shape: debug", "preset: debug"))
    assert "preset: debug" in old.read_text()
    lines = []
    run_experiment(old, out, log=lines.append)
    assert sum("(done, skipped)" in line for line in lines) == 2
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [(r["id"], r["shape"]) for r in rows] == [("kn3-s1337", "order 3"), ("gpt-s1337", "debug")]
    assert "| `gpt` | transformer debug |" in (out / "results.md").read_text()


SHIPPED = REPO / "experiments"


def test_shipped_experiments_validate_and_fit_their_budgets():
    families = load_experiment(SHIPPED / "families-wikitext2.yaml")
    assert [r.family for r in families.runs] == ["ngram", "rnn", "gated_cnn", "transformer"]
    assert [r.budget.kind for r in families.runs[1:]] == ["steps"] * 3 and families.evaluate["split"] == "test"
    planned = resolve_runs(families, manifest_of(33_278, 2_075_677))  # word-level WikiText-2's sizes
    for run in planned[1:]:
        assert 1.3 < run.config.max_steps * run.tokens_per_step / 2_075_677 < 1.8  # about 1.5 epochs each
        # comparable models: width 256, the adaptive softmax over the 33k words (the full one: 58-64M)
        assert 14e6 < run.flops_per_token < 22e6 and run.config.model["output"] == "adaptive"
    ablations = load_experiment(SHIPPED / "transformer-ablations.yaml")
    planned = {r.id: r for r in resolve_runs(ablations, manifest_of(67, 1_003_854))}
    assert len(planned) == 9 and planned["gpt2-s1337"].config.max_steps == 2000
    assert planned["context-block_size=256-s1337"].config.max_steps == 500
    sizes = [planned[f"{n}-s1337"].parameters for n in ("depth2-width176", "gpt2", "depth8-width88")]
    assert max(sizes) / min(sizes) < 1.07  # depth against width at about equal parameters


def test_shipped_experiments_smoke_run(tiny_data, tmp_path):
    """Both shipped files run end to end through the sweep at a tiny scale (their real data: see README)."""
    out = tmp_path / "ablations"
    result = run_experiment(SHIPPED / "transformer-ablations.yaml", out, scale=0.002, only=["llama"], data=tiny_data,
                            log=lambda m: None)
    (record,) = result.records
    assert record["id"] == "llama-s1337" and record["steps"] == 4 and record["eval"]["bits_per_byte"] > 0
    assert len(result.missing) == 8 and "Not run yet" in (out / "report.md").read_text()
    # The neural runs' adaptive cutoffs are sized for 33k words, not the tiny data's characters: the 5-gram alone.
    families = load_experiment(SHIPPED / "families-wikitext2.yaml")
    families = dataclasses.replace(families, runs=tuple(r for r in families.runs if r.family == "ngram"))
    result = run_experiment(families, tmp_path / "families", data=tiny_data, log=lambda m: None)
    assert [r["family"] for r in result.records] == ["ngram"]
