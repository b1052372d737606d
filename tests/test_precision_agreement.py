"""Mixed bfloat16 computes what float32 computes: the same weights, both precisions, every neural family.

``tests/model_battery.py``'s ``check_mixed_precision`` checks that a ``mixed_bfloat16`` model
has float32 logits and a bfloat16 cache; :func:`tests.model_battery.check_precision_agreement`
checks the numbers: a float32 model trained a little on a pattern (confident logits), its
bfloat16 copy's logits, target log-probabilities and mean loss, and five training steps of each.

Measured on CPU (TensorFlow; the bfloat16 step is a plain graph through oneDNN), worst case
over the families below, against the bars in tests/model_battery.py. On an AMD EPYC with
AVX512-BF16:

=======================================  ====================  ===============  ========
difference (bfloat16 vs float32)         worst (family)        bar              id cast
=======================================  ====================  ===============  ========
max |logits diff| / max |logits|         0.0102 (gated_cnn)    0.02             1.32
max |log p(target) diff|, nats           0.044 (gru)           0.1              20.0
mean loss, relative                      0.0051 (enc. roberta) 0.02             2.80
5 steps' losses: worst diff / 1% bar     0.38 (enc. roberta)   2 (max(2%,1e-3)) 290
=======================================  ====================  ===============  ========

On an AMD EPYC with AVX2 only (no native bfloat16: oneDNN emulates it), 2026-12-07: mean loss
0.0119 (gated_cnn), 5 steps' worst diff 1.1 of the 1% bar (encoder, pre-LN RoPE), logits 0.0114
(gated_cnn): the loss bars were 1% then and are 2% now.

The last column is :func:`test_a_bfloat16_id_cast_fails_the_check`: a GPT-2 whose token ids
are rounded through bfloat16 before the embedding lookup (a real mixed-precision bug: 257 reads
as 256) fails every comparison by far.
"""

from __future__ import annotations

import pytest
from keras import ops

from lmlab.models import encoder, transformer
from tests import model_battery as battery
from tests.test_encoder import CONFIGS as ENCODER_CONFIGS
from tests.test_model_families import CASES

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

# The families' battery configs, with a vocabulary past 256 (see battery.HIGH_IDS) and a longer block.
WIDE = dict(vocab_size=301, block_size=64)
# name -> (builder, config, float32 warm-up). An encoder needs longer to learn to copy a row's
# visible tokens into its masks (it sits at the unigram for its first ~50 steps).
FAMILIES = {name: (case.build, case.config.replace(**WIDE), dict(warmup_steps=30, learning_rate=2e-2))
            for name, case in CASES.items()}
FAMILIES |= {f"encoder-{name}": (encoder.build_encoder, config.replace(**WIDE),
                                 dict(warmup_steps=120, learning_rate=3e-3))
             for name, config in ENCODER_CONFIGS.items()}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_bfloat16_agrees_with_float32(name):
    build, config, warmup = FAMILIES[name]
    battery.check_precision_agreement(build, config, **warmup)


def build_with_bfloat16_ids(config, seed=None, dtype=None):
    """A Transformer whose mixed-precision copy casts its token ids to bfloat16 and back (the bug)."""
    model = transformer.build_transformer(config, seed=seed, dtype=dtype)
    if dtype == "mixed_bfloat16":
        lookup = model.token_embedding.call
        model.token_embedding.call = lambda ids: lookup(ops.cast(ops.cast(ids, "bfloat16"), "int32"))
    return model


def test_a_bfloat16_id_cast_fails_the_check():
    """The bars are tight enough to catch a real cast bug: every comparison fails, by a wide margin."""
    _, config, warmup = FAMILIES["gpt2"]
    measured = battery.measure_precision_agreement(build_with_bfloat16_ids, config, **warmup)
    assert measured["logit_rel"] > 5 * battery.LOGIT_RTOL, measured
    assert measured["target_log_prob_max_abs"] > 5 * battery.TARGET_LOG_PROB_ATOL, measured
    assert measured["loss_rel"] > 5 * battery.LOSS_RTOL, measured
    assert max(a / max(battery.CURVE_RTOL * b, battery.CURVE_ATOL)
               for a, b in zip(measured["curve_abs"], measured["curve_float32"])) > 5, measured
