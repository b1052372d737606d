"""Progress bars (lmlab.core.progress) of the long commands: eval, finetune, evaluate-task, predict, the n-gram
build and augment (evaluate-task of an extractive-QA folder: tests/test_mlm.py). With progress on, tqdm's bar reaches stderr; with --quiet (or progress off) it does not,
and stdout is the same either way.

tqdm writes to sys.stderr even when it is not a terminal, so the CLI is run in-process with
``stderr_is_terminal`` patched to say yes; everything is tiny (word data of a few hundred tokens, 1-layer
models, a handful of steps).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from lmlab.data import prepare
from lmlab.data.shards import TokenSplit
from lmlab.training.config import TrainConfig
from lmlab.training.trainer import train
from tests.bars import finished_bar, no_bar
from tests.test_tasks_finetune import make_base_run, numbers_file, sentiment_file

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

WORDS = "the cat sat on a mat and dog ran to big red house in sun".split()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("progress")
    rng = np.random.default_rng(0)
    text = "\n".join(" ".join(rng.choice(WORDS, size=int(rng.integers(3, 8)))) for _ in range(120)) + "\n"
    (root / "corpus.txt").write_text(text, encoding="utf-8")
    prepare(str(root / "corpus.txt"), root / "data", tokenizer="word", unit="sentence", read={"doc_sep": "line"},
            split=(0.8, 0.1, 0.1), clean={"dedup": False})
    return {"root": root, "data": root / "data", "base": make_base_run(root / "base"),
            "train": sentiment_file(root / "train.tsv", 40, 0), "test": sentiment_file(root / "test.tsv", 12, 1),
            "pairs": numbers_file(root / "pairs.txt", 40, 2)}


@pytest.fixture(scope="module")
def run(work):
    folder = work["root"] / "run"
    train(TrainConfig(data=str(work["data"]), shape="debug", batch_size=2, max_steps=2, warmup_steps=1,
                      eval_interval=2, eval_batches=1, log_interval=1,
                      model={"block_size": 16, "n_layer": 1}), folder, log=lambda m: None)
    return folder


@pytest.fixture(scope="module")
def classifier(work):
    from lmlab.tasks.finetune import finetune

    out = work["root"] / "classifier"
    finetune(work["base"], out, work["train"], config=_config("classify"), log=lambda m: None)
    return out


@pytest.fixture(scope="module")
def translator(work):
    from lmlab.tasks.finetune import finetune

    out = work["root"] / "translator"
    finetune(work["base"], out, work["pairs"], config=_config("generate", template="translate"),
             log=lambda m: None)
    return out


def _config(task, **fields):
    from lmlab.tasks.config import FinetuneConfig

    return FinetuneConfig(task=task, max_steps=2, batch_size=8, eval_interval=2, learning_rate=1e-3, **fields)


# ---------------------------------------------------------------- eval


def test_eval_shows_a_bar_over_the_windows_unless_quiet(run, cli, terminal):
    code, out, err = cli("eval", run, "--split", "valid", "--stride", 8, "--json")
    assert code == 0, err
    result = json.loads(out)
    windows = 1 + -(-(result["tokens"] - 16) // 8) if result["tokens"] > 16 else 1
    assert finished_bar(err, "eval", windows), err
    code, quiet_out, err = cli("eval", run, "--split", "valid", "--stride", 8, "--json", "--quiet")
    assert code == 0 and no_bar(err), err
    assert json.loads(quiet_out) == result


def test_eval_of_an_encoder_shows_its_bars(capsys):
    from lmlab.evaluation.masked import evaluate_mlm
    from lmlab.models.encoder import EncoderConfig, build_encoder
    from lmlab.tokenizers import HFTokenizer
    from lmlab.tokenizers.wordpiece import train_wordpiece

    text = " ".join(WORDS) + "."
    tokenizer = HFTokenizer(train_wordpiece([text] * 20, vocab_size=60, min_freq=1), kind="hf")
    model = build_encoder(EncoderConfig(vocab_size=tokenizer.vocab_size, block_size=8, n_layer=1, n_head=2,
                                        d_model=16, d_ff=32, dropout=0.0), seed=0)
    ids = np.array(tokenizer.encode(text) * 4 + [tokenizer.eos_id], np.int64)
    split = TokenSplit("text", [ids], tokenizer.eos_id, len(text) * 4, 1)
    capsys.readouterr()
    quiet = evaluate_mlm(model, tokenizer, split, batch_size=2, pppl_tokens=10)
    assert no_bar(capsys.readouterr().err)
    shown = evaluate_mlm(model, tokenizer, split, batch_size=2, pppl_tokens=10, progress=True)
    err = capsys.readouterr().err
    assert shown == quiet
    assert finished_bar(err, "eval masked", shown["rows"]), err
    assert finished_bar(err, "eval pseudo-perplexity", shown["pseudo_tokens"]), err


# ---------------------------------------------------------------- the n-gram build


def test_ngram_build_and_eval_count_the_tokens_with_a_bar(work, cli, terminal, tmp_path):
    from lmlab.data.shards import load_manifest

    tokens = load_manifest(work["data"])["splits"]["train"]["tokens"]
    args = ("train", "--model", "ngram", "--data", work["data"], "--set", "model.order=2",
            "--set", "model.discount_fallback=[0.5,1,1.5]")  # too little text to estimate the discounts
    code, out, err = cli(*args, "--out", tmp_path / "shown")
    assert code == 0, err
    assert finished_bar(err, "count", tokens), err
    assert "counting" in err  # the log line is still there
    code, quiet_out, err = cli(*args, "--out", tmp_path / "quiet", "--quiet")
    assert code == 0 and no_bar(err) and "counting" not in err, err
    assert json.loads(quiet_out) == json.loads(out)
    # lmlab eval of the n-gram run: a bar over the split's tokens
    valid = load_manifest(work["data"])["splits"]["valid"]["tokens"]
    code, out, err = cli("eval", tmp_path / "shown", "--split", "valid", "--json")
    assert code == 0, err
    assert finished_bar(err, "eval", valid), err
    code, quiet_out, err = cli("eval", tmp_path / "shown", "--split", "valid", "--json", "--quiet")
    assert code == 0 and no_bar(err), err
    assert json.loads(quiet_out) == json.loads(out)


# ---------------------------------------------------------------- finetune


def test_finetune_shows_a_bar_over_the_steps_unless_quiet(work, cli, terminal, tmp_path):
    args = ("finetune", work["base"], "--task", "classify", "--train", work["train"], "--max-steps", 3,
            "--batch-size", 8, "--eval-interval", 3)
    code, out, err = cli(*args, "--out", tmp_path / "shown")
    assert code == 0, err
    assert finished_bar(err, "finetune", 3), err
    assert "fine-tuning" in err and "step 3:" in err  # the log lines are still there
    assert json.loads(out)["steps"] == 3
    code, out, err = cli(*args, "--out", tmp_path / "quiet", "--quiet")
    assert code == 0 and no_bar(err) and not err.strip(), err
    assert json.loads(out)["steps"] == 3


# ---------------------------------------------------------------- evaluate-task, predict


def test_evaluate_task_shows_a_bar_over_the_test_texts_unless_quiet(work, classifier, cli, terminal, tmp_path):
    args = ("evaluate-task", classifier, "--test", work["test"], "--out", tmp_path / "m.json", "--json")
    code, out, err = cli(*args)
    assert code == 0, err
    assert finished_bar(err, "classify", 12), err
    code, quiet_out, err = cli(*args, "--quiet")
    assert code == 0 and no_bar(err), err
    shown, quiet = json.loads(out), json.loads(quiet_out)
    assert shown.pop("seconds") >= 0 and quiet.pop("seconds") >= 0
    assert quiet == shown and shown["accuracy"] >= 0


def test_predict_shows_a_bar_over_the_inputs_unless_quiet(classifier, translator, cli, terminal):
    texts = ("the plot was great", "a very dull film", "nice")
    code, out, err = cli("predict", classifier, *texts, "--json")
    assert code == 0, err
    assert finished_bar(err, "classify", 3), err
    code, quiet_out, err = cli("predict", classifier, *texts, "--json", "--quiet")
    assert code == 0 and no_bar(err), err
    assert quiet_out == out
    code, out, err = cli("predict", translator, "one two", "three", "--max-new-tokens", 2)
    assert code == 0, err
    assert finished_bar(err, "decode", 2), err
    code, quiet_out, err = cli("predict", translator, "one two", "three", "--max-new-tokens", 2, "--quiet")
    assert code == 0 and no_bar(err), err
    assert quiet_out == out


def test_progress_is_off_by_default_in_the_python_api(classifier, capsys):
    from lmlab.tasks.predict import predict

    capsys.readouterr()
    rows = predict(classifier, ["the plot was great"])
    assert no_bar(capsys.readouterr().err)
    assert predict(classifier, ["the plot was great"], progress=True) == rows
    assert finished_bar(capsys.readouterr().err, "classify", 1)


def test_cli_without_a_terminal_shows_no_bar(classifier, cli):
    code, _, err = cli("predict", classifier, "the plot was great")  # under pytest stderr is no terminal
    assert code == 0 and no_bar(err), err


# ---------------------------------------------------------------- augment


def test_augment_shows_a_bar_over_the_texts_unless_quiet(work, cli, terminal, tmp_path):
    args = ("augment", work["test"], "--ops", "rs=0.3,rd=0.2", "--copies", 2)
    code, out, err = cli(*args, tmp_path / "shown.tsv")
    assert code == 0, err
    assert finished_bar(err, "augment", 12), err
    code, quiet_out, err = cli(*args, tmp_path / "quiet.tsv", "--quiet")
    assert code == 0 and no_bar(err), err
    assert quiet_out.replace("quiet.tsv", "shown.tsv") == out
    assert (tmp_path / "quiet.tsv").read_text() == (tmp_path / "shown.tsv").read_text()
