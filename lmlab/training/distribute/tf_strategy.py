"""Data parallelism on TensorFlow with ``tf.distribute``.

One process: :class:`tf.distribute.MirroredStrategy` over the local GPUs (or,
without GPUs, the CPU's logical devices: ``LMLAB_CPU_DEVICES=N`` splits the
CPU into N of them, for trying it on a laptop). Several processes:
:class:`tf.distribute.MultiWorkerMirroredStrategy`, driven by ``TF_CONFIG``.

The step keeps one device's semantics. Every worker reads the whole global
batch (batch ``s`` is a pure function of ``(seed, s)``) and each replica takes
its slice; each replica's gradients are the mean over its slice, and
``ReplicaContext.all_reduce(MEAN)`` (tf.distribute's collective) makes them
the mean over the global batch, the same on every replica. The global norm,
clipping and the skip-a-bad-batch decision are then computed from those, so
they agree with a single-device run and across replicas.

XLA: on GPUs the forward and backward pass of each replica is compiled with
XLA (``jit_compile=True``); the all-reduce and the optimizer update run as a
TensorFlow graph around it (XLA does not compile MirroredStrategy's
collectives). On CPU devices the whole step is a TensorFlow graph without
XLA: XLA compiles every replica's copy separately, which on this 2-core
machine took 37 s against 19 s for a 5-step debug run, and CPU replicas
(logical devices sharing the same cores) are for trying things, not speed.
"""

from __future__ import annotations

import json
import math
import os

from lmlab.training.distribute import is_chief_process
from lmlab.core.errors import ConfigError


def tf_config_workers() -> int:
    """How many worker processes ``TF_CONFIG`` describes (0 when it is unset)."""
    text = os.environ.get("TF_CONFIG", "")
    if not text.strip():
        return 0
    try:
        cluster = json.loads(text)["cluster"]
        return sum(len(cluster.get(kind, [])) for kind in ("chief", "worker"))
    except (ValueError, KeyError, TypeError):
        raise ConfigError("TF_CONFIG is not a JSON object with a cluster of chief/worker addresses") from None


def split_cpu(tf, count: int) -> None:
    """Make the CPU ``count`` logical devices (only before TensorFlow starts; afterwards check the count)."""
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError:  # TensorFlow already started: it keeps the devices it has
        if len(tf.config.list_logical_devices("CPU")) != count:
            raise ConfigError(f"LMLAB_CPU_DEVICES={count}: TensorFlow had already started with "
                              f"{len(tf.config.list_logical_devices('CPU'))} CPU device(s)") from None


class TensorFlowData:
    """``distribute=data`` on TensorFlow."""

    kind = "data"

    def __init__(self):
        import tensorflow as tf

        self.tf = tf
        workers = tf_config_workers()
        if workers > 1:
            self.strategy = tf.distribute.MultiWorkerMirroredStrategy()
            self.worker = self.strategy.cluster_resolver.task_id
            self.is_chief = is_chief_process()
        else:
            cpu_devices = int(os.environ.get("LMLAB_CPU_DEVICES", "0") or 0)
            if cpu_devices > 1:
                split_cpu(tf, cpu_devices)
            devices = [d.name for d in tf.config.list_logical_devices("GPU")] or \
                [d.name for d in tf.config.list_logical_devices("CPU")]
            self.strategy = tf.distribute.MirroredStrategy(devices=devices)
            self.worker, self.is_chief = 0, True
        self.replicas = self.strategy.num_replicas_in_sync
        self.accelerated = bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))
        self.processes = max(workers, 1)

    def describe(self) -> str:
        kind = "MultiWorkerMirroredStrategy" if self.processes > 1 else "MirroredStrategy"
        return f"{kind}, {self.replicas} replica(s) in {self.processes} process(es)"

    def scope(self):
        return self.strategy.scope()

    def steps(self, model, optimizer, accum: int, skip_bad: bool):
        """``(train, evaluate)`` callables with :class:`lmlab.training.steps.Stepper`'s signatures."""
        import tensorflow as tf
        from keras import ops

        from lmlab.training.steps import global_norm, token_loss

        if hasattr(optimizer, "inner_optimizer"):
            raise ConfigError("precision mixed_float16 (loss scaling) is not supported with distribute on "
                              "TensorFlow; use mixed_bfloat16")
        strategy, replicas = self.strategy, self.replicas
        xla = self.accelerated
        # Clipping happens here on the all-reduced gradients: Keras would clip each replica's part.
        clip, optimizer.global_clipnorm = optimizer.global_clipnorm, None

        @tf.function(jit_compile=xla, reduce_retracing=True)
        def local_gradients(x, y, loss_weight):
            variables = model.trainable_variables
            grads = [tf.zeros_like(v) for v in variables]
            total = 0.0
            for i in range(accum):
                with tf.GradientTape() as tape:
                    loss = ops.mean(token_loss(y[i], model(x[i], training=True))) * loss_weight
                for j, g in enumerate(tape.gradient(loss, variables)):
                    grads[j] += g
                total += loss
            return total / accum, [g / accum for g in grads]

        def replica_gradients(x, y, loss_weight):
            loss, grads = local_gradients(x, y, loss_weight)
            context = tf.distribute.get_replica_context()
            loss, grads = context.all_reduce(tf.distribute.ReduceOp.MEAN, [loss, grads])
            norm = global_norm(grads)
            if clip:  # as keras's clip_by_global_norm
                scale = clip * ops.minimum(1.0 / norm, 1.0 / clip)
                grads = [g * scale for g in grads]
            # Keras's TensorFlow optimizer sums the replicas' gradients: hand it each replica's share.
            return loss, norm, [g / replicas for g in grads]

        def replica_apply(grads):
            # Passed in from outside, the gradients have no device; the all-reduce needs one to gather to.
            optimizer.apply([tf.identity(g) for g in grads], model.trainable_variables)

        def first(value):
            return strategy.experimental_local_results(value)[0]

        @tf.function(reduce_retracing=True)
        def distributed_train(x, y, loss_weight):
            loss, norm, grads = strategy.run(replica_gradients, args=(x, y, loss_weight))
            strategy.run(replica_apply, args=(grads,))
            return first(loss), first(norm)

        # Skipping a bad batch: the optimizer's all-reduce cannot sit inside a tf.cond in a replica
        # (tf.distribute refuses a merge_call there), so the gradients come back and the update is
        # a second call, made only when the loss and the norm are finite.
        @tf.function(reduce_retracing=True)
        def distributed_gradients(x, y, loss_weight):
            loss, norm, grads = strategy.run(replica_gradients, args=(x, y, loss_weight))
            return first(loss), first(norm), grads

        @tf.function(reduce_retracing=True)
        def distributed_apply(grads):
            strategy.run(replica_apply, args=(grads,))

        @tf.function(jit_compile=xla, reduce_retracing=True)
        def evaluate(x, y, mask):  # on one device: every replica holds the same weights
            nll = token_loss(y, model(x, training=False))
            return ops.sum(nll * mask), ops.sum(mask)

        def train(x, y, loss_weight):
            per = x.shape[1] // replicas

            def shard(array):
                return strategy.experimental_distribute_values_from_function(
                    lambda ctx: array[:, ctx.replica_id_in_sync_group * per:(ctx.replica_id_in_sync_group + 1) * per])

            if not skip_bad:
                return distributed_train(shard(x), shard(y), loss_weight)
            loss, norm, grads = distributed_gradients(shard(x), shard(y), loss_weight)
            if math.isfinite(float(loss)) and math.isfinite(float(norm)):
                distributed_apply(grads)
            return loss, norm

        return train, evaluate
