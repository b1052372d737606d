"""The hidden states of a pretrained language model: what a task head reads.

Each neural family computes ``logits = output_layer(body(ids))``; the head
reads ``body(ids)`` after the family's final norm (where it has one), i.e.
exactly what the language-model head would read. These functions follow each
family's ``call`` layer by layer (``lmlab.models.transformer``, ``rnn``,
``gated_cnn``); a test holds ``model._logits(body(model, ids)) == model(ids)``
for every family, so a change there cannot silently drift from here.

Every decoder family is causal, so with right padding the states of the real
tokens do not depend on the padding after them; the encoder
(``lmlab.models.encoder``) sees both sides, so it is given the real lengths
and hides the padding from attention. Its inputs start with ``[CLS]``
(:func:`input_prefix`), the position ``cls`` pooling reads.
"""

from __future__ import annotations

from lmlab.errors import ConfigError

FAMILIES = ("transformer", "rnn", "gated_cnn", "encoder")


def input_prefix(model, tokenizer) -> list[int]:
    """Token ids a task puts before each text: ``[CLS]`` for an encoder whose tokenizer has it."""
    if getattr(model.config, "family", None) != "encoder":
        return []
    from lmlab.training.masking import CLS_TOKENS

    return [tokenizer.special_tokens[t] for t in CLS_TOKENS if t in tokenizer.special_tokens][:1]


def body(model, token_ids, training=None, lengths=None):
    """``(B, T, d)`` states that the family's output layer turns into logits.

    ``lengths`` ``(B,)``: real tokens per row, for the encoder (right padding is hidden from it).
    """
    family = getattr(model.config, "family", None)
    if family == "encoder":  # the final norm (pre-LN) is part of encode
        return model.encode(token_ids, training=training, lengths=lengths)
    if family == "transformer":
        x = model._embed(token_ids, 0, training)  # (B, T, d)
        for block in model.blocks:
            x = block(x, training=training)
        return x
    if family == "rnn":
        x = model.embedding_dropout(model._embed(token_ids), training=training)  # (B, T, d)
        for layer, dropout in zip(model.recurrent, model.dropouts):
            x = dropout(layer(x, training=training)[0], training=training)
        return x
    if family == "gated_cnn":
        x = model.embedding_dropout(model._embed(token_ids), training=training)  # (B, T, d)
        for block in model.blocks:
            x = block(x, training=training)
        return x
    raise ConfigError(f"fine-tuning needs a neural language model ({', '.join(FAMILIES)}), not {family!r}")


def hidden_states(model, token_ids, training=None, lengths=None):
    """:func:`body` through the family's final norm (the Transformer and gated CNN have one)."""
    x = body(model, token_ids, training, lengths)
    if getattr(model.config, "family", None) == "encoder":
        return x
    norm = getattr(model, "final_norm", None)
    return x if norm is None else norm(x)


def check_neural(model) -> None:
    family = getattr(getattr(model, "config", None), "family", None)
    if family not in FAMILIES:
        raise ConfigError(f"fine-tuning needs a neural language model ({', '.join(FAMILIES)}), not {family!r}")
