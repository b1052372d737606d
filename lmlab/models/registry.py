"""Model families by name: their config class, shapes and builder.

Everything that trains, evaluates or generates goes through here, so none of
it branches on the family. Modules are imported only when a family is used.
"""

from __future__ import annotations

import importlib
import reprlib
from dataclasses import dataclass

from lmlab.core.errors import ConfigError
from lmlab.models import precision


@dataclass(frozen=True)
class Family:
    name: str
    module: str
    config_class: str
    builder: str
    neural: bool = True
    objective: str = "causal"  # "causal": next-token targets; "mlm": masked tokens (lmlab.data.masking)

    def load(self):
        return importlib.import_module(self.module)


FAMILIES = {
    "transformer": Family("transformer", "lmlab.models.transformer", "TransformerConfig", "build_transformer"),
    "rnn": Family("rnn", "lmlab.models.rnn", "RNNConfig", "build_rnn"),
    "gated_cnn": Family("gated_cnn", "lmlab.models.gated_cnn", "GatedCNNConfig", "build_gated_cnn"),
    # Bidirectional, trained to fill in masked tokens (BERT/RoBERTa); it does not generate text.
    "encoder": Family("encoder", "lmlab.models.encoder", "EncoderConfig", "build_encoder", objective="mlm"),
    # Counted, not trained by gradient: see lmlab.training.ngram and lmlab.runs.ngram.
    "ngram": Family("ngram", "lmlab.models.ngram.model", "NGramConfig", "", neural=False),
}
ALIASES = {"cnn": "gated_cnn", "lstm": "rnn", "gpt": "transformer", "kenlm": "ngram", "bert": "encoder"}


def family(name: str) -> Family:
    name = ALIASES.get(name, name)
    if name not in FAMILIES:
        raise ConfigError(f"unknown model family {name!r}: expected {', '.join(sorted(FAMILIES))}")
    return FAMILIES[name]


def model_config(family_name: str, shape_name: str, vocab_size: int, overrides: dict | None = None):
    """A family's shape with the tokenizer's vocabulary size and the user's overrides."""
    overrides = dict(overrides or {})
    overrides.setdefault("vocab_size", vocab_size)
    size = overrides["vocab_size"]
    if not isinstance(size, int) or isinstance(size, bool):
        raise ConfigError(f"model.vocab_size must be an integer, got {reprlib.repr(size)}")
    if size < vocab_size:
        raise ConfigError(f"model.vocab_size {size} is smaller than the tokenizer's {vocab_size}")
    return family(family_name).load().shape(shape_name, **overrides)


def config_from_dict(data: dict):
    """Rebuild a saved model config; its ``family`` field says which class."""
    spec = family(data.get("family", "transformer"))
    return getattr(spec.load(), spec.config_class).from_dict(data)


def build_model(config, seed: int | None = None, dtype: str = "float32"):
    """A built model of ``config``'s family in inference ``dtype`` (:mod:`lmlab.models.precision`).

    ``int8`` builds int8 Dense kernels and their scales from the start (zeros and ones until a quantized
    checkpoint is assigned), so no float32 copy of them exists; to quantize float32 weights, build float32
    and call :func:`~lmlab.models.precision.quantize_int8`.
    """
    spec = family(config.family)
    precision.check_dtype(dtype, spec.name)
    extra = {} if dtype == "float32" else {"dtype": precision.policy(dtype)}
    if dtype != "float32":
        extra["before_build"] = precision.prepare_int8 if dtype == "int8" else precision.prepare_bfloat16
    return getattr(spec.load(), spec.builder)(config, seed=seed, **extra)
