"""Scenarios of tests/test_distributed.py run as their own process (device counts are fixed at start-up).

``TINY``: the tiny training config of the TensorFlow scenarios (run through ``lmlab train``).

``python tests/distributed_scenarios.py jax-model OUT``: JAX, 8 virtual CPU devices. A Transformer
unsharded, and the same weights (through a checkpoint) under ModelParallel on a batch=2 x model=4 mesh:
prints their logits' difference, the losses of one training step on each and the difference of the
weights after it (brought back to one device through a checkpoint), as JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

TINY = dict(shape="debug", batch_size=4, max_steps=8, warmup_steps=1, eval_interval=4, eval_batches=1,
            log_interval=1, learning_rate=3e-3, min_learning_rate=3e-4)


def jax_model(out: str) -> None:
    import jax
    import keras
    import numpy as np
    from keras import distribution as kd

    from lmlab.training.distribute.layouts import split_weights
    from lmlab.training.distribute.mesh import parse_mesh
    from lmlab.runs.checkpoint import load_checkpoint, model_tensors, save_checkpoint
    from lmlab.training.config import TrainConfig
    from lmlab.training.steps import Stepper
    from lmlab.training.optimizer import build_optimizer
    from lmlab.training.distribute.jax_mesh import JaxMesh
    from lmlab.core.errors import ConfigError
    from lmlab.models.rnn import shape as rnn_shape
    from lmlab.models.transformer import TransformerLM, build_transformer, shape

    assert len(keras.distribution.list_devices()) == 8
    # n_head and vocab_size divisible by the model axis (4), so every Megatron split applies.
    config = shape("debug", vocab_size=64, n_head=4)
    train_config = TrainConfig(data="unused", distribute="model", mesh="batch=2,model=4", batch_size=4,
                               max_steps=10, warmup_steps=0)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 64, (1, 4, 32)).astype("int32")
    y = rng.integers(0, 64, (1, 4, 32)).astype("int32")

    single = build_transformer(config, seed=1)
    before = model_tensors(single)
    single_optimizer, _ = build_optimizer(train_config, single)
    save_checkpoint(out, 0, single, single_optimizer, {}, keep=5)

    placement = JaxMesh("model", train_config.mesh, config)
    with placement.scope():
        sharded = TransformerLM(config, seed=2)  # other initial weights: the checkpoint must replace them
        sharded.build()  # variables only: a dummy forward pass would compile every eager op for 8 devices
        sharded_optimizer, _ = build_optimizer(train_config, sharded)
    load_checkpoint(Path(out, "checkpoints", "step-000000"), sharded, sharded_optimizer)
    kernel = sharded.blocks[0].attention.q_proj.kernel.value
    shards = {tuple(s.data.shape) for s in kernel.addressable_shards}

    logits_single = np.asarray(single(x[0]))
    forward = jax.jit(lambda weights, ids: sharded.stateless_call(weights, [], ids)[0])
    logits_sharded = np.asarray(forward([v.value for v in sharded.trainable_variables], placement.replicate(x[0])))

    single_stepper = Stepper(single, single_optimizer)
    loss_single, _ = single_stepper.train(x, y)
    single_stepper.sync()
    sharded_stepper = Stepper(sharded, sharded_optimizer, placement=placement)
    loss_sharded, _ = sharded_stepper.train(x, y)
    sharded_stepper.sync()
    save_checkpoint(out, 1, sharded, sharded_optimizer, {}, keep=5)
    back = build_transformer(config, seed=3)
    load_checkpoint(Path(out, "checkpoints", "step-000001"), back)
    after_single, after_back = model_tensors(single), model_tensors(back)
    try:
        split_weights(rnn_shape("debug", vocab_size=67), 2)
        rnn_error = ""
    except ConfigError as error:
        rnn_error = str(error)
    print(json.dumps({
        "llama_split": split_weights(shape("llama-small", vocab_size=8000), 4),
        "odd_vocab_split": split_weights(shape("debug", vocab_size=67), 4), "rnn_error": rnn_error,
        "mesh": parse_mesh(train_config.mesh), "split": split_weights(config, 4),
        "q_proj_shards": sorted(shards), "logits_max_diff": float(np.abs(logits_single - logits_sharded).max()),
        "loss_single": loss_single, "loss_sharded": loss_sharded,
        "weights_max_diff": max(float(np.abs(after_single[k] - after_back[k]).max()) for k in after_single),
        "weights_moved": max(float(np.abs(after_single[k] - before[k]).max()) for k in after_single),
        "distribution": kd.distribution() is None,
    }))


if __name__ == "__main__":
    if sys.argv[1] == "jax-model":
        jax_model(sys.argv[2])
    else:
        raise SystemExit(f"unknown scenario {sys.argv[1]}")
