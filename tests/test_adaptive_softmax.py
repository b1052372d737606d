"""The adaptive softmax output (lmlab/layers/adaptive_softmax.py) and ``output: adaptive`` in every decoder family."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from keras import ops

from lmlab.core.errors import ConfigError
from lmlab.data import prepare
from lmlab.layers.adaptive_softmax import AdaptiveSoftmax, adaptive_macs, tail_dims
from lmlab.models import registry
from lmlab.models.gated_cnn import GatedCNNConfig
from lmlab.models.rnn import RNNConfig
from lmlab.models.transformer import TransformerConfig
from lmlab.training.config import TrainConfig
from lmlab.training.trainer import train
from tests.baselines import split_tokens, unigram_cross_entropy
from tests.conftest import REPO, data_path

V, D, CUTOFFS = 99, 24, [13, 40, 70]  # odd sizes: a swapped axis fails
ADAPTIVE = {"output": "adaptive", "cutoffs": [50, 200], "div_value": 2.0}
CONFIGS = {
    "rnn": lambda **kw: RNNConfig(vocab_size=V, d_model=D, n_layer=1, block_size=9, **kw),
    "gated_cnn": lambda **kw: GatedCNNConfig(vocab_size=V, d_model=D, n_layer=2, block_size=9, **kw),
    "transformer": lambda **kw: TransformerConfig(vocab_size=V, d_model=D, n_head=3, n_layer=1, block_size=9, **kw),
}


def layer(tied=False, dtype="float32", seed=3):
    softmax = AdaptiveSoftmax(V, D, CUTOFFS, div_value=2.0, tied=tied, stddev=0.5, seed=seed, dtype=dtype)
    softmax.build((None, None, D))
    # Non-zero biases, so that every weight matters to the checks.
    rng = np.random.default_rng(0)
    for weight in softmax.weights:
        if "bias" in weight.path:
            weight.assign(rng.normal(size=weight.shape).astype(weight.dtype))
    return softmax


def inputs(dtype="float32", seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(3, 5, D)).astype(dtype)
    y = rng.integers(0, V, size=(3, 5))
    y[0, :4] = [0, CUTOFFS[0], CUTOFFS[1] - 1, V - 1]  # the edges of every cluster
    table = rng.normal(size=(V, D)).astype(dtype)
    return x, y, table


@pytest.mark.parametrize("tied", [False, True])
def test_probabilities_sum_to_one_and_the_cheap_nll_is_their_negative_log(tied):
    softmax = layer(tied)
    x, y, table = inputs()
    log_probs = np.asarray(softmax.log_probs(x, table if tied else None))
    assert log_probs.shape == (3, 5, V) and log_probs.dtype == np.float32
    np.testing.assert_allclose(np.exp(log_probs.astype(np.float64)).sum(-1), 1.0, atol=1e-5)
    nll = np.asarray(softmax.token_nll(x, y, table if tied else None))
    np.testing.assert_allclose(nll, -np.take_along_axis(log_probs, y[..., None], -1)[..., 0], atol=1e-5, rtol=1e-5)
    assert softmax.dims == tail_dims(D, 3, 2.0) == [12, 6, 3]
    if tied:  # the head's word rows are the table's: changing a head row changes the head words' scores
        moved = table.copy()
        moved[0] += 1.0
        assert not np.allclose(np.asarray(softmax.log_probs(x, moved))[..., 0], log_probs[..., 0])


def test_log_probs_are_valid_logits():
    """What reads logits applies (log-)softmax to them: a no-op on normalised log-probabilities."""
    x, _, _ = inputs()
    log_probs = layer().log_probs(x)
    np.testing.assert_allclose(np.asarray(ops.log_softmax(log_probs, axis=-1)), np.asarray(log_probs), atol=1e-5)


def test_gradient_of_the_cheap_loss_matches_the_full_path_and_finite_differences():
    import tensorflow as tf

    softmax = layer(dtype="float64")
    x, y, _ = inputs("float64")

    def full_loss():
        log_probs = ops.cast(softmax.log_probs(x), "float64")  # the layer's logits are float32
        return -ops.mean(ops.take_along_axis(log_probs, y[..., None], axis=-1))

    def cheap_loss():
        return ops.mean(softmax.token_nll(x, y))

    variables = softmax.trainable_variables
    with tf.GradientTape(persistent=True) as tape:
        full, cheap = full_loss(), cheap_loss()
    for a, b in zip(tape.gradient(full, variables), tape.gradient(cheap, variables)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-6)
    grads = dict(zip((v.path for v in variables), tape.gradient(cheap, variables)))
    # Central differences on a few entries of the head, the first and the last tail.
    for variable, index in [(softmax.head_kernel, (2, 5)), (softmax.head_bias, (CUTOFFS[0] + 1,)),
                            (softmax.tails[0][0], (1, 3)), (softmax.tails[2][1], (0, 4))]:
        base = variable.numpy()
        values = []
        for step in (1e-4, -1e-4):
            moved = base.copy()
            moved[index] += step
            variable.assign(moved)
            values.append(float(cheap_loss()))
        variable.assign(base)
        numeric = (values[0] - values[1]) / 2e-4
        assert float(np.asarray(grads[variable.path])[index]) == pytest.approx(numeric, rel=1e-4, abs=1e-7)


def test_bfloat16_gives_float32_log_probs_that_sum_to_one():
    softmax = layer(dtype="mixed_bfloat16")
    x, y, _ = inputs()
    log_probs = softmax.log_probs(ops.cast(x, "bfloat16"))
    assert keras.backend.standardize_dtype(log_probs.dtype) == "float32"
    np.testing.assert_allclose(np.exp(np.asarray(log_probs, np.float64)).sum(-1), 1.0, atol=1e-5)
    nll = softmax.token_nll(ops.cast(x, "bfloat16"), y)
    assert keras.backend.standardize_dtype(nll.dtype) == "float32"
    np.testing.assert_allclose(np.asarray(nll), -np.take_along_axis(np.asarray(log_probs), y[..., None], -1)[..., 0],
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_config_fields_are_validated_and_default_to_the_full_softmax(family):
    make = CONFIGS[family]
    assert make().output == "softmax" and make().cutoffs is None
    config = make(output="adaptive", cutoffs=[13, 40], div_value=4)
    data = json.loads(json.dumps(config.to_dict()))
    assert data["cutoffs"] == [13, 40] and type(config).from_dict(data).to_dict() == data
    for bad, field in [(dict(output="sampled"), "output"), (dict(output="adaptive"), "cutoffs"),
                       (dict(output="adaptive", cutoffs=[40, 13]), "cutoffs"),
                       (dict(output="adaptive", cutoffs=[13, V]), "cutoffs"),
                       (dict(output="adaptive", cutoffs=[0, 13]), "cutoffs"),
                       (dict(output="adaptive", cutoffs="13"), "cutoffs"),
                       (dict(output="adaptive", cutoffs=[13], div_value=0.5), "div_value")]:
        with pytest.raises(ConfigError, match=field):
            make(**bad)


@pytest.mark.parametrize("family", sorted(CONFIGS))
@pytest.mark.parametrize("tie", [True, False])
def test_models_give_exact_probabilities_the_loss_path_and_honest_flops(family, tie):
    full_config = CONFIGS[family](tie_embeddings=tie)
    config = full_config.replace(output="adaptive", cutoffs=CUTOFFS, div_value=2.0)
    model = registry.build_model(config, seed=5)
    rng = np.random.default_rng(2)
    x, y = rng.integers(0, V, size=(2, 7)), rng.integers(0, V, size=(2, 7))
    log_probs = np.asarray(model(x))
    np.testing.assert_allclose(np.exp(log_probs.astype(np.float64)).sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(model.logits(model.hidden_states(x))), log_probs, atol=1e-6)
    nll = np.asarray(model(x, targets=y))
    np.testing.assert_allclose(nll, -np.take_along_axis(log_probs, y[..., None], -1)[..., 0], atol=1e-5, rtol=1e-5)
    # Cached decoding reads the same log-probabilities.
    step_logits, _ = model.call_with_cache(x[:, :3], model.init_cache(2, 9), 0)
    np.testing.assert_allclose(np.asarray(step_logits), log_probs[:, :3], atol=1e-5)
    # The closed forms match the built model; FLOPs count the head and every tail for every token.
    module = sys.modules[type(config).__module__]
    for non_embedding in (False, True):
        assert module.count_parameters(config, non_embedding) == model.num_parameters(non_embedding)
    body = model.num_parameters(True) - sum(math.prod(w.shape) for w in model.adaptive.weights)
    attention = module.estimate_flops_per_token(config) - 6 * (body + adaptive_macs(V, D, CUTOFFS, 2.0))
    assert attention == (12 * config.n_layer * config.n_head * config.head_dim * config.block_size
                         if family == "transformer" else 0)
    assert model.flops_per_token() == module.estimate_flops_per_token(config)
    full = registry.build_model(full_config, seed=5)
    assert model.flops_per_token() < full.flops_per_token()


def test_adaptive_flops_on_the_wikitext2_shape_are_a_fraction_of_the_full_softmax():
    from lmlab.models.rnn import estimate_flops_per_token, shape

    full = shape("wikitext2", vocab_size=33278)
    adaptive = full.replace(output="adaptive", cutoffs=[2000, 10000], div_value=4.0)
    # 2 x 256 LSTM: 1.05M recurrent weights; full softmax 33,278 x 257; adaptive head 2,002 x 257 and
    # tails 256 x 64 + 64 x 8,000 + 8,000 and 256 x 16 + 16 x 23,278 + 23,278.
    body = 2 * (2 * 4 * 256 * 256 + 4 * 256)
    head = 2002 * 256 + 2002
    tails = (256 * 64 + 64 * 8000 + 8000) + (256 * 16 + 16 * 23278 + 23278)
    assert estimate_flops_per_token(adaptive) == 6 * (body + head + tails)
    assert estimate_flops_per_token(full) == 6 * (body + 33278 * 257)
    assert estimate_flops_per_token(adaptive) < 0.3 * estimate_flops_per_token(full)


# ---------------------------------------------------------------- through the trainer


@pytest.fixture(scope="module")
def words(tmp_path_factory):
    folder = tmp_path_factory.mktemp("words")
    prepare(str(data_path("tinyshakespeare", "input.txt")), folder, tokenizer="word", vocab_size=500,
            split=(0.9, 0.1, 0.0), split_order="ordered", clean={"dedup": False})
    return folder


@pytest.fixture(scope="module")
def runs(words, tmp_path_factory):
    made = {}
    for family in ("rnn", "gated_cnn", "transformer"):
        run = tmp_path_factory.mktemp("runs") / family
        config = TrainConfig(data=str(words), family=family, shape="debug", batch_size=8, max_steps=24,
                             warmup_steps=3, eval_interval=12, eval_batches=2, log_interval=1, learning_rate=1e-2,
                             min_learning_rate=1e-3, model={"block_size": 16, **ADAPTIVE})
        made[family] = run, train(config, run, log=lambda m: None)
    return made


def losses(run) -> dict[int, float]:
    found = {}
    for line in (run / "log.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "loss" in record:
            found[record["step"]] = record["loss"]
    return found


@pytest.mark.parametrize("family", ["rnn", "gated_cnn", "transformer"])
def test_each_family_trains_evaluates_generates_and_reloads(runs, words, family, tmp_path):
    from lmlab.evaluation.perplexity import evaluate_run
    from lmlab.generate.decoder import generate_ids, generate_uncached
    from lmlab.generate.samplers import SamplerConfig
    from lmlab.runs.load import load_run

    run, _ = runs[family]
    log = losses(run)
    assert sorted(log) == list(range(1, 25))
    # Near-uniform logits inside each part put ~1/52 on each head word (50 words + 2 clusters) and
    # less on the tails: below log(500), as the head's words are the frequent ones.
    assert math.log(52) < log[1] < math.log(500) + 0.5
    assert np.mean([log[s] for s in range(20, 25)]) < log[1] - 1.0
    saved = json.loads((run / "config.json").read_text())["model"]
    assert saved["output"] == "adaptive" and saved["cutoffs"] == [50, 200]

    loaded = load_run(run, "last")
    assert loaded.model.adaptive is not None
    rng = np.random.default_rng(0)
    x = rng.integers(0, 500, size=(2, 16))
    log_probs = np.asarray(loaded.model(x))
    np.testing.assert_allclose(np.exp(log_probs.astype(np.float64)).sum(-1), 1.0, atol=1e-5)
    # The saved run reloads exactly, and a .keras round trip keeps the log-probabilities.
    np.testing.assert_array_equal(np.asarray(load_run(run, "last").model(x)), log_probs)
    fresh = registry.build_model(loaded.model.config, seed=0)
    assert not np.allclose(np.asarray(fresh(x)), log_probs)
    loaded.model.save(tmp_path / "model.keras")
    again = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_array_equal(np.asarray(again(x)), log_probs)

    # Evaluation's cheap loss path equals -log p from the full log-probabilities.
    from lmlab.training.steps import Stepper

    y = rng.integers(0, 500, size=(2, 16))
    mask = np.ones((2, 16), np.float32)
    total, count = Stepper(loaded.model).evaluate(x, y, mask)
    expected = -np.take_along_axis(log_probs, y[..., None], -1).sum()
    assert count == 32 and total == pytest.approx(float(expected), rel=1e-5)
    metrics = evaluate_run(run, split="valid", checkpoint="last")
    # Held-out text: 24 steps (3,072 tokens) bring each family to about the training unigram's 3.79 nats
    # (measured 3.83-3.94), 2.4 below uniform's 6.21; a head that had not learnt word frequencies would not.
    unigram = unigram_cross_entropy(split_tokens(words, "train"), split_tokens(words, "valid")[1:], 500)
    assert metrics["loss"] < unigram + 0.25 and metrics["perplexity"] == pytest.approx(math.exp(metrics["loss"]))

    # lmlab score's cheap path (the targets' loss, no (B, T, V) tensor) equals the chain from the full log-probabilities.
    from lmlab.evaluation.score import score_texts

    text = "ROMEO: What say you, my lord?"
    record = next(score_texts(loaded, [text], tokens=True))
    tokenizer = loaded.tokenizer
    ids = [tokenizer.eos_id, *tokenizer.encode(text), tokenizer.eos_id]
    full = np.asarray(loaded.model(np.asarray([ids[:-1]])))[0].astype(np.float64)
    np.testing.assert_allclose(record["token_logprobs"], full[np.arange(len(ids) - 1), ids[1:]], atol=1e-4)

    prompt = loaded.tokenizer.encode("ROMEO:")
    greedy = SamplerConfig(temperature=0)
    cached = generate_ids(loaded.model, [prompt], 8, greedy)[0]
    assert cached == generate_uncached(loaded.model, prompt, 8)
    sampled = generate_ids(loaded.model, [prompt], 8, SamplerConfig(temperature=0.8, top_k=20), seed=1)[0]
    assert len(sampled) == 8 and all(0 <= t < 500 for t in sampled)


def test_hf_export_refuses_an_adaptive_model(runs, tmp_path):
    from lmlab.interop.hf_export import export_hf

    with pytest.raises(ConfigError, match="adaptive"):
        export_hf(runs["transformer"][0], tmp_path / "hf", log=lambda m: None)
    assert not (tmp_path / "hf").exists()


# ---------------------------------------------------------------- JAX

JAX_SCRIPT = r"""
import json
import numpy as np
import keras
from lmlab.models.rnn import RNNConfig, build_rnn
from lmlab.models.transformer import TransformerConfig, build_transformer
from lmlab.training.steps import Stepper

out = {"backend": keras.backend.backend()}
rng = np.random.default_rng(0)
x = rng.integers(0, 99, size=(1, 4, 9)).astype("int32")
y = np.roll(x, -1, axis=-1)
for name, build, config in [("rnn", build_rnn, RNNConfig(vocab_size=99, d_model=24, n_layer=1, block_size=9, output="adaptive",
                                       cutoffs=[13, 40], div_value=2.0)),
                     ("transformer", build_transformer, TransformerConfig(vocab_size=99, d_model=24, n_head=3, n_layer=1, block_size=9,
                                                       output="adaptive", cutoffs=[13, 40], div_value=2.0,
                                                       tie_embeddings=False))]:
    for dtype in ("float32", "mixed_bfloat16"):
        model = build(config, seed=1, dtype=dtype)
        log_probs = np.asarray(model(x[0]), np.float64)
        nll = np.asarray(model(x[0], targets=y[0]), np.float64)
        picked = -np.take_along_axis(log_probs, y[0][..., None], -1)[..., 0]
        optimizer = keras.optimizers.Adam(1e-2)
        optimizer.build(model.trainable_variables)
        stepper = Stepper(model, optimizer)
        total, count = stepper.evaluate(x[0], y[0], np.ones(x[0].shape, np.float32))
        first = [stepper.train(x, y)[0] for _ in range(15)]
        out[f"{name}-{dtype}"] = {"sum_error": float(np.abs(np.exp(log_probs).sum(-1) - 1).max()),
                                  "nll_error": float(np.abs(nll - picked).max()),
                                  "eval_error": abs(total - picked.sum()) / picked.sum(),
                                  "dtype": str(log_probs.dtype), "first": first[0], "last": first[-1]}
print(json.dumps(out))
"""


def test_adaptive_output_on_jax(tmp_path):
    script = tmp_path / "jax_adaptive.py"
    script.write_text(JAX_SCRIPT)
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, str(script)], check=False, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["backend"] == "jax"
    for name in ("rnn", "transformer"):
        for dtype in ("float32", "mixed_bfloat16"):
            found = out[f"{name}-{dtype}"]
            assert found["sum_error"] < 1e-5 and found["nll_error"] < 1e-5 and found["eval_error"] < 1e-5, found
            assert found["last"] < found["first"] - 0.5, found
