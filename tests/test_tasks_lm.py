"""Continued pre-training on plain text (``lmlab finetune --task lm``, lmlab.tasks.lm).

A full fine-tune of a tiny random decoder on counting text must score the held-out text better than the base
(both measured the way ``lmlab eval --text`` measures); LoRA must change only the adapters, save only them,
report through ``evaluate-task`` what ``lmlab.load(folder).perplexity`` reports, and merge exactly; an encoder
is refused naming the task; an interrupted run resumed gives the same log byte for byte.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from lmlab.core.errors import ConfigError
from lmlab.core.io import read_json, sha256_file
from lmlab.tasks.config import FinetuneConfig
from tests.test_tasks_finetune import NUMBERS, make_base_run
from tests.test_tasks_resume import base_with_dropout, interrupt_at

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning", "ignore::FutureWarning")

WORDS = list(NUMBERS)  # one two three four five: the text counts round them


def quiet(*_):
    pass


def counting_text(path, documents: int, seed: int):
    """Documents (blank-line separated, a few lines each) that count one..five round from a random start."""
    rng = np.random.default_rng(seed)
    blocks = []
    for _ in range(documents):
        start, lines = int(rng.integers(len(WORDS))), []
        for _ in range(int(rng.integers(1, 4))):
            n = int(rng.integers(4, 9))
            lines.append(" ".join(WORDS[(start + i) % len(WORDS)] for i in range(n)))
            start += n
        blocks.append("\n".join(lines))
    path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    return {"root": root, "base": make_base_run(root / "base"), "train": counting_text(root / "train.txt", 60, 0),
            "valid": counting_text(root / "valid.txt", 12, 1)}


def test_continued_pretraining_lowers_the_held_out_loss(work):
    from lmlab.evaluation.perplexity import evaluate_run
    from lmlab.tasks.evaluate import evaluate_task
    from lmlab.tasks.finetune import finetune

    out = work["root"] / "full"
    config = FinetuneConfig(task="lm", max_steps=40, batch_size=8, learning_rate=5e-3, eval_interval=10, seed=0)
    result = finetune(work["base"], out, work["train"], work["valid"], config, log=quiet)
    base = evaluate_run(work["base"], text_file=work["valid"])  # lmlab eval --text, on the base run
    tuned = evaluate_task(out, work["valid"])  # the same measurement on the fine-tuned folder
    saved = read_json(out / "config.json")
    assert saved["task"] == "lm" and saved["lm"]["doc_sep"] == "blank" and saved["lm"]["valid_documents"] == 12
    assert tuned["task"] == "lm" and tuned["tokens"] == base["tokens"] and tuned["utf8_bytes"] == base["utf8_bytes"]
    assert tuned["loss"] < 0.5 * base["loss"], (tuned["loss"], base["loss"])
    assert result["val_loss"] < 0.5 * base["loss"]
    assert result["val_score"] == -result["val_loss"]
    assert result["val_perplexity"] == pytest.approx(np.exp(result["val_loss"]))
    assert 0 < result["val_bits_per_byte"] < base["bits_per_byte"]
    print(f"held-out loss: base {base['loss']:.4f}, fine-tuned {tuned['loss']:.4f} (val_loss {result['val_loss']:.4f})")


def test_held_out_documents_are_the_last_ones(work, tmp_path):
    from lmlab.tasks.lm import LanguageModelTask, read_documents
    from lmlab.tokenizers import load_tokenizer

    tokenizer = load_tokenizer(work["base"] / "tokenizer.json")
    task = LanguageModelTask(FinetuneConfig(task="lm", valid_fraction=0.25), tokenizer, 16, {}, quiet)
    task.read(work["train"], None)
    documents = read_documents(work["train"])
    assert (task.train_data.documents, task.valid_data.documents) == (45, 15)
    expected = [i for d in documents[45:] for i in tokenizer.encode(d) + [tokenizer.eos_id]]
    assert task.valid_data.tokens.tolist() == expected
    first = [b.inputs[0].copy() for b in task.train_data.batches(4, shuffle=True, seed=3, epoch=1)]
    again = [b.inputs[0] for b in task.train_data.batches(4, shuffle=True, seed=3, epoch=1)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))  # a pure function of (seed, epoch)
    single = tmp_path / "one.txt"
    single.write_text("one two three\nfour five\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="--doc-sep line"):
        task.read(single, None)


def test_lora_trains_only_adapters_matches_load_and_merges_exactly(work, cli):
    import lmlab
    from lmlab.models.lora import lora_layers
    from lmlab.runs.load import load_run
    from lmlab.tasks.folder import load_finetuned

    base_file = work["base"] / "checkpoints" / read_json(work["base"] / "checkpoints" / "best.json")["checkpoint"]
    before_sha = {p.name: sha256_file(p) for p in base_file.iterdir()}
    out = work["root"] / "lora"
    code, stdout, err = cli("finetune", work["base"], "--task", "lm", "--train", work["train"], "--out", out,
                            "--quiet", "--max-steps", "12", "--batch-size", "8", "--lr", "1e-2", "--eval-interval", "6",
                            "--lora-rank", "2", "--lora-targets", "q,v,o,fc")
    assert code == 0, err
    result = json.loads(stdout.strip().splitlines()[-1])
    best = out / "checkpoints" / read_json(out / "checkpoints" / "best.json")["checkpoint"]
    assert {p.name for p in best.iterdir()} == {"adapter.safetensors", "state.json"}  # only the adapters
    assert {p.name: sha256_file(p) for p in base_file.iterdir()} == before_sha
    saved = read_json(out / "config.json")
    assert saved["parameters"]["trainable"] == saved["lora"]["trainable"]  # no head: the adapters alone
    assert saved["lm"]["held_out"].startswith("the last 6 documents")

    tuned = load_finetuned(out)
    base_run = load_run(work["base"])
    before = {v.path.split("/", 1)[1]: v.numpy() for v in base_run.model.weights}
    after = {v.path.split("/", 1)[1]: v.numpy() for v in tuned.lm.weights}
    assert [k for k in before if k not in after or before[k].tobytes() != after[k].tobytes()] == []
    assert all(np.abs(layer.lora_kernel_b.numpy()).max() > 0 for layer in lora_layers(tuned.lm).values())

    code, stdout, err = cli("evaluate-task", out, "--test", work["valid"], "--task", "lm", "--json")
    assert code == 0, err
    scored = json.loads(stdout)
    text = work["valid"].read_text(encoding="utf-8")
    loaded = lmlab.load(out).perplexity(text)
    assert loaded["loss"] == scored["loss"] and loaded["perplexity"] == scored["perplexity"]
    assert loaded["bits_per_byte"] == scored["bits_per_byte"]
    assert np.isfinite(result["val_loss"])
    print(f"LoRA: evaluate-task loss {scored['loss']:.6f} = lmlab.load perplexity loss {loaded['loss']:.6f}, "
          f"val_loss {result['val_loss']:.4f}")

    merged_folder = work["root"] / "lora-merged"
    code, stdout, err = cli("lora-merge", out, "--out", merged_folder)
    assert code == 0, err
    merged = load_finetuned(merged_folder)
    assert not lora_layers(merged.lm)
    ids = np.array([[2, 3, 4, 5, 6, 7, 8, 9]], np.int32)
    assert np.abs(np.asarray(merged.lm(ids)) - np.asarray(tuned.lm(ids))).max() < 1e-5
    assert np.abs(np.asarray(merged.lm(ids)) - np.asarray(base_run.model(ids))).max() > 1e-3
    assert abs(lmlab.load(merged_folder).perplexity(text)["loss"] - scored["loss"]) < 1e-4

    code, stdout, err = cli("lora-export", out, "--out", work["root"] / "lora-peft")
    assert code == 0, err
    assert "note" not in json.loads(stdout)  # the language model is the whole of it: no head left behind
    code, stdout, err = cli("predict", out, "one two three", "--max-new-tokens", "4", "--json")
    assert code == 0, err
    assert json.loads(stdout)[0]["prompt"] == "one two three"


def test_an_encoder_is_refused_naming_the_task(work):
    from lmlab.tasks.finetune import finetune

    encoder = make_base_run(work["root"] / "encoder", family="encoder")
    with pytest.raises(ConfigError, match=r"--task lm .*lmlab train --model encoder"):
        finetune(encoder, work["root"] / "encoder-lm", work["train"], None, FinetuneConfig(task="lm"), log=quiet)
    assert not (work["root"] / "encoder-lm").exists()


def test_an_interrupted_lm_fine_tune_resumes_with_an_identical_log(work, monkeypatch):
    from lmlab.tasks.finetune import finetune

    base = base_with_dropout(work["root"] / "base-dropout")
    config = FinetuneConfig(task="lm", max_steps=20, batch_size=8, learning_rate=3e-3, eval_interval=6,
                            checkpoint_interval=5, seed=2)
    reference, resumed = work["root"] / "lm-reference", work["root"] / "lm-resumed"
    expected = finetune(base, reference, work["train"], None, config, log=quiet)
    undo = interrupt_at(monkeypatch, 13)
    with pytest.raises(KeyboardInterrupt):
        finetune(base, resumed, work["train"], None, config, log=quiet)
    undo()
    assert read_json(resumed / "resume" / "checkpoints" / "last.json")["step"] == 10
    got = finetune(base, resumed, work["train"], None, config, log=quiet, resume=True)
    assert (resumed / "log.jsonl").read_bytes() == (reference / "log.jsonl").read_bytes()
    assert {k: v for k, v in got.items() if k not in ("seconds", "out")} == \
        {k: v for k, v in expected.items() if k not in ("seconds", "out")}
    assert not (resumed / "resume").exists()
