"""One test battery for every neural language-model family (keras-hub's ``run_backbone_test`` style).

A family passes its builder and a tiny config with deliberately odd sizes
(batch 3, length 7, vocabulary 99, block 11) and gets checked for the model
contract that training (:class:`lmlab.training.steps.Stepper`), evaluation and
generation (:mod:`lmlab.generate.decoder`) rely on:

- :func:`check_shapes_and_dtype`: float32 ``(B, T, V)`` logits for several lengths;
- :func:`check_causal`: changing a later token never moves earlier logits;
- :func:`check_cached_decoding`: ``call_with_cache`` piece by piece equals ``call``;
- :func:`check_cached_generation`: ``generate_ids`` (compiled, cached) equals
  ``generate_uncached`` (a full pass per token) under greedy sampling;
- :func:`check_config_round_trip`: ``to_dict``/``from_dict`` through JSON and Keras
  ``get_config``/``from_config`` rebuild a model with equal outputs;
- :func:`check_save_and_load`: a ``.keras`` file reloads with equal outputs;
- :func:`check_train_step`: one compiled ``Stepper`` step with AdamW gives a finite
  loss and moves the weights;
- :func:`check_parameter_count`: ``num_parameters`` is the sum of the weight sizes
  (and the family's closed form, if it has one);
- :func:`check_seeded_build`, :func:`check_dropout_only_in_training`,
  :func:`check_mixed_precision` (dtypes);
- :func:`check_precision_agreement`: the same weights in float32 and
  ``mixed_bfloat16`` give the same log-probabilities, loss and training curve,
  within bfloat16's rounding.

:func:`run_battery` runs them all but the last (a short training run in each
precision; ``tests/test_precision_agreement.py`` runs it over every family);
``tests/test_model_families.py`` runs them one per test, parametrized over the families.
"""

from __future__ import annotations

import json
import math
from typing import Callable

import keras
import numpy as np
from keras import ops

VOCAB, BATCH, LENGTH, BLOCK = 99, 3, 7, 11


def npy(x) -> np.ndarray:
    return ops.convert_to_numpy(x)


def tokens(batch: int = BATCH, length: int = LENGTH, seed: int = 0, vocab: int = VOCAB) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, size=(batch, length)).astype("int32")


def copy_of(model, build: Callable, config=None):
    """A freshly built model of ``config`` (default: ``model.config``) holding ``model``'s weights."""
    other = build(model.config if config is None else config)
    other.set_weights(model.get_weights())
    return other


# ---------------------------------------------------------------------------
# Forward pass
# ---------------------------------------------------------------------------


def check_shapes_and_dtype(model, lengths=None, batch: int = BATCH):
    c = model.config
    for length in lengths or (1, LENGTH, c.block_size):
        logits = model(tokens(batch, length, vocab=c.vocab_size))
        assert tuple(logits.shape) == (batch, length, c.vocab_size), (length, logits.shape)
        assert keras.backend.standardize_dtype(logits.dtype) == "float32"
        assert np.isfinite(npy(logits)).all()


def check_causal(model, length: int = LENGTH, at: int = 4):
    """Changing token ``at`` leaves logits before it alone and moves the one at ``at``."""
    ids = tokens(length=length, vocab=model.config.vocab_size)
    changed = ids.copy()
    changed[:, at] = (changed[:, at] + 1) % model.config.vocab_size
    before, after = npy(model(ids)), npy(model(changed))
    np.testing.assert_allclose(before[:, :at], after[:, :at], atol=1e-6)
    assert np.abs(before[:, at] - after[:, at]).max(axis=-1).min() > 1e-6  # every row sees its own token
    return before, after


# ---------------------------------------------------------------------------
# Cached decoding and generation
# ---------------------------------------------------------------------------


def decode_in_pieces(model, ids: np.ndarray, prompt_length: int, max_length: int | None = None) -> np.ndarray:
    """Logits from the prompt in one cached call, then one token per call."""
    cache = model.init_cache(ids.shape[0], max_length or model.config.block_size)
    logits, cache = model.call_with_cache(ids[:, :prompt_length], cache, 0)
    pieces = [npy(logits)]
    for i in range(prompt_length, ids.shape[1]):
        logits, cache = model.call_with_cache(ids[:, i:i + 1], cache, ops.convert_to_tensor(i, "int32"))
        pieces.append(npy(logits))
    return np.concatenate(pieces, axis=1)


def check_cached_decoding(model, length: int = LENGTH, atol: float = 1e-5):
    ids = tokens(length=length, vocab=model.config.vocab_size)
    full = npy(model(ids))
    for prompt_length in (1, 4):
        np.testing.assert_allclose(decode_in_pieces(model, ids, prompt_length, max_length=length), full,
                                   atol=atol)


def check_cached_generation(model, new_tokens: int | None = None):
    """Compiled cached greedy generation equals a full forward pass per token, within the block."""
    from lmlab.generate.decoder import generate_ids, generate_uncached
    from lmlab.generate.samplers import SamplerConfig

    prompts = [[5, 6, 7], [8, 9, 10]]
    n = model.config.block_size - 3 if new_tokens is None else new_tokens
    cached = generate_ids(model, prompts, n, SamplerConfig(temperature=0))
    assert cached == [generate_uncached(model, p, n) for p in prompts]
    assert all(len(row) == n for row in cached)


# ---------------------------------------------------------------------------
# Config and files
# ---------------------------------------------------------------------------


def check_config_round_trip(model, build: Callable):
    config = model.config
    data = json.loads(json.dumps(config.to_dict()))
    assert type(config).from_dict(data) == config
    assert type(config).from_dict(data).to_dict() == data
    ids = tokens(vocab=config.vocab_size)
    expected = npy(model(ids))
    np.testing.assert_allclose(npy(copy_of(model, build, type(config).from_dict(data))(ids)), expected,
                               atol=1e-6)

    keras_config = json.loads(json.dumps(model.get_config()))
    restored = type(model).from_config(keras_config)
    restored(ids[:, :1])
    restored.set_weights(model.get_weights())
    assert restored.config == config
    np.testing.assert_allclose(npy(restored(ids)), expected, atol=1e-6)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model))
    assert isinstance(again, type(model)) and again.config == config


def check_save_and_load(model, folder):
    ids = tokens(vocab=model.config.vocab_size)
    path = folder / f"{model.config.family}.keras"
    keras.saving.save_model(model, path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, type(model)) and loaded.config == model.config
    np.testing.assert_allclose(npy(loaded(ids)), npy(model(ids)), atol=1e-6)


# ---------------------------------------------------------------------------
# Training and accounting
# ---------------------------------------------------------------------------


def check_train_step(model):
    """One compiled optimizer step on a fresh ``model``: finite loss, every trainable weight moved."""
    from lmlab.training.steps import Stepper

    before = [npy(v) for v in model.trainable_variables]
    optimizer = keras.optimizers.AdamW(learning_rate=1e-2, weight_decay=0.01)
    optimizer.build(model.trainable_variables)
    stepper = Stepper(model, optimizer)
    ids = tokens(length=LENGTH + 1, vocab=model.config.vocab_size)
    x, y = ids[None, :, :-1], ids[None, :, 1:]  # (1, B, T): one micro-batch
    loss, norm = stepper.train(x, y)
    assert math.isfinite(loss) and math.isfinite(norm) and norm > 0
    # Near uniform at initialisation (small logits): every family's tiny config measured within 0.034 nats.
    assert abs(loss - math.log(model.config.vocab_size)) < 0.1
    stepper.sync()
    after = [npy(v) for v in model.trainable_variables]
    unchanged = [v.path for v, a, b in zip(model.trainable_variables, before, after) if np.array_equal(a, b)]
    assert not unchanged, f"weights the step did not change: {unchanged}"
    return loss


def check_parameter_count(model, count_parameters: Callable | None = None):
    summed = sum(int(np.prod(w.shape)) for w in model.weights)
    assert model.num_parameters() == summed
    assert 0 < model.num_parameters(non_embedding=True) <= summed
    if count_parameters is not None:
        assert count_parameters(model.config) == summed
        assert count_parameters(model.config, non_embedding=True) == model.num_parameters(non_embedding=True)
    assert model.flops_per_token() >= 6 * model.num_parameters(non_embedding=True)


def check_seeded_build(build: Callable, config):
    a, b, c = build(config, seed=11), build(config, seed=11), build(config, seed=12)
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(npy(wa), npy(wb))
    assert any(np.abs(npy(wa) - npy(wc)).max() > 0 for wa, wc in zip(a.weights, c.weights))


def check_dropout_only_in_training(build: Callable, config_with_dropout):
    model = build(config_with_dropout, seed=3)
    ids = tokens(vocab=model.config.vocab_size)
    inference = npy(model(ids))
    np.testing.assert_array_equal(npy(model(ids, training=False)), inference)
    assert np.abs(npy(model(ids, training=True)) - inference).max() > 1e-4
    np.testing.assert_allclose(decode_in_pieces(model, ids, 4), inference, atol=1e-5)  # no dropout when cached


def check_mixed_precision(build: Callable, config):
    model = build(config, seed=1, dtype="mixed_bfloat16")
    ids = tokens(vocab=config.vocab_size)
    logits = model(ids)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    assert np.isfinite(npy(logits)).all()
    cache = model.init_cache(BATCH, config.block_size)
    assert keras.backend.standardize_dtype(cache.dtype) == "bfloat16"
    step_logits, new_cache = model.call_with_cache(ids[:, :2], cache, 0)
    assert keras.backend.standardize_dtype(step_logits.dtype) == "float32"
    assert keras.backend.standardize_dtype(new_cache.dtype) == "bfloat16"
    assert tuple(new_cache.shape) == tuple(cache.shape)


# Tolerances of check_precision_agreement, from the differences measured on every family's tiny config
# (tests/test_precision_agreement.py, whose docstring has the table; CPU, TensorFlow).
LOGIT_RTOL = 0.02  # max |logits(bf16) - logits(fp32)| / max |logits(fp32)|: bfloat16 keeps 8 significant bits
TARGET_LOG_PROB_ATOL = 0.1  # max |log p_bf16(target) - log p_fp32(target)| over the scored positions, nats
# Loss bars at 2%: on a CPU without native bfloat16 (AVX2 only, oneDNN's emulated path) the worst cases were
# 1.2% (gated CNN, mean loss) and 1.1x the 1% curve bar (pre-LN RoPE encoder); the id-cast bug is 2.8% and 290x.
LOSS_RTOL = 0.02  # |mean loss(bf16) / mean loss(fp32) - 1| with the same weights
CURVE_RTOL, CURVE_ATOL = 0.02, 1e-3  # per step |loss(bf16) - loss(fp32)| <= max(RTOL * loss(fp32), ATOL)
CURVE_STEPS = 5
# Token ids above 256 are not all bfloat16 numbers (8 significant bits): a model that casts its ids to the
# compute dtype reads 257 as 256. The pattern data use them, so that cast fails the check.
HIGH_IDS = np.arange(257, 271, 2)


def pattern_tokens(batch: int, length: int, vocab: int, seed: int, low: int = 3) -> np.ndarray:
    """Rows of a fixed next-token rule (``t -> 5t + 3``, over ids ``low .. vocab - 1``) from random starts.

    Every decoder family learns it in a few dozen steps, so its logits grow confident.
    Ids below ``low`` are left for padding and the mask.
    """
    n = vocab - low
    rows = np.empty((batch, length), np.int64)
    rows[:, 0] = np.random.default_rng(seed).integers(0, n, batch)
    for t in range(1, length):
        rows[:, t] = (5 * rows[:, t - 1] + 3) % n
    return (rows + low).astype("int32")


def pattern_batch(config, seed: int, batch: int = 16):
    """``(x, y, weights)`` of shape ``(1, B, T)`` (one micro-batch) of ``config.block_size`` tokens.

    A decoder: the rows of :func:`pattern_tokens` and their next tokens (``weights`` None). An encoder
    (``config.family == "encoder"``): rows of one repeated id (ids 3-8 and :data:`HIGH_IDS`, few
    enough for each to be seen often), 40% of them replaced by id 2 (the mask) and only those
    scored: the rest of the row gives each masked token away.
    """
    length = config.block_size
    if getattr(config, "family", "") == "encoder":
        ids = np.concatenate([np.arange(3, 9), HIGH_IDS])
        y = np.repeat(np.random.default_rng(seed).choice(ids, (batch, 1)), length, axis=1).astype("int32")
        selected = np.random.default_rng((seed, 1)).random(y.shape) < 0.4
        selected[:, 0] |= ~selected.any(axis=1)  # every row scores something
        x = np.where(selected, 2, y).astype("int32")
        return x[None], y[None], selected.astype("float32")[None]
    ids = pattern_tokens(batch, length + 1, config.vocab_size, seed)
    return ids[None, :, :-1], ids[None, :, 1:], None


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def _train_steps(model, precision: str, config, seeds, learning_rate: float) -> np.ndarray:
    """Losses of AdamW steps on the pattern batches of ``seeds``, with a fresh optimizer and the step
    the trainer compiles for ``precision`` (a plain graph for bfloat16 on a CPU; see ``use_xla``)."""
    from lmlab.training.steps import Stepper, use_xla

    optimizer = keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=0.0)
    optimizer.build(model.trainable_variables)
    stepper = Stepper(model, optimizer, jit_compile=use_xla("auto", precision))
    losses = []
    for seed in seeds:
        x, y, weights = pattern_batch(config, seed)
        losses.append(stepper.train(x, y, weights=weights)[0])
    stepper.sync()
    return np.array(losses)


def measure_precision_agreement(build: Callable, config, warmup_steps: int = 30,
                                learning_rate: float = 2e-2) -> dict:
    """What :func:`check_precision_agreement` compares, measured (see there)."""
    config = config.replace(dropout=0.0)
    reference = build(config, seed=7)
    warmup = _train_steps(reference, "float32", config, range(warmup_steps), learning_rate)
    weights = reference.get_weights()
    models = {"float32": reference, "mixed_bfloat16": build(config, seed=7, dtype="mixed_bfloat16")}
    models["mixed_bfloat16"].set_weights(weights)
    assert models["mixed_bfloat16"].compute_dtype == "bfloat16"

    x, y, mask = pattern_batch(config, seed=10_000)
    x, y, mask = x[0], y[0], np.ones(y.shape[1:], np.float32) if mask is None else mask[0]
    logits = {p: npy(m(x, training=False)).astype(np.float64) for p, m in models.items()}  # (B, T, V)
    target = {p: np.take_along_axis(_log_softmax(v), y[..., None], -1)[..., 0] for p, v in logits.items()}  # (B, T)
    losses = {p: float(-(v * mask).sum() / mask.sum()) for p, v in target.items()}
    # A few gentle steps from the trained weights (a tenth of the warm-up's rate), each precision its own optimizer.
    curves = {}
    for precision, model in models.items():
        model.set_weights(weights)
        curves[precision] = _train_steps(model, precision, config, range(1000, 1000 + CURVE_STEPS),
                                         learning_rate / 10)
    scored = mask > 0
    return {
        "logit_rel": float(np.abs(logits["mixed_bfloat16"] - logits["float32"]).max()
                           / np.abs(logits["float32"]).max()),
        "target_log_prob_max_abs": float(np.abs(target["mixed_bfloat16"] - target["float32"])[scored].max()),
        "loss_rel": abs(losses["mixed_bfloat16"] / losses["float32"] - 1),
        "curve_abs": [float(v) for v in np.abs(curves["mixed_bfloat16"] - curves["float32"])],
        "curve_float32": [float(v) for v in curves["float32"]],
        "loss_float32": losses["float32"],
        "warmup_first_last": (float(warmup[0]), float(warmup[-1])),
        "logit_max_abs": float(np.abs(logits["float32"]).max()),
    }


def check_precision_agreement(build: Callable, config, warmup_steps: int = 30, learning_rate: float = 2e-2) -> dict:
    """Float32 and ``mixed_bfloat16`` copies of one model agree on the numbers, not only on dtypes.

    A float32 model first trains ``warmup_steps`` steps on :func:`pattern_batch` data, so its logits
    are confident (at a fresh initialisation they are all near 0, and any cast leaves them so).
    With those weights, on a held-out batch, its bfloat16 copy's logits agree to ``LOGIT_RTOL`` of
    their scale, the targets' log-probabilities to ``TARGET_LOG_PROB_ATOL`` nats and the mean loss to
    ``LOSS_RTOL``. Then both train ``CURVE_STEPS`` more steps from those weights on the same
    batches, each with a fresh optimizer, and their losses agree step by step to ``CURVE_RTOL``
    (``CURVE_ATOL`` for losses near 0). Returns the measured differences.
    """
    measured = measure_precision_agreement(build, config, warmup_steps, learning_rate)
    # The comparison means something only where the logits are confident.
    assert measured["loss_float32"] < 0.5 * math.log(config.vocab_size), measured
    assert measured["logit_rel"] <= LOGIT_RTOL, measured
    assert measured["target_log_prob_max_abs"] <= TARGET_LOG_PROB_ATOL, measured
    assert measured["loss_rel"] <= LOSS_RTOL, measured
    for difference, loss in zip(measured["curve_abs"], measured["curve_float32"]):
        assert difference <= max(CURVE_RTOL * loss, CURVE_ATOL), measured
    return measured


def run_battery(build: Callable, config, tmp_path, count_parameters: Callable | None = None,
                config_with_dropout=None):
    """Every check above for one family: ``build(config, seed=None, **kwargs)`` must return a built model."""
    model = build(config, seed=7)
    check_shapes_and_dtype(model)
    check_causal(model)
    check_cached_decoding(model)
    check_cached_generation(model)
    check_config_round_trip(model, build)
    check_save_and_load(model, tmp_path)
    check_parameter_count(model, count_parameters)
    check_seeded_build(build, config)
    check_mixed_precision(build, config)
    if config_with_dropout is not None:
        check_dropout_only_in_training(build, config_with_dropout)
    check_train_step(build(config, seed=5))
