"""Training across devices and processes on TensorFlow's and JAX's own engines.

:func:`placement_for` turns a run's ``distribute`` and ``mesh`` settings into
a placement the trainer uses: a scope to create the model and optimizer in,
whether this process writes the run folder, and (TensorFlow) the distributed
step or (JAX) how a batch is laid out. ``distribute=none`` is the plain
single-device path, untouched.

=======================  ==========================================  =======================================
setting                  TensorFlow                                  JAX
=======================  ==========================================  =======================================
``data``, one process    ``tf.distribute.MirroredStrategy``          ``keras.distribution.DataParallel``
``data``, processes      ``MultiWorkerMirroredStrategy`` (TF_CONFIG)  ``DataParallel`` + ``jax.distributed``
``model``                (not on TensorFlow)                          ``keras.distribution.ModelParallel``
=======================  ==========================================  =======================================
"""

from __future__ import annotations

import contextlib
import json
import os

from lmlab.core.errors import ConfigError


def is_chief_process() -> bool:
    """Whether this process writes the run folder: TF_CONFIG's chief (or worker 0 without one), JAX process 0.

    Read from the environment, so it is known before TensorFlow or JAX starts.
    """
    text = os.environ.get("TF_CONFIG", "").strip()
    if text:
        try:
            spec = json.loads(text)
            task, cluster = spec.get("task", {}), spec.get("cluster", {})
            if task.get("type") == "chief":
                return True
            return task.get("type") == "worker" and int(task.get("index", 0)) == 0 and not cluster.get("chief")
        except (ValueError, AttributeError, TypeError):
            raise ConfigError("TF_CONFIG is not a JSON object with a cluster and this process's task") from None
    return os.environ.get("KERAS_DISTRIBUTION_PROCESS_ID", "0").strip() in ("", "0")


class SingleDevice:
    """``distribute=none``: everything as without this package."""

    kind = "none"
    replicas = processes = 1
    worker = 0
    is_chief = True

    def scope(self):
        return contextlib.nullcontext()

    def describe(self) -> str:
        return "one device"


def placement_for(config, model_config=None):
    """The placement for a :class:`~lmlab.training.config.TrainConfig` (``model_config`` for model parallelism)."""
    if config.distribute == "none":
        return SingleDevice()
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        if config.distribute == "model":
            raise ConfigError("distribute=model runs on the JAX backend (KERAS_BACKEND=jax); TensorFlow has "
                              "distribute=data")
        from lmlab.training.distribute.tf_strategy import TensorFlowData

        placement = TensorFlowData()
    elif backend == "jax":
        from lmlab.training.distribute.jax_mesh import JaxMesh

        placement = JaxMesh(config.distribute, config.mesh, model_config)
    else:
        raise ConfigError(f"distribute={config.distribute} runs on the tensorflow and jax backends, not {backend}")
    if config.batch_size % placement.replicas:
        raise ConfigError(f"batch_size {config.batch_size} must be a multiple of the {placement.replicas} "
                          f"data-parallel replicas ({placement.describe()}); it is the global batch")
    return placement
