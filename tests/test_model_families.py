"""The shared model battery (tests/model_battery.py) over every neural family, and the
RNN (lmlab.models.rnn) and gated CNN (lmlab.models.gated_cnn) on their own.

Families: Transformer (gpt2, llama), RNN (lstm, gru), gated CNN; each with a tiny
config of deliberately odd sizes (vocabulary 99, block 11, widths 19-36) so a
swapped axis fails loudly.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np
import pytest

from lmlab.core.errors import ConfigError
from lmlab.models import gated_cnn, registry, rnn, transformer
from tests import model_battery as battery
from tests.model_battery import BATCH, BLOCK, VOCAB, npy, tokens

# Keras's TensorFlow backend converts tensors with a NumPy 1 style __array__; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Case:
    build: Callable
    config: Any
    count_parameters: Callable | None = None


CASES = {
    "gpt2": Case(transformer.build_transformer,
                 transformer.TransformerConfig(vocab_size=VOCAB, block_size=BLOCK, n_layer=2, n_head=3, d_model=36,
                                               d_ff=37, style="gpt2"),
                 transformer.count_parameters),
    "llama": Case(transformer.build_transformer,
                  transformer.TransformerConfig(vocab_size=VOCAB, block_size=BLOCK, n_layer=2, n_head=6, n_kv_head=2,
                                                d_model=36, d_ff=37, style="llama", tie_embeddings=False),
                  transformer.count_parameters),
    "lstm": Case(rnn.build_rnn, rnn.RNNConfig(vocab_size=VOCAB, block_size=BLOCK, cell="lstm", n_layer=2, d_model=19,
                                              dropout=0.0), rnn.count_parameters),
    "gru": Case(rnn.build_rnn, rnn.RNNConfig(vocab_size=VOCAB, block_size=BLOCK, cell="gru", n_layer=2, d_model=19,
                                             dropout=0.0, tie_embeddings=False), rnn.count_parameters),
    "gated_cnn": Case(gated_cnn.build_gated_cnn,
                      gated_cnn.GatedCNNConfig(vocab_size=VOCAB, block_size=BLOCK, n_layer=2, d_model=21, kernel_size=3),
                      gated_cnn.count_parameters),
}
NAMES = list(CASES)

_MODELS: dict[str, Any] = {}


def model_for(name: str):
    if name not in _MODELS:
        _MODELS[name] = CASES[name].build(CASES[name].config, seed=7)
    return _MODELS[name]


# ---------------------------------------------------------------------------
# The battery, one check per test
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_dtype(name):
    battery.check_shapes_and_dtype(model_for(name))


@pytest.mark.parametrize("name", NAMES)
def test_causal(name):
    battery.check_causal(model_for(name))


@pytest.mark.parametrize("name", NAMES)
def test_cached_decoding_matches_full_forward(name):
    battery.check_cached_decoding(model_for(name))


@pytest.mark.parametrize("name", NAMES)
def test_cached_generation_matches_uncached(name):
    battery.check_cached_generation(model_for(name))


@pytest.mark.parametrize("name", NAMES)
def test_config_round_trip(name):
    battery.check_config_round_trip(model_for(name), CASES[name].build)


@pytest.mark.parametrize("name", NAMES)
def test_save_and_load(name, tmp_path):
    battery.check_save_and_load(model_for(name), tmp_path)


@pytest.mark.parametrize("name", NAMES)
def test_train_step(name):
    case = CASES[name]
    battery.check_train_step(case.build(case.config, seed=5))


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count(name):
    battery.check_parameter_count(model_for(name), CASES[name].count_parameters)


@pytest.mark.parametrize("name", ["lstm", "gru", "gated_cnn"])
def test_seeded_build_and_mixed_precision(name):
    case = CASES[name]
    battery.check_seeded_build(case.build, case.config)
    battery.check_mixed_precision(case.build, case.config)


@pytest.mark.parametrize("name", ["lstm", "gru", "gated_cnn"])
def test_dropout_only_in_training(name):
    case = CASES[name]
    battery.check_dropout_only_in_training(case.build, case.config.replace(dropout=0.3))


def test_run_battery_in_one_call(tmp_path):
    """How a new family joins: one call (here the RNN's debug shape, shrunk)."""
    config = rnn.shape("debug", vocab_size=VOCAB, d_model=13, block_size=9, n_layer=1)
    battery.run_battery(rnn.build_rnn, config, tmp_path, rnn.count_parameters,
                        config_with_dropout=config.replace(dropout=0.25))


# ---------------------------------------------------------------------------
# RNN
# ---------------------------------------------------------------------------


def test_rnn_dropouts_derive_from_dropout():
    config = rnn.RNNConfig(vocab_size=VOCAB, dropout=0.4, output_dropout=0.1)
    assert (config.embedding_dropout, config.layer_dropout, config.output_dropout) == (0.4, 0.4, 0.1)
    moved = config.replace(dropout=0.2)
    assert (moved.embedding_dropout, moved.layer_dropout, moved.output_dropout) == (0.2, 0.2, 0.1)
    assert rnn.RNNConfig.from_dict(moved.to_dict()) == moved
    model = rnn.build_rnn(config.replace(n_layer=3, d_model=5))
    rates = [layer.rate for layer in (model.embedding_dropout, *model.dropouts)]
    assert rates == [0.4, 0.4, 0.4, 0.1]


def test_rnn_cache_continues_past_the_block():
    """The state carries on for as long as the caller feeds tokens; call() takes any length."""
    model = model_for("lstm")
    ids = tokens(length=2 * BLOCK + 1)
    full = npy(model(ids))
    assert full.shape == (BATCH, 2 * BLOCK + 1, VOCAB)
    np.testing.assert_allclose(battery.decode_in_pieces(model, ids, 5), full, atol=1e-5)
    assert tuple(model.init_cache(BATCH).shape) == (2, 2, BATCH, 19)  # (L, h/c, B, d)
    assert tuple(model_for("gru").init_cache(BATCH).shape) == (2, 1, BATCH, 19)  # (L, h, B, d)


def test_rnn_parameter_count_by_hand():
    d, v = 19, VOCAB
    lstm_layer = 4 * (d * d + d * d + d)  # i, f, c, o: input kernel, recurrent kernel, bias
    gru_layer = 3 * (d * d + d * d + 2 * d)  # z, r, h: reset_after keeps input and recurrent biases
    assert model_for("lstm").num_parameters() == v * d + 2 * lstm_layer + v  # tied, + output bias
    assert model_for("gru").num_parameters() == 2 * v * d + 2 * gru_layer + v  # untied
    assert model_for("gru").num_parameters(non_embedding=True) == v * d + 2 * gru_layer + v
    assert model_for("lstm").flops_per_token() == 6 * (v * d + 2 * lstm_layer + v)
    assert model_for("lstm").flops_per_token(seq_len=3) == model_for("lstm").flops_per_token()


def test_rnn_fused_kernel_setting():
    model = rnn.build_rnn(CASES["lstm"].config.replace(cudnn="off"))
    assert all(layer.use_cudnn is False for layer in model.recurrent)
    expected = False if keras.backend.backend() == "tensorflow" else "auto"  # XLA has no cuDNN RNN kernel
    assert all(layer.use_cudnn == expected for layer in model_for("lstm").recurrent)
    on = rnn.build_rnn(CASES["lstm"].config.replace(cudnn="on"))
    assert all(layer.use_cudnn == "auto" for layer in on.recurrent)
    assert all(layer.recurrent_dropout == 0 and layer.dropout == 0 for layer in model_for("lstm").recurrent)


@pytest.mark.parametrize("fields, message", [
    (dict(cell="rnn"), "cell must be one of lstm, gru: cell='rnn'"),
    (dict(n_layer=0), "n_layer must be a positive integer: n_layer=0"),
    (dict(d_model=2.5), "d_model=2.5"),
    (dict(dropout=1.0), "dropout must be in [0, 1): dropout=1.0"),
    (dict(layer_dropout=-0.1), "layer_dropout must be in [0, 1): layer_dropout=-0.1"),
    (dict(tie_embeddings="yes"), "tie_embeddings must be true or false: tie_embeddings='yes'"),
    (dict(cudnn=True), "cudnn must be one of auto, on, off: cudnn=True"),
    (dict(family="transformer"), "family='transformer'"),
])
def test_rnn_config_errors_name_field_and_value(fields, message):
    with pytest.raises(ConfigError) as error:
        rnn.RNNConfig(**{"vocab_size": VOCAB, **fields})
    assert message in str(error.value)


# ---------------------------------------------------------------------------
# Gated CNN
# ---------------------------------------------------------------------------


def test_gated_cnn_receptive_field():
    """Position t depends on tokens t - R + 1 .. t exactly, R = n_layer * (kernel_size - 1) + 1."""
    model = model_for("gated_cnn")
    field = model.config.receptive_field
    assert field == 2 * 2 + 1
    ids = tokens(length=BLOCK)
    changed = ids.copy()
    changed[:, 2] = (changed[:, 2] + 1) % VOCAB
    delta = np.abs(npy(model(ids)) - npy(model(changed))).max(axis=(0, 2))  # (T,)
    assert (delta[:2] == 0).all()  # before the change
    assert (delta[2:2 + field] > 1e-6).all()  # inside the receptive field
    assert (delta[2 + field:] < 1e-6).all()  # beyond it


def test_gated_cnn_cache_holds_the_last_inputs():
    model = model_for("gated_cnn")
    cache = model.init_cache(BATCH, BLOCK)
    assert tuple(cache.shape) == (2, BATCH, 2, 21)  # (L, B, k - 1, d)
    ids = tokens(length=2 * BLOCK + 1)
    full = npy(model(ids))
    np.testing.assert_allclose(battery.decode_in_pieces(model, ids, 1), full, atol=1e-5)
    np.testing.assert_allclose(battery.decode_in_pieces(model, ids, 6), full, atol=1e-5)
    # A prompt shorter than the cache (t = 1 < k - 1 = 2) keeps the older cached input.
    logits, cache = model.call_with_cache(ids[:, :2], cache, 0)
    logits, cache = model.call_with_cache(ids[:, 2:3], cache, 2)
    np.testing.assert_allclose(npy(logits)[:, 0], full[:, 2], atol=1e-5)
    first_block = model.get_layer("blocks_0")
    expected = npy(first_block.norm(model.token_embedding(ids[:, 1:3])))  # (B, 2, d): the normalised inputs
    np.testing.assert_allclose(npy(cache[0]), expected, atol=1e-6)


@pytest.mark.parametrize("norm", ["rmsnorm", "none"])
def test_gated_cnn_norms(norm):
    case = CASES["gated_cnn"]
    model = case.build(case.config.replace(norm=norm, tie_embeddings=False), seed=2)
    battery.check_parameter_count(model, gated_cnn.count_parameters)
    battery.check_cached_decoding(model)
    battery.check_causal(model)


def test_gated_cnn_parameter_count_and_flops_by_hand():
    d, k, v = 21, 3, VOCAB
    block = 2 * d + k * d * 2 * d + 2 * d  # LayerNorm gamma, beta; conv kernel (k, d, 2d), bias (2d,)
    model = model_for("gated_cnn")
    assert model.num_parameters() == v * d + 2 * block + 2 * d + v  # + final norm, output bias
    assert model.flops_per_token() == 6 * model.num_parameters()  # tied: nothing is lookup-only
    assert model.flops_per_token(seq_len=1000) == model.flops_per_token()


@pytest.mark.parametrize("fields, message", [
    (dict(kernel_size=1), "kernel_size must be at least 2 (1 would see only the current token): kernel_size=1"),
    (dict(kernel_size=0), "kernel_size must be a positive integer: kernel_size=0"),
    (dict(n_layer=True), "n_layer=True"),
    (dict(norm="batchnorm"), "norm must be one of layernorm, rmsnorm, none: norm='batchnorm'"),
    (dict(dropout=-0.5), "dropout must be in [0, 1): dropout=-0.5"),
    (dict(norm_eps=0.0), "norm_eps must be a positive number: norm_eps=0.0"),
    (dict(family="rnn"), "family='rnn'"),
])
def test_gated_cnn_config_errors_name_field_and_value(fields, message):
    with pytest.raises(ConfigError) as error:
        gated_cnn.GatedCNNConfig(**{"vocab_size": VOCAB, **fields})
    assert message in str(error.value)


# ---------------------------------------------------------------------------
# Both new families: shapes, config keys, registry, imports
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("module, config_class", [(rnn, rnn.RNNConfig), (gated_cnn, gated_cnn.GatedCNNConfig)])
def test_shapes_and_config_keys(module, config_class):
    assert list(module.SHAPES)[:1] == ["debug"]
    assert {"debug", "wikitext2", "shakespeare-char"} <= set(module.SHAPES)
    for name in module.SHAPES:
        config = module.shape(name, vocab_size=VOCAB)
        assert isinstance(config, config_class) and config.vocab_size == VOCAB
        assert config_class.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="known shapes: debug, wikitext2, shakespeare-char"):
        module.shape("huge", vocab_size=VOCAB)
    with pytest.raises(ConfigError, match="needs vocab_size"):
        module.shape("debug")
    with pytest.raises(ConfigError, match=f"unknown {config_class.__name__} field\\(s\\): n_embd, wat"):
        config_class.from_dict({"vocab_size": VOCAB, "n_embd": 3, "wat": 1})
    with pytest.raises(ConfigError, match="vocab_size is required"):
        config_class.from_dict({"n_layer": 2})
    with pytest.raises(ConfigError, match=f"unknown {config_class.__name__} field\\(s\\): layers"):
        module.shape("debug", vocab_size=VOCAB, layers=3)
    build = rnn.build_rnn if module is rnn else gated_cnn.build_gated_cnn
    with pytest.raises(ConfigError, match="max_length=0"):
        build(module.shape("debug", vocab_size=VOCAB)).init_cache(1, 0)


def test_registry_builds_the_new_families():
    for family, cls in (("rnn", rnn.RNNLM), ("gated_cnn", gated_cnn.GatedCNNLM)):
        config = registry.model_config(family, "debug", VOCAB)
        assert registry.config_from_dict(config.to_dict()) == config
        assert isinstance(registry.build_model(config, seed=0), cls)


def test_model_code_imports_no_backend():
    for path in (REPO / "lmlab" / "models" / "rnn.py", REPO / "lmlab" / "models" / "gated_cnn.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            for module in modules:
                assert module.split(".")[0] not in {"tensorflow", "jax", "torch"}, f"{path.name}: {module}"


JAX_SCRIPT = textwrap.dedent("""
    import jax, keras, math, numpy as np
    from lmlab.generate.decoder import generate_ids
    from lmlab.models.gated_cnn import GatedCNNConfig, build_gated_cnn
    from lmlab.models.rnn import RNNConfig, build_rnn
    from lmlab.generate.samplers import SamplerConfig
    from lmlab.training.steps import Stepper
    assert keras.backend.backend() == "jax"
    ids = np.random.default_rng(0).integers(0, 99, size=(3, 7)).astype("int32")
    models = {
        "lstm": build_rnn(RNNConfig(vocab_size=99, block_size=11, cell="lstm", d_model=19), seed=3),
        "gru": build_rnn(RNNConfig(vocab_size=99, block_size=11, cell="gru", d_model=19,
                                   tie_embeddings=False), seed=3),
        "gated_cnn": build_gated_cnn(GatedCNNConfig(vocab_size=99, block_size=11, n_layer=2, d_model=21,
                                                    kernel_size=3), seed=3),
    }
    for name, model in models.items():
        full = np.asarray(model(ids))
        assert full.shape == (3, 7, 99) and full.dtype == np.float32, name
        step = jax.jit(model.call_with_cache)
        cache = model.init_cache(3, 11)
        logits, cache = step(ids[:, :4], cache, np.int32(0))
        pieces = [np.asarray(logits)]
        for i in range(4, 7):
            logits, cache = step(ids[:, i:i + 1], cache, np.int32(i))
            pieces.append(np.asarray(logits))
        np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, atol=1e-5, err_msg=name)
        stateless = jax.jit(model.stateless_call_with_cache)
        values = [v.value for v in model.variables]
        logits, _ = stateless(values, ids, model.init_cache(3, 11), np.int32(0))
        np.testing.assert_allclose(np.asarray(logits), full, atol=1e-5, err_msg=name)
    for name in ("lstm", "gated_cnn"):
        model = models[name]
        # Reference greedy decoding: one jitted full pass per token over a right-padded window
        # (the model is causal, so the padding after the last real token changes nothing).
        forward = jax.jit(lambda x, model=model: model(x))
        reference = [5, 6, 7]
        for _ in range(6):
            window = np.zeros((1, 11), dtype="int32")
            window[0, :len(reference)] = reference
            reference.append(int(np.argmax(np.asarray(forward(window))[0, len(reference) - 1])))
        cached = generate_ids(model, [[5, 6, 7]], 6, SamplerConfig(temperature=0))
        assert cached == [reference[3:]], (name, cached, reference)
        optimizer = keras.optimizers.AdamW(1e-2)
        optimizer.build(model.trainable_variables)
        stepper = Stepper(model, optimizer)
        batch = np.random.default_rng(1).integers(0, 99, size=(1, 3, 8)).astype("int32")
        loss, norm = stepper.train(batch[:, :, :-1], batch[:, :, 1:])
        assert math.isfinite(loss) and math.isfinite(norm), name
    print("jax ok")
""")


def test_jax_backend_forward_and_cached_decoding():
    pytest.importorskip("jax")
    # XLA's CPU backend optimisation off: these tiny programs then compile in half the time.
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_backend_optimization_level=0",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-c", JAX_SCRIPT], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "jax ok" in result.stdout
