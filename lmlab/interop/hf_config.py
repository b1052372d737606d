"""Hugging Face ``config.json`` ↔ :class:`~lmlab.models.transformer.TransformerConfig`.

Reading a config checks every setting that changes the numbers lmlab would
compute (activation, attention scaling, rotary variant, head size, ...) and
refuses what lmlab's model does not do, naming the field; settings that only
matter to training in ``transformers`` (dropouts, initializer range) are left
out. Both the ``transformers`` 4 (``rope_theta``, ``rope_scaling``) and 5
(``rope_parameters``) spellings of the rotary settings are read; both are written.
"""

from __future__ import annotations

from lmlab.core.errors import ConfigError
from lmlab.interop.hf_names import ARCHITECTURES, BERT, GPT2, LLAMA, ROBERTA, Architecture

GELU_TANH = ("gelu_new", "gelu_pytorch_tanh")  # both are GELU with the tanh approximation, as lmlab's


def supported() -> str:
    return ", ".join(f"{a.name} ({a.model_type})" for a in ARCHITECTURES)


def find_architecture(hf: dict, source: str) -> Architecture:
    """The architecture a ``config.json`` describes, or an error listing the supported ones."""
    model_type = hf.get("model_type")
    names = hf.get("architectures") or []
    for arch in ARCHITECTURES:
        known = (arch.name, *arch.aliases)
        if model_type == arch.model_type and (not names or all(n in known for n in names)):
            return arch
    what = f"architectures {', '.join(map(str, names))}" if names else "no architectures"
    raise ConfigError(f"{source}: model_type {model_type!r} with {what} is not supported; "
                      f"lmlab imports {supported()}")


def _need(hf: dict, name: str, source: str):
    if name not in hf:
        raise ConfigError(f"{source}: {name} is missing")
    return hf[name]


def _refuse(source: str, field: str, value, why: str):
    raise ConfigError(f"{source}: {field}={value!r} is not supported: {why}")


def _gpt2(hf: dict, source: str) -> dict:
    activation = hf.get("activation_function", "gelu_new")
    if activation not in GELU_TANH:
        _refuse(source, "activation_function", activation, f"lmlab's GPT-2 uses GELU with tanh ({GELU_TANH[0]})")
    if not hf.get("scale_attn_weights", True):
        _refuse(source, "scale_attn_weights", False, "lmlab scales attention scores by 1/sqrt(head size)")
    if hf.get("scale_attn_by_inverse_layer_idx", False):
        _refuse(source, "scale_attn_by_inverse_layer_idx", True, "lmlab does not scale attention by depth")
    if hf.get("add_cross_attention", False):
        _refuse(source, "add_cross_attention", True, "lmlab's decoder has no cross-attention")
    d_model = _need(hf, "n_embd", source)
    return dict(style="gpt2", vocab_size=_need(hf, "vocab_size", source),
                block_size=_need(hf, "n_positions", source), n_layer=_need(hf, "n_layer", source),
                n_head=_need(hf, "n_head", source), d_model=d_model, d_ff=hf.get("n_inner") or 4 * d_model,
                norm_eps=hf.get("layer_norm_epsilon", 1e-5), bias=True,
                tie_embeddings=hf.get("tie_word_embeddings", True))


def rope_theta(hf: dict, source: str) -> float:
    """The rotary base of a Llama config in either spelling; any rotary scaling is refused."""
    parameters = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or {}
    for settings, field in ((parameters, "rope_parameters"), (scaling, "rope_scaling")):
        kind = settings.get("rope_type", settings.get("type", "default"))
        if kind != "default":
            _refuse(source, f"{field}.rope_type", kind, "lmlab has plain rotary positions only (rope_type default)")
    return float(parameters.get("rope_theta", hf.get("rope_theta", 10000.0)))


def _llama(hf: dict, source: str) -> dict:
    activation = hf.get("hidden_act", "silu")
    if activation != "silu":
        _refuse(source, "hidden_act", activation, "lmlab's Llama MLP is SwiGLU (silu)")
    d_model, n_head = _need(hf, "hidden_size", source), _need(hf, "num_attention_heads", source)
    head_dim = hf.get("head_dim") or d_model // n_head
    if head_dim * n_head != d_model:
        _refuse(source, "head_dim", head_dim, f"lmlab's head size is hidden_size / num_attention_heads "
                f"= {d_model / n_head:g}")
    attention_bias, mlp_bias = bool(hf.get("attention_bias", False)), bool(hf.get("mlp_bias", False))
    if attention_bias != mlp_bias:
        _refuse(source, "attention_bias/mlp_bias", (attention_bias, mlp_bias),
                "lmlab's bias setting covers attention and MLP together")
    return dict(style="llama", vocab_size=_need(hf, "vocab_size", source),
                block_size=_need(hf, "max_position_embeddings", source),
                n_layer=_need(hf, "num_hidden_layers", source), n_head=n_head,
                n_kv_head=hf.get("num_key_value_heads") or n_head, d_model=d_model,
                d_ff=_need(hf, "intermediate_size", source), norm_eps=hf.get("rms_norm_eps", 1e-6),
                rope_theta=rope_theta(hf, source), bias=attention_bias,
                tie_embeddings=hf.get("tie_word_embeddings", False))


def _encoder(hf: dict, source: str) -> dict:
    """BERT or RoBERTa (``modeling_bert.py``, ``modeling_roberta.py``): RoBERTa's positions start after padding."""
    activation = hf.get("hidden_act", "gelu")
    if activation != "gelu":
        _refuse(source, "hidden_act", activation, "lmlab's encoder uses the exact (erf) GELU, BERT's gelu")
    kind = hf.get("position_embedding_type", "absolute")
    if kind != "absolute":
        _refuse(source, "position_embedding_type", kind, "lmlab's encoder has learned absolute positions")
    for flag in ("is_decoder", "add_cross_attention"):
        if hf.get(flag, False):
            _refuse(source, flag, True, "lmlab's encoder is bidirectional, without cross-attention")
    roberta = hf.get("model_type") == ROBERTA.model_type
    pad = hf.get("pad_token_id", 1 if roberta else 0)
    if roberta and not isinstance(pad, int):
        raise ConfigError(f"{source}: a RoBERTa needs pad_token_id (its positions start after it)")
    offset = pad + 1 if roberta else 0
    positions = _need(hf, "max_position_embeddings", source)
    if positions <= offset:
        raise ConfigError(f"{source}: max_position_embeddings={positions} leaves no position after the "
                          f"padding offset {offset}")
    if not hf.get("tie_word_embeddings", True):
        _refuse(source, "tie_word_embeddings", False, "lmlab's masked-LM head is tied to the token embedding")
    return dict(vocab_size=_need(hf, "vocab_size", source), block_size=positions - offset,
                n_layer=_need(hf, "num_hidden_layers", source), n_head=_need(hf, "num_attention_heads", source),
                d_model=_need(hf, "hidden_size", source), d_ff=_need(hf, "intermediate_size", source),
                norm="post", type_vocab_size=hf.get("type_vocab_size", 2), position_offset=offset,
                pad_token_id=pad if isinstance(pad, int) else None, norm_eps=hf.get("layer_norm_eps", 1e-12))


_READERS = {GPT2.model_type: _gpt2, LLAMA.model_type: _llama, BERT.model_type: _encoder,
            ROBERTA.model_type: _encoder}


def from_hf(hf: dict, source: str):
    """``(architecture, model config)`` for a Hugging Face ``config.json`` (a dict)."""
    from lmlab.models.encoder import EncoderConfig
    from lmlab.models.transformer import TransformerConfig

    if not isinstance(hf, dict):
        raise ConfigError(f"{source}: config.json must hold a JSON object")
    arch = find_architecture(hf, source)
    fields = _READERS[arch.model_type](hf, source)
    try:
        return arch, (EncoderConfig if arch.family == "encoder" else TransformerConfig)(**fields)
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None


def to_hf(arch: Architecture, config, special_ids: dict[str, int | None]) -> dict:
    """A ``config.json`` dict that ``transformers`` reads as ``arch`` for ``config``.

    ``special_ids`` holds ``bos_token_id``, ``eos_token_id`` and ``pad_token_id``.
    """
    common = {"architectures": [arch.name], "model_type": arch.model_type, "vocab_size": config.vocab_size,
              "tie_word_embeddings": config.tie_embeddings, "dtype": "float32", "use_cache": True,
              "initializer_range": 0.02, **special_ids}
    if arch.family == "encoder":
        pad = config.pad_token_id if config.pad_token_id is not None else (special_ids.get("pad_token_id") or 0)
        return {**common, "pad_token_id": pad, "use_cache": False, "hidden_size": config.d_model,
                "num_hidden_layers": config.n_layer, "num_attention_heads": config.n_head,
                "intermediate_size": config.d_ff, "hidden_act": "gelu",
                "max_position_embeddings": config.block_size + config.position_offset,
                "type_vocab_size": config.type_vocab_size, "layer_norm_eps": config.norm_eps,
                "position_embedding_type": "absolute", "hidden_dropout_prob": config.dropout,
                "attention_probs_dropout_prob": 0.0, "is_decoder": False}
    if arch is GPT2:
        if config.n_kv_head != config.n_head:
            raise ConfigError(f"GPT-2 has no grouped-query attention: this model has n_kv_head={config.n_kv_head} "
                              f"for n_head={config.n_head}")
        return {**common, "n_positions": config.block_size, "n_embd": config.d_model, "n_layer": config.n_layer,
                "n_head": config.n_head, "n_inner": config.d_ff, "activation_function": GELU_TANH[0],
                "layer_norm_epsilon": config.norm_eps, "scale_attn_weights": True,
                # lmlab drops out embeddings and residual branches, not attention probabilities
                "embd_pdrop": config.dropout, "resid_pdrop": config.dropout, "attn_pdrop": 0.0}
    return {**common, "hidden_size": config.d_model, "intermediate_size": config.d_ff,
            "num_hidden_layers": config.n_layer, "num_attention_heads": config.n_head,
            "num_key_value_heads": config.n_kv_head, "head_dim": config.head_dim, "hidden_act": "silu",
            "max_position_embeddings": config.block_size, "rms_norm_eps": config.norm_eps,
            "rope_theta": config.rope_theta,
            "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
            "attention_bias": config.bias, "mlp_bias": config.bias, "attention_dropout": 0.0}


def architecture_for(config) -> Architecture:
    """The Hugging Face architecture an lmlab Transformer or encoder config exports as."""
    if getattr(config, "family", None) == "encoder":
        if config.norm != "post":
            raise ConfigError("only a post-LN encoder (norm=post) exports as BERT or RoBERTa; this one is pre-LN")
        if config.position != "learned":
            raise ConfigError(f"BERT and RoBERTa have learned positions; this encoder has position="
                              f"{config.position!r}, which they cannot hold")
        return ROBERTA if config.position_offset else BERT
    if getattr(config, "family", None) != "transformer":
        raise ConfigError(f"only Transformer and encoder runs export to Hugging Face; this run's model is "
                          f"{getattr(config, 'family', type(config).__name__)}")
    return GPT2 if config.style == "gpt2" else LLAMA
