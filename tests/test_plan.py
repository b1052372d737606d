"""lmlab plan: Chinchilla arithmetic, shapes, throughput from earlier runs, the command."""

from __future__ import annotations

import json
import math

import pytest

from lmlab.core.errors import ConfigError
from lmlab.experiments.plan import (Throughput, chinchilla_optimum, measured_throughput, parse_duration, plan_budget,
                                    shapes)


def test_chinchilla_optimum_by_hand():
    # 6 N D = C with D = 20 N: N = sqrt(1.2e14 / 120) = 1e6, D = 2e7
    n, d = chinchilla_optimum(1.2e14)
    assert n == pytest.approx(1e6) and d == pytest.approx(2e7)
    n, d = chinchilla_optimum(6e11, tokens_per_parameter=10)  # sqrt(6e11 / 60) = 1e5
    assert n == pytest.approx(1e5) and d == pytest.approx(1e6)
    with pytest.raises(ConfigError):
        chinchilla_optimum(0)


def test_shapes_count_parameters_and_flops_as_the_formula():
    by_shape = {(s.n_layer, s.d_model): s for s in shapes(vocab_size=67, block_size=64)}
    s = by_shape[(4, 128)]
    # GPT-2 style, tied embeddings: per layer q,k,v,o 4d^2 + 4d, MLP 8d^2 + 5d, two LayerNorms 4d;
    # the token embedding (the output layer) and the final LayerNorm 2d; positions left out.
    d = 128
    n = 67 * d + 4 * (12 * d * d + 13 * d) + 2 * d
    assert s.parameters == n == 801_920 and s.n_head == 4
    assert s.flops_per_token == 6 * n + 12 * 4 * d * 64  # 6N + 12 L (H Q) T
    assert by_shape[(8, 768)].n_head == 12  # heads of 64 from width 512
    assert all(16 <= s.d_model / s.n_layer <= 128 for s in by_shape.values())


def test_plan_spends_the_budget_at_twenty_tokens_per_parameter():
    throughput = Throughput(2e10, "given")
    plan = plan_budget(train_tokens=10**9, vocab_size=67, flops=1.2e14, throughput=throughput, block_size=64)
    assert not plan.data_limited and plan.optimal_parameters == pytest.approx(1e6)
    assert 20 / 1.3 < plan.tokens_per_parameter < 20 * 1.3
    assert 0.7e6 < plan.shape.parameters < 1.3e6  # near sqrt(C / 120), less the attention term's share
    assert plan.tokens == plan.steps * plan.batch_size * 64
    assert plan.flops == plan.shape.flops_per_token * plan.tokens
    assert plan.flops == pytest.approx(1.2e14, rel=0.01)  # the whole budget, up to rounding of steps
    assert plan.seconds == pytest.approx(plan.flops / 2e10)
    assert 1500 < plan.steps < 2600 and plan.warmup_steps == 100
    seconds = plan_budget(10**9, 67, seconds=6000, throughput=throughput, block_size=64)
    assert seconds.budget_flops == 1.2e14 and seconds.shape == plan.shape


def test_plan_is_data_limited_at_four_epochs():
    plan = plan_budget(train_tokens=2_000_000, vocab_size=67, flops=1e15, throughput=Throughput(1e10, "x"),
                       block_size=64)
    assert plan.data_limited and any("data-limited" in note for note in plan.notes)
    assert plan.epochs == pytest.approx(4, rel=0.01)
    assert 20 / 1.3 < plan.tokens_per_parameter < 20 * 1.3  # sized for the data, not the budget
    assert plan.flops < 0.05 * plan.budget_flops


def test_plan_needs_a_budget_and_a_throughput_for_time():
    with pytest.raises(ConfigError, match="one of the two"):
        plan_budget(1000, 67)
    with pytest.raises(ConfigError, match="throughput"):
        plan_budget(1000, 67, seconds=60)
    assert parse_duration("90") == 90 and parse_duration("30m") == 1800 and parse_duration("1.5h") == 5400
    with pytest.raises(ConfigError, match="duration"):
        parse_duration("soon")


def write_run(folder, family: str, flops_per_token: int, rates: list[float]):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model": {"family": family}, "flops_per_token": flops_per_token}))
    lines = [json.dumps({"step": 10 * (i + 1), "loss": 1.0, "tokens_per_s": r}) for i, r in enumerate(rates)]
    lines.insert(1, json.dumps({"step": 10, "val_loss": 1.0}))
    (folder / "log.jsonl").write_text("\n".join(lines) + "\n")


@pytest.fixture
def measured_runs(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs / "a", "transformer", 1_000_000, [50, 100, 300, 200])  # first interval dropped: median 200
    write_run(runs / "nested" / "c", "transformer", 1_000_000, [10, 400])  # 400
    write_run(runs / "rnn", "rnn", 1_000_000, [1, 5, 5])  # left out: there are Transformer runs
    write_run(runs / "n", "ngram", 0, [])
    return runs


def test_throughput_from_earlier_runs_and_results(measured_runs, tmp_path):
    found = measured_throughput([measured_runs])
    assert found.flops_per_second == pytest.approx(3e8) and found.samples == 2  # median of 2e8 and 4e8
    assert "Transformer" in found.source
    csv_path = tmp_path / "results.csv"
    csv_path.write_text("family,tokens_per_s,flops_per_token\ntransformer,1000,500000\nngram,9000,0\n")
    assert measured_throughput([csv_path]).flops_per_second == pytest.approx(5e8)
    assert measured_throughput([tmp_path / "empty"]) is None


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from lmlab.data import prepare

    folder = tmp_path_factory.mktemp("plan")
    (folder / "text.txt").write_text("the quick brown fox jumps over the lazy dog\n\n" * 400, encoding="utf-8")
    prepare(str(folder / "text.txt"), folder / "data", tokenizer="char", split=(0.9, 0.1, 0.0),
            split_order="ordered", clean={"dedup": False})
    return folder / "data"


def test_plan_command(tiny_data, measured_runs, tmp_path, cli):
    code, out, err = cli("plan", "--data", tiny_data, "--flops", "1e13", "--flops-per-second", "1e9",
                         "--block-size", "32", "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["budget_flops"] == 1e13 and plan["seconds"] == pytest.approx(plan["flops"] / 1e9)
    assert plan["data_limited"] and plan["epochs"] == pytest.approx(4, rel=0.05)
    code, out, err = cli("plan", "--data", tiny_data, "--time", "10m", "--runs", measured_runs, "--block-size", "32")
    assert code == 0, err
    assert "at 0.3 GFLOP/s" in out and "estimated time:" in out and "command: lmlab train" in out
    code, out, err = cli("plan", "--data", tiny_data, "--time", "10m", "--runs", tmp_path / "nothing")
    assert code == 1 and "no measured throughput" in err and "--calibrate" in err
    assert math.isfinite(plan["tokens_per_parameter"])
