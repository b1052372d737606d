"""Hugging Face ``config.json`` ↔ :class:`~lmlab.models.transformer.TransformerConfig`.

Reading a config checks every setting that changes the numbers lmlab would
compute (activation, attention scaling, rotary variant, head size, ...) and
refuses what lmlab's model does not do, naming the field; settings that only
matter to training in ``transformers`` (dropouts, initializer range) are left
out. Both the ``transformers`` 4 (``rope_theta``, ``rope_scaling``) and 5
(``rope_parameters``) spellings of the rotary settings are read; both are written.

Llama-family checkpoints (Llama, Mistral, Qwen2, Qwen3) all map onto lmlab's ``style="llama"``:
their differences are config switches (biases, per-head q/k norms, head size, rotary scaling,
sliding window), and :func:`architecture_for` picks the family back from those switches.
"""

from __future__ import annotations

from lmlab.core.errors import ConfigError
from lmlab.interop.hf_names import ARCHITECTURES, BERT, GPT2, LLAMA, MISTRAL, QWEN2, QWEN3, ROBERTA, Architecture
from lmlab.layers.rotary import ROPE_KEYS

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
    """The rotary base of a Llama-family config in either spelling."""
    return rope_settings(hf, source)[0]


def rope_settings(hf: dict, source: str) -> tuple[float, dict | None]:
    """``(rope_theta, rope_scaling)`` of a Llama-family config in either spelling (``rope_parameters``, or
    ``rope_scaling`` with a top-level ``rope_theta``), as lmlab's ``TransformerConfig`` takes them.

    ``linear``, ``dynamic``, ``yarn`` and ``llama3`` are read with the keys ``transformers`` reads; any other
    type, an unknown key or a ``partial_rotary_factor`` below 1 is refused by name.
    """
    parameters, scaling = hf.get("rope_parameters"), hf.get("rope_scaling")
    if parameters is not None and not isinstance(parameters, dict):
        _refuse(source, "rope_parameters", parameters, "it must be a mapping")
    if parameters and any(isinstance(v, dict) for v in parameters.values()):
        _refuse(source, "rope_parameters", sorted(parameters), "lmlab has one rotary setting for every layer")
    if scaling is not None and not isinstance(scaling, dict):
        _refuse(source, "rope_scaling", scaling, "it must be a mapping")
    field, settings = ("rope_parameters", parameters) if parameters else ("rope_scaling", scaling or {})
    theta = float(settings.get("rope_theta", hf.get("rope_theta", 10000.0)))
    partial = settings.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0))
    if partial != 1.0:
        _refuse(source, "partial_rotary_factor", partial, "lmlab rotates every feature of a head")
    kind = settings.get("rope_type", settings.get("type", "default"))
    if kind == "default":
        extra = sorted(set(settings) - {"rope_type", "type", "rope_theta", "partial_rotary_factor"})
        if extra:
            _refuse(source, f"{field}.{extra[0]}", settings[extra[0]], "rope_type default reads no such setting")
        return theta, None
    if kind not in ROPE_KEYS:
        _refuse(source, f"{field}.rope_type", kind,
                f"lmlab's rotary types are default, {', '.join(ROPE_KEYS)}")
    keys = ROPE_KEYS[kind]
    for key in sorted(set(settings) - set(keys) - {"rope_type", "type", "rope_theta", "partial_rotary_factor"}):
        _refuse(source, f"{field}.{key}", settings[key], f"rope_type {kind!r} in lmlab does not read it")
    rope = {"rope_type": kind, **{key: settings[key] for key in keys if settings.get(key) is not None}}
    for key in ("factor", "low_freq_factor", "high_freq_factor"):
        if key in keys and key not in rope and not (kind == "yarn" and key == "factor"):
            raise ConfigError(f"{source}: {field}.{key} is missing (rope_type {kind!r} needs it)")
    positions = _need(hf, "max_position_embeddings", source)
    if kind in ("llama3", "yarn"):  # transformers' standardize_rope_params: the model's own length by default
        rope.setdefault("original_max_position_embeddings", hf.get("original_max_position_embeddings", positions))
    if kind == "dynamic":  # transformers' dynamic NTK rescales past max_position_embeddings, where lmlab never goes
        rope["original_max_position_embeddings"] = positions
    if kind == "yarn" and "factor" not in rope:
        rope["factor"] = positions / rope["original_max_position_embeddings"]
    return theta, rope


def _sliding_window(hf: dict, arch: Architecture, source: str) -> int | None:
    """The one sliding window every layer uses, or None; a window on some layers only is refused."""
    if arch is MISTRAL:
        return hf.get("sliding_window")
    if arch not in (QWEN2, QWEN3):
        return None
    layers = _need(hf, "num_hidden_layers", source)
    use = bool(hf.get("use_sliding_window", False))
    window = hf.get("sliding_window") if use else None
    kinds = hf.get("layer_types") or ["sliding_attention" if window is not None and i >= hf.get("max_window_layers", 28)
                                      else "full_attention" for i in range(layers)]
    windows = {window if kind == "sliding_attention" else None for kind in kinds}
    if len(windows) > 1:
        field = "layer_types" if hf.get("layer_types") else "max_window_layers"
        _refuse(source, field, hf.get(field), "lmlab has one attention pattern for every layer; here some layers "
                "slide a window (use_sliding_window) and others attend to everything")
    return windows.pop() if windows else None


def _llama(hf: dict, source: str) -> dict:
    """Llama, Mistral, Qwen2 and Qwen3 (``modeling_llama.py``, ``modeling_mistral.py``, ``modeling_qwen2.py``,
    ``modeling_qwen3.py``): one decoder with different switches."""
    arch = find_architecture(hf, source)
    activation = hf.get("hidden_act", "silu")
    if activation != "silu":
        _refuse(source, "hidden_act", activation, "lmlab's Llama MLP is SwiGLU (silu)")
    if hf.get("pretraining_tp", 1) not in (1, None):
        _refuse(source, "pretraining_tp", hf["pretraining_tp"], "lmlab computes each projection as one matmul")
    d_model, n_head = _need(hf, "hidden_size", source), _need(hf, "num_attention_heads", source)
    head_dim = hf.get("head_dim") or d_model // n_head
    if arch is QWEN2:  # modeling_qwen2.py: q/k/v with biases, o_proj and the MLP without
        attention_bias, out_bias, mlp_bias, qk_norm = True, False, False, False
    else:  # Llama's attention_bias covers q, k, v and o; Mistral has no biases; Qwen3 q/k norms, no MLP bias
        attention_bias = bool(hf.get("attention_bias", False)) if arch is not MISTRAL else False
        out_bias, mlp_bias = attention_bias, bool(hf.get("mlp_bias", False)) if arch is LLAMA else False
        qk_norm = arch is QWEN3
    theta, scaling = rope_settings(hf, source)
    n_kv_head = hf.get("num_key_value_heads") or n_head
    return dict(style="llama", vocab_size=_need(hf, "vocab_size", source),
                block_size=_need(hf, "max_position_embeddings", source),
                n_layer=_need(hf, "num_hidden_layers", source), n_head=n_head,
                n_kv_head=n_kv_head, d_model=d_model, head_dim=head_dim,
                d_ff=_need(hf, "intermediate_size", source), norm_eps=hf.get("rms_norm_eps", 1e-6),
                rope_theta=theta, rope_scaling=scaling, bias=attention_bias or mlp_bias,
                attention_bias=attention_bias, attention_out_bias=out_bias, mlp_bias=mlp_bias, qk_norm=qk_norm,
                sliding_window=_sliding_window(hf, arch, source),
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
            ROBERTA.model_type: _encoder, MISTRAL.model_type: _llama, QWEN2.model_type: _llama,
            QWEN3.model_type: _llama}


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
    scaling = dict(config.rope_scaling or {"rope_type": "default"})
    if scaling["rope_type"] == "dynamic":  # transformers' dynamic reads factor; its length is the model's
        scaling.pop("original_max_position_embeddings")
    scaling = {k: v for k, v in scaling.items() if v is not None}
    llama = {**common, "hidden_size": config.d_model, "intermediate_size": config.d_ff,
             "num_hidden_layers": config.n_layer, "num_attention_heads": config.n_head,
             "num_key_value_heads": config.n_kv_head, "head_dim": config.head_dim, "hidden_act": "silu",
             "max_position_embeddings": config.block_size, "rms_norm_eps": config.norm_eps,
             "rope_theta": config.rope_theta,
             "rope_parameters": {**scaling, "rope_theta": config.rope_theta}, "attention_dropout": 0.0}
    if config.rope_scaling is not None:  # the transformers 4 spelling
        llama["rope_scaling"] = {**scaling, "type": scaling["rope_type"]}
    if arch is LLAMA:
        return {**llama, "attention_bias": config.attention_bias, "mlp_bias": config.mlp_bias}
    if arch is MISTRAL:
        return {**llama, "sliding_window": config.sliding_window}
    window = {"use_sliding_window": config.sliding_window is not None, "sliding_window": config.sliding_window,
              "max_window_layers": 0 if config.sliding_window is not None else config.n_layer,
              "layer_types": [("sliding_attention" if config.sliding_window is not None else "full_attention")
                              for _ in range(config.n_layer)]}
    if arch is QWEN2:
        return {**llama, **window}
    return {**llama, **window, "attention_bias": config.attention_bias}  # QWEN3


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
    if config.style == "gpt2":
        return GPT2
    qkv, out, mlp, window = config.attention_bias, config.attention_out_bias, config.mlp_bias, config.sliding_window
    if config.qk_norm:  # modeling_qwen3.py: per-head q/k norms; attention_bias covers q, k, v and o; no MLP bias
        if qkv != out or mlp:
            raise ConfigError(f"a model with qk_norm exports as Qwen3, whose attention_bias covers q/k/v and o_proj "
                              f"and whose MLP has no bias; this one has attention_bias={qkv}, "
                              f"attention_out_bias={out}, mlp_bias={mlp}")
        return QWEN3
    if qkv and not out and not mlp:  # modeling_qwen2.py: biases on q, k and v only
        return QWEN2
    if window is not None:
        if qkv or out or mlp:
            raise ConfigError(f"a model with sliding_window={window} exports as Mistral (or Qwen2 with q/k/v biases "
                              f"only, Qwen3 with qk_norm); Mistral has no biases, this one has attention_bias={qkv}, "
                              f"attention_out_bias={out}, mlp_bias={mlp}")
        return MISTRAL
    if qkv != out:
        raise ConfigError(f"Llama's attention_bias covers q/k/v and o_proj together; this model has "
                          f"attention_bias={qkv}, attention_out_bias={out} (with mlp_bias={mlp})")
    return LLAMA
