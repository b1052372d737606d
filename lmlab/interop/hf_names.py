"""Hugging Face tensor names ↔ lmlab weight keys: one declarative table per architecture.

Each :class:`Rule` pairs one Hugging Face tensor with the lmlab weight(s) it
holds; ``{i}`` stands for the layer. The same tables drive import
(:func:`to_lmlab`) and export (:func:`to_hf`), and both directions check that
every tensor is consumed and every shape matches, naming the tensor that does not.

Layouts (checked against ``transformers`` 5 ``modeling_gpt2.py`` and
``modeling_llama.py``):

- GPT-2 stores its projections as ``Conv1D`` weights, ``(in, out)``: Keras
  ``Dense`` kernels already have that layout. Its ``c_attn`` fuses q, k and v
  along the output axis.
- Llama stores ``nn.Linear`` weights, ``(out, in)``: transposed. Its rotary
  embedding rotates halves (``rotate_half``), as lmlab's does
  (:mod:`lmlab.layers.rotary`), so q/k rows need no permutation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from lmlab.core.errors import ConfigError


@dataclass(frozen=True)
class Rule:
    hf: str  # Hugging Face tensor name; "{i}" is the layer index
    ours: tuple[str, ...]  # lmlab weight key(s); several are concatenated along the last axis in `hf`
    transpose: bool = False  # torch.nn.Linear (out, in) vs Keras Dense (in, out)
    # "always"; "bias" (the model has biases: GPT-2's LayerNorm shifts); "qkv_bias", "out_bias", "mlp_bias"
    # (biases of q/k/v, o_proj, the MLP); "qk_norm" (Qwen3's per-head norms); "untied" (a separate output layer)
    when: str = "always"


@dataclass(frozen=True)
class Architecture:
    name: str  # the transformers class written to config.json "architectures"
    model_type: str
    style: str  # lmlab TransformerConfig.style
    body_prefix: str  # the base model's prefix; base-model checkpoints (GPT2Model, LlamaModel) omit it
    aliases: tuple[str, ...]  # other class names with the same weights
    rules: tuple[Rule, ...]
    buffers: tuple[str, ...] = ()  # regexes of non-weight buffers some checkpoints carry; skipped
    biases_required: bool = False  # the format always has biases: an lmlab model without them exports zeros
    family: str = "transformer"  # the lmlab model family (lmlab.models.registry) it maps onto
    head: str = "lm_head.weight"  # the output matrix, tied to the token embedding when the config says so
    head_prefixes: tuple[str, ...] = ("lm_head.",)  # tensors outside the base model (body_prefix)


def _layer(prefix: str, pairs) -> tuple[Rule, ...]:
    return tuple(Rule(prefix + hf, tuple(f"blocks_{{i}}/{o}" for o in ours), transpose, when)
                 for hf, ours, transpose, when in pairs)


GPT2 = Architecture(
    name="GPT2LMHeadModel", model_type="gpt2", style="gpt2", body_prefix="transformer.",
    aliases=("GPT2Model",), biases_required=True,
    rules=(
        Rule("transformer.wte.weight", ("token_embedding/embeddings",)),
        Rule("transformer.wpe.weight", ("position_embedding/embeddings",)),
        *_layer("transformer.h.{i}.", [
            ("ln_1.weight", ("attention_norm/gamma",), False, "always"),
            ("ln_1.bias", ("attention_norm/beta",), False, "bias"),
            ("attn.c_attn.weight", ("attention/q_proj/kernel", "attention/k_proj/kernel",
                                    "attention/v_proj/kernel"), False, "always"),
            ("attn.c_attn.bias", ("attention/q_proj/bias", "attention/k_proj/bias",
                                  "attention/v_proj/bias"), False, "qkv_bias"),
            ("attn.c_proj.weight", ("attention/o_proj/kernel",), False, "always"),
            ("attn.c_proj.bias", ("attention/o_proj/bias",), False, "out_bias"),
            ("ln_2.weight", ("mlp_norm/gamma",), False, "always"),
            ("ln_2.bias", ("mlp_norm/beta",), False, "bias"),
            ("mlp.c_fc.weight", ("mlp/fc/kernel",), False, "always"),
            ("mlp.c_fc.bias", ("mlp/fc/bias",), False, "mlp_bias"),
            ("mlp.c_proj.weight", ("mlp/proj/kernel",), False, "always"),
            ("mlp.c_proj.bias", ("mlp/proj/bias",), False, "mlp_bias"),
        ]),
        Rule("transformer.ln_f.weight", ("final_norm/gamma",)),
        Rule("transformer.ln_f.bias", ("final_norm/beta",), when="bias"),
        Rule("lm_head.weight", ("lm_head/kernel",), transpose=True, when="untied"),
    ),
    # The causal-mask buffers older GPT-2 checkpoints saved (the hub's `gpt2` has them).
    buffers=(r"transformer\.h\.\d+\.attn\.(bias|masked_bias)",),
)

# Llama and the checkpoints that share its tensor names (Mistral, Qwen2, Qwen3): which biases and norms
# are present follows the config (Qwen2: q/k/v biases only; Qwen3: q_norm/k_norm over each head).
_LLAMA_RULES = (
    Rule("model.embed_tokens.weight", ("token_embedding/embeddings",)),
    *_layer("model.layers.{i}.", [
        ("input_layernorm.weight", ("attention_norm/scale",), False, "always"),
        *[(f"self_attn.{p}_proj.weight", (f"attention/{p}_proj/kernel",), True, "always") for p in "qkvo"],
        *[(f"self_attn.{p}_proj.bias", (f"attention/{p}_proj/bias",), False, "qkv_bias") for p in "qkv"],
        ("self_attn.o_proj.bias", ("attention/o_proj/bias",), False, "out_bias"),
        ("self_attn.q_norm.weight", ("attention/q_norm/scale",), False, "qk_norm"),
        ("self_attn.k_norm.weight", ("attention/k_norm/scale",), False, "qk_norm"),
        ("post_attention_layernorm.weight", ("mlp_norm/scale",), False, "always"),
        *[(f"mlp.{p}_proj.weight", (f"mlp/{p}_proj/kernel",), True, "always") for p in ("gate", "up", "down")],
        *[(f"mlp.{p}_proj.bias", (f"mlp/{p}_proj/bias",), False, "mlp_bias") for p in ("gate", "up", "down")],
    ]),
    Rule("model.norm.weight", ("final_norm/scale",)),
    Rule("lm_head.weight", ("lm_head/kernel",), transpose=True, when="untied"),
)
# Rotary frequencies some older checkpoints saved; lmlab computes them from the config.
_ROTARY_BUFFERS = (r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq",)

LLAMA = Architecture(
    name="LlamaForCausalLM", model_type="llama", style="llama", body_prefix="model.",
    aliases=("LlamaModel",), rules=_LLAMA_RULES, buffers=_ROTARY_BUFFERS,
)
MISTRAL = Architecture(
    name="MistralForCausalLM", model_type="mistral", style="llama", body_prefix="model.",
    aliases=("MistralModel",), rules=_LLAMA_RULES, buffers=_ROTARY_BUFFERS,
)
QWEN2 = Architecture(
    name="Qwen2ForCausalLM", model_type="qwen2", style="llama", body_prefix="model.",
    aliases=("Qwen2Model",), rules=_LLAMA_RULES, buffers=_ROTARY_BUFFERS,
)
QWEN3 = Architecture(
    name="Qwen3ForCausalLM", model_type="qwen3", style="llama", body_prefix="model.",
    aliases=("Qwen3Model",), rules=_LLAMA_RULES, buffers=_ROTARY_BUFFERS,
)


def _encoder(prefix: str, head: str, head_rules) -> tuple[Rule, ...]:
    """BERT and RoBERTa share the body (``modeling_bert.py``; RoBERTa's embeddings add a position offset)."""
    return (
        Rule(prefix + "embeddings.word_embeddings.weight", ("token_embedding/embeddings",)),
        Rule(prefix + "embeddings.position_embeddings.weight", ("positions/embeddings",)),
        Rule(prefix + "embeddings.token_type_embeddings.weight", ("token_types/embeddings",)),
        Rule(prefix + "embeddings.LayerNorm.weight", ("embedding_norm/gamma",)),
        Rule(prefix + "embeddings.LayerNorm.bias", ("embedding_norm/beta",)),
        *_layer(prefix + "encoder.layer.{i}.", [
            *[(f"attention.self.{hf}.{part}", (f"attention/{p}_proj/{ours}",), part == "weight", "always")
              for hf, p in (("query", "q"), ("key", "k"), ("value", "v"))
              for part, ours in (("weight", "kernel"), ("bias", "bias"))],
            ("attention.output.dense.weight", ("attention/o_proj/kernel",), True, "always"),
            ("attention.output.dense.bias", ("attention/o_proj/bias",), False, "always"),
            ("attention.output.LayerNorm.weight", ("attention_norm/gamma",), False, "always"),
            ("attention.output.LayerNorm.bias", ("attention_norm/beta",), False, "always"),
            ("intermediate.dense.weight", ("mlp_fc/kernel",), True, "always"),
            ("intermediate.dense.bias", ("mlp_fc/bias",), False, "always"),
            ("output.dense.weight", ("mlp_proj/kernel",), True, "always"),
            ("output.dense.bias", ("mlp_proj/bias",), False, "always"),
            ("output.LayerNorm.weight", ("mlp_norm/gamma",), False, "always"),
            ("output.LayerNorm.bias", ("mlp_norm/beta",), False, "always"),
        ]),
        *(Rule(head + hf, (ours,), hf.endswith("dense.weight")) for hf, ours in head_rules),
    )


# The masked-LM head (BertLMPredictionHead / RobertaLMHead): dense, GELU, LayerNorm, tied decoder + bias.
# Skipped: position_ids/token_type_ids buffers, the pooler and next-sentence head of BertForPreTraining
# checkpoints (a masked LM does not use them), and the decoder's bias, saved by older checkpoints as a
# second name of the head's bias.
BERT = Architecture(
    name="BertForMaskedLM", model_type="bert", style="bert", body_prefix="bert.", aliases=("BertForPreTraining",),
    family="encoder", head="cls.predictions.decoder.weight", head_prefixes=("cls.",),
    rules=_encoder("bert.", "cls.predictions.", [
        ("transform.dense.weight", "head_dense/kernel"), ("transform.dense.bias", "head_dense/bias"),
        ("transform.LayerNorm.weight", "head_norm/gamma"), ("transform.LayerNorm.bias", "head_norm/beta"),
        ("bias", "head_bias")]),
    buffers=(r"bert\.embeddings\.(position_ids|token_type_ids)", r"bert\.pooler\..*", r"cls\.seq_relationship\..*",
             r"cls\.predictions\.decoder\.bias"),
)

ROBERTA = Architecture(
    name="RobertaForMaskedLM", model_type="roberta", style="roberta", body_prefix="roberta.", aliases=(),
    family="encoder", head="lm_head.decoder.weight", head_prefixes=("lm_head.",),
    rules=_encoder("roberta.", "lm_head.", [
        ("dense.weight", "head_dense/kernel"), ("dense.bias", "head_dense/bias"),
        ("layer_norm.weight", "head_norm/gamma"), ("layer_norm.bias", "head_norm/beta"), ("bias", "head_bias")]),
    buffers=(r"roberta\.embeddings\.(position_ids|token_type_ids)", r"roberta\.pooler\..*",
             r"lm_head\.decoder\.bias"),
)

ARCHITECTURES = (GPT2, LLAMA, BERT, ROBERTA, QWEN2, QWEN3, MISTRAL)
HEAD = "lm_head.weight"  # GPT-2's and Llama's; Architecture.head names each one's
EMBEDDING_KEY = "token_embedding/embeddings"


_WHEN_FIELDS = {"bias": "bias", "qkv_bias": "attention_bias", "out_bias": "attention_out_bias",
                "mlp_bias": "mlp_bias", "qk_norm": "qk_norm"}
BIAS_WHENS = ("bias", "qkv_bias", "out_bias", "mlp_bias")


def _applies(rule: Rule, config) -> bool:
    if rule.when == "always":
        return True
    if rule.when == "untied":
        return not config.tie_embeddings
    return bool(getattr(config, _WHEN_FIELDS[rule.when], getattr(config, "bias", False)))


def expand(arch: Architecture, config, present_only: bool = True) -> list[Rule]:
    """The rules for ``config`` with ``{i}`` filled in for every layer."""
    rules = []
    for rule in arch.rules:
        if present_only and not _applies(rule, config):
            continue
        layers = range(config.n_layer) if "{i}" in rule.hf else [None]
        for i in layers:
            if i is None:
                rules.append(rule)
            else:
                rules.append(Rule(rule.hf.format(i=i), tuple(o.format(i=i) for o in rule.ours),
                                  rule.transpose, rule.when))
    return rules


def canonical_name(arch: Architecture, name: str) -> str:
    """``name`` with the base model's prefix, so GPT2Model/LlamaModel checkpoints read as the LM's."""
    if name.startswith(arch.body_prefix) or name.startswith(arch.head_prefixes):
        return name
    return arch.body_prefix + name


def _hf_shape(rule: Rule, shapes: dict[str, tuple]) -> tuple[int, ...]:
    parts = [shapes[key] for key in rule.ours]
    if len(parts) > 1:
        return tuple(parts[0][:-1]) + (sum(p[-1] for p in parts),)
    return tuple(reversed(parts[0])) if rule.transpose else tuple(parts[0])


def to_lmlab(arch: Architecture, config, tensors, shapes: dict[str, tuple], source: str) -> dict[str, np.ndarray]:
    """lmlab weights (key → float32 array) from a checkpoint's ``tensors`` (``names``/``shape``/``read``).

    ``shapes`` are the lmlab model's weight shapes. Every tensor must be used
    (or be a known buffer) and have the shape the config implies.
    """
    names = {canonical_name(arch, n): n for n in tensors.names}
    if len(names) != len(tensors.names):
        raise ConfigError(f"{source}: holds the same tensor with and without the {arch.body_prefix!r} prefix")
    weights: dict[str, np.ndarray] = {}
    used = set()
    for rule in expand(arch, config):
        if rule.hf not in names:
            raise ConfigError(f"{source}: tensor {rule.hf} is missing (a {arch.name} with this config.json has it)")
        expected, found = _hf_shape(rule, shapes), tuple(tensors.shape(names[rule.hf]))
        if found != expected:
            raise ConfigError(f"{source}: tensor {rule.hf} has shape {found}, config.json implies {expected}")
        value = tensors.read(names[rule.hf])
        used.add(rule.hf)
        if rule.transpose:
            value = np.ascontiguousarray(value.T)
        widths = np.cumsum([shapes[key][-1] for key in rule.ours])[:-1]
        for key, part in zip(rule.ours, np.split(value, widths, axis=-1)):
            weights[key] = np.ascontiguousarray(part)
    head = arch.head
    if config.tie_embeddings and head in names:  # some checkpoints save the tied head too: it must be the embedding
        if tuple(tensors.shape(names[head])) != shapes[EMBEDDING_KEY] or not np.array_equal(
                tensors.read(names[head]), weights[EMBEDDING_KEY]):
            raise ConfigError(f"{source}: tensor {head} differs from the token embedding, but config.json "
                              "says tie_word_embeddings")
        used.add(head)
    buffers = [re.compile(pattern) for pattern in arch.buffers]
    unused = sorted(names[n] for n in names if n not in used and not any(b.fullmatch(n) for b in buffers))
    if unused:
        raise ConfigError(f"{source}: {len(unused)} tensor(s) a {arch.name} with this config.json does not have: "
                          f"{', '.join(unused[:5])}{' ...' if len(unused) > 5 else ''}")
    missing = sorted(set(shapes) - set(weights))
    if missing:  # a table that does not cover the model: a bug, but say which weight
        raise ConfigError(f"no {arch.name} tensor fills lmlab weight(s) {', '.join(missing[:5])}")
    return weights


def _partner(key: str) -> str:
    """The weight whose last axis sizes a bias: a Dense kernel, or a LayerNorm scale for its shift."""
    return key.replace("/bias", "/kernel") if key.endswith("/bias") else key.replace("/beta", "/gamma")


def _export_rules(arch: Architecture, config, shapes: dict[str, tuple]) -> list[tuple[Rule, tuple, tuple]]:
    """``(rule, hf shape, keys taken from lmlab)`` for each tensor the export writes; every weight used."""
    plan, used = [], set()
    for rule in expand(arch, config, present_only=not arch.biases_required):
        if rule.when == "untied" and config.tie_embeddings:
            continue
        parts = []
        for key in rule.ours:
            if key in shapes:
                parts.append(shapes[key])
                used.add(key)
            elif rule.when in BIAS_WHENS and not _applies(rule, config):  # the format needs it: zeros are exact
                parts.append(shapes[_partner(key)][-1:])
            else:
                raise ConfigError(f"the lmlab model has no weight {key} for {rule.hf}")
        hf_shape = tuple(parts[0][:-1]) + (sum(p[-1] for p in parts),)
        plan.append((rule, tuple(reversed(hf_shape)) if rule.transpose else hf_shape, tuple(parts)))
    unused = sorted(set(shapes) - used)
    if unused:
        raise ConfigError(f"lmlab weight(s) with no place in a {arch.name}: {', '.join(unused[:5])}")
    return plan


def hf_shapes(arch: Architecture, config, shapes: dict[str, tuple]) -> dict[str, tuple]:
    """The export's Hugging Face tensor names and shapes, in file order, from the lmlab weight shapes."""
    return {rule.hf: hf_shape for rule, hf_shape, _ in _export_rules(arch, config, shapes)}


def to_hf(arch: Architecture, config, shapes: dict[str, tuple], read) -> Iterator[tuple[str, np.ndarray]]:
    """Hugging Face ``(name, float32 array)`` pairs in :func:`hf_shapes` order, one at a time.

    ``read(key)`` gives an lmlab weight's values, so only one tensor is in
    memory beyond the model while a checkpoint is written.
    """
    for rule, _, part_shapes in _export_rules(arch, config, shapes):
        parts = [np.asarray(read(key), np.float32) if key in shapes else np.zeros(shape, np.float32)
                 for key, shape in zip(rule.ours, part_shapes)]
        value = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1)
        yield rule.hf, np.ascontiguousarray(value.T if rule.transpose else value)
