"""Data and model parallelism on JAX with ``keras.distribution``.

``distribute=data``: :class:`keras.distribution.DataParallel` over every device
(of every process, after ``jax.distributed.initialize``). ``distribute=model``:
:class:`keras.distribution.ModelParallel` over a ``batch × model`` device mesh,
with the layout map of :mod:`lmlab.training.distribute.layouts`; ``batch=1`` is pure
model parallelism, ``batch>1`` hybrid. Variables are created with their
layouts under :meth:`JaxMesh.scope`; each global batch is laid out along the
``batch`` axis; ``jax.jit`` (GSPMD) inserts the collectives.

Several processes: set ``KERAS_DISTRIBUTION_JOB_ADDRESSES`` (the coordinator's
``host:port``), ``KERAS_DISTRIBUTION_NUM_PROCESSES`` and
``KERAS_DISTRIBUTION_PROCESS_ID`` (``lmlab launch`` does) and every process
runs the same command.
"""

from __future__ import annotations

import os

import numpy as np

from lmlab.core.errors import ConfigError
from lmlab.training.distribute.layouts import layout_map
from lmlab.training.distribute.mesh import parse_mesh

_initialized = False


def _initialize_processes() -> int:
    """Join the other processes once (``jax.distributed.initialize`` via Keras); return the process count."""
    global _initialized
    processes = int(os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES", "0") or 0)
    if processes > 1 and not _initialized:
        import keras

        keras.distribution.initialize()
        _initialized = True
    return max(processes, 1)


class JaxMesh:
    def __init__(self, kind: str, mesh: str, model_config):
        cpu_devices = int(os.environ.get("LMLAB_CPU_DEVICES", "0") or 0)
        if cpu_devices > 1:
            import jax

            try:
                jax.config.update("jax_num_cpu_devices", cpu_devices)  # only before the CPU backend starts
            except RuntimeError:
                if len(jax.devices("cpu")) != cpu_devices:
                    raise ConfigError(f"LMLAB_CPU_DEVICES={cpu_devices}: JAX had already started with "
                                      f"{len(jax.devices('cpu'))} CPU device(s)") from None
        self.processes = _initialize_processes()
        import jax
        import keras
        from keras import distribution as kd

        self.kind = kind
        self.worker = jax.process_index()
        self.is_chief = self.worker == 0
        devices = kd.list_devices()
        if kind == "data":
            self.distribution = kd.DataParallel(devices=devices)
            self.batch_size, self.model_size = len(devices), 1
        else:
            if self.processes > 1:
                raise ConfigError("distribute=model runs in one process (its devices sharded by the mesh); "
                                  "across processes use distribute=data")

            axes = parse_mesh(mesh)
            batch = axes.get("batch", 1)
            model = axes.get("model", len(devices) // batch)
            if batch * model != len(devices):
                raise ConfigError(f"mesh batch={batch},model={model} needs {batch * model} devices; "
                                  f"there are {len(devices)}")
            device_mesh = kd.DeviceMesh((batch, model), ("batch", "model"), devices)
            self.distribution = kd.ModelParallel(layout_map=layout_map(model_config, device_mesh),
                                                 batch_dim_name="batch")
            self.batch_size, self.model_size = batch, model
        self.replicas = self.batch_size
        self._jax, self._keras = jax, keras
        from jax.sharding import NamedSharding, PartitionSpec

        backend_mesh = self.distribution.device_mesh.backend_mesh
        self._batch_sharding = NamedSharding(backend_mesh, PartitionSpec(None, "batch", None))  # (A, B, T)
        self._replicated = NamedSharding(backend_mesh, PartitionSpec())

    def describe(self) -> str:
        if self.kind == "data":
            return f"keras DataParallel over {self.batch_size} device(s) in {self.processes} process(es)"
        return f"keras ModelParallel, mesh batch={self.batch_size} x model={self.model_size}"

    def scope(self):
        return self.distribution.scope()

    def batch(self, array: np.ndarray):
        """A global ``(A, B, T)`` batch, laid out along the mesh's batch axis (every process holds all of it)."""
        return self._jax.make_array_from_callback(array.shape, self._batch_sharding, lambda index: array[index])

    def replicate(self, array: np.ndarray):
        return self._jax.make_array_from_callback(array.shape, self._replicated, lambda index: array[index])

    @staticmethod
    def to_host(value) -> float:
        """A replicated scalar as a float, also when it spans processes."""
        if not getattr(value, "is_fully_addressable", True):
            value = value.addressable_data(0)
        return float(value)
