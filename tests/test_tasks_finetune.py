"""Fine-tuning, prediction, decoding and task evaluation (lmlab.tasks) end to end on tiny models.

A tiny pretrained run is made by hand (a word tokenizer, a 2-layer Transformer, one checkpoint), so no
pre-training is spent; the tasks are synthetic and learnable in a few dozen steps, so the tests check that
fine-tuning learns, not only that it runs.
"""

from __future__ import annotations

import itertools
import json
import math

import keras
import numpy as np
import pytest

from lmlab.core.errors import ConfigError, DataError
from lmlab.core.io import read_json, write_json
from lmlab.tasks.config import FinetuneConfig

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

GOOD, BAD = ["good", "great", "nice", "fine"], ["bad", "awful", "poor", "dull"]
FILLER = ["the", "film", "plot", "is", "was", "a", "very"]
NUMBERS = {"one": "un", "two": "deux", "three": "trois", "four": "quatre", "five": "cinq"}
VOCAB = ["<eos>", "<unk>"] + GOOD + BAD + FILLER + list(NUMBERS) + list(NUMBERS.values()) + [
    "Translate:", "Translation:", "Text:", "Summary:"]


def make_base_run(folder, family="transformer", block_size=16, seed=0):
    """A pretrained-run folder as lmlab train writes one, with random weights."""
    from lmlab.models import registry
    from lmlab.tokenizers import WordTokenizer
    from lmlab.runs.checkpoint import save_checkpoint
    from lmlab.training.config import TrainConfig

    tokenizer = WordTokenizer(VOCAB)
    config = registry.model_config(family, "debug", tokenizer.vocab_size, {"block_size": block_size, "n_layer": 1})
    model = registry.build_model(config, seed=seed)
    folder.mkdir(parents=True)
    tokenizer.save(folder / "tokenizer.json")
    write_json(folder / "config.json", {"train": TrainConfig().to_dict(), "model": config.to_dict(), "data": None})
    save_checkpoint(folder, 1, model, None, {"val_loss": 1.0}, best=True)
    return folder


def sentiment_file(path, n, seed):
    rng = np.random.default_rng(seed)
    lines = ["sentence\tlabel"]
    for _ in range(n):
        label = int(rng.integers(2))
        words = list(rng.choice(FILLER, size=int(rng.integers(2, 5)))) + [rng.choice(GOOD if label else BAD)]
        rng.shuffle(words)
        lines.append(f"{' '.join(words)}\t{'pos' if label else 'neg'}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def numbers_file(path, n, seed):
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(n):
        source = list(rng.choice(list(NUMBERS), size=int(rng.integers(1, 3))))
        lines.append(f"{' '.join(source)}\t{' '.join(NUMBERS[w] for w in source)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("tasks")
    return {"root": root, "base": make_base_run(root / "base"),
            "train": sentiment_file(root / "train.tsv", 160, 0), "valid": sentiment_file(root / "valid.tsv", 48, 1),
            "pairs": numbers_file(root / "pairs.txt", 160, 2), "pairs_test": numbers_file(root / "pairs_test.txt", 24, 3)}


@pytest.fixture(scope="module")
def classifier(work):
    from lmlab.tasks.finetune import finetune

    out = work["root"] / "classifier"
    config = FinetuneConfig(task="classify", epochs=6, batch_size=16, learning_rate=3e-3, eval_interval=20, seed=0)
    result = finetune(work["base"], out, work["train"], work["valid"], config, log=lambda m: None)
    return out, result


@pytest.fixture(scope="module")
def translator(work):
    from lmlab.tasks.finetune import finetune

    out = work["root"] / "translator"
    config = FinetuneConfig(task="generate", template="translate", epochs=20, batch_size=16, learning_rate=5e-3,
                            eval_interval=45, seed=0)
    result = finetune(work["base"], out, work["pairs"], None, config, log=lambda m: None)
    return out, result


# ---------------------------------------------------------------- classification


def test_classifier_learns_and_writes_a_run_like_folder(classifier, work):
    out, result = classifier
    assert result["val_accuracy"] >= 90.0  # a word of each class decides the label: learnable in 60 steps
    config = read_json(out / "config.json")
    assert config["task"] == "classify" and config["classify"]["labels"] == ["neg", "pos"]
    assert config["model"] == read_json(work["base"] / "config.json")["model"]
    best = read_json(out / "checkpoints" / "best.json")["checkpoint"]
    assert {p.name for p in (out / "checkpoints" / best).iterdir()} == {"model.safetensors", "head.safetensors",
                                                                      "state.json"}
    metrics = read_json(out / "valid_metrics.json")
    assert metrics["accuracy"] == result["val_accuracy"] and np.sum(metrics["confusion_matrix"]) == 48
    assert not list(out.rglob("*.tmp*")) and not list(out.rglob("*.pkl"))


def test_predict_and_evaluate_task_commands(classifier, work, cli, tmp_path):
    out, result = classifier
    code, stdout, err = cli("predict", out, "the plot was great", "a very dull film", "--json")
    assert code == 0, err
    rows = json.loads(stdout)
    assert [r["label"] for r in rows] == ["pos", "neg"]
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-5 for r in rows)
    code, stdout, err = cli("evaluate-task", out, "--task", "classify", "--test", work["valid"], "--out",
                            tmp_path / "m.json", "--predictions", tmp_path / "p.jsonl")
    assert code == 0, err
    metrics = read_json(tmp_path / "m.json")
    assert metrics["accuracy"] == pytest.approx(result["val_accuracy"])  # the same data as the last validation
    assert metrics["examples"] == 48 and len((tmp_path / "p.jsonl").read_text().splitlines()) == 48
    code, stdout, err = cli("evaluate-task", out, "--task", "generate", "--test", work["valid"])
    assert code == 1 and "fine-tuned for classify, not generate" in err


def test_fine_tuned_folder_loads_as_a_language_model_run(classifier):
    from lmlab.runs.load import load_run
    from lmlab.tasks.folder import load_finetuned

    out, _ = classifier
    finetuned, run = load_finetuned(out), load_run(out)
    assert load_finetuned(out) is finetuned  # loaded once while the checkpoint is unchanged
    ids = np.array([[2, 3, 4]], np.int32)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(run.model(ids)),
                               keras.ops.convert_to_numpy(finetuned.lm(ids)), atol=1e-6)


def test_a_head_of_the_wrong_shape_is_refused(classifier, tmp_path):
    import shutil

    from safetensors.numpy import save_file

    from lmlab.runs.load import load_run
    from lmlab.tasks.folder import HEAD_FILE, load_finetuned

    copy = tmp_path / "classifier"
    shutil.copytree(classifier[0], copy)
    save_file({"kernel": np.zeros((3, 3), np.float32), "bias": np.zeros(3, np.float32)},
              str(load_run(copy).checkpoint / HEAD_FILE))
    with pytest.raises(ConfigError, match="kernel missing or of the wrong shape"):
        load_finetuned(copy)


def test_classification_errors(work, tmp_path):
    from lmlab.tasks.finetune import finetune

    config = FinetuneConfig(max_steps=1)
    bad = tmp_path / "bad.tsv"
    bad.write_text("sentence\tlabel\ngood film\tmaybe\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.tsv:2: unknown label 'maybe'; the model knows 'neg', 'pos'"):
        finetune(work["base"], tmp_path / "a", work["train"], bad, config, log=lambda m: None)
    empty = tmp_path / "empty.tsv"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="the file is empty"):
        finetune(work["base"], tmp_path / "b", empty, None, config, log=lambda m: None)
    with pytest.raises(ConfigError, match="3 class weights for 2 labels"):
        finetune(work["base"], tmp_path / "c", work["train"], None, FinetuneConfig(class_weights="1,2,3"),
                 log=lambda m: None)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # nothing written for bad input
    with pytest.raises(ConfigError, match="already holds a fine-tuned model"):
        finetune(work["base"], work["root"] / "classifier", work["train"], None, config, log=lambda m: None)
    with pytest.raises(DataError, match="unknown label 'maybe'"):  # --overwrite with bad data: the old model stays
        finetune(work["base"], work["root"] / "classifier", work["train"], bad, config, overwrite=True,
                 log=lambda m: None)
    assert (work["root"] / "classifier" / "checkpoints" / "best.json").exists()
    with pytest.raises(ConfigError, match="pooling must be one of last, mean"):
        FinetuneConfig(pooling="max")


def test_frozen_backbone_trains_the_head_only_and_class_weights():
    from lmlab.models import registry
    from lmlab.tasks.classifier import SequenceClassifier
    from lmlab.tasks.classify import class_weights

    assert class_weights(FinetuneConfig(class_weights="balanced"), [0, 0, 0, 1], 2) == [4 / 6, 4 / 2]
    assert class_weights(FinetuneConfig(class_weights="1,3"), [0, 1], 2) == [1.0, 3.0]
    lm = registry.build_model(registry.model_config("transformer", "debug", 37, {"block_size": 16}), seed=2)
    frozen = SequenceClassifier(lm, 2, "mean", freeze=True)
    # The optimizer only ever sees trainable variables: the head's kernel and bias.
    assert [id(v) for v in frozen.trainable_variables] == [id(frozen.head.kernel), id(frozen.head.bias)]
    assert len(SequenceClassifier(lm, 2, freeze=False).trainable_variables) == len(lm.variables) + 2


# ---------------------------------------------------------------- the backbone and the classifier head


@pytest.mark.parametrize("family", ["transformer", "rnn", "gated_cnn"])
def test_hidden_states_are_what_the_output_layer_reads(family):
    """The model contract task heads rely on: ``model(ids) == model.logits(model.hidden_states(ids))``."""
    from lmlab.models import registry

    model = registry.build_model(registry.model_config(family, "debug", 37, {"block_size": 11}), seed=1)
    ids = np.random.default_rng(0).integers(0, 37, size=(3, 7)).astype(np.int32)
    hidden = model.hidden_states(ids)
    assert tuple(hidden.shape) == (3, 7, model.config.d_model)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model.logits(hidden)),
                               keras.ops.convert_to_numpy(model(ids)), atol=1e-5)


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_right_padding_does_not_change_a_prediction(pooling):
    from lmlab.models import registry
    from lmlab.tasks.classifier import SequenceClassifier

    lm = registry.build_model(registry.model_config("transformer", "debug", 37, {"block_size": 16}), seed=2)
    model = SequenceClassifier(lm, 3, pooling, seed=0)
    ids = np.array([[5, 6, 7, 0], [8, 9, 0, 0]], np.int32)
    short = keras.ops.convert_to_numpy(model(ids, np.array([3, 2], np.int32)))
    padded = np.pad(ids, ((0, 0), (0, 12)), constant_values=11)
    long = keras.ops.convert_to_numpy(model(padded, np.array([3, 2], np.int32)))
    np.testing.assert_allclose(short, long, atol=1e-5)
    alone = keras.ops.convert_to_numpy(model(ids[1:, :2], np.array([2], np.int32)))
    np.testing.assert_allclose(short[1:], alone, atol=1e-5)


# ---------------------------------------------------------------- generation and decoding


def test_translation_fine_tuning_learns_and_scores(translator, work, cli, tmp_path):
    out, result = translator
    settings = read_json(out / "config.json")["generate"]
    assert settings["template"]["name"] == "translate" and settings["max_new_tokens"] == 3  # 2 words and the end
    code, stdout, err = cli("evaluate-task", out, "--test", work["pairs_test"], "--metrics", "bleu,rouge,squad",
                            "--out", tmp_path / "greedy.json")
    assert code == 0, err
    greedy = read_json(tmp_path / "greedy.json")
    assert greedy["exact_match"] >= 80.0 and greedy["rouge1"] >= 80.0  # word-for-word mapping, learnt
    assert "bleu" in greedy  # (0 here: BLEU needs 4-grams, and these targets have 1 or 2 words)
    code, stdout, err = cli("evaluate-task", out, "--test", work["pairs_test"], "--decode", "beam", "--beam-size", "3",
                            "--out", tmp_path / "beam.json")
    assert code == 0, err
    assert read_json(tmp_path / "beam.json")["decode"] == {"strategy": "beam", "beam_size": 3, "length_penalty": 1.0}
    code, stdout, err = cli("predict", out, "three one", "--json")
    assert code == 0 and json.loads(stdout)[0]["completion"] == "trois un"


def test_prompt_longer_than_the_context(translator, work, tmp_path):
    from lmlab.tasks.finetune import finetune
    from lmlab.tasks.folder import load_finetuned
    from lmlab.tasks.generate import complete
    from lmlab.generate.search import DecodeConfig
    from lmlab.tasks.readers.examples import TaskExample

    long = tmp_path / "long.txt"
    long.write_text(" ".join(["one", "two", "three", "four"] * 4) + "\tun\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"long.txt:1: the prompt is 18 tokens but the model's context of 16 leaves "
                                        r"room for 15"):
        finetune(work["base"], tmp_path / "x", long, work["pairs"], FinetuneConfig(task="generate",
                 template="translate"), log=lambda m: None)
    finetuned = load_finetuned(translator[0])
    example = TaskExample({"source": "one " * 20}, "un", ("un",), "1", "long:1")
    with pytest.raises(DataError, match="--truncate-source"):
        complete(finetuned, [example], DecodeConfig())
    outputs, cut = complete(finetuned, [example], DecodeConfig(), truncate=True)
    assert cut == 1 and len(outputs) == 1


class BigramLM:
    """A fake language model for decoding tests: the next token's logits depend on the last token only."""

    def __init__(self, table, block_size=8):
        self.table = keras.ops.convert_to_tensor(np.asarray(table, np.float32))  # (V, V)
        self.config = type("Config", (), {"block_size": block_size})()

    def init_cache(self, batch_size, max_length=None):
        return keras.ops.zeros((batch_size, 1))

    def call_with_cache(self, token_ids, cache, index):
        return keras.ops.take(self.table, token_ids, axis=0), cache  # (B, t, V)


def brute_force_best(table, prompt_last, max_new, eos, length_penalty):
    log_probs = np.log(np.exp(table) / np.exp(table).sum(axis=1, keepdims=True))
    best, best_tokens = -math.inf, None
    vocab = len(table)
    for length in range(1, max_new + 1):
        for tokens in itertools.product(range(vocab), repeat=length):
            if eos in tokens[:-1] or (length < max_new and tokens[-1] != eos):
                continue  # a hypothesis ends at its first end token or at the length limit
            previous, total = prompt_last, 0.0
            for token in tokens:
                total, previous = total + log_probs[previous, token], token
            score = total / length ** length_penalty
            if score > best:
                best, best_tokens = score, list(tokens)
    return best_tokens


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_beam_search_is_exact_when_the_beam_holds_every_hypothesis(length_penalty):
    from lmlab.generate.beam import beam_search
    from lmlab.generate.decoder import Decoder
    from lmlab.generate.samplers import SamplerConfig

    table = np.random.default_rng(4).normal(0, 2, size=(4, 4))
    decoder = Decoder(BigramLM(table), SamplerConfig(temperature=0.0), compile_prefill=False)
    expected = brute_force_best(table, 1, 3, 0, length_penalty)
    assert beam_search(decoder, [2, 1], 3, 16, 0, length_penalty) == expected


def test_beam_search_beats_greedy_on_a_trap():
    from lmlab.generate.beam import beam_search
    from lmlab.generate.decoder import Decoder
    from lmlab.generate.samplers import SamplerConfig
    from lmlab.generate.search import DecodeConfig, decode

    # From token 1, token 2 looks best (0.6) but every continuation after it is poor; token 3 (0.4) leads to eos.
    p = np.full((5, 5), 1e-4)
    p[1, 2], p[1, 3] = 0.6, 0.4
    p[2, :] = 0.2
    p[3, 0] = 1.0
    p[4, 0] = 1.0
    model = BigramLM(np.log(p / p.sum(axis=1, keepdims=True)))
    decoder = Decoder(model, SamplerConfig(temperature=0.0), compile_prefill=False)
    greedy = decode(model, [1], 2, DecodeConfig("greedy"), 0)
    assert greedy[0] == 2
    assert beam_search(decoder, [1], 2, 2, 0, 0.0) == [3, 0]
    assert beam_search(decoder, [1], 2, 1, 0, 0.0) == greedy  # a beam of one is greedy


def test_sampling_is_seeded_and_follows_the_sampler():
    from lmlab.generate.search import DecodeConfig, decode

    table = np.random.default_rng(5).normal(0, 1, size=(6, 6))
    model = BigramLM(table, block_size=12)
    sampled = [decode(model, [1], 10, DecodeConfig("sample", seed=s), eos_id=None) for s in (1, 1, 2)]
    assert sampled[0] == sampled[1] and sampled[0] != sampled[2]
    top1 = decode(model, [1], 10, DecodeConfig("sample", top_k=1, seed=3), eos_id=None)
    assert top1 == decode(model, [1], 10, DecodeConfig("greedy"), eos_id=None)  # top-k 1 is greedy
    assert decode(model, [1], 10, DecodeConfig("greedy"), eos_id=int(np.argmax(table[1]))) == [int(np.argmax(table[1]))]
    with pytest.raises(ConfigError, match="decoding must be one of greedy, sample, beam"):
        DecodeConfig("nucleus")


def test_greedy_decoding_matches_lmlab_generation(work):
    from lmlab.generate.decoder import generate_ids
    from lmlab.runs.load import load_run
    from lmlab.generate.samplers import SamplerConfig
    from lmlab.generate.search import DecodeConfig, decode

    model = load_run(work["base"]).model
    prompt = [2, 9, 13, 4, 7]
    ours = decode(model, prompt, 8, DecodeConfig("greedy"), eos_id=None)
    assert ours == generate_ids(model, [prompt], 8, SamplerConfig(temperature=0.0))[0]
    with pytest.raises(ConfigError, match="do not fit the context of 16"):
        decode(model, prompt, 13, DecodeConfig("greedy"), eos_id=None)


JAX_SCRIPT = """
import keras
import numpy as np
assert keras.backend.backend() == "jax"
from lmlab.generate.beam import beam_search
from lmlab.generate.decoder import Decoder
from lmlab.generate.samplers import SamplerConfig
from lmlab.training.steps import TaskStepper
from lmlab.training.config import TrainConfig
from lmlab.training.optimizer import build_optimizer
from tests.test_tasks_finetune import BigramLM, brute_force_best


class Bag(keras.Model):  # (ids, lengths) -> class logits, like SequenceClassifier
    def __init__(self):
        super().__init__()
        self.embedding = keras.layers.Embedding(10, 8)
        self.head = keras.layers.Dense(2)

    def call(self, ids, lengths, training=None):
        mask = keras.ops.cast(keras.ops.arange(ids.shape[1])[None, :] < lengths[:, None], "float32")
        return self.head(keras.ops.einsum("bt,btd->bd", mask, self.embedding(ids)))


model = Bag()
ids = np.random.default_rng(0).integers(1, 10, size=(16, 4)).astype("int32")
labels = (ids[:, 0] > 5).astype("int32")
model(ids, np.full(16, 4, "int32"))
optimizer, _ = build_optimizer(TrainConfig(max_steps=40, warmup_steps=0, learning_rate=0.05), model)
stepper = TaskStepper(model, optimizer)
inputs = (ids, np.full(16, 1, "int32"))  # only the first token counts: the label is a function of it
first = stepper.train(inputs, labels, np.ones(16, "float32"))[0]
for _ in range(39):
    last = stepper.train(inputs, labels, np.ones(16, "float32"))[0]
total, count, logits = stepper.evaluate(inputs, labels, np.ones(16, "float32"))
assert last < first / 4 and logits.shape == (16, 2) and (logits.argmax(1) == labels).all(), (first, last)
table = np.random.default_rng(4).normal(0, 2, size=(4, 4))
assert beam_search(Decoder(BigramLM(table), SamplerConfig(temperature=0.0), compile_prefill=False), [2, 1], 3, 16, 0, 1.0) == brute_force_best(table, 1, 3, 0, 1.0)
print("jax ok")
"""


def test_task_steps_and_beam_search_on_the_jax_backend():
    import os
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("jax")
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(repo)}
    result = subprocess.run([sys.executable, "-c", JAX_SCRIPT], env=env, capture_output=True, text=True, timeout=600,
                            cwd=repo)
    assert "jax ok" in result.stdout, result.stderr[-3000:]
