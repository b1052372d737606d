"""What every neural family shares: config (de)serialisation and the Keras model plumbing.

A family's config is a frozen dataclass that inherits :class:`ModelConfig`;
fields left ``None`` and filled from others in ``__post_init__`` are recorded in
``_auto`` so :meth:`ModelConfig.replace` derives them again. A family's model
inherits :class:`LanguageModel` beside ``keras.Model`` and names its config class.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Mapping

import keras
from keras import ops

from lmlab.core.errors import ConfigError
from lmlab.core.records import Record, check_fields, is_int, is_real
from lmlab.layers.adaptive_softmax import AdaptiveSoftmax, adaptive_macs, adaptive_parameters

OUTPUTS = ("softmax", "adaptive")  # the output layer: full softmax, or the adaptive softmax (Grave et al. 2017)


class ModelConfig(Record):
    def to_dict(self) -> dict[str, Any]:
        """Resolved values of every field, JSON-serialisable (tuples as lists, as JSON reads them back)."""
        values = {name: getattr(self, name) for name in self.field_names()}
        return {name: list(value) if isinstance(value, tuple) else value for name, value in values.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]):
        """Inverse of :meth:`to_dict`; unknown fields raise :class:`ConfigError` naming them."""
        check_fields(d, cls.field_names(), cls.what())
        if "vocab_size" not in d:
            raise ConfigError("vocab_size is required (take it from the tokenizer)")
        return cls(**d)

    def replace(self, **overrides):
        """A copy with ``overrides`` applied; automatically resolved fields are re-derived."""
        check_fields(overrides, self.field_names(), self.what())
        changes = {name: None for name in getattr(self, "_auto", ()) if name not in overrides}
        changes.update(overrides)
        return dataclasses.replace(self, **changes)


def check_output(config) -> None:
    """Validate (and normalise) a decoder config's output fields: ``output``, ``cutoffs``, ``div_value``.

    ``output="adaptive"`` needs ``cutoffs``: strictly increasing positive ids below ``vocab_size``,
    the head being ids ``[0, cutoffs[0])`` (see :mod:`lmlab.layers.adaptive_softmax`). ``cutoffs`` and
    ``div_value`` are checked whenever given and used only by the adaptive output.
    """
    if config.output not in OUTPUTS:
        raise ConfigError(f"output must be one of {', '.join(OUTPUTS)}: output={config.output!r}")
    cutoffs = config.cutoffs
    if cutoffs is not None:
        if (isinstance(cutoffs, (str, bytes)) or not hasattr(cutoffs, "__iter__")
                or not all(is_int(c) for c in cutoffs)):
            raise ConfigError(f"cutoffs must be a list of integers: cutoffs={cutoffs!r}")
        cutoffs = tuple(int(c) for c in cutoffs)
        if not cutoffs or cutoffs[0] < 1 or any(b <= a for a, b in zip(cutoffs, cutoffs[1:])) \
                or cutoffs[-1] >= config.vocab_size:
            raise ConfigError(f"cutoffs must be strictly increasing integers in [1, vocab_size={config.vocab_size}): "
                              f"cutoffs={list(cutoffs)!r}")
        object.__setattr__(config, "cutoffs", cutoffs)
    if config.output == "adaptive" and cutoffs is None:
        raise ConfigError("output='adaptive' needs cutoffs, e.g. cutoffs=[2000, 10000] (the head's size first)")
    if not is_real(config.div_value) or config.div_value < 1.0:
        raise ConfigError(f"div_value must be a number >= 1: div_value={config.div_value!r}")
    object.__setattr__(config, "div_value", float(config.div_value))


def is_adaptive(config) -> bool:
    """Whether ``config`` (any model config) has the adaptive softmax output."""
    return getattr(config, "output", "softmax") == "adaptive"


def adaptive_output_parameters(config) -> int:
    """Weights of ``config``'s adaptive output layer (the head's word rows left out when tied)."""
    return adaptive_parameters(config.vocab_size, config.d_model, config.cutoffs, config.div_value,
                               tied=config.tie_embeddings)


def output_flop_weights(config, num_parameters: int) -> int:
    """``N`` of ``6*N`` from ``num_parameters`` (``non_embedding=True``): for the adaptive output its
    weights are swapped for what it computes per token (:func:`~lmlab.layers.adaptive_softmax.adaptive_macs`:
    the tied head rows, every tail for every token); the full softmax is counted as it was."""
    if not is_adaptive(config):
        return num_parameters
    macs = adaptive_macs(config.vocab_size, config.d_model, config.cutoffs, config.div_value)
    return num_parameters - adaptive_output_parameters(config) + macs


def build_adaptive(config, stddev: float, seed: int | None, dtype) -> AdaptiveSoftmax:
    """The adaptive softmax of ``config`` (``name="adaptive_softmax"``), its head tied when ``tie_embeddings``."""
    return AdaptiveSoftmax(config.vocab_size, config.d_model, config.cutoffs, config.div_value,
                           tied=config.tie_embeddings, stddev=stddev, seed=seed, dtype=dtype,
                           name="adaptive_softmax")


def shape_config(config_class, family: str, shapes: Mapping[str, Mapping[str, Any]], name: str,
                  overrides: Mapping[str, Any]):
    """A family's shape ``name`` with ``overrides`` as a ``config_class``; ``vocab_size`` must be among them."""
    if name not in shapes:
        raise ConfigError(f"unknown {family} shape {name!r}; known shapes: {', '.join(shapes)}")
    if "vocab_size" not in overrides:
        raise ConfigError(f"shape {name!r} needs vocab_size (from the tokenizer), "
                          f"e.g. shape({name!r}, vocab_size=tokenizer.vocab_size)")
    return config_class.from_dict({**shapes[name], **overrides})


def build_built(model_class, config, seed: int | None = None, dummy_length: int = 1, before_build=None, **kwargs):
    """A ``model_class`` with its weights built by a call on a dummy ``(1, dummy_length)`` batch.

    The same ``config`` and integer ``seed`` give the same weights; ``kwargs`` go to the model
    (e.g. ``dtype="mixed_bfloat16"``). ``before_build(model)`` may change layers while no weight exists yet
    (:func:`lmlab.models.precision.prepare_int8`).
    """
    model = model_class(config, seed=seed, **kwargs)
    if before_build is not None:
        before_build(model)
    model(ops.zeros((1, dummy_length), dtype="int32"))
    return model


class Seeds:
    """Hands out seeds ``seed, seed + 1, ...`` in construction order (all ``None`` without a seed)."""

    def __init__(self, seed: int | None):
        self.seed, self.count = seed, 0

    def __call__(self) -> int | None:
        if self.seed is None:
            return None
        self.count += 1
        return self.seed + self.count - 1


def check_cache_length(max_length) -> None:
    """For caches that do not grow with the length: ``max_length`` must still be valid if given."""
    if max_length is not None and (not isinstance(max_length, numbers.Integral) or max_length < 1):
        raise ConfigError(f"cache max_length must be a positive integer: max_length={max_length!r}")


class OutputHead:
    """The output layer the RNN and gated CNN share: the tied input embedding (or an untied
    ``lm_head``) plus a per-word bias, or the adaptive softmax. Expects ``token_embedding``,
    ``lm_head`` (or ``None``), ``adaptive`` (or ``None``) and, without ``adaptive``, ``output_bias``
    on the model."""

    def build_output(self, hidden_shape) -> None:
        """Build the output layer, last in the model's ``build`` (so the weights keep their order and names)."""
        if self.lm_head is not None:
            self.lm_head.build(hidden_shape)
        if self.adaptive is not None:
            self.adaptive.build(hidden_shape)
        else:
            self.output_bias = self.add_weight(shape=(self.config.vocab_size,), initializer="zeros",
                                               name="output_bias")

    def logits(self, x):
        """Float32 logits ``(B, T, V)`` from :meth:`hidden_states` ``(B, T, d)``; the adaptive output's
        are normalised log-probabilities."""
        if self.adaptive is not None:
            return self.adaptive.log_probs(x, self.output_table())
        if self.lm_head is None:
            table = ops.cast(self.token_embedding.embeddings, x.dtype)  # (V, d)
            logits = ops.einsum("btd,vd->btv", x, table)  # no transposed copy of the table
        else:
            logits = self.lm_head(x)  # (B, T, V)
        logits = logits + ops.cast(self.output_bias, logits.dtype)
        return ops.cast(logits, "float32")

    def num_parameters(self, non_embedding: bool = False) -> int:
        """Number of weights; ``non_embedding=True`` leaves out an untied input embedding (lookup only)."""
        total = sum(math.prod(w.shape) for w in self.weights)
        if non_embedding and (self.lm_head is not None or self.adaptive is not None):
            total -= math.prod(self.token_embedding.embeddings.shape)
        return int(total)


class LanguageModel:
    """Mixed into each family's ``keras.Model``: ``config_class`` names its config."""

    config_class: type = ModelConfig

    def hidden_states(self, token_ids, training=None, lengths=None):
        """``(B, T, d)`` states after the last layer (and the final norm): what the output layer and task
        heads read. ``lengths`` ``(B,)``, real tokens per row, lets a bidirectional model hide right
        padding; a causal model needs no mask for it, as no real token sees the padding after it."""
        raise NotImplementedError

    def logits(self, hidden):
        """Float32 logits ``(B, T, V)`` from :meth:`hidden_states`; ``call(ids) == logits(hidden_states(ids))``."""
        raise NotImplementedError

    def output_table(self):
        """The ``(V, d)`` embedding the adaptive output's head shares (``None`` when untied)."""
        return self.token_embedding.embeddings if self.config.tie_embeddings else None

    def token_nll(self, hidden, targets):
        """Float32 ``(B, T)`` ``-log p(targets)`` from :meth:`hidden_states`: the training and evaluation
        loss. The adaptive output computes it without the ``(B, T, V)`` log-probabilities; the full
        softmax from :meth:`logits`."""
        adaptive = getattr(self, "adaptive", None)
        if adaptive is not None:
            return adaptive.token_nll(hidden, targets, self.output_table())
        return ops.sparse_categorical_crossentropy(targets, self.logits(hidden), from_logits=True)

    def stateless_call_with_cache(self, variable_values, token_ids, cache, index=None):
        """:meth:`call_with_cache` with the weights passed in as values (lined up with ``self.variables``).

        Under ``jax.jit`` the weights then arrive as arguments instead of being baked
        into the compiled program as constants (slow to compile for large models).
        """
        mapping = list(zip(self.variables, variable_values))
        with keras.StatelessScope(state_mapping=mapping):
            return self.call_with_cache(token_ids, cache, index)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
            "config": self.config.to_dict(),
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        return cls(cls.config_class.from_dict(config.pop("config")), **config)
