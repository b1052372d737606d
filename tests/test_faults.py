"""Fault injection for ``prepare`` and ``train``: SIGKILL at random moments, failing writes, poisoned batches.

The figures these tests print (run with ``-s``) are the ones in ``docs/reliability.md``.
``LMLAB_SOAK=N`` turns the kill tests into a soak: N kills of ``prepare``, N of
``train`` on JAX and N // 15 (at least 2) of ``python -m lmlab train`` on
TensorFlow (2 without a soak, with a shorter run: each TensorFlow child pays its
start-up and compilation, some 10 s). ``LMLAB_FAULT_SEED`` changes the random moments; ``LMLAB_FAULT_REPORT=FILE``
appends each test's figures to FILE as JSON lines.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lmlab.data import load_manifest, open_split, verify
from lmlab.core.errors import DataError, LmlabError
from lmlab.core.io import sha256_file
from tests.conftest import REPO, data_path
from tests.fakes import Holder
from tests.forkserver import ForkServer

SOAK = int(os.environ.get("LMLAB_SOAK", "0"))
SEED = int(os.environ.get("LMLAB_FAULT_SEED", "9"))
PREPARE_KILLS = SOAK or 16
TRAIN_KILLS = SOAK or 5
TENSORFLOW_KILLS = max(2, SOAK // 15) if SOAK else 2


def report(test: str, **figures) -> None:
    print(f"\n{test}: {json.dumps(figures)}")
    if os.environ.get("LMLAB_FAULT_REPORT"):
        with open(os.environ["LMLAB_FAULT_REPORT"], "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"test": test, "soak": SOAK, "seed": SEED, **figures}) + "\n")


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- prepare, killed at random moments


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A small real corpus: two files of Tiny Shakespeare, one of Tang poems as JSONL."""
    folder = tmp_path_factory.mktemp("corpus")
    text = data_path("tinyshakespeare", "input.txt").read_bytes()
    (folder / "a.txt").write_bytes(text[:60_000])
    (folder / "b.txt").write_bytes(text[500_000:540_000])
    poems = json.loads(data_path("chinese-poetry", "tangshi_300.json").read_text(encoding="utf-8"))[:150]
    (folder / "c.jsonl").write_text("".join(json.dumps({"text": p["paragraphs"]}, ensure_ascii=False) + "\n"
                                            for p in poems), encoding="utf-8")
    return folder


def prepare_args(corpus: Path, out: Path, tokenizer: str, workers: int) -> list[str]:
    shard_tokens = "800" if tokenizer == "word" else "3000"  # some 20 shards or more, whatever the tokenizer
    return [sys.executable, "-m", "lmlab", "prepare", str(corpus), "--tokenizer", tokenizer, "--vocab-size", "400",
            "--shard-tokens", shard_tokens, "--split", "0.8,0.1,0.1", "--workers", str(workers), "--quiet", "--out",
            str(out)]


def check_interrupted_prepare(out: Path, reference: Path) -> str:
    """What a kill left must never pass for data; what it kept must be exactly the reference's. Returns the phase."""
    if not out.exists():
        return "before any output"
    if (out / "manifest.json").exists():  # finished before the kill: complete, checked and exact
        assert verify(out) == []
        assert {k: v for k, v in files_of(out).items() if not k.startswith(".prepare/")} == files_of(reference)
        return "after the manifest"
    with pytest.raises(DataError, match="did not finish|not a prepared data folder"):
        load_manifest(out)
    with pytest.raises(DataError):
        open_split(out, "train")
    temporaries = list(out.glob("*.tmp")) + list(out.glob(".prepare/*.tmp"))
    state_path = out / ".prepare" / "state.json"
    if not state_path.exists():
        return "during a write" if temporaries else "before the first checkpoint"
    state = json.loads(state_path.read_text())  # written atomically: always whole
    kept = [entry for entries in state["shards"].values() for entry in entries]
    for entry in kept:  # shards a resume keeps: whole, as recorded, and the reference's bytes
        data = (out / entry["file"]).read_bytes()
        assert sha256_file(out / entry["file"]) == entry["sha256"]
        assert data == (reference / entry["file"]).read_bytes(), entry["file"]
    if temporaries:
        return "during a write"
    return "shards kept" if kept else "before the first shard"


@pytest.mark.parametrize("tokenizer,workers", [("char", 1), ("bpe", 1)] + ([("word", 2)] if SOAK else []))
def test_prepare_killed_at_random_moments_resumes_byte_identical(corpus, tmp_path, tokenizer, workers):
    kills = max(PREPARE_KILLS // (3 if SOAK else 2), 1)
    reference = tmp_path / "reference"
    start = time.perf_counter()
    subprocess.run(prepare_args(corpus, reference, tokenizer, workers), check=True, cwd=REPO, capture_output=True)
    duration = time.perf_counter() - start
    manifest = load_manifest(reference)
    assert sum(len(s["shards"]) for s in manifest["splits"].values()) >= 20  # many checkpoints to land between

    rng = random.Random(f"{SEED}-prepare-{tokenizer}")
    phases: dict[str, int] = {}
    out, chains, runs = tmp_path / "chain-0", 1, 0
    while sum(phases.values()) < kills:
        process = subprocess.Popen(prepare_args(corpus, out, tokenizer, workers), cwd=REPO, start_new_session=True,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        runs += 1
        try:
            process.wait(timeout=rng.uniform(0.0, duration))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # its worker processes too, as a power cut would
        code = process.wait()
        stderr = process.stderr.read().decode()
        process.stderr.close()
        if code == 0:  # it finished first: the result must be exact; start another chain
            assert files_of(out) == files_of(reference)
            out, chains = tmp_path / f"chain-{chains}", chains + 1
            continue
        assert code == -signal.SIGKILL, stderr
        phase = check_interrupted_prepare(out, reference)
        phases[phase] = phases.get(phase, 0) + 1
    subprocess.run(prepare_args(corpus, out, tokenizer, workers), check=True, cwd=REPO, capture_output=True)
    assert files_of(out) == files_of(reference)  # byte-identical, .prepare gone, no temporaries left
    report(f"prepare kills ({tokenizer}, {workers} worker{'s' if workers > 1 else ''})", kills=sum(phases.values()),
           runs=runs + 1, chains=chains, phases=phases, uninterrupted_s=round(duration, 2), data_lost=0)


# ---------------------------------------------------------------- train, killed at random moments

# A checkpoint after every step, so kills land in checkpoint writes too. The runs skip bad batches and
# three batches are poisoned, so exact resume is checked across skipped batches as well.
TRAIN_SETTINGS = dict(shape="debug", batch_size=4, max_steps=12, warmup_steps=4, eval_interval=1, eval_batches=1,
                      log_interval=1, keep_checkpoints=100, learning_rate=3e-3, min_learning_rate=3e-4)
POISON = {"LMLAB_TEST_POISON_STEPS": "7:nan,9:inf,11:1e30"}  # 1e30 × the loss overflows the gradient norm
BAD_STEPS = [7, 9, 11]


@pytest.fixture(scope="module")
def tiny_data(corpus, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    subprocess.run(prepare_args(corpus, folder, "char", 1)[:-2] + ["--out", str(folder), "--shard-tokens",
                                                                     "1000000"], check=True, cwd=REPO,
                   capture_output=True)
    return folder


@pytest.fixture(scope="module")
def server(request) -> ForkServer:
    """Children with Keras on JAX already imported; compiled steps cached in .pytest_cache across runs."""
    return ForkServer.shared(request.config.cache.mkdir("lmlab-jax-compilation"))


def train_args(data: Path, out: Path, *extra, **settings) -> list[str]:
    args = ["train", "--data", str(data), "--quiet", "--out", str(out), *extra]
    for key, value in (TRAIN_SETTINGS | settings).items():
        args += ["--set", f"{key}={value}"]
    return args


@pytest.fixture(scope="module")
def reference_run(server, tiny_data, tmp_path_factory) -> tuple[Path, float]:
    """An uninterrupted run (skipping the poisoned batches) and how long one takes."""
    folder = tmp_path_factory.mktemp("reference")
    start = time.perf_counter()
    assert server.run(train_args(tiny_data, folder / "run", "--skip-bad-batches"), folder / "out", POISON) == 0
    return folder / "run", time.perf_counter() - start


def read_losses(run: Path) -> dict[int, float]:
    losses = {}
    for line in (run / "log.jsonl").read_text().splitlines():
        record = json.loads(line)  # a kill never leaves half a line
        if "loss" in record:
            losses[record["step"]] = record["loss"]  # a resumed run rewrites the steps after its checkpoint
    return losses


def skipped_steps(run: Path) -> list[int]:
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return sorted({record["step"] for record in records if record.get("skipped_batch")})


def assert_same_losses(run: Path, reference: Path) -> None:
    losses, expected = read_losses(run), read_losses(reference)
    assert sorted(losses) == sorted(expected)
    for step, loss in expected.items():
        assert losses[step] == pytest.approx(loss, abs=1e-5), step


def load_checkpoint_files(path: Path) -> tuple[dict, dict, dict]:
    from safetensors.numpy import load_file

    return (load_file(path / "model.safetensors"), load_file(path / "optimizer.safetensors"),
            json.loads((path / "state.json").read_text()))


def check_interrupted_run(run: Path, reference: Path) -> str:
    """Every checkpoint a pointer names is whole and equals the uninterrupted run's at that step."""
    from lmlab.runs.checkpoint import find_checkpoint

    if not (run / "checkpoints").exists():
        return "before the first checkpoint"
    for which in ("last", "best"):
        path = find_checkpoint(run, which)
        if path is None:
            continue
        model, optimizer, state = load_checkpoint_files(path)
        model_ref, optimizer_ref, state_ref = load_checkpoint_files(reference / "checkpoints" / path.name)
        assert state["step"] == state_ref["step"] and state["val_loss"] == pytest.approx(state_ref["val_loss"],
                                                                                          abs=1e-5)
        for tensors, expected in ((model, model_ref), (optimizer, optimizer_ref)):
            assert sorted(tensors) == sorted(expected)
            for name in tensors:
                np.testing.assert_allclose(tensors[name], expected[name], rtol=0, atol=1e-5, err_msg=name)
    read_losses(run)
    leftovers = list((run / "checkpoints").glob("*.tmp*")) + list((run / "checkpoints").glob("step-*/*.tmp"))
    return "during a checkpoint write" if leftovers else "between checkpoints"


def log_size(run: Path) -> int:
    return (run / "log.jsonl").stat().st_size if (run / "log.jsonl").exists() else 0


def loop_seconds(run: Path, after_step: int = 0) -> float:
    """Seconds the training loop took after its first step (whose time is mostly compilation), or after
    ``after_step``'s checkpoint (the validation step compiles before it)."""
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    times = [r["elapsed_s"] for r in records if r.get("elapsed_s") is not None and r["step"] > after_step]
    return max(times) - min(times)


def checkpointed_step(run: Path) -> int:
    pointer = run / "checkpoints" / "last.json"
    return json.loads(pointer.read_text())["step"] if pointer.exists() else 0


def steps_left(run: Path, max_steps: int = TRAIN_SETTINGS["max_steps"]) -> float:
    return max(max_steps - checkpointed_step(run), 1) / max_steps


def kill_chain(start, wait, kill, check, finish, progress, left, kills: int, duration: float, loop: float, rng,
               anywhere_share: float = 0.25):
    """Start, kill at a random moment, check, resume ... until ``kills`` kills; then finish.

    ``start(fresh)`` starts a new run (the same command again if it never got as far as
    writing its config, as a user would) or resumes one. ``anywhere_share`` of the kills
    (a quarter) fall anywhere in a run's ``duration`` (start-up included); the rest once the
    child has made progress (``progress()`` grew: it logged a step, say), anywhere in what
    is ``left()`` (a fraction) of the ``loop`` time after that.
    """
    phases: dict[str, int] = {}
    fresh, children = True, 0
    while sum(phases.values()) < kills:
        began = time.perf_counter()
        before, fraction = (progress(), left()) if not fresh else (0, 1.0)
        handle = start(fresh)
        children += 1
        anywhere = rng.random() < anywhere_share
        if anywhere:
            time.sleep(rng.uniform(0.0, duration))
        else:
            while progress() == before and time.perf_counter() - began < 2 * duration:
                time.sleep(0.01)
            delay = rng.uniform(0.0, loop * fraction)
            time.sleep(delay)
        kill(handle)
        code = wait(handle)
        if code == 0:  # finished before the kill: check it, begin again in a fresh folder
            if anywhere:
                duration = min(duration, time.perf_counter() - began)
            else:
                loop = min(loop, delay / fraction)
            finish(fresh_run=True)
            fresh = True
            continue
        assert code == -signal.SIGKILL, code
        phase = check()
        phases[phase] = phases.get(phase, 0) + 1
        fresh = False
    finish(fresh_run=False)
    return phases, children


def test_train_killed_at_random_moments_resumes_with_identical_losses(server, tiny_data, reference_run, tmp_path):
    reference, duration = reference_run
    assert sorted(read_losses(reference)) == [s for s in range(1, TRAIN_SETTINGS["max_steps"] + 1)
                                              if s not in BAD_STEPS]
    run = {"folder": tmp_path / "run-0", "count": 0}

    def start_child(fresh):
        if fresh:
            run["count"] += 1
            run["folder"] = tmp_path / f"run-{run['count']}"
        if fresh or not (run["folder"] / "config.json").exists():
            args = train_args(tiny_data, run["folder"], "--skip-bad-batches")
        else:
            args = ["train", "--resume", run["folder"], "--quiet"]
        return server.start(args, tmp_path / "child.out", POISON)

    def finish(fresh_run):
        if not fresh_run:
            assert server.run(["train", "--resume", run["folder"], "--quiet"], tmp_path / "child.out", POISON) == 0
        assert_same_losses(run["folder"], reference)
        assert skipped_steps(run["folder"]) == BAD_STEPS
        check_interrupted_run(run["folder"], reference)

    phases, children = kill_chain(start_child, server.wait, lambda pid: os.kill(pid, signal.SIGKILL),
                                  lambda: check_interrupted_run(run["folder"], reference), finish,
                                  lambda: log_size(run["folder"]), lambda: steps_left(run["folder"]), TRAIN_KILLS,
                                  duration, loop_seconds(reference), random.Random(f"{SEED}-train"))
    report("train kills (JAX, forked lmlab CLI)", kills=sum(phases.values()), runs=children + 1,
           fresh_runs=run["count"], phases=phases, uninterrupted_s=round(duration, 2), max_loss_difference="<1e-5",
           data_lost=0)


def test_train_subprocess_on_tensorflow_killed_at_random_moments(tiny_data, tmp_path):
    """As the JAX test checks, on TensorFlow (XLA, as users get it) through ``python -m lmlab train``: losses,
    skipped batches and every checkpoint a pointer names equal an uninterrupted run's. A checkpoint every
    other step, so a resume also replays steps after its checkpoint."""
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", **POISON}
    max_steps = 20 if SOAK else TRAIN_SETTINGS["max_steps"]  # CI: 2 kills, some 60 s in all

    def args(out):
        return [sys.executable, "-m", "lmlab"] + train_args(tiny_data, out, "--skip-bad-batches", eval_interval=2,
                                                            max_steps=max_steps)

    reference = tmp_path / "reference"
    start = time.perf_counter()
    subprocess.run(args(reference), check=True, cwd=REPO, env=env, capture_output=True)
    duration = time.perf_counter() - start
    run = {"folder": tmp_path / "run-0", "count": 0}

    def start_child(fresh):
        if fresh:
            run["count"] += 1
            run["folder"] = tmp_path / f"run-{run['count']}"
        resume = [sys.executable, "-m", "lmlab", "train", "--resume", str(run["folder"]), "--quiet"]
        command = args(run["folder"]) if fresh or not (run["folder"] / "config.json").exists() else resume
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def finish(fresh_run):
        if not fresh_run:
            subprocess.run([sys.executable, "-m", "lmlab", "train", "--resume", str(run["folder"]), "--quiet"],
                           check=True, cwd=REPO, env=env, capture_output=True)
        assert_same_losses(run["folder"], reference)
        assert skipped_steps(run["folder"]) == BAD_STEPS
        check_interrupted_run(run["folder"], reference)

    assert skipped_steps(reference) == BAD_STEPS
    # CI's two kills both fall after the child's first new checkpoint, in the rest of its loop, so each resumes
    # from a checkpoint (kills during start-up are the JAX test's; they do not depend on the backend).
    progress = (lambda: log_size(run["folder"])) if SOAK else (lambda: checkpointed_step(run["folder"]))
    phases, children = kill_chain(start_child, lambda p: p.wait(), lambda p: p.send_signal(signal.SIGKILL),
                                  lambda: check_interrupted_run(run["folder"], reference), finish, progress,
                                  lambda: steps_left(run["folder"], max_steps), TENSORFLOW_KILLS, duration,
                                  loop_seconds(reference, after_step=0 if SOAK else 2),
                                  random.Random(f"{SEED}-tensorflow"), anywhere_share=0.25 if SOAK else 0.0)
    if not SOAK:
        assert "before the first checkpoint" not in phases, phases
    report("train kills (TensorFlow, python -m lmlab train)", kills=sum(phases.values()), runs=children + 1,
           fresh_runs=run["count"], phases=phases, uninterrupted_s=round(duration, 2), max_loss_difference="<1e-5",
           data_lost=0)


# ---------------------------------------------------------------- writes that fail part-way


class FailingFile:
    """A file whose writes fail with ``error`` once ``budget`` bytes have gone through (half of the last write lands)."""

    def __init__(self, handle, budget: list, error: OSError):
        self._handle, self._budget, self._error = handle, budget, error

    def write(self, data):
        if len(data) > self._budget[0]:
            self._handle.write(data[: len(data) // 2])
            self._handle.flush()
            raise self._error
        self._budget[0] -= len(data)
        return self._handle.write(data)

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.close()


def failing_open(matches, error: OSError, after_bytes: int = 0, on_open: bool = False):
    """An ``open`` for a module's namespace: files whose name ``matches`` fail at open or after some bytes."""
    budget = [after_bytes]

    def fake_open(path, mode="r", *args, **kwargs):
        if "w" in mode and matches(Path(path).name):
            if on_open:
                raise error
            return FailingFile(open(path, mode, *args, **kwargs), budget, error)
        return open(path, mode, *args, **kwargs)

    return fake_open


NO_SPACE = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
DENIED = PermissionError(errno.EACCES, os.strerror(errno.EACCES))


@pytest.fixture(scope="module")
def prepared_reference(corpus, tmp_path_factory) -> Path:
    from lmlab.data import prepare

    folder = tmp_path_factory.mktemp("prepared") / "reference"
    prepare(str(corpus), folder, tokenizer="char", shard_tokens=3000, split=(0.8, 0.1, 0.1))
    return folder


@pytest.mark.parametrize("module,matches,error,after,on_open,message", [
    ("lmlab.data.shards", lambda name: name.endswith(".bin.tmp") or ".bin." in name, NO_SPACE, 40_000, False,
     "No space left on device"),
    ("lmlab.data.shards", lambda name: name.startswith("valid-00003"), DENIED, 0, True, "Permission denied"),
    ("lmlab.core.io", lambda name: name.startswith("state.json"), NO_SPACE, 0, False, "No space left on device"),
    ("lmlab.core.io", lambda name: name.startswith("manifest.json"), NO_SPACE, 100, False, "No space left on device"),
], ids=["shard-full-disk", "shard-permission", "state-full-disk", "manifest-full-disk"])
def test_prepare_write_failure_is_clean_and_resumable(corpus, prepared_reference, tmp_path, cli, monkeypatch,
                                                       module, matches, error, after, on_open, message):
    out = tmp_path / "out"
    args = ("prepare", corpus, "--tokenizer", "char", "--shard-tokens", "3000", "--split", "0.8,0.1,0.1",
            "--workers", "1", "--quiet", "--out", out)
    monkeypatch.setattr(f"{module}.open", failing_open(matches, error, after, on_open), raising=False)
    code, _, err = cli(*args)
    monkeypatch.undo()
    assert code == 1 and err.startswith("lmlab: error: cannot write ") and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert check_interrupted_prepare(out, prepared_reference) in ("shards kept", "before the first shard",
                                                                         "before the first checkpoint")
    assert not list(out.glob("*.tmp")) and not list(out.glob(".prepare/*.tmp"))  # nothing half-written left
    code, _, err = cli(*args)
    assert code == 0, err
    assert files_of(out) == files_of(prepared_reference)


def safetensors_full_disk(tensors, filename, metadata=None):
    from safetensors import SafetensorError

    Path(filename).write_bytes(b"\x00" * 10)  # half a file, then the disk is full
    raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


@pytest.mark.parametrize("failure", ["safetensors-full-disk", "state-full-disk", "rename-denied", "pointer-denied"])
def test_checkpoint_write_failure_keeps_the_previous_checkpoint(tmp_path, monkeypatch, failure):
    from lmlab.runs import checkpoint

    good_model, good_optimizer = Holder(1, "model"), Holder(2, "adamw")
    checkpoint.save_checkpoint(tmp_path, 10, good_model, good_optimizer, {"val_loss": 2.5}, best=True)
    newer_model, newer_optimizer = Holder(3, "model"), Holder(4, "adamw")
    if failure == "safetensors-full-disk":
        monkeypatch.setattr("safetensors.numpy.save_file", safetensors_full_disk)
    elif failure == "state-full-disk":
        monkeypatch.setattr("lmlab.core.io.open", failing_open(lambda n: n.startswith("state.json"), NO_SPACE, 5),
                            raising=False)
    elif failure == "rename-denied":
        real_replace = os.replace

        def replace(source, target):
            if Path(target).name == "step-000020":
                raise DENIED
            return real_replace(source, target)

        monkeypatch.setattr(checkpoint.os, "replace", replace)
    else:
        monkeypatch.setattr("lmlab.core.io.open", failing_open(lambda n: n.startswith("last.json"), DENIED, on_open=True),
                            raising=False)
    with pytest.raises(LmlabError, match="cannot write .*(No space left on device|Permission denied)"):
        checkpoint.save_checkpoint(tmp_path, 20, newer_model, newer_optimizer, {"val_loss": 2.0}, best=True)
    monkeypatch.undo()
    for which in ("last", "best"):
        found = checkpoint.find_checkpoint(tmp_path, which)
        assert found.name == "step-000010"
        model, optimizer = Holder(5, "model"), Holder(6, "adamw")
        assert checkpoint.load_checkpoint(found, model, optimizer)["step"] == 10
        for loaded, saved in zip(model.variables + optimizer.variables, good_model.variables + good_optimizer.variables):
            np.testing.assert_array_equal(loaded.value, saved.value)
    assert not list((tmp_path / "checkpoints").glob("*.tmp*"))
    assert not list((tmp_path / "checkpoints").glob("*/*.tmp"))


# ---------------------------------------------------------------- poisoned batches


def test_poisoned_batch_stops_the_run_or_is_skipped(server, tiny_data, reference_run, tmp_path):
    reference, _ = reference_run
    # Without --skip-bad-batches: a clear stop; the last checkpoint is the good one before the bad batch.
    stopped = tmp_path / "stopped"
    assert server.run(train_args(tiny_data, stopped), tmp_path / "stopped.out", POISON) == 1
    err = (tmp_path / "stopped.out").read_text()
    assert err.startswith("lmlab: error: the loss became nan (gradient norm nan) at step 7; the last good checkpoint "
                          f"is {stopped / 'checkpoints' / 'step-000006'}.") and "--skip-bad-batches" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert json.loads((stopped / "checkpoints" / "last.json").read_text())["checkpoint"] == "step-000006"
    model, _, _ = load_checkpoint_files(stopped / "checkpoints" / "step-000006")
    assert all(np.isfinite(t).all() for t in model.values())
    # Resumed with --skip-bad-batches it skips every bad batch and ends exactly as a run that skipped from the start.
    assert server.run(["train", "--resume", stopped, "--skip-bad-batches"], tmp_path / "resumed.out", POISON) == 0
    assert skipped_steps(stopped) == BAD_STEPS
    assert "step 7: skipped a bad batch (loss nan, gradient norm nan); the weights were not updated" in \
        (tmp_path / "resumed.out").read_text()
    assert_same_losses(stopped, reference)
    # A skipped batch changes nothing: weights and optimizer state after step 7 are those after step 6.
    before = load_checkpoint_files(reference / "checkpoints" / "step-000006")
    after = load_checkpoint_files(reference / "checkpoints" / "step-000007")
    assert after[2]["skipped_batches"] == 1 and after[2]["step"] == 7
    for old, new in zip(before[:2], after[:2]):
        for name in old:
            np.testing.assert_array_equal(old[name], new[name], err_msg=name)
    moved = load_checkpoint_files(reference / "checkpoints" / "step-000008")[0]
    assert any(not np.array_equal(moved[name], after[0][name]) for name in moved)
    report("poisoned batches", injected={"nan": 1, "inf": 1, "1e30 (overflows the gradient norm)": 1},
           stopped_at=7, skipped=skipped_steps(reference), resumed_losses_equal="<1e-5")


def test_skip_bad_batches_setting():
    from lmlab.core.errors import ConfigError
    from lmlab.core.faults import poisoned_steps
    from lmlab.training.config import TrainConfig, build_config

    assert build_config(skip_bad_batches=True).skip_bad_batches and not TrainConfig().skip_bad_batches
    with pytest.raises(ConfigError, match="skip_bad_batches must be true or false"):
        build_config(overrides=["skip_bad_batches=maybe"])
    os.environ["LMLAB_TEST_POISON_STEPS"] = "3, 5:inf,8:1e30"
    try:
        steps = poisoned_steps()
        assert np.isnan(steps[3]) and steps[5] == np.inf and steps[8] == 1e30 and len(steps) == 3
        os.environ["LMLAB_TEST_POISON_STEPS"] = "x:1"
        with pytest.raises(ConfigError, match="expected STEP"):
            poisoned_steps()
    finally:
        del os.environ["LMLAB_TEST_POISON_STEPS"]
