"""``precision: auto`` (lmlab.training.precision): what it chooses and why, that a run keeps its choice,
and that mixed bfloat16 trains as well as float32 (the reason auto may choose it)."""

from __future__ import annotations

import collections
import json
import math

import pytest

from lmlab.data import prepare
from lmlab.training import precision as auto
from lmlab.training.config import TrainConfig
from lmlab.training.trainer import train
from tests.conftest import data_path

TINY = dict(shape="debug", batch_size=8, max_steps=60, warmup_steps=5, eval_interval=20, eval_batches=8,
            log_interval=10, learning_rate=3e-3, min_learning_rate=3e-4)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("precision")
    text = data_path("tinyshakespeare", "input.txt").read_text(encoding="utf-8")[:200_000]
    (root / "text.txt").write_text(text, encoding="utf-8")
    prepare(str(root / "text.txt"), root / "data", tokenizer="char", split=(0.9, 0.1, 0.0), split_order="ordered",
            clean={"dedup": False})
    return root / "data"


def unigram_entropy(path) -> float:
    counts = collections.Counter(path.read_text(encoding="utf-8"))
    total = sum(counts.values())
    return -sum(n / total * math.log(n / total) for n in counts.values())


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 amx_tile\n")
    assert auto.cpu_bfloat16_flags(str(cpuinfo)) == ["avx512_bf16"]
    cpuinfo.write_text("flags\t\t: fpu sse2 avx2\n")
    assert auto.cpu_bfloat16_flags(str(cpuinfo)) == []
    assert auto.cpu_bfloat16_flags(str(tmp_path / "missing")) == []


@pytest.fixture
def cpu(monkeypatch):
    """A CPU-only machine whose bfloat16 flags and product timings the test sets."""
    monkeypatch.setattr(auto, "accelerator_bfloat16", lambda: None)

    def machine(flags, float32_s=None, bfloat16_s=None):
        monkeypatch.setattr(auto, "cpu_bfloat16_flags", lambda: list(flags))
        timed = []

        def time_products(tokens, width):
            timed.append((tokens, width))
            return float32_s, bfloat16_s

        monkeypatch.setattr(auto, "time_products", time_products)
        return timed

    return machine


def test_auto_chooses_float32_without_bfloat16_instructions(cpu):
    timed = cpu([])
    precision, why = auto.resolve_precision("auto", 768, 4096)
    assert precision == "float32" and "no bfloat16 instructions" in why and not timed


def test_auto_keeps_small_models_in_float32_without_measuring(cpu):
    timed = cpu(["avx512_bf16"])
    precision, why = auto.resolve_precision("auto", 128, 768)
    assert precision == "float32" and "128 wide" in why and not timed


def test_auto_measures_the_models_own_product_and_wants_a_clear_win(cpu):
    timed = cpu(["amx_bf16", "avx512_bf16"], float32_s=0.010, bfloat16_s=0.004)
    precision, why = auto.resolve_precision("auto", 384, 4096)
    assert precision == "mixed_bfloat16" and timed == [(4096, 384)]
    assert "4096x384x1536" in why and "4.00 ms in bfloat16" in why and "10.00 ms in float32" in why
    cpu(["avx512_bf16"], float32_s=0.010, bfloat16_s=0.0095)  # 5% faster: not worth the rounding
    assert auto.resolve_precision("auto", 384, 4096)[0] == "float32"


def test_an_explicit_precision_is_kept(cpu):
    timed = cpu(["avx512_bf16"], 1.0, 0.1)
    assert auto.resolve_precision("float32", 1024, 8192) == ("float32", "as configured")
    assert auto.resolve_precision("mixed_bfloat16", 64, 8) == ("mixed_bfloat16", "as configured")
    assert not timed


def test_the_timing_is_real_on_this_machine():
    float32_s, bfloat16_s = auto.time_products(64, 32, repeats=2)
    assert 0 < float32_s < 5 and 0 < bfloat16_s < 5


def test_a_run_logs_its_choice_saves_it_and_resumes_with_it(corpus, tmp_path, cpu):
    cpu([])  # a float32-only CPU: auto must say so and save float32
    messages = []
    run = tmp_path / "run"
    train(TrainConfig(data=str(corpus), **{**TINY, "max_steps": 6, "eval_interval": 3}), run, log=messages.append)
    assert any(m.startswith("precision: float32 (auto: this CPU has no bfloat16") for m in messages), messages
    assert json.loads((run / "config.json").read_text())["train"]["precision"] == "float32"
    cpu(["avx512_bf16"], float32_s=1.0, bfloat16_s=0.1)  # the machine changed: a resume still keeps float32
    messages.clear()
    train(TrainConfig(), run, resume=True, log=messages.append)  # resume: the run's own saved config
    assert not any(m.startswith("precision:") for m in messages)
    assert json.loads((run / "config.json").read_text())["train"]["precision"] == "float32"


def test_mixed_bfloat16_trains_as_well_as_float32(corpus, tmp_path):
    """The same recipe, seed and batches: validation loss at the end within 1% (the bar auto's choice rests on)."""
    results = {}
    for precision in ("float32", "mixed_bfloat16"):
        results[precision] = train(TrainConfig(data=str(corpus), precision=precision, **TINY),
                                   tmp_path / precision, log=lambda m: None)
    float32, bfloat16 = results["float32"]["val_loss"], results["mixed_bfloat16"]["val_loss"]
    # learnt: below the text's unigram entropy (3.30 nats; uniform over its 60-odd characters: 4.1)
    assert float32 < unigram_entropy(corpus.parent / "text.txt") - 0.03
    print(f"val_loss float32 {float32:.4f}, mixed_bfloat16 {bfloat16:.4f}")
    assert abs(bfloat16 - float32) / float32 < 0.01, (float32, bfloat16)
