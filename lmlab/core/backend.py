"""The one place that compiles a function for the running Keras backend, and holds JAX's variable values.

TensorFlow: ``tf.function`` (with XLA when ``jit``; a plain graph otherwise). JAX: ``jax.jit`` over
Keras's stateless API, whose steps take the variables' values as arguments and return new ones:
:class:`JaxValues` holds them between steps and writes them back to the Keras variables on
:meth:`~JaxValues.sync` (before a checkpoint is saved). Keras is imported on first use, so
``lmlab.core`` stays light.
"""

from __future__ import annotations


def backend_name() -> str:
    import keras

    return keras.backend.backend()


def compile_function(fn, jit: bool = True):
    """``fn`` compiled for the backend; as it is on any other (e.g. torch's eager mode)."""
    backend = backend_name()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=jit, reduce_retracing=True)
    if backend == "jax":
        import jax

        return jax.jit(fn)
    return fn


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
