"""Layers shared by the neural model families, written with ``keras.ops`` only.

- :mod:`~lmlab.layers.normalization`: RMSNorm (Zhang & Sennrich 2019; as Llama).
- :mod:`~lmlab.layers.rotary`: rotary position embedding (Su et al. 2021), in
  Hugging Face Llama's "rotate_half" layout.
- :mod:`~lmlab.layers.attention`: causal self-attention with grouped-query heads,
  a KV cache, and a plain reference path beside the fused kernel.
- :mod:`~lmlab.layers.mlp`: the GPT-2 GELU MLP and the Llama SwiGLU MLP.
"""

from lmlab.layers.attention import CausalSelfAttention, causal_mask, reference_attention
from lmlab.layers.mlp import GeluMLP, SwiGLUMLP
from lmlab.layers.normalization import RMSNorm
from lmlab.layers.rotary import RotaryEmbedding, apply_rotary, rotary_cos_sin, rotate_half

__all__ = [
    "CausalSelfAttention",
    "GeluMLP",
    "RMSNorm",
    "RotaryEmbedding",
    "SwiGLUMLP",
    "apply_rotary",
    "causal_mask",
    "reference_attention",
    "rotary_cos_sin",
    "rotate_half",
]
