"""The encoder family (lmlab.models.encoder) through the shared model battery, and what only an encoder does.

Battery checks that hold for any model run as they are (the training step runs through the
trainer in tests/test_mlm.py, where every weight is checked to move); the causal, cached-decoding
and generation checks do not apply (an encoder sees both sides and has no KV
cache) and are replaced by their opposites: a later token moves earlier logits,
and asking an encoder for a cache is a clear error.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from lmlab.core.errors import ConfigError
from lmlab.models import encoder
from lmlab.models import registry
from tests import model_battery as battery
from tests.model_battery import BLOCK, VOCAB, npy, tokens

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

CONFIGS = {
    "post": encoder.EncoderConfig(vocab_size=VOCAB, block_size=BLOCK, n_layer=2, n_head=3, d_model=36, d_ff=37,
                                  pad_token_id=0),
    "pre-roberta": encoder.EncoderConfig(vocab_size=VOCAB, block_size=BLOCK, n_layer=2, n_head=3, d_model=36,
                                         d_ff=37, norm="pre", pad_token_id=1, position_offset=2, type_vocab_size=1),
    "rope": encoder.EncoderConfig(vocab_size=VOCAB, block_size=BLOCK, n_layer=2, n_head=3, d_model=36, d_ff=37,
                                  pad_token_id=0, position="rope"),
}
_MODELS: dict = {}


def model_for(name):
    if name not in _MODELS:
        _MODELS[name] = encoder.build_encoder(CONFIGS[name], seed=7)
    return _MODELS[name]


def real_tokens(**kwargs):
    return np.maximum(tokens(**kwargs), 2)  # no padding ids


@pytest.mark.parametrize("name", list(CONFIGS))
def test_battery_checks_that_apply(name, tmp_path):
    model = model_for(name)
    battery.check_shapes_and_dtype(model)
    battery.check_config_round_trip(model, encoder.build_encoder)
    battery.check_parameter_count(model, encoder.count_parameters)
    if name == "post":  # Keras file plumbing does not depend on the variant
        battery.check_save_and_load(model, tmp_path)
    # check_train_step's compiled step runs in tests/test_mlm.py, through the trainer with the masked-LM loss.


def test_seeded_build_dropout_and_mixed_precision():
    config = CONFIGS["post"]
    battery.check_seeded_build(encoder.build_encoder, config)
    model = encoder.build_encoder(config.replace(dropout=0.3), seed=3)
    ids = real_tokens()
    inference = npy(model(ids))
    np.testing.assert_array_equal(npy(model(ids, training=False)), inference)
    assert np.abs(npy(model(ids, training=True)) - inference).max() > 1e-4
    mixed = encoder.build_encoder(config, seed=1, dtype="mixed_bfloat16")
    logits = mixed(ids)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32" and np.isfinite(npy(logits)).all()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_bidirectional_a_later_token_moves_earlier_logits(name):
    """The causal check turned around: an encoder's every position sees token 4."""
    model = model_for(name)
    ids = real_tokens()
    changed = ids.copy()
    changed[:, 4] = (changed[:, 4] + 1) % VOCAB + (changed[:, 4] + 1 == VOCAB) * 2
    before, after = npy(model(ids)), npy(model(changed))
    assert np.abs(before[:, :4] - after[:, :4]).max(axis=-1).min() > 1e-6


@pytest.mark.parametrize("name", list(CONFIGS))
def test_padding_is_invisible_to_real_tokens(name):
    """Right padding (keys hidden, RoBERTa positions unmoved) leaves the real tokens' logits alone."""
    model = model_for(name)
    pad = model.config.pad_token_id
    ids = real_tokens(length=6)
    padded = np.concatenate([ids, np.full((ids.shape[0], 4), pad, np.int32)], axis=1)
    np.testing.assert_allclose(npy(model(padded))[:, :6], npy(model(ids)), atol=1e-5)


def test_rotary_positions_order_the_tokens_without_a_position_table():
    """Without positions an encoder is permutation-equivariant; rotary queries and keys make order matter."""
    from lmlab.interop.hf_config import architecture_for

    model = encoder.build_encoder(CONFIGS["rope"], seed=7)
    assert "positions" not in {w.path.split("/")[1] for w in model.weights}
    for block in model.blocks:  # sharper attention than at initialisation, where it is nearly uniform
        for projection in (block.attention.q_proj, block.attention.k_proj):
            projection.kernel.assign(projection.kernel * 30.0)
    ids = real_tokens()
    order = np.random.default_rng(0).permutation(ids.shape[1])
    assert np.abs(npy(model(ids[:, order])) - npy(model(ids))[:, order]).max() > 1e-3  # float noise: ~1e-7
    with pytest.raises(ConfigError, match="BERT and RoBERTa have learned positions; this encoder has position='rope'"):
        architecture_for(CONFIGS["rope"])


def test_segment_ids_change_the_output_and_default_to_zero():
    model = model_for("post")
    ids = real_tokens()
    zeros, ones = np.zeros_like(ids), np.ones_like(ids)
    np.testing.assert_array_equal(npy(model(ids, zeros)), npy(model(ids)))
    assert np.abs(npy(model(ids, ones)) - npy(model(ids))).max() > 1e-4


def test_registry_shapes_and_no_generation():
    config = registry.model_config("bert", "roberta-base", 50265)
    assert (config.family, config.block_size, config.position_offset, config.type_vocab_size) == ("encoder", 512, 2, 1)
    assert encoder.count_parameters(config) == 124_697_433  # roberta-base's RobertaForMaskedLM parameter count
    bert = registry.model_config("encoder", "bert-base", 30522)
    assert encoder.count_parameters(bert) == 109_514_298  # bert-base-uncased's BertForMaskedLM
    with pytest.raises(ConfigError, match="does not generate text"):
        model_for("post").init_cache(1)


@pytest.mark.parametrize("fields, message", [
    (dict(norm="middle"), "norm must be one of post, pre: norm='middle'"),
    (dict(position_offset=2, pad_token_id=0), "position_offset=2 needs pad_token_id=1"),
    (dict(mask_prob=1.5), "mask_prob must be in (0, 1)"),
    (dict(pad_token_id=VOCAB), f"pad_token_id={VOCAB} is outside the vocabulary"),
    (dict(n_head=5), "n_head must divide d_model"),
    (dict(packing="triples"), "packing must be one of full, pairs: packing='triples'"),
    (dict(position="alibi"), "position must be one of learned, rope: position='alibi'"),
    (dict(position="rope", d_model=36, n_head=4), "position='rope' needs an even head size"),
    (dict(packing="pairs", type_vocab_size=1), "packing='pairs' gives the second segment token type 1, which needs "
                                               "type_vocab_size >= 2: type_vocab_size=1"),
])
def test_config_errors_name_field_and_value(fields, message):
    with pytest.raises(ConfigError) as error:
        encoder.EncoderConfig(**{"vocab_size": VOCAB, **fields})
    assert message in str(error.value)


def test_too_long_input_is_refused():
    with pytest.raises(ConfigError, match=f"exceeds block_size={BLOCK}"):
        model_for("post")(real_tokens(length=BLOCK + 1))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_task_heads_read_what_the_mlm_head_reads_and_padding_is_hidden_by_length(name):
    """model(ids) == logits(hidden_states(ids)); with lengths, right padding (any ids) changes nothing."""
    from lmlab.tasks.classifier import SequenceClassifier

    model = model_for(name)
    ids = real_tokens()
    np.testing.assert_allclose(npy(model.logits(model.hidden_states(ids))), npy(model(ids)), atol=1e-5)
    padded = np.concatenate([ids, real_tokens(length=4, seed=9)], axis=1)  # padding that is no padding id
    lengths = np.full(ids.shape[0], ids.shape[1], np.int32)
    np.testing.assert_allclose(npy(model.hidden_states(padded, lengths=lengths))[:, :ids.shape[1]],
                               npy(model.hidden_states(ids)), atol=1e-5)
    classifier = SequenceClassifier(model, 3, pooling="cls", seed=1)
    np.testing.assert_allclose(npy(classifier(padded, lengths)), npy(classifier(ids, lengths)), atol=1e-5)
