"""Readers of a run racing its writer: checkpoint rotation must never fail a read.

A real ``lmlab train`` checkpoints after every step with ``keep_checkpoints=1`` (so each
checkpoint deletes the one before) while this process reads the run in a loop, as
``lmlab generate`` (:func:`lmlab.runs.load.load_run`) and ``lmlab eval``
(:func:`lmlab.evaluation.perplexity.evaluate_run`) do. Every read must succeed; the test
also asserts that enough reads really overlapped the writer, and that some of them saw the
pointer move while they read, so that a pass means the race was run, not avoided.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmlab.core.errors import DataError
from lmlab.data import prepare
from lmlab.evaluation.perplexity import evaluate_run
from lmlab.runs import checkpoint
from lmlab.runs.load import load_run
from tests.conftest import REPO, data_path
from tests.fakes import Holder

MAX_READS = 60  # bounded: at most this many reads ...
MAX_SECONDS = 60  # ... and this long reading
MIN_OVERLAPPED = 20  # reads that ran while the writer was training and checkpointing
READ_DELAY_S = 0.01  # each safetensors file takes this long to read, as a larger model's would (a few ms here)
WRITER = dict(shape="debug", batch_size=2, max_steps=100_000, max_seconds=90, warmup_steps=1, eval_interval=1,
              eval_batches=1, log_interval=1000, keep_checkpoints=1, learning_rate=3e-3, min_learning_rate=3e-4)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("race")
    text = data_path("tinyshakespeare", "input.txt").read_bytes()[:40_000]
    (folder / "corpus.txt").write_bytes(text)
    prepare(str(folder / "corpus.txt"), folder / "data", tokenizer="char", split=(0.9, 0.1, 0.0),
            split_order="ordered", clean={"dedup": False})
    (folder / "eval.txt").write_bytes(text[:600])
    return folder


def pointer(run: Path) -> str | None:
    try:
        return json.loads((run / "checkpoints" / "last.json").read_text())["checkpoint"]
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def test_readers_survive_checkpoint_rotation(tiny_data, tmp_path, monkeypatch):
    import safetensors.numpy

    # The writer checkpoints every ~30 ms here; the tiny model's weights read in a moment. A model worth
    # reading takes longer: each read of a tensor file is made to take a third of a checkpoint's time.
    real_load_file = safetensors.numpy.load_file

    def slow_load_file(*args, **kwargs):
        time.sleep(READ_DELAY_S)
        return real_load_file(*args, **kwargs)

    monkeypatch.setattr(safetensors.numpy, "load_file", slow_load_file)
    attempts = [0]  # checkpoint reads, first tries and retries after a rotation together
    real_read = checkpoint.read_checkpoint

    def counted_read(path):
        attempts[0] += 1
        return real_read(path)

    monkeypatch.setattr(checkpoint, "read_checkpoint", counted_read)
    run = tmp_path / "run"
    command = [sys.executable, "-m", "lmlab", "train", "--data", str(tiny_data / "data"), "--out", str(run), "--quiet"]
    for key, value in WRITER.items():
        command += ["--set", f"{key}={value}"]
    writer = subprocess.Popen(command, cwd=REPO, env={**os.environ, "KERAS_BACKEND": "tensorflow"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    failures, overlapped, moved, reads = [], 0, 0, 0
    try:
        began = time.perf_counter()
        while pointer(run) is None:  # the first checkpoint: the run is readable from here on
            assert writer.poll() is None, writer.stderr.read().decode()[-2000:]
            assert time.perf_counter() - began < 240, "the writer wrote no checkpoint in 240 s"
            time.sleep(0.05)
        began = time.perf_counter()
        while reads < MAX_READS and time.perf_counter() - began < MAX_SECONDS and writer.poll() is None:
            before = pointer(run)
            try:
                if reads % 6 == 5:  # lmlab eval's loader, on a short text so a read stays short
                    evaluate_run(run, text_file=tiny_data / "eval.txt", checkpoint="last", batch_size=2)
                else:  # lmlab generate's (and export's, finetune's): best, then last, as the CLI's options say
                    load_run(run, "last" if reads % 2 else "best")
            except Exception as error:  # noqa: BLE001 - every failed read is counted, whatever it raised
                failures.append(f"{type(error).__name__}: {error}")
            reads += 1
            if writer.poll() is None:
                overlapped += 1
                moved += pointer(run) != before
    finally:
        writer.terminate()
        writer.wait(timeout=60)
        writer.stderr.close()
    last = pointer(run)
    print(f"\ncheckpoint race: {reads} reads, {overlapped} overlapped the writer, {moved} saw the pointer move "
          f"while reading, {len(failures)} failed, {attempts[0] - reads} read again after a rotation; the writer reached "
          f"{last} in {time.perf_counter() - began:.1f} s")
    assert failures == [], f"{len(failures)} of {reads} reads failed: {failures[:3]}"
    assert overlapped >= MIN_OVERLAPPED, (reads, overlapped)
    assert moved >= MIN_OVERLAPPED // 2, (reads, overlapped, moved)
    steps = [p for p in (run / "checkpoints").glob("step-*") if ".tmp" not in p.name]
    assert len(steps) <= 4, sorted(p.name for p in steps)  # keep 1, plus what the pointers name and named


# ---------------------------------------------------------------- the two halves, one at a time


def saved_steps(run: Path) -> list[int]:
    return sorted(int(p.name[5:]) for p in (run / "checkpoints").glob("step-*"))


def test_rotation_keeps_what_the_pointers_named_a_moment_ago(tmp_path):
    for step, best in ((1, True), (2, True), (3, False), (4, False), (5, True), (6, False)):
        checkpoint.save_checkpoint(tmp_path, step, Holder(step, "model"), None, {"val_loss": 1.0}, best=best, keep=1)
    # After step 6: 6 (newest, last), 5 (best and the last before), nothing older; 1-4 went as they aged.
    assert saved_steps(tmp_path) == [5, 6]
    checkpoint.save_checkpoint(tmp_path, 7, Holder(7, "model"), None, {"val_loss": 1.0}, keep=1)
    assert saved_steps(tmp_path) == [5, 6, 7]  # 6 was last a moment ago; 5 is still best
    checkpoint.save_checkpoint(tmp_path, 8, Holder(8, "model"), None, {"val_loss": 1.0}, best=True, keep=1)
    assert saved_steps(tmp_path) == [5, 7, 8]  # 5 was best a moment ago, 7 was last


def test_a_read_whose_checkpoint_rotates_away_reads_the_newer_one(tmp_path):
    checkpoint.save_checkpoint(tmp_path, 1, Holder(1, "model"), None, {}, keep=1)
    tried = []

    def read_racing_a_writer(path):  # the writer checkpoints twice between the pointer and the files
        tried.append(path.name)
        if len(tried) == 1:
            for step in (2, 3):
                checkpoint.save_checkpoint(tmp_path, step, Holder(step, "model"), None, {}, keep=1)
            assert not path.exists()
        return checkpoint.read_checkpoint(path)

    path, (state, _) = checkpoint.read_pointed(tmp_path, "last", read=read_racing_a_writer)
    assert tried == ["step-000001", "step-000003"] and path.name == "step-000003" and state["step"] == 3
    # A checkpoint damaged while its pointer still names it is an error at once, not retried.
    (path / "model.safetensors").write_bytes(b"not safetensors")
    tried.clear()
    with pytest.raises(DataError, match="not a readable safetensors file"):
        checkpoint.read_pointed(tmp_path, "last", read=lambda p: tried.append(p) or checkpoint.read_checkpoint(p))
    assert len(tried) == 1
    # A reader slower than READ_ATTEMPTS checkpoints is told so in one line.

    def always_rotated(path):
        step = int(path.name[5:]) + 1
        checkpoint.save_checkpoint(tmp_path, step, Holder(step, "model"), None, {}, keep=1)
        checkpoint.save_checkpoint(tmp_path, step + 1, Holder(step, "model"), None, {}, keep=1)
        return checkpoint.read_checkpoint(path)

    with pytest.raises(DataError, match=f"{checkpoint.READ_ATTEMPTS} checkpoints in a row were rotated away"):
        checkpoint.read_pointed(tmp_path, "last", read=always_rotated)
    assert checkpoint.read_pointed(tmp_path, "best") is None  # no best yet: nothing, or the fallback's
    assert checkpoint.read_pointed(tmp_path, "best", fallback="last")[0] == checkpoint.find_checkpoint(tmp_path)
