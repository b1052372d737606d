"""lmlab compare with masked-LM encoders: pretrained at the same budget, ranked by accuracy after fine-tuning."""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

import pytest

from lmlab.data import prepare
from lmlab.core.errors import ConfigError
from lmlab.experiments import parse_experiment, run_experiment
from lmlab.experiments.budget import resolve_runs
from lmlab.experiments.finetune import FINETUNED
from lmlab.experiments.report import CAVEAT
from lmlab.experiments.spec import load_experiment
from tests.conftest import data_path

# A debug encoder and a debug Transformer on the same WordPiece data (trained by prepare.wordpiece),
# 4 pretraining steps each, then 4 fine-tuning steps on 160 SST-2 sentences, tested on 64.
SWEEP = """
name: tiny-mlm
data: {folder}/data
prepare:
  sources: [train={folder}/train.txt, valid={folder}/valid.txt, test={folder}/test.txt]
  wordpiece: {{vocab_size: 300, lowercase: true, min_freq: 1}}
  unit: paragraph
  dedup: false
budget: {{steps: 4, evaluations: 1}}
train: {{batch_size: 4, warmup_steps: 1, eval_batches: 1, log_interval: 4, learning_rate: 3e-3}}
evaluate: {{batch_size: 8}}
finetune:
  task: classify
  train: {folder}/sst2-train.tsv
  test: {folder}/sst2-test.tsv
  valid_fraction: 0.2
  steps: 4
  batch_size: 16
  learning_rate: 1e-3
runs:
  - {{name: bert, family: encoder, shape: debug}}
  - {{name: gpt, family: transformer, shape: debug}}
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compare-mlm")
    lines = [line for line in data_path("wikitext-2", "train.txt").read_text(encoding="utf-8").splitlines()
             if len(line.split()) > 8][:300]
    for name, part in (("train", lines[:240]), ("valid", lines[240:270]), ("test", lines[270:])):
        (folder / f"{name}.txt").write_text("\n".join(part) + "\n", encoding="utf-8")
    sst2 = data_path("sst2", "train.tsv").read_text(encoding="utf-8").splitlines()
    (folder / "sst2-train.tsv").write_text("\n".join(sst2[:161]) + "\n", encoding="utf-8")
    (folder / "sst2-test.tsv").write_text("\n".join(sst2[:1] + sst2[1000:1064]) + "\n", encoding="utf-8")
    (folder / "sweep.yaml").write_text(SWEEP.format(folder=folder), encoding="utf-8")
    return folder


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def swept(folder):
    """The sweep killed as the first fine-tuning starts (after bert's pretraining), then run again to the end."""
    import lmlab.experiments.sweep as stage  # where the sweep calls it

    real, calls = stage.run_finetune, []

    def killed(*args, **kwargs):
        calls.append(args)
        raise Killed

    stage.run_finetune = killed
    try:
        with pytest.raises(Killed):
            run_experiment(folder / "sweep.yaml", folder / "out", log=lambda m: None)
    finally:
        stage.run_finetune = real
    bert = folder / "out" / "runs" / "bert-s1337"
    assert len(calls) == 1 and not (bert / FINETUNED).exists() and not (bert / "done.json").exists()
    kept = {p: p.stat().st_mtime_ns for p in (bert / "trained.json", bert / "evaluated.json", bert / "log.jsonl")}
    lines = []
    result = run_experiment(folder / "sweep.yaml", folder / "out", log=lines.append)
    return folder / "out", result, lines, kept


def done(out) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(Path(out, "runs").glob("*/done.json"))}


def test_encoder_and_decoder_are_ranked_by_accuracy_after_fine_tuning(swept, folder):
    out, result, lines, _ = swept
    records = done(out)
    assert sorted(records) == ["bert-s1337", "gpt-s1337"]
    bert, gpt = records["bert-s1337"], records["gpt-s1337"]
    # Same budget rule for both: 4 steps of 4 x 32 tokens; FLOPs from each model's own count.
    for record in (bert, gpt):
        config = json.loads((out / "runs" / record["id"] / "config.json").read_text())
        assert record["steps"] == 4 and record["tokens_seen"] == 4 * 4 * 32
        assert record["flops_per_token"] == config["flops_per_token"] > 0
        assert record["finetune"]["task"] == "classify" and record["finetune"]["test_examples"] == 64
        assert 0 <= record["finetune"]["accuracy"] <= 100
        assert (out / "runs" / record["id"] / "finetune" / "test_metrics.json").is_file()
    assert bert["finetune"]["pooling"] == "cls" and gpt["finetune"]["pooling"] == "last"  # pooling: auto
    assert bert["family"] == "encoder" and bert["eval"]["bits_per_byte"] is None
    assert 0 <= bert["eval"]["masked_accuracy"] <= 1 and bert["eval"]["masked_loss"] > 0
    assert gpt["eval"]["bits_per_byte"] > 0 and "masked_loss" not in gpt["eval"]
    with open(out / "results.csv", encoding="utf-8") as handle:
        rows = {row["id"]: row for row in csv.DictReader(handle)}
    assert float(rows["bert-s1337"]["finetune_accuracy"]) == pytest.approx(bert["finetune"]["accuracy"])
    assert float(rows["bert-s1337"]["eval_masked_accuracy"]) == pytest.approx(100 * bert["eval"]["masked_accuracy"])
    assert rows["bert-s1337"]["eval_bits_per_byte"] == "" and rows["gpt-s1337"]["eval_masked_loss"] == ""
    table = (out / "results.md").read_text(encoding="utf-8")
    assert "sst2-test.tsv accuracy % (fine-tuned)" in table and "test masked accuracy %" in table
    report = (out / "report.md").read_text(encoding="utf-8")
    assert CAVEAT in report and "By accuracy on sst2-test.tsv after fine-tuning" in report
    ranked = sorted((bert, gpt), key=lambda r: -r["finetune"]["accuracy"])
    assert report.index(f"1. `{ranked[0]['key']}`") < report.index(f"2. `{ranked[1]['key']}`")
    assert "bits/byte against the best" not in report  # no bits-per-byte ranking across the families
    assert (out / "accuracy_vs_compute.png").stat().st_size > 0
    assert any("test accuracy" in line and "masked accuracy" in line for line in lines)


def test_an_interrupted_fine_tuning_keeps_the_pretraining_and_a_rerun_skips_done_runs(swept, folder):
    out, _, lines, kept = swept
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # not pretrained nor evaluated again
    assert any("bert-s1337 (resuming)" in line for line in lines)
    assert any("gpt-s1337 (starting)" in line for line in lines)
    stamps = {p: p.stat().st_mtime_ns for p in Path(out, "runs").glob("*/done.json")}
    assert len(stamps) == 2
    lines = []
    run_experiment(folder / "sweep.yaml", out, log=lines.append)
    assert sum("done, skipped" in line for line in lines) == 2
    assert {p: p.stat().st_mtime_ns for p in Path(out, "runs").glob("*/done.json")} == stamps


def test_a_changed_finetune_section_is_refused_before_any_run(swept, folder, tmp_path):
    """As a changed pretraining config: compare names the field rather than reuse the old fine-tuned result."""
    import shutil

    out = swept[0]
    stamps = {p: p.stat().st_mtime_ns for p in Path(out, "runs").glob("*/*.json")}
    base = SWEEP.format(folder=folder)

    def check(text, where=out):
        path = tmp_path / "changed.yaml"
        path.write_text(text, encoding="utf-8")
        return run_experiment(path, where, dry_run=True, log=lambda m: None)

    check(base)  # unchanged: no complaint
    bert = re.escape(str(out / "runs" / "bert-s1337"))
    for old, new, message in [
        ("  learning_rate: 1e-3\n", "  learning_rate: 2e-3\n", r"finetune.learning_rate: 0.001 on disk, 0.002 now"),
        ("  steps: 4\n", "  steps: 4\n  limit: 100\n", r"finetune.limit: None on disk, 100 now"),
        ("  steps: 4\n", "  steps: 4\n  pooling: mean\n", r"finetune.pooling: 'cls' on disk, 'mean' now"),
        ("sst2-test.tsv", "sst2-train.tsv", r"finetune.test: '.*sst2-test.tsv' on disk, '.*sst2-train.tsv' now"),
    ]:
        with pytest.raises(ConfigError, match=rf"{bert} was fine-tuned with another finetune section \({message}\); "
                                              rf"keep the file as it was, .* to fine-tune it again"):
            check(base.replace(old, new))
    encoder_alone = base[:base.index("finetune:")] + "runs:\n  - {name: bert, family: encoder, shape: debug}\n"
    with pytest.raises(ConfigError, match=rf"{bert} was fine-tuned, but the experiment now has no finetune section"):
        check(encoder_alone)
    assert {p: p.stat().st_mtime_ns for p in Path(out, "runs").glob("*/*.json")} == stamps

    # A run done before records kept their section: its fine-tuned folder's config is compared (data options aren't).
    old = tmp_path / "old"
    shutil.copytree(out, old)
    for path in [*old.glob("runs/*/finetuned.json"), *old.glob("runs/*/done.json")]:
        record = json.loads(path.read_text())
        (record.get("finetune") or record).pop("section")
        path.write_text(json.dumps(record))
    check(base.replace("  steps: 4\n", "  steps: 4\n  limit: 100\n"), old)
    with pytest.raises(ConfigError, match=r"bert-s1337 was fine-tuned with another finetune section "
                                          r"\(finetune.learning_rate: 0.001 on disk, 0.002 now\)"):
        check(base.replace("  learning_rate: 1e-3\n", "  learning_rate: 2e-3\n"), old)
    (old / "runs" / "bert-s1337" / FINETUNED).unlink()  # and one done without the section
    done_record = json.loads((old / "runs" / "bert-s1337" / "done.json").read_text())
    del done_record["finetune"]
    (old / "runs" / "bert-s1337" / "done.json").write_text(json.dumps(done_record))
    with pytest.raises(ConfigError, match=r"bert-s1337 was done without fine-tuning, but the experiment now has a "
                                          r"finetune section"):
        check(base, old)


def _experiment(**changes):
    data = {"name": "x", "data": "unused", "budget": {"steps": 4},
            "runs": [{"name": "bert", "family": "encoder", "shape": "debug"},
                     {"name": "gpt", "family": "transformer", "shape": "debug"}]}
    data.update(changes)
    return data


def _finetune(folder, **changes):
    return {"task": "classify", "train": str(folder / "sst2-train.tsv"), "test": str(folder / "sst2-test.tsv"),
            "steps": 2, **changes}


@pytest.mark.parametrize("change, message", [
    (None, r"mix.yaml: finetune: runs 'bert' \(encoder\) and 'gpt' \(transformer\) cannot be ranked together"),
    ({"bogus": 1}, r"mix.yaml: finetune: unknown field\(s\) bogus"),
    ({"task": "span"}, r"mix.yaml: finetune.task: .*must be classify, got 'span'"),
    ({"pooling": "cls"}, r"mix.yaml: runs\[1\] \(gpt\): finetune.pooling cls"),
    ({"pooling": "max"}, r"mix.yaml: finetune: pooling must be one of"),
    ({"batch_size": 0}, r"mix.yaml: finetune: batch_size must be an integer >= 1"),
    ({"test": "/no/such/file.tsv"}, r"mix.yaml: finetune.test: no such file /no/such/file.tsv"),
])
def test_validation_names_the_file_and_field(folder, change, message):
    data = _experiment() if change is None else _experiment(finetune=_finetune(folder, **change))
    with pytest.raises(ConfigError, match=message):
        parse_experiment(data, "mix.yaml")


def test_an_n_gram_cannot_be_fine_tuned_and_encoders_alone_need_no_finetune(folder):
    runs = [{"name": "kn", "family": "ngram"}, {"name": "gpt", "shape": "debug"}]
    with pytest.raises(ConfigError, match=r"runs\[0\] \(kn\): an n-gram cannot be fine-tuned"):
        parse_experiment(_experiment(runs=runs, finetune=_finetune(folder)), "f.yaml")
    alone = parse_experiment(_experiment(runs=[{"name": "bert", "family": "encoder", "shape": "debug"}]), "f.yaml")
    assert alone.finetune is None and alone.runs[0].family == "encoder"


def test_encoder_budget_counts_the_models_own_flops_and_needs_a_mask_token(swept, tmp_path):
    out, result, _, _ = swept
    from lmlab.models import registry

    bert = next(p for p in result.planned if p.spec.family == "encoder")
    model = registry.build_model(registry.model_config("encoder", "debug", 300, {}), seed=0)
    assert bert.flops_per_token == model.flops_per_token()
    # A char-level data folder has no [MASK]: refused before any run, naming the run and the data.
    (tmp_path / "t.txt").write_text("abc def ghi\n\n" * 400, encoding="utf-8")
    prepare(str(tmp_path / "t.txt"), tmp_path / "char", tokenizer="char", unit="paragraph", split=(0.8, 0.1, 0.1),
            split_order="ordered", clean={"dedup": False})
    experiment = parse_experiment(_experiment(data=str(tmp_path / "char"),
                                              runs=[{"name": "bert", "family": "encoder", "shape": "debug"}]), "e.yaml")
    manifest = json.loads((tmp_path / "char" / "manifest.json").read_text())
    with pytest.raises(ConfigError, match=r"e.yaml: runs\[0\] \(bert\): data .*char: masked-LM training needs a "
                                          r"tokenizer with a mask token"):
        resolve_runs(experiment, manifest)


def test_shipped_experiment_is_valid():
    os.environ.setdefault("LMLAB_DATA", str(data_path()))
    from tests.conftest import REPO

    experiment = load_experiment(REPO / "experiments" / "encoder-vs-decoder-sst2.yaml")
    assert {r.family for r in experiment.runs} == {"encoder", "transformer"}
    assert experiment.finetune["config"]["task"] == "classify" and experiment.budget.kind == "flops"
    assert "wordpiece" in experiment.prepare  # the encoder needs [MASK]: one WordPiece tokenizer for both
