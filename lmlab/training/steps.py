"""Compiled training and evaluation steps: the one place that knows the backend.

TensorFlow: ``tf.function(jit_compile=True)`` (XLA; Keras's ``"auto"`` would
leave XLA off on a CPU-only TensorFlow), or a plain graph where :func:`use_xla`
says so: XLA's CPU backend has no bfloat16 matrix products (it computes them in
float32), while TensorFlow's graph mode runs them through oneDNN, which uses the
CPU's bfloat16 instructions (AVX512_BF16, AMX) where it has them. JAX: ``jax.jit`` over Keras's
stateless API, with the variables' values held here between steps and
written back to the model by :meth:`Stepper.sync`.

A step takes ``(A, B, T)`` inputs and targets: ``A`` micro-batches whose
gradients are averaged before one optimizer update (gradient accumulation),
and returns the mean loss and the global gradient norm before clipping.
A masked LM's step also takes which targets count (``weights``) and, with
sentence-pair packing, the token types; a decoder's step takes neither, so
its compiled step is the one it always was. A decoder with the adaptive softmax output
(:func:`scores_targets`) gives its per-token loss itself, ``model(x, targets=y)``, without the
``(B, T, V)`` log-probabilities.

With ``skip_bad=True`` a step whose loss or gradient norm is not finite leaves
the weights and the optimizer (moments, step counter, hence the learning-rate
schedule) untouched; the trainer logs it and goes on. ``loss_weight``
multiplies the loss: always 1 in training, it is how the fault-injection hook
(:mod:`lmlab.core.faults`) poisons a batch with NaN or an overflow.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from lmlab.core.backend import JaxValues
from lmlab.core.errors import ConfigError


def use_xla(compile: str = "auto", precision: str = "float32") -> bool:
    """Whether TensorFlow compiles the step with XLA: ``compile`` is ``xla``, ``graph`` or ``auto``.

    ``auto``: XLA, except mixed bfloat16 with no GPU. Measured on a 2-core AVX512_BF16 CPU (GPT-2 shape,
    6 x 384, 16 x 256 tokens): float32 + XLA 1.86 s a step, bfloat16 + XLA 1.97 s, bfloat16 graph 1.35 s
    (bench/RESULTS.md); small models stay faster in float32 with XLA, which fuses their many small ops.
    """
    if compile != "auto":
        return compile == "xla"
    if precision != "mixed_bfloat16" or keras.backend.backend() != "tensorflow":
        return True
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def token_loss(targets, logits):
    """Per-token negative log-likelihood in float32, ``(B, T)``."""
    return ops.sparse_categorical_crossentropy(targets, ops.cast(logits, "float32"), from_logits=True)


def mean_loss(targets, logits, weights=None):
    """Mean token loss; with ``weights`` (masked-LM: 1 at the masked positions) the weighted mean."""
    nll = token_loss(targets, logits)
    if weights is None:
        return ops.mean(nll)
    weights = ops.cast(weights, "float32")
    return ops.sum(nll * weights) / ops.maximum(ops.sum(weights), 1.0)


def scores_targets(model) -> bool:
    """Whether ``model(x, targets=y)`` gives the per-token loss ``(B, T)`` cheaper than from its logits:
    a decoder with the adaptive softmax output (:mod:`lmlab.layers.adaptive_softmax`), whose loss never
    builds the ``(B, T, V)`` log-probabilities."""
    return getattr(getattr(model, "config", None), "output", "softmax") == "adaptive"


def model_token_loss(model, x, y, training, arguments=None):
    """Per-token loss ``(B, T)`` float32 of ``model`` on inputs ``x`` and targets ``y`` (see :func:`scores_targets`)."""
    arguments = arguments or {}
    if scores_targets(model):
        return ops.cast(model(x, training=training, targets=y, **arguments), "float32")
    return token_loss(y, model(x, training=training, **arguments))


def masked_targets(targets, weights, max_predictions: int):
    """``(positions, targets, weights)`` at the ``max_predictions`` positions of each row that carry weight.

    The masking caps each row's selection at ``max_predictions``
    (:func:`lmlab.data.masking.max_predictions`), so every weighted target is among them; the rest are
    unweighted filler.
    """
    weights = ops.cast(weights, "float32")
    _, positions = ops.top_k(weights, max_predictions)
    return (positions, ops.take_along_axis(targets, positions, axis=1),
            ops.take_along_axis(weights, positions, axis=1))


def mlm_inputs(targets, weights, types, max_predictions: int | None):
    """``(model keyword arguments, targets, weights)`` for a masked LM's forward pass: its token types
    (sentence-pair packing) and, when ``max_predictions`` is set, the positions to compute the output at."""
    arguments = {} if types is None else {"token_type_ids": types}
    if weights is not None and max_predictions:
        positions, targets, weights = masked_targets(targets, weights, max_predictions)
        arguments["masked_positions"] = positions
    return arguments, targets, weights


def global_norm(tensors):
    return ops.sqrt(sum(ops.sum(ops.square(ops.cast(t, "float32"))) for t in tensors))


def all_finite(loss, norm):
    return ops.logical_and(ops.all(ops.isfinite(loss)), ops.all(ops.isfinite(norm)))


class Stepper:
    def __init__(self, model, optimizer=None, grad_accum: int = 1, skip_bad: bool = False, placement=None,
                 max_predictions: int | None = None, jit_compile: bool = True):
        self.model, self.optimizer, self.grad_accum, self.skip_bad = model, optimizer, grad_accum, skip_bad
        self.jit_compile = jit_compile  # TensorFlow only: XLA, or a plain graph (see use_xla)
        # A masked LM's training step computes the output layer at most this many positions a row.
        self.max_predictions = max_predictions
        # Across devices (lmlab.training.distribute): TensorFlow gets the strategy's step, JAX lays out each batch.
        self.placement = placement if getattr(placement, "kind", "none") != "none" else None
        self._build()

    def _build(self):
        self.backend = keras.backend.backend()
        self.jax = JaxValues(self.model, self.optimizer)
        if self.backend == "tensorflow":
            self._build_tensorflow()
        elif self.backend == "jax":
            self._build_jax()
        else:
            raise ConfigError(f"lmlab trains on the tensorflow and jax backends, not {self.backend}: "
                              f"set KERAS_BACKEND=tensorflow or jax")

    # ---------------------------------------------------------- TensorFlow

    def _build_tensorflow(self):
        import tensorflow as tf

        model, optimizer, accum, skip_bad = self.model, self.optimizer, self.grad_accum, self.skip_bad
        if self.placement is not None:
            self._train, self._evaluate = self.placement.steps(model, optimizer, accum, skip_bad)
            return
        gather = self.max_predictions

        def training_loss(x, y, weights, types):
            arguments, y, weights = mlm_inputs(y, weights, types, gather)
            if scores_targets(model):  # the adaptive softmax: the loss without the (B, T, V) logits
                return ops.mean(model_token_loss(model, x, y, True, arguments))
            return mean_loss(y, model(x, training=True, **arguments), weights)

        @tf.function(jit_compile=self.jit_compile, reduce_retracing=True)
        def train(x, y, loss_weight, weights=None, types=None):
            variables = model.trainable_variables
            grads = [tf.zeros_like(v) for v in variables]
            total = 0.0
            for i in range(accum):
                with tf.GradientTape() as tape:
                    loss = training_loss(x[i], y[i], None if weights is None else weights[i],
                                         None if types is None else types[i]) * loss_weight
                    scaled = optimizer.scale_loss(loss)
                for j, g in enumerate(tape.gradient(scaled, variables)):
                    grads[j] += g
                total += loss
            grads = [g / accum for g in grads]
            norm = global_norm(grads) / optimizer.scale_loss(1.0)

            def update():
                optimizer.apply(grads, variables)

            if skip_bad:
                ops.cond(all_finite(total, norm), update, lambda: None)
            else:
                update()
            return total / accum, norm

        @tf.function(jit_compile=self.jit_compile, reduce_retracing=True)
        def evaluate(x, y, mask, types=None):
            nll = model_token_loss(model, x, y, False, mlm_inputs(y, None, types, None)[0])
            return ops.sum(nll * mask), ops.sum(mask)

        self._train, self._evaluate = train, evaluate

    # ---------------------------------------------------------- JAX

    def _build_jax(self):
        import jax

        model, optimizer, accum, skip_bad = self.model, self.optimizer, self.grad_accum, self.skip_bad

        gather = self.max_predictions

        def loss_fn(trainable, non_trainable, x, y, loss_weight, weights=None, types=None):
            arguments, y, weights = mlm_inputs(y, weights, types, gather)
            if scores_targets(model):  # the adaptive softmax: the loss without the (B, T, V) logits
                nll, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True, targets=y,
                                                          **arguments)
                return ops.mean(ops.cast(nll, "float32")) * loss_weight, non_trainable
            logits, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True, **arguments)
            return mean_loss(y, logits, weights) * loss_weight, non_trainable

        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

        @jax.jit
        def train(state, x, y, loss_weight, weights=None, types=None):
            trainable, non_trainable, optimizer_vars = state
            grads = [jax.numpy.zeros_like(v) for v in trainable]
            total = 0.0
            for i in range(accum):
                (loss, non_trainable), g = grad_fn(trainable, non_trainable, x[i], y[i], loss_weight,
                                                   None if weights is None else weights[i],
                                                   None if types is None else types[i])
                grads = [a + b for a, b in zip(grads, g)]
                total += loss
            grads = [g / accum for g in grads]
            norm = global_norm(grads)

            def update():
                return optimizer.stateless_apply(optimizer_vars, grads, trainable)

            if skip_bad:
                trainable, optimizer_vars = jax.lax.cond(all_finite(total, norm), update,
                                                         lambda: (trainable, optimizer_vars))
            else:
                trainable, optimizer_vars = update()
            return (trainable, non_trainable, optimizer_vars), total / accum, norm

        @jax.jit
        def evaluate(trainable, non_trainable, x, y, mask, types=None):
            arguments = mlm_inputs(y, None, types, None)[0]
            if scores_targets(model):  # the adaptive softmax: the loss without the (B, T, V) logits
                nll, _ = model.stateless_call(trainable, non_trainable, x, training=False, targets=y, **arguments)
                nll = ops.cast(nll, "float32")
            else:
                logits, _ = model.stateless_call(trainable, non_trainable, x, training=False, **arguments)
                nll = token_loss(y, logits)
            return ops.sum(nll * mask), ops.sum(mask)

        self._jax_train, self._jax_evaluate = train, evaluate

    # ---------------------------------------------------------- API

    def train(self, x: np.ndarray, y: np.ndarray, loss_weight: float = 1.0,
              weights: np.ndarray | None = None, types: np.ndarray | None = None) -> tuple[float, float]:
        """One optimizer step on ``(A, B, T)`` arrays; returns (loss, gradient norm).

        ``weights`` ``(A, B, T)``: which targets count (a masked LM's masked positions); default all.
        ``types`` ``(A, B, T)``: a masked LM's token types (sentence-pair packing); default all 0.
        """
        weight = np.float32(loss_weight)  # an array, not a Python float: one compiled step for every value
        if types is not None and weights is None:
            raise ConfigError("token types come with a masked LM's weights (sentence-pair packing)")
        if weights is not None:  # masked LM: not (yet) through a multi-device placement
            if self.placement is not None:
                raise ConfigError("masked-LM training runs on one device; leave the distribution setting off")
            if self.backend == "tensorflow":
                loss, norm = self._train(x, y, weight, weights, types)
            else:
                self.jax.current, loss, norm = self._jax_train(self.jax.get(), x, y, weight, weights, types)
            return float(loss), float(norm)
        if self.backend == "tensorflow":
            loss, norm = self._train(x, y, weight)
        elif self.placement is not None:
            self.jax.current, loss, norm = self._jax_train(self.jax.get(), self.placement.batch(x),
                                                      self.placement.batch(y), weight)
            return self.placement.to_host(loss), self.placement.to_host(norm)
        else:
            self.jax.current, loss, norm = self._jax_train(self.jax.get(), x, y, weight)
        return float(loss), float(norm)

    def evaluate(self, x, y, mask, types=None) -> tuple[float, float]:
        """Summed negative log-likelihood (nats) over masked targets, and their count.

        ``types``: a masked LM's token types (sentence-pair packing); default all 0.
        """
        extra = () if types is None else (types,)
        if types is not None and self.placement is not None:  # masked LM: one device (as in train)
            raise ConfigError("masked-LM training runs on one device; leave the distribution setting off")
        if self.backend == "tensorflow":
            total, count = self._evaluate(x, y, mask, *extra)
        else:
            trainable, non_trainable, _ = self.jax.get()
            if self.placement is not None:
                x, y, mask = (self.placement.replicate(a) for a in (x, y, mask))
                total, count = self._jax_evaluate(trainable, non_trainable, x, y, mask)
                return self.placement.to_host(total), self.placement.to_host(count)
            total, count = self._jax_evaluate(trainable, non_trainable, x, y, mask, *extra)
        return float(total), float(count)

    def sync(self) -> None:
        """Write the JAX step's variable values back into the model and optimizer."""
        self.jax.sync()

    def reload(self) -> None:
        """Forget held JAX values (after variables were assigned from a checkpoint)."""
        self.jax.reload()


# ---------------------------------------------------------- task models
# Compiled training and evaluation steps for task models, on TensorFlow (XLA) and JAX.
#
# The same scheme as :mod:`lmlab.training.steps`, generalised to any inputs
# and a weighted loss: ``loss = sum(weight * nll) / sum(weight)`` — a class-
# weighted mean for classification (as PyTorch's ``CrossEntropyLoss(weight=)``
# averages), the mean over completion tokens for generation (padding and
# prompt tokens have weight 0). Gradients are clipped and weight decay applied
# by the optimizer (:func:`lmlab.training.trainer.build_optimizer`).
#
# On TensorFlow the steps are graph functions without XLA by default: fine-tuning
# batches come in several lengths, XLA compiles each anew, and on this 2-core
# CPU fine-tuning the small pretrained English model on SST-2 ran its steps at
# the same speed either way (75 steps in 30 s) while XLA spent 2.5 minutes
# compiling (``jit_compile=True`` turns it on). JAX always compiles (``jax.jit``).


def weighted_nll(outputs, targets, weights):
    """``(sum of weighted negative log-likelihoods, sum of weights)`` for logits over the last axis."""
    nll = ops.sparse_categorical_crossentropy(targets, ops.cast(outputs, "float32"), from_logits=True)
    weights = ops.cast(weights, "float32")
    return ops.sum(nll * weights), ops.sum(weights)


class TaskStepper(Stepper):
    """The training engine for task models: any inputs (``model(*inputs)``) and a weighted loss."""

    def __init__(self, model, optimizer=None, loss_fn=weighted_nll, return_outputs: bool = True,
                 jit_compile: bool = False):
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.jit = jit_compile
        self.return_outputs = return_outputs  # a language model's (B, T, V) logits are not worth copying out
        self._build()

    def _build_tensorflow(self):
        import tensorflow as tf

        model, optimizer, loss_fn, keep, jit = self.model, self.optimizer, self.loss_fn, self.return_outputs, self.jit

        @tf.function(jit_compile=jit, reduce_retracing=True)
        def train(inputs, targets, weights):
            variables = model.trainable_variables
            with tf.GradientTape() as tape:
                total, count = loss_fn(model(*inputs, training=True), targets, weights)
                loss = total / ops.maximum(count, 1e-9)
            grads = tape.gradient(loss, variables)
            norm = global_norm(grads)
            optimizer.apply(grads, variables)
            return loss, norm

        @tf.function(jit_compile=jit, reduce_retracing=True)
        def evaluate(inputs, targets, weights):
            outputs = model(*inputs, training=False)
            total, count = loss_fn(outputs, targets, weights)
            return total, count, outputs if keep else ops.zeros(())

        self._train, self._evaluate = train, evaluate

    def _build_jax(self):
        import jax

        model, optimizer, loss_fn, keep = self.model, self.optimizer, self.loss_fn, self.return_outputs

        def loss_of(trainable, non_trainable, inputs, targets, weights):
            outputs, non_trainable = model.stateless_call(trainable, non_trainable, *inputs, training=True)
            total, count = loss_fn(outputs, targets, weights)
            return total / ops.maximum(count, 1e-9), non_trainable

        grad_fn = jax.value_and_grad(loss_of, has_aux=True)

        @jax.jit
        def train(state, inputs, targets, weights):
            trainable, non_trainable, optimizer_vars = state
            (loss, non_trainable), grads = grad_fn(trainable, non_trainable, inputs, targets, weights)
            norm = global_norm(grads)
            trainable, optimizer_vars = optimizer.stateless_apply(optimizer_vars, grads, trainable)
            return (trainable, non_trainable, optimizer_vars), loss, norm

        @jax.jit
        def evaluate(trainable, non_trainable, inputs, targets, weights):
            outputs, _ = model.stateless_call(trainable, non_trainable, *inputs, training=False)
            total, count = loss_fn(outputs, targets, weights)
            return total, count, outputs if keep else ops.zeros(())

        self._jax_train, self._jax_evaluate = train, evaluate

    def train(self, inputs: tuple, targets, weights) -> tuple[float, float]:
        """One optimizer step; returns (weighted mean loss, gradient norm before clipping)."""
        if self.backend == "tensorflow":
            loss, norm = self._train(tuple(inputs), targets, weights)
        else:
            self.jax.current, loss, norm = self._jax_train(self.jax.get(), tuple(inputs), targets, weights)
        return float(loss), float(norm)

    def evaluate(self, inputs: tuple, targets, weights) -> tuple[float, float, np.ndarray]:
        """(summed weighted loss, summed weight, model outputs) without changing anything."""
        if self.backend == "tensorflow":
            total, count, outputs = self._evaluate(tuple(inputs), targets, weights)
        else:
            trainable, non_trainable, _ = self.jax.get()
            total, count, outputs = self._jax_evaluate(trainable, non_trainable, tuple(inputs), targets, weights)
        return float(total), float(count), np.asarray(keras.ops.convert_to_numpy(outputs))
