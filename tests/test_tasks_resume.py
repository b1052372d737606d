"""Exact resume of ``lmlab finetune`` (lmlab.tasks.finetune): killed with SIGKILL, resumed, identical.

A fine-tune killed at some step and resumed with ``--resume`` must log the same per-step losses (the
log files are byte for byte the same), keep the same best weights and report the same metrics as one
never interrupted: a LoRA classifier (adapters and head) in a child process killed while it trains,
a fully fine-tuned classifier and a generation fine-tune stopped abruptly in-process. A resume that
would change the numbers is refused by the field's name; so is one with nothing to resume from.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

from lmlab.core.errors import ConfigError
from lmlab.core.io import read_json
from lmlab.runs.checkpoint import load_tensors
from tests.conftest import REPO
from tests.test_tasks_finetune import VOCAB, numbers_file, sentiment_file

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning", "ignore::FutureWarning")

# 10 steps an epoch; a validation every 10 steps and a resume checkpoint every 4.
CLASSIFY = ["--task", "classify", "--batch-size", "16", "--lr", "3e-3", "--max-steps", "80", "--eval-interval", "10",
            "--checkpoint-interval", "4", "--seed", "3"]
KILL_AT = 30  # the child is killed after this step (a few checkpoints in, well before the end)


def base_with_dropout(folder):
    """A pretrained-run folder as in test_tasks_finetune, with dropout: the random streams must resume too."""
    from lmlab.core.io import write_json
    from lmlab.models import registry
    from lmlab.runs.checkpoint import save_checkpoint
    from lmlab.tokenizers import WordTokenizer
    from lmlab.training.config import TrainConfig

    tokenizer = WordTokenizer(VOCAB)
    config = registry.model_config("transformer", "debug", tokenizer.vocab_size,
                                   {"block_size": 16, "n_layer": 1, "dropout": 0.1})
    folder.mkdir(parents=True)
    tokenizer.save(folder / "tokenizer.json")
    write_json(folder / "config.json", {"train": TrainConfig().to_dict(), "model": config.to_dict(), "data": None})
    save_checkpoint(folder, 1, registry.build_model(config, seed=0), None, {"val_loss": 1.0}, best=True)
    return folder


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """The base run and data; and the child fine-tune that is killed, started first, so that its start-up
    (importing TensorFlow: seconds) runs beside the in-process tests instead of before its own."""
    root = tmp_path_factory.mktemp("resume")
    work = {"root": root, "base": base_with_dropout(root / "base"),
            "train": sentiment_file(root / "train.tsv", 160, 0), "valid": sentiment_file(root / "valid.tsv", 32, 1),
            "pairs": numbers_file(root / "pairs.txt", 96, 2)}
    work["killed"] = root / "killed"
    work["child"] = start_and_kill(finetune_args(work, work["killed"], "--lora-rank", "4"), work["killed"])
    yield work
    thread, outcome = work["child"]
    thread.join(150)


def finetune_args(work, out, *extra):
    return ["finetune", work["base"], "--train", work["train"], "--valid", work["valid"], "--out", out, "--quiet",
            *CLASSIFY, *extra]


def logged_steps(log) -> int:
    if not log.exists():
        return 0
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines() if line.endswith("}")]
    return max(steps, default=0)


# The child kills itself with SIGKILL as it starts step ``at + 1``: a watcher polling the log from this process
# could be starved (two cores, the in-process tests beside it) until the child had finished.
SELF_KILLER = """
import os, signal, sys
from lmlab.training.steps import TaskStepper
at, train, calls = int(sys.argv[1]), TaskStepper.train, [0]
def train_or_die(self, *args):
    calls[0] += 1
    if calls[0] > at:
        os.kill(os.getpid(), signal.SIGKILL)
    return train(self, *args)
TaskStepper.train = train_or_die
from lmlab.cli import main
sys.exit(main(sys.argv[2:]))
"""


def start_and_kill(args, out, at: int = KILL_AT):
    """Start ``lmlab ARGS`` in a child process that is SIGKILLed as it starts step ``at + 1``, and a thread that
    waits for it (so the test can do other work meanwhile); join the thread with :func:`killed`."""
    child = subprocess.Popen([sys.executable, "-c", SELF_KILLER, str(at), *map(str, args)], cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    outcome = {}

    def watch():
        try:
            outcome["code"] = child.wait(timeout=120)
        except subprocess.TimeoutExpired:
            child.kill()
            outcome["code"] = child.wait()
        outcome["stderr"] = child.stderr.read().decode()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread, outcome


def killed(thread, outcome, out) -> int:
    thread.join(150)
    assert outcome.get("code") == -signal.SIGKILL, outcome
    assert not (out / "results.json").exists(), "killed after it finished: nothing was resumed"
    return logged_steps(out / "log.jsonl")


def assert_same_run(reference, resumed):
    """Byte-identical logs, the same results and the same best checkpoint's tensors."""
    assert (resumed / "log.jsonl").read_text() == (reference / "log.jsonl").read_text()
    strip = lambda r: {k: v for k, v in r.items() if k not in ("seconds", "out")}  # noqa: E731
    assert strip(read_json(resumed / "results.json")) == strip(read_json(reference / "results.json"))
    best = read_json(reference / "checkpoints" / "best.json")
    assert read_json(resumed / "checkpoints" / "best.json") == best
    files = sorted(p.name for p in (reference / "checkpoints" / best["checkpoint"]).glob("*.safetensors"))
    assert files == sorted(p.name for p in (resumed / "checkpoints" / best["checkpoint"]).glob("*.safetensors"))
    for name in files:
        a = load_tensors(reference / "checkpoints" / best["checkpoint"] / name)
        b = load_tensors(resumed / "checkpoints" / best["checkpoint"] / name)
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), name
    if (reference / "valid_metrics.json").exists():
        assert read_json(resumed / "valid_metrics.json") == read_json(reference / "valid_metrics.json")
    assert not (resumed / "resume").exists()  # a finished run keeps no resume state


def interrupt_at(monkeypatch, step: int):
    """Make the in-process fine-tune stop abruptly (as a kill would) when it starts step ``step``."""
    from lmlab.training.steps import TaskStepper

    calls = {"n": 0}
    train = TaskStepper.train

    def stop(self, *args):
        calls["n"] += 1
        if calls["n"] == step:
            raise KeyboardInterrupt
        return train(self, *args)

    monkeypatch.setattr(TaskStepper, "train", stop)
    return monkeypatch.undo


def test_an_interrupted_generation_fine_tune_resumes_with_identical_losses(work, monkeypatch):
    from lmlab.tasks.config import FinetuneConfig
    from lmlab.tasks.finetune import finetune

    config = FinetuneConfig(task="generate", template="translate", max_steps=30, batch_size=16, learning_rate=5e-3,
                            eval_interval=6, checkpoint_interval=5, seed=1)
    reference, resumed = work["root"] / "gen-reference", work["root"] / "gen-resumed"
    finetune(work["base"], reference, work["pairs"], None, config, log=lambda m: None)
    undo = interrupt_at(monkeypatch, 18)
    with pytest.raises(KeyboardInterrupt):
        finetune(work["base"], resumed, work["pairs"], None, config, log=lambda m: None)
    undo()
    assert read_json(resumed / "resume" / "checkpoints" / "last.json")["step"] == 15
    messages = []
    finetune(work["base"], resumed, work["pairs"], None, config, log=messages.append, resume=True)
    assert any("resumed" in m and "step 15" in m for m in messages)
    assert_same_run(reference, resumed)

    messages.clear()  # a finished run: nothing to do, said so
    result = finetune(work["base"], resumed, work["pairs"], None, config, log=messages.append, resume=True)
    assert result == read_json(resumed / "results.json") and "already finished" in messages[0]


def test_full_fine_tune_resumes_exactly_and_changes_that_alter_the_numbers_are_refused(work, cli, monkeypatch,
                                                                                         tmp_path):
    from lmlab.tasks.config import FinetuneConfig
    from lmlab.tasks.finetune import finetune

    config = FinetuneConfig(task="classify", max_steps=24, batch_size=16, learning_rate=3e-3, eval_interval=6,
                            checkpoint_interval=3)
    reference, out = tmp_path / "reference", tmp_path / "stopped"
    finetune(work["base"], reference, work["train"], work["valid"], config, log=lambda m: None)
    undo = interrupt_at(monkeypatch, 11)  # after the checkpoint of step 9
    with pytest.raises(KeyboardInterrupt):
        finetune(work["base"], out, work["train"], work["valid"], config, log=lambda m: None)
    undo()
    with pytest.raises(ConfigError, match="--resume"):  # a plain start into it points at --resume
        finetune(work["base"], out, work["train"], work["valid"], config, log=lambda m: None)
    changed = {"learning_rate": 1e-3, "batch_size": 8, "seed": 5, "max_steps": 20, "lora_rank": 2}
    for name, value in changed.items():
        with pytest.raises(ConfigError, match=f"{name}={value!r}.*started with {name}="):
            finetune(work["base"], out, work["train"], work["valid"],
                     FinetuneConfig(**{**config.to_dict(), name: value}), log=lambda m: None, resume=True)
    other = sentiment_file(tmp_path / "other.tsv", 160, 7)
    with pytest.raises(ConfigError, match="data files"):
        finetune(work["base"], out, other, work["valid"], config, log=lambda m: None, resume=True)
    code, _, err = cli("finetune", work["base"], "--task", "classify", "--train", work["train"], "--out", out,
                       "--max-steps", "24", "--batch-size", "16", "--lr", "3e-3", "--eval-interval", "6",
                       "--checkpoint-interval", "3", "--resume", "--quiet")
    assert code != 0 and "cannot resume" in err and "data files" in err, err  # no --valid: other data
    with pytest.raises(ConfigError, match="no fine-tune to resume here"):
        finetune(work["base"], tmp_path / "nothing", work["train"], work["valid"], config, resume=True)
    bare = tmp_path / "bare"  # stopped before its first checkpoint
    shutil.copytree(out, bare, ignore=shutil.ignore_patterns("resume"))
    with pytest.raises(ConfigError, match="no resume checkpoint yet.*--overwrite"):
        finetune(work["base"], bare, work["train"], work["valid"], config, resume=True)

    # The checkpoint interval changes no number: a resume may change it, and ends as the uninterrupted run.
    result = finetune(work["base"], out, work["train"], work["valid"],
                      FinetuneConfig(**{**config.to_dict(), "checkpoint_interval": 2}), log=lambda m: None,
                      resume=True)
    assert result["steps"] == 24
    assert_same_run(reference, out)


def test_a_killed_lora_classifier_fine_tune_resumes_with_identical_losses(work, cli):
    reference, resumed = work["root"] / "reference", work["killed"]
    code, _, err = cli(*finetune_args(work, reference, "--lora-rank", "4"))  # the uninterrupted run
    assert code == 0, err
    reached = killed(*work["child"], resumed)  # the child (started by the fixture) killed at its step
    checkpoint = read_json(resumed / "resume" / "checkpoints" / "last.json")["step"]
    assert reached == KILL_AT and checkpoint == 28  # the last checkpoint (every 4 steps) before the kill
    state = read_json(resumed / "resume" / "checkpoints" / f"step-{checkpoint:06d}" / "state.json")
    assert state["total"] == 80 and state["step"] == checkpoint
    # adapters, head and optimizer state: the frozen language model comes back from the base run
    saved = load_tensors(resumed / "resume" / "checkpoints" / f"step-{checkpoint:06d}" / "variables.safetensors")
    assert len(saved) == 2 + 2 * 2 + 3  # head kernel, bias; A, B of q and v; dropout's three random streams
    code, _, err = cli(*finetune_args(work, resumed, "--lora-rank", "4", "--resume"))
    assert code == 0, err
    assert_same_run(reference, resumed)
    assert {p.name for p in (resumed / "checkpoints").glob("*/*.safetensors")} == {"adapter.safetensors",
                                                                                  "head.safetensors"}


def test_the_command_line_shows_the_resume_flags(capsys):
    from lmlab.cli import main

    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    text = capsys.readouterr().out
    assert "--resume" in text and "--checkpoint-interval" in text
