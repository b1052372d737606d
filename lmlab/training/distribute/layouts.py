"""Megatron-style layout maps: which weights of a model are split over the mesh's ``model`` axis.

Megatron-LM (Shoeybi et al. 2019, section 3): in each block the first matrix
of a pair is split by columns and the second by rows, so the pair needs one
all-reduce forward and one backward. Here: the query, key and value
projections and the MLP's input matrices (``fc``; ``gate_proj``/``up_proj``)
are split by output columns (with their biases); the attention output
projection and the MLP's output matrix (``proj``; ``down_proj``) by input
rows. The token embedding (and an untied ``lm_head``) is split along the
vocabulary. Norms, position embeddings and the row-split layers' biases are
replicated. Keras kernels are ``(in, out)``; embeddings ``(vocab, d_model)``.

A dimension that the ``model`` axis does not divide is replicated instead
(JAX cannot lay out uneven shards); :func:`split_weights` says which are split.
"""

from __future__ import annotations

from lmlab.core.errors import ConfigError

COLUMNS, ROWS = (None, "model"), ("model", None)


def _rules(config) -> list[tuple[str, tuple, int]]:
    """``(path pattern, layout, size of the split dimension)`` for a Transformer config."""
    if getattr(config, "family", None) != "transformer":
        raise ConfigError(f"distribute=model has layouts for the transformer family, not {config.family}; "
                          "use distribute=data for it")
    d, f, kv = config.d_model, config.d_ff, config.n_kv_head * config.head_dim
    mlp_in = "(fc|gate_proj|up_proj)" if config.style == "llama" else "fc"
    mlp_out = "down_proj" if config.style == "llama" else "proj"
    rules = [
        (r".*token_embedding/embeddings", ROWS, config.vocab_size),
        (r".*attention/q_proj/kernel", COLUMNS, d),
        (r".*attention/q_proj/bias", ("model",), d),
        (r".*attention/(k|v)_proj/kernel", COLUMNS, kv),
        (r".*attention/(k|v)_proj/bias", ("model",), kv),
        (r".*attention/o_proj/kernel", ROWS, d),
        (rf".*mlp/{mlp_in}/kernel", COLUMNS, f),
        (rf".*mlp/{mlp_in}/bias", ("model",), f),
        (rf".*mlp/{mlp_out}/kernel", ROWS, f),
        (r".*lm_head/kernel", COLUMNS, config.vocab_size),
    ]
    return rules


def split_weights(config, model_size: int) -> list[str]:
    """The patterns whose weights are split over ``model_size`` devices."""
    return [pattern for pattern, _, size in _rules(config) if size % model_size == 0]


def layout_map(config, device_mesh):
    """A :class:`keras.distribution.LayoutMap` for ``config`` on a mesh with a ``model`` axis."""
    from keras.distribution import LayoutMap

    model_size = device_mesh.shape[list(device_mesh.axis_names).index("model")]
    layouts = LayoutMap(device_mesh)
    for pattern, layout, size in _rules(config):
        if size % model_size == 0:
            layouts[pattern] = layout
    return layouts
