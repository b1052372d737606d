"""Samplers: exact filters on hand-made logits, sampling statistics, a fake LM, compiled loops."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from keras import ops

from lmlab.core.errors import ConfigError
from lmlab.generate.samplers import SamplerConfig, filter_logits, sample_next
from tests.conftest import REPO


def fake_logits(batch=3, vocab=11, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, vocab)).astype("float32")


def numpy(x):
    return np.asarray(ops.convert_to_numpy(x))


def kept(logits, config):
    """Indices left finite by filter_logits, one sorted list per row."""
    filtered = numpy(filter_logits(logits, config))
    return [np.flatnonzero(np.isfinite(row)).tolist() for row in filtered]


def frequencies(samples, vocab):
    return np.bincount(numpy(samples), minlength=vocab) / len(samples)


# Greedy and top-k ------------------------------------------------------------


def test_greedy_picks_the_argmax_of_each_row():
    logits = fake_logits()  # (3, 11)
    tokens = sample_next(logits, SamplerConfig(temperature=0), seed=0)
    assert tuple(tokens.shape) == (3,) and keras.backend.standardize_dtype(tokens.dtype) == "int32"
    np.testing.assert_array_equal(numpy(tokens), logits.argmax(-1))
    # filter_logits agrees: only the argmax is left, so sampling from it is greedy too.
    assert kept(logits, SamplerConfig(temperature=0)) == [[i] for i in logits.argmax(-1)]
    assert SamplerConfig(temperature=0).greedy and not SamplerConfig().greedy


@pytest.mark.parametrize("temperature", [0.05, 1.0, 7.0])
def test_top_k_1_equals_greedy_at_any_temperature(temperature):
    logits = fake_logits(batch=5, seed=1)
    tokens = sample_next(logits, SamplerConfig(temperature=temperature, top_k=1), seed=3)
    np.testing.assert_array_equal(numpy(tokens), logits.argmax(-1))


def test_top_k_3_samples_only_and_all_of_the_top_3():
    logits = np.full((11,), -1.0, "float32")
    logits[[2, 7, 9]] = [1.0, 0.5, 0.8]  # the top 3, not at the front
    config = SamplerConfig(top_k=3)
    assert kept(logits[None], config) == [[2, 7, 9]]
    draws = sample_next(np.tile(logits, (2000, 1)), config, seed=11)  # (2000,)
    assert set(numpy(draws).tolist()) == {2, 7, 9}
    # Ties at the k-th value are kept (documented); k >= vocab filters nothing.
    assert kept(np.array([[3.0, 2.0, 2.0, 1.0]]), SamplerConfig(top_k=2)) == [[0, 1, 2]]
    assert kept(np.array([[3.0, 2.0, 1.0]]), SamplerConfig(top_k=50)) == [[0, 1, 2]]


# Top-p -------------------------------------------------------------------------


# Probabilities in vocabulary order; sorted they are 0.4 (id 1), 0.3 (id 3), 0.2 (id 2), 0.1 (id 0).
PROBS = np.array([[0.1, 0.4, 0.2, 0.3]], "float32")
LOG_PROBS = np.log(PROBS)


@pytest.mark.parametrize(
    ("top_p", "expected"),
    [(1e-6, [1]), (0.3, [1]), (0.5, [1, 3]), (0.65, [1, 3]), (0.75, [1, 2, 3]), (0.95, [0, 1, 2, 3])],
)
def test_top_p_keeps_the_smallest_set_reaching_p(top_p, expected):
    assert kept(LOG_PROBS, SamplerConfig(top_p=top_p)) == [expected]


def test_top_p_exact_values_ties_and_batch_rows():
    filtered = numpy(filter_logits(LOG_PROBS, SamplerConfig(top_p=0.5)))
    np.testing.assert_array_equal(filtered, [[-np.inf, LOG_PROBS[0, 1], -np.inf, LOG_PROBS[0, 3]]])
    # Equal probabilities: exactly the smallest set is kept, not every tie.
    assert len(kept(np.zeros((1, 8)), SamplerConfig(top_p=0.5))[0]) == 4
    # Each row gets its own nucleus.
    rows = np.log(np.array([[0.7, 0.1, 0.1, 0.1], [0.1, 0.2, 0.3, 0.4]], "float32"))
    assert kept(rows, SamplerConfig(top_p=0.6)) == [[0], [2, 3]]


def test_top_p_applies_to_what_top_k_left():
    # After top-2 the distribution is 0.4/0.7 = 0.571 and 0.3/0.7 = 0.429.
    assert kept(LOG_PROBS, SamplerConfig(top_k=2, top_p=0.5)) == [[1]]
    assert kept(LOG_PROBS, SamplerConfig(top_k=2, top_p=0.6)) == [[1, 3]]


def test_top_p_samples_stay_in_the_nucleus():
    draws = numpy(sample_next(np.tile(LOG_PROBS, (2000, 1)), SamplerConfig(top_p=0.5), seed=5))
    assert set(draws.tolist()) == {1, 3}
    # Renormalised within the nucleus: 0.4/0.7 and 0.3/0.7.
    assert abs((draws == 1).mean() - 4 / 7) < 0.04


# Temperature and seeds -------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_sampling_frequencies_match_softmax_of_logits_over_temperature(temperature):
    logits = np.array([2.0, 1.0, 0.0, -1.0, 0.5], "float32")
    expected = np.exp(logits / temperature) / np.exp(logits / temperature).sum()
    config = SamplerConfig(temperature=temperature)
    np.testing.assert_allclose(numpy(filter_logits(logits[None], config))[0], logits / temperature, rtol=1e-6)
    draws = sample_next(np.tile(logits, (20_000, 1)), config, seed=1234)  # one call, 20,000 rows
    # Standard error is at most 0.0035 here: 0.015 is over 4 of them.
    np.testing.assert_allclose(frequencies(draws, 5), expected, atol=0.015)


def test_same_seed_same_samples():
    logits = np.zeros((64, 11), "float32")  # uniform: any seed change shows
    config = SamplerConfig(temperature=0.9, top_k=8, top_p=0.95)
    once, twice = (numpy(sample_next(logits, config, seed=7)) for _ in range(2))
    np.testing.assert_array_equal(once, twice)
    first, second = keras.random.SeedGenerator(42), keras.random.SeedGenerator(42)
    run_a = [numpy(sample_next(logits, config, first)) for _ in range(3)]
    run_b = [numpy(sample_next(logits, config, second)) for _ in range(3)]
    for a, b in zip(run_a, run_b):
        np.testing.assert_array_equal(a, b)
    # A generator advances: successive draws differ.
    assert not np.array_equal(run_a[0], run_a[1])


def test_seed_tensor_is_stateless_and_changes_with_the_step():
    logits = np.tile(np.linspace(0.5, 0.0, 11, dtype="float32"), (64, 1))  # (64, 11), no ties
    config = SamplerConfig(temperature=1.0, top_k=8)
    step0 = numpy(sample_next(logits, config, np.array([5, 0], "int32")))
    np.testing.assert_array_equal(step0, numpy(sample_next(logits, config, np.array([5, 0], "int32"))))
    np.testing.assert_array_equal(step0, numpy(sample_next(logits, config, [5, 0])))
    assert not np.array_equal(step0, numpy(sample_next(logits, config, np.array([5, 1], "int32"))))
    assert set(step0.tolist()) <= set(range(8))
    for bad in (None, 1.5, np.zeros((3,), "int32")):
        with pytest.raises(ValueError, match="seed must be"):
            sample_next(logits, config, bad)


def test_bfloat16_logits_are_filtered_in_float32():
    logits = ops.cast(LOG_PROBS, "bfloat16")
    filtered = filter_logits(logits, SamplerConfig(top_p=0.5))
    assert keras.backend.standardize_dtype(filtered.dtype) == "float32"
    assert kept(logits, SamplerConfig(top_p=0.5)) == [[1, 3]]
    assert numpy(sample_next(logits, SamplerConfig(temperature=0), seed=0)).tolist() == [1]
    assert set(numpy(sample_next(ops.tile(logits, (200, 1)), SamplerConfig(top_p=0.5), seed=0)).tolist()) <= {1, 3}


# A fake language model -----------------------------------------------------------


VOCAB = ["<eos>", "d", "e", "h", "l", "o", "w"]
WORD = "hello"


def spelling_logits(tokens: np.ndarray) -> np.ndarray:
    """A fake LM: whatever came before, the next token is the next letter of WORD, then <eos>."""
    batch, length = tokens.shape
    target = VOCAB.index(WORD[length]) if length < len(WORD) else 0
    noise = np.random.default_rng(length).uniform(-1, 1, size=(batch, len(VOCAB)))
    logits = noise.astype("float32")
    logits[:, target] = 4.0  # clearly first, but the others keep some probability
    return logits


def generate(config, seed, batch=2, max_length=10):
    tokens = np.zeros((batch, 0), "int32")  # (B, T)
    while tokens.shape[1] < max_length:
        next_ids = numpy(sample_next(spelling_logits(tokens), config, seed))  # (B,)
        tokens = np.concatenate([tokens, next_ids[:, None]], axis=1)
        if (next_ids == 0).all():
            break
    return ["".join(VOCAB[t] for t in row).split("<eos>")[0] for row in tokens]


@pytest.mark.parametrize(
    "config",
    [SamplerConfig(temperature=0), SamplerConfig(temperature=3.0, top_k=1), SamplerConfig(temperature=2.0, top_p=1e-3)],
    ids=["greedy", "top_k=1", "tiny_top_p"],
)
def test_fake_language_model_spells_hello(config):
    assert generate(config, keras.random.SeedGenerator(0)) == [WORD, WORD]


# Validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", -0.5),
        ("temperature", math.nan),
        ("temperature", math.inf),
        ("temperature", "1.0"),
        ("top_k", -1),
        ("top_k", 2.5),
        ("top_k", True),
        ("top_p", 0.0),
        ("top_p", 1.5),
        ("top_p", math.nan),
    ],
)
def test_bad_config_names_the_field_and_value(field, value):
    with pytest.raises(ConfigError) as error:
        SamplerConfig(**{field: value})
    assert field in str(error.value) and repr(value) in str(error.value)


def test_config_edges_and_bad_logits():
    SamplerConfig(temperature=0, top_k=0, top_p=1.0)
    SamplerConfig(temperature=1, top_k=np.int64(5), top_p=1e-9)
    with pytest.raises(dataclasses.FrozenInstanceError):
        SamplerConfig().top_k = 3
    with pytest.raises(ValueError, match="batch, vocab"):
        sample_next(np.zeros((11,), "float32"), SamplerConfig(), seed=0)


# Compiled decoding ----------------------------------------------------------------


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow backend only")
def test_sample_next_under_tf_function_jit_compile():
    import tensorflow as tf

    config = SamplerConfig(temperature=0.8, top_k=5, top_p=0.9)
    seed = keras.random.SeedGenerator(7)
    logits = np.zeros((64, 11), "float32")
    logits[:, :6] = np.linspace(1.0, 0.0, 6)  # (64, 11): 5 tokens pass top-k

    step = tf.function(lambda x: sample_next(x, config, seed), jit_compile=True)
    first, second = numpy(step(logits)), numpy(step(logits))
    assert first.shape == (64,) and first.dtype == np.int32
    allowed = np.isfinite(numpy(filter_logits(logits, config)))  # (64, 11)
    assert allowed[np.arange(64), first].all() and allowed[np.arange(64), second].all()
    assert not np.array_equal(first, second)  # the generator state advanced inside XLA

    # A seed tensor passed in as an argument: one trace, a new draw per step.
    by_seed = tf.function(lambda x, s: sample_next(x, config, s), jit_compile=True)
    steps = [numpy(by_seed(logits, np.array([9, t], "int32"))) for t in range(3)]
    assert not np.array_equal(steps[0], steps[1]) and allowed[np.arange(64), steps[2]].all()
    np.testing.assert_array_equal(steps[0], numpy(by_seed(logits, np.array([9, 0], "int32"))))
    assert by_seed.experimental_get_tracing_count() == 1

    # A whole static-shape decoding loop compiled by XLA spells the word.
    table = np.stack([spelling_logits(np.zeros((2, t), "int32")) for t in range(len(WORD))])  # (T, 2, V)
    spell = SamplerConfig(temperature=2.0, top_k=2, top_p=0.5)

    @tf.function(jit_compile=True)
    def decode():
        def body(t, tokens):  # tokens: (B, T)
            next_ids = sample_next(ops.take(table, t, axis=0), spell, seed)  # (B,)
            return t + 1, ops.slice_update(tokens, (0, t), next_ids[:, None])

        return ops.while_loop(lambda t, _: t < len(WORD), body, (0, ops.zeros((2, len(WORD)), "int32")))[1]

    assert ["".join(VOCAB[t] for t in row) for row in numpy(decode())] == [WORD, WORD]


JAX_JIT = """
import jax, keras, numpy as np
from lmlab.generate.samplers import SamplerConfig, filter_logits, sample_next
assert keras.backend.backend() == "jax"
logits = np.random.default_rng(0).normal(size=(64, 11)).astype("float32")

greedy = jax.jit(lambda x: sample_next(x, SamplerConfig(temperature=0), seed=0))(logits)
assert greedy.dtype == np.int32 and (np.asarray(greedy) == logits.argmax(-1)).all()

config = SamplerConfig(temperature=0.7, top_k=4, top_p=0.9)
allowed = np.isfinite(np.asarray(filter_logits(logits, config)))
step = jax.jit(lambda x: sample_next(x, config, seed=3))
a, b = np.asarray(step(logits)), np.asarray(step(x=logits))
assert a.shape == (64,) and (a == b).all() and allowed[np.arange(64), a].all()
half = jax.jit(lambda x: sample_next(x, config, 3))(x=logits.astype("bfloat16"))
assert allowed[np.arange(64), np.asarray(half)].all()

# A SeedGenerator inside jax.jit: its state goes in and out (the keras-hub pattern).
gen = keras.random.SeedGenerator(5)
@jax.jit
def stateful_step(x, state):
    with keras.StatelessScope(state_mapping=[(gen.state, state)]) as scope:
        tokens = sample_next(x, config, gen)
    return tokens, scope.get_current_value(gen.state)
state = gen.state.value
t1, state = stateful_step(logits, state)
t2, state = stateful_step(logits, state)
assert allowed[np.arange(64), np.asarray(t1)].all() and not (np.asarray(t1) == np.asarray(t2)).all()

# A (2,) int32 seed tensor as a jit argument: stateless, a new draw per step.
by_seed = jax.jit(lambda x, s: sample_next(x, config, s))
s0, s1 = (np.asarray(by_seed(logits, np.array([9, t], "int32"))) for t in range(2))
assert not (s0 == s1).all() and allowed[np.arange(64), s1].all()
assert (s0 == np.asarray(by_seed(logits, np.array([9, 0], "int32")))).all()
print("ok")
"""


def test_sample_next_under_jax_jit():
    pytest.importorskip("jax")
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", JAX_JIT], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")


def test_samplers_import_only_keras():
    import ast

    tree = ast.parse((REPO / "lmlab" / "generate" / "samplers.py").read_text(encoding="utf-8"))
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert not {name for name in names if name.split(".")[0] in {"tensorflow", "jax", "torch", "numpy"}}
