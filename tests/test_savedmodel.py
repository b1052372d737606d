"""TensorFlow SavedModel export: the signatures run in a Python that imports only TensorFlow.

A tiny Llama-style run (grouped-query attention, block 8) is exported with the
CLI, then loaded in a subprocess started with ``python -I`` whose import system
refuses ``lmlab``; its scores and greedy tokens must equal lmlab's own, and
generation past the block must crop the context as lmlab's reference decoding does.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from lmlab.runs.folder import write_run
from lmlab.tokenizers import train_tokenizer

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TEXT = "Shall I compare thee to a summer's day? 床前明月光，疑是地上霜。 Thou art more lovely."
BLOCK = 8

# Runs in the subprocess: TensorFlow only. lmlab is installed (editable) in this venv, so the
# finder below makes it unimportable, as on a serving machine without lmlab.
PLAIN_TENSORFLOW = r"""
import importlib.abc, json, sys

class NoLmlab(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "lmlab" or name.startswith("lmlab."):
            raise ModuleNotFoundError(f"No module named {name!r}")

sys.meta_path.insert(0, NoLmlab())
import tensorflow as tf

try:
    import lmlab  # noqa: F401
    lmlab_importable = True
except ImportError:
    lmlab_importable = False
model = tf.saved_model.load(sys.argv[1])
ids = tf.constant(json.loads(sys.argv[2]), tf.int32)
generate = model.signatures["generate"]

def run(temperature, top_k, seed, new=12):
    out = generate(token_ids=ids[:1, :3], max_new_tokens=tf.constant(new), temperature=tf.constant(temperature),
                   top_k=tf.constant(top_k), seed=tf.constant(seed))
    return out["new_token_ids"].numpy().tolist()[0], out["token_ids"].shape.as_list()

score = model.signatures["score"](token_ids=ids)
print(json.dumps({
    "lmlab_importable": lmlab_importable,
    "lmlab_loaded": sorted(m for m in sys.modules if m.split(".")[0] == "lmlab"),
    "signatures": sorted(model.signatures),
    "log_probs": score["log_probs"].numpy().tolist(),
    "total_log_prob": score["total_log_prob"].numpy().tolist(),
    "default": model.signatures["serving_default"](token_ids=ids)["total_log_prob"].numpy().tolist(),
    "greedy": run(0.0, 0, 0),
    "sampled": [run(1.0, 5, 7), run(1.0, 5, 7), run(1.0, 5, 8)],
    "top_1": run(1.5, 1, 9),
}))
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from lmlab.cli import main
    from lmlab.models.transformer import TransformerConfig, build_transformer
    from lmlab.training.config import TrainConfig

    root = tmp_path_factory.mktemp("savedmodel")
    tokenizer = train_tokenizer("char", [TEXT])
    config = TransformerConfig(vocab_size=tokenizer.vocab_size, block_size=BLOCK, n_layer=2, n_head=6, n_kv_head=2,
                               d_model=24, d_ff=29, style="llama", tie_embeddings=False)
    model = build_transformer(config, seed=11)
    rng = np.random.default_rng(11)
    for weight in model.weights:  # large random weights: clear greedy winners
        if len(weight.shape) > 1:
            weight.assign(rng.normal(0, 0.4, weight.shape).astype("float32"))
    write_run(root / "run", model, tokenizer, TrainConfig(shape="debug", model={"style": "llama"}), None)
    assert main(["export", str(root / "run"), "--format", "savedmodel", "--out", str(root / "sm"), "--quiet"]) == 0
    return root, model, tokenizer


@pytest.fixture(scope="module")
def served(exported):
    root, model, tokenizer = exported
    ids = np.array([tokenizer.encode(TEXT[:7]), tokenizer.encode(TEXT[20:27])], dtype=np.int32)  # (2, 7)
    done = subprocess.run([sys.executable, "-I", "-c", PLAIN_TENSORFLOW, str(root / "sm"), json.dumps(ids.tolist())],
                          cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return ids, json.loads(done.stdout.strip().splitlines()[-1])


def test_savedmodel_loads_without_lmlab(served):
    _, out = served
    assert out["lmlab_importable"] is False and out["lmlab_loaded"] == []
    assert out["signatures"] == ["generate", "score", "serving_default"]


def test_scores_equal_lmlab_log_probabilities(exported, served):
    _, model, _ = exported
    ids, out = served
    logits = np.asarray(model(ids), dtype=np.float64)  # (2, 7, V)
    log_probs = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
        - logits.max(-1, keepdims=True)
    expected = np.take_along_axis(log_probs[:, :-1], ids[:, 1:, None], axis=-1)[..., 0]  # (2, 6)
    assert np.abs(np.array(out["log_probs"]) - expected).max() < 1e-4
    assert np.allclose(out["total_log_prob"], expected.sum(-1), atol=1e-4)
    assert np.allclose(out["default"], out["total_log_prob"])


def test_greedy_generation_equals_lmlab_past_the_block(exported, served):
    from lmlab.generate.decoder import generate_uncached

    _, model, _ = exported
    ids, out = served
    tokens, shape = out["greedy"]
    assert shape == [1, 3 + 12]  # 15 tokens through a block of 8: the context is cropped
    assert tokens == generate_uncached(model, ids[0, :3].tolist(), 12)


def test_sampling_is_seeded_and_top_k_1_is_greedy(exported, served):
    _, model, _ = exported
    _, out = served
    first, again, other = (tokens for tokens, _ in out["sampled"])
    assert first == again and first != other
    assert all(0 <= t < model.config.vocab_size for t in first + other)
    assert out["top_1"][0] == out["greedy"][0]


def test_other_neural_families_export_through_their_public_call(tmp_path):
    import tensorflow as tf

    from lmlab.models import registry
    from lmlab.generate.decoder import generate_uncached
    from lmlab.interop import export_savedmodel
    from lmlab.training.config import TrainConfig

    tokenizer = train_tokenizer("char", [TEXT])
    model = registry.build_model(registry.model_config("gated_cnn", "debug", tokenizer.vocab_size), seed=5)
    write_run(tmp_path / "run", model, tokenizer, TrainConfig(family="gated_cnn", shape="debug"), None)
    export_savedmodel(tmp_path / "run", tmp_path / "sm", log=lambda m: None)
    served = tf.saved_model.load(str(tmp_path / "sm"))
    out = served.signatures["generate"](token_ids=tf.constant([[3, 4, 5]]), max_new_tokens=tf.constant(6),
                                        temperature=tf.constant(0.0), top_k=tf.constant(0), seed=tf.constant(0))
    assert out["new_token_ids"].numpy()[0].tolist() == generate_uncached(model, [3, 4, 5], 6)


def test_export_folder_describes_itself_and_keeps_the_tokenizer(exported, cli):
    from tokenizers import Tokenizer

    root, _, tokenizer = exported
    info = json.loads((root / "sm" / "lmlab_export.json").read_text())
    assert (info["block_size"], info["vocab_size"], info["eos_token_id"]) == (BLOCK, tokenizer.vocab_size,
                                                                              tokenizer.eos_id)
    assert sorted(info["signatures"]) == ["generate", "score"]
    assert Tokenizer.from_file(str(root / "sm" / "tokenizer.json")).encode(TEXT).ids == tokenizer.encode(TEXT)
    code, _, err = cli("export", root / "run", "--format", "savedmodel", "--out", root / "sm")
    assert code == 1 and "exists; choose another --out or give --overwrite" in err
