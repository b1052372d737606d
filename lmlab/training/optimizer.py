"""AdamW with warmup and cosine decay, as the trainer and fine-tuning build it."""

from __future__ import annotations

from lmlab.training.config import TrainConfig


def build_optimizer(config: TrainConfig, model):
    import keras

    decay_steps = max(config.max_steps - config.warmup_steps, 1)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if config.warmup_steps else config.learning_rate,
        warmup_target=config.learning_rate if config.warmup_steps else None,
        warmup_steps=config.warmup_steps, decay_steps=decay_steps,
        alpha=config.min_learning_rate / config.learning_rate)
    optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=config.weight_decay,
                                       beta_1=config.beta1, beta_2=config.beta2, epsilon=1e-8,
                                       global_clipnorm=config.grad_clip or None)
    # Weight decay on matrices only (nanoGPT, GPT-3): not on biases (the GRU's is 2-D) and norm gains.
    optimizer.exclude_from_weight_decay(var_list=[v for v in model.trainable_variables
                                                  if len(v.shape) < 2 or v.path.endswith("bias")])
    if config.precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(model.trainable_variables)
    return optimizer, schedule
