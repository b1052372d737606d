"""The one place that compiles a function for the running Keras backend, and holds JAX's variable values.

TensorFlow: ``tf.function`` (with XLA when ``jit``; a plain graph otherwise). JAX: ``jax.jit`` over
Keras's stateless API, whose steps take the variables' values as arguments and return new ones:
:class:`JaxValues` holds them between steps and writes them back to the Keras variables on
:meth:`~JaxValues.sync` (before a checkpoint is saved). Keras is imported on first use, so
``lmlab.core`` stays light.

lmlab runs on TensorFlow and JAX only (:data:`SUPPORTED`). :func:`check_backend` refuses any other
backend in one line: the CLI calls it before a command runs (exit status 2, Keras not imported);
:func:`compile_function` and :func:`lmlab.runs.load.load_run` call it for the Python API.
"""

from __future__ import annotations

import json
import os
import sys

from lmlab.core.errors import ConfigError

SUPPORTED = ("tensorflow", "jax")


class UnsupportedBackend(ConfigError):
    """Keras is set to a backend lmlab does not run on (the CLI exits with status 2)."""


def backend_name() -> str:
    import keras

    return keras.backend.backend()


def configured_backend() -> tuple[str, str]:
    """The backend Keras uses (or will use) and what chose it, read as Keras reads it, without importing Keras.

    Keras's own order: ``KERAS_BACKEND`` when set and not empty, else ``backend`` in ``keras.json``
    (in ``KERAS_HOME``, else ``~/.keras``), else tensorflow. Once Keras is imported its answer wins.
    """
    if "keras" in sys.modules:
        return backend_name(), "Keras"
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"], "KERAS_BACKEND"
    user = os.path.expanduser("~")
    home = os.environ["KERAS_HOME"] if "KERAS_HOME" in os.environ else os.path.join(
        user if os.access(user, os.W_OK) else "/tmp", ".keras")
    path = os.path.expanduser(os.path.join(home, "keras.json"))
    try:
        with open(path, encoding="utf-8") as handle:
            backend = json.load(handle).get("backend")
    except (OSError, ValueError, AttributeError):  # no file, or one Keras itself would ignore
        backend = None
    return (backend, path) if isinstance(backend, str) and backend else ("tensorflow", "the default")


def check_backend() -> str:
    """The backend's name if lmlab runs on it; else :class:`UnsupportedBackend` saying what is set and the fix."""
    backend, source = configured_backend()
    if backend in SUPPORTED:
        return backend
    where = {"KERAS_BACKEND": f"KERAS_BACKEND={backend}", "Keras": f"Keras runs on {backend}"}.get(
        source, f"{source} sets the Keras backend to {backend}")
    raise UnsupportedBackend(f"{where}, but lmlab supports only {' and '.join(SUPPORTED)}: "
                             f"set KERAS_BACKEND=tensorflow (or jax) and run it again")


def compile_function(fn, jit: bool = True):
    """``fn`` compiled for the backend (:class:`UnsupportedBackend` on one lmlab does not run on)."""
    backend = check_backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=jit, reduce_retracing=True)
    import jax

    return jax.jit(fn)


class JaxValues:
    """``(trainable, non_trainable, optimizer)`` variable values of a model (and optimizer) for JAX steps."""

    def __init__(self, model, optimizer=None):
        self.model, self.optimizer = model, optimizer
        self.current = None

    def get(self) -> tuple:
        if self.current is None:
            self.current = ([v.value for v in self.model.trainable_variables],
                            [v.value for v in self.model.non_trainable_variables],
                            [v.value for v in self.optimizer.variables] if self.optimizer else [])
        return self.current

    def sync(self) -> None:
        """Write the held values back into the model's and optimizer's variables."""
        if self.current is None:
            return
        trainable, non_trainable, optimizer_vars = self.current
        for variable, value in zip(self.model.trainable_variables, trainable):
            variable.assign(value)
        for variable, value in zip(self.model.non_trainable_variables, non_trainable):
            variable.assign(value)
        if self.optimizer:
            for variable, value in zip(self.optimizer.variables, optimizer_vars):
                variable.assign(value)

    def reload(self) -> None:
        """Forget the held values (after the variables were assigned, e.g. from a checkpoint)."""
        self.current = None
