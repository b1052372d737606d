"""``lmlab export RUN --format savedmodel``: a TensorFlow SavedModel for TF Serving and plain TensorFlow.

The SavedModel holds the run's weights and two signatures, so it loads with
``tf.saved_model.load(DIR)`` without lmlab or Keras installed:

- ``score(token_ids int32 (B, T))`` → ``log_probs`` float32 ``(B, T-1)``, the
  log-probability of each token given the ones before it, and
  ``total_log_prob`` ``(B,)``, their sum (also the ``serving_default``);
- ``generate(token_ids int32 (B, T), max_new_tokens int32, temperature float32,
  top_k int32, seed int32)`` → ``token_ids`` ``(B, T + max_new_tokens)`` and
  ``new_token_ids``: greedy when ``temperature <= 0``, else sampling from the
  softmax at that temperature over the ``top_k`` most likely tokens (all if 0),
  seeded (``tf.random.stateless_categorical``, seed ``(seed, step)``).

Generation is a plain ``tf.while_loop`` over the model's public ``call``: every
step runs the last ``block_size`` tokens through the model (no KV cache), as
nanoGPT's ``generate`` does. Prompts hold at least one token. The folder also
gets ``tokenizer.json`` (Hugging Face format, when the tokenizer has one) and
``lmlab_export.json`` (vocabulary size, end token id, block size, signatures).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from lmlab.core.errors import ConfigError
from lmlab.core.io import atomic_open, write_json
from lmlab.interop.hf_tokenizer import tokenizer_json
from lmlab.runs.load import load_run

SIGNATURES = {
    "score": {"inputs": {"token_ids": "int32 (batch, length)"},
              "outputs": {"log_probs": "float32 (batch, length - 1)", "total_log_prob": "float32 (batch,)"}},
    "generate": {"inputs": {"token_ids": "int32 (batch, length)", "max_new_tokens": "int32 ()",
                            "temperature": "float32 () (<= 0: greedy)", "top_k": "int32 () (0: all)",
                            "seed": "int32 ()"},
                 "outputs": {"token_ids": "int32 (batch, length + max_new_tokens)",
                             "new_token_ids": "int32 (batch, max_new_tokens)"}},
}


def _functions(model, block_size: int | None):
    """The two signature functions over ``model``'s call, in TensorFlow."""
    import tensorflow as tf

    def score(token_ids):
        logits = model(token_ids, training=False)[:, :-1, :]  # (B, T-1, V): position t predicts t+1
        log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
        chosen = tf.gather(log_probs, token_ids[:, 1:], batch_dims=2)  # (B, T-1)
        return {"log_probs": chosen, "total_log_prob": tf.reduce_sum(chosen, axis=-1)}

    def next_token(logits, temperature, top_k, seed, step):
        def greedy():
            return tf.argmax(logits, axis=-1, output_type=tf.int32)

        def sample():
            scaled = logits / temperature
            k = tf.minimum(top_k, tf.shape(scaled)[-1])
            kth = tf.math.top_k(scaled, k=tf.maximum(k, 1)).values[:, -1:]  # (B, 1)
            scaled = tf.where((k > 0) & (scaled < kth), tf.float32.min, scaled)
            drawn = tf.random.stateless_categorical(scaled, 1, seed=tf.stack([seed, step]), dtype=tf.int32)
            return drawn[:, 0]

        return tf.cond(temperature > 0, sample, greedy)

    def generate(token_ids, max_new_tokens, temperature, top_k, seed):
        prompt_length = tf.shape(token_ids)[1]

        def step(i, ids):
            window = ids if block_size is None else ids[:, -block_size:]  # crop to the context, as nanoGPT
            logits = tf.cast(model(window, training=False)[:, -1, :], tf.float32)  # (B, V)
            chosen = next_token(logits, temperature, top_k, seed, i)
            return i + 1, tf.concat([ids, chosen[:, None]], axis=1)

        _, ids = tf.while_loop(lambda i, ids: i < max_new_tokens, step, [tf.constant(0), token_ids],
                               shape_invariants=[tf.TensorShape([]), tf.TensorShape([None, None])])
        return {"token_ids": ids, "new_token_ids": ids[:, prompt_length:]}

    return score, generate


def export_savedmodel(run, out, checkpoint: str = "best", overwrite: bool = False, log=print) -> dict:
    """Write ``run``'s model as a SavedModel folder ``out``; return a summary."""
    import keras

    if keras.backend.backend() != "tensorflow":
        raise ConfigError(f"a SavedModel is written from the TensorFlow backend; this process runs "
                          f"{keras.backend.backend()} (set KERAS_BACKEND=tensorflow)")
    import tensorflow as tf

    started = time.perf_counter()
    out = Path(out)
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} exists; choose another --out or give --overwrite")
    loaded = load_run(run, checkpoint)
    model = loaded.model
    if not isinstance(model, keras.Model):
        raise ConfigError(f"{run} is a {loaded.config['model'].get('family')} model, which has no Keras graph "
                          "to save; the neural families export")
    if model.config.family == "encoder":  # its signatures score and generate left to right
        raise ConfigError(f"{run} is a masked language model (encoder): the SavedModel's score and generate "
                          "signatures are for left-to-right models; export it with --format hf")
    block_size = getattr(model.config, "block_size", None)
    score, generate = _functions(model, block_size)
    ids = tf.TensorSpec([None, None], tf.int32, name="token_ids")
    scalars = [tf.TensorSpec([], dtype, name=name) for name, dtype in
               (("max_new_tokens", tf.int32), ("temperature", tf.float32), ("top_k", tf.int32), ("seed", tf.int32))]
    archive = keras.export.ExportArchive()
    # Already tf.functions with their signatures: the archive traces each once instead of again per use.
    archive.add_endpoint("score", tf.function(score, input_signature=[ids]))
    archive.add_endpoint("generate", tf.function(generate, input_signature=[ids, *scalars]))

    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        archive.write_out(str(tmp), verbose=False)
        tokenizer_file = None
        try:
            text = tokenizer_json(loaded.tokenizer)
            with atomic_open(tmp / "tokenizer.json", "w", encoding="utf-8") as handle:
                handle.write(text)
            tokenizer_file = "tokenizer.json"
        except ConfigError as error:
            log(f"note: no tokenizer.json beside the SavedModel: {error}")
        write_json(tmp / "lmlab_export.json", {
            "run": str(Path(run).resolve()), "step": loaded.step, "vocab_size": model.config.vocab_size,
            "eos_token_id": loaded.tokenizer.eos_id, "block_size": block_size, "tokenizer": tokenizer_file,
            "signatures": SIGNATURES})
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    summary = {"out": str(out), "signatures": sorted(SIGNATURES), "step": loaded.step,
               "seconds": round(time.perf_counter() - started, 2)}
    log(f"exported {run} (step {loaded.step}) as a TensorFlow SavedModel with signatures score and generate -> {out}")
    return summary
