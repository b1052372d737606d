"""Distributed training on tf.distribute and keras.distribution, on this one machine.

Each scenario is its own process (device counts are fixed when TensorFlow or JAX starts); the JAX
one is tests/distributed_scenarios.py. One module-scoped chain covers the TensorFlow claims:

1. the tiny run trains on one device (in the background) and, in a process with two CPU logical
   devices, with MirroredStrategy at the same global batch, killed as step 7 ends (its checkpoint
   is at step 4);
2. ``lmlab launch --workers 2`` resumes the killed run as two processes with
   MultiWorkerMirroredStrategy on loopback ports, to the end, with ``--skip-bad-batches`` and the
   last batch poisoned (NaN) by the fault-injection hook: that step must be skipped on both workers.

Tolerance against one device: 1e-5 (absolute, on losses near 4). Two replicas average two half-batch
means where one device averages the whole batch, so the sums are rounded in another order (the
differences seen are ~5e-7). A resumed run against the same steps before the kill: 1e-6.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from lmlab.data import prepare
from lmlab.core.errors import ConfigError
from lmlab.training.config import TrainConfig
from tests.conftest import REPO, data_path
from tests.distributed_scenarios import TINY

KILL_AT = 7  # killed as step 7 ends, before its log line: steps 5 and 6 are logged before the kill and after

SCENARIOS = str(REPO / "tests" / "distributed_scenarios.py")
POISONED = TINY["max_steps"]  # the resumed run's last batch
ONE_DEVICE_TOLERANCE = 1e-5
RESUME_TOLERANCE = 1e-6


def log_records(run) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def losses(records) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in records if "loss" in r}  # later lines (after a resume) win


def run(args, env=None, timeout=300):
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})})


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dist")
    text = folder / "shakespeare.txt"
    text.write_bytes(data_path("tinyshakespeare", "input.txt").read_bytes()[:200_000])
    prepare(str(text), folder / "data", tokenizer="char", split=(0.9, 0.1, 0.0), split_order="ordered",
            clean={"dedup": False}, log=lambda m: None)
    return folder


def start(args, env):
    return subprocess.Popen(args, cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env})


def train_args(data, *options):
    args = [sys.executable, "-m", "lmlab", "train", "--data", str(data), "--quiet", *options]
    for key, value in TINY.items():
        args += ["--set", f"{key}={value}"]
    return args


@pytest.fixture(scope="module")
def background(tiny_data):
    """The scenarios that wait for nothing, started at once beside the TensorFlow chain (they are mostly
    compiling): the JAX model-parallel scenario and the one-device TensorFlow reference run."""
    processes = {"one": start(train_args(tiny_data / "data", "--out", str(tiny_data / "runs" / "one")),
                              {"KERAS_BACKEND": "tensorflow"})}
    if importlib.util.find_spec("jax"):
        processes["jax"] = start([sys.executable, SCENARIOS, "jax-model", str(tiny_data / "jax")],
                                 {"KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
    yield processes
    for process in processes.values():
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.fixture(scope="module")
def jax_scenario(background):
    if "jax" not in background:
        pytest.skip("jax is not installed")
    return background["jax"]


@pytest.fixture(scope="module")
def tensorflow_runs(tiny_data, background):
    out = tiny_data / "runs"
    killed = run(train_args(tiny_data / "data", "--distribute", "data", "--out", str(out / "mirrored")),
                 env={"KERAS_BACKEND": "tensorflow", "LMLAB_CPU_DEVICES": "2",
                      "LMLAB_TEST_KILL_AFTER_STEPS": str(KILL_AT)})
    assert killed.returncode == -9, killed.stderr[-3000:]
    before_resume = log_records(out / "mirrored")
    args = [sys.executable, "-m", "lmlab", "launch", "--workers", "2", "--backend", "tensorflow",
            "train", "--resume", str(out / "mirrored"), "--distribute", "data", "--skip-bad-batches"]
    resumed = run(args, env={"LMLAB_TEST_POISON_STEPS": str(POISONED)})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _, stderr = background["one"].communicate(timeout=300)
    assert background["one"].returncode == 0, stderr[-3000:]
    return out, before_resume, resumed.stderr


def test_mirrored_strategy_on_two_devices_matches_one_device(tensorflow_runs):
    out, before_resume, _ = tensorflow_runs
    one, mirrored = losses(log_records(out / "one")), losses(before_resume)
    assert sorted(one) == list(range(1, TINY["max_steps"] + 1))
    assert sorted(mirrored) == list(range(1, KILL_AT))  # killed as step 7 ended
    for step in mirrored:
        assert mirrored[step] == pytest.approx(one[step], abs=ONE_DEVICE_TOLERANCE), step
    assert one[5] < one[1] - 0.1  # it trains: the comparison is not between constants
    config = json.loads((out / "mirrored" / "config.json").read_text())["train"]
    assert config["distribute"] == "data" and config["batch_size"] == TINY["batch_size"]  # the global batch


def test_killed_distributed_run_resumes_exactly_as_two_processes(tensorflow_runs):
    out, before_resume, log = tensorflow_runs
    assert "resumed" in log and "MultiWorkerMirroredStrategy, 2 replica(s) in 2 process(es)" in log
    resumed, before, one = (losses(log_records(out / "mirrored")), losses(before_resume),
                            losses(log_records(out / "one")))
    assert sorted(resumed) == list(range(1, POISONED))
    checkpoint = TINY["eval_interval"]
    for step in range(checkpoint + 1, KILL_AT):  # the steps logged before the kill, run again from step 4
        assert resumed[step] == pytest.approx(before[step], abs=RESUME_TOLERANCE), step
    for step in range(checkpoint + 1, POISONED):
        assert resumed[step] == pytest.approx(one[step], abs=ONE_DEVICE_TOLERANCE), step
    results = json.loads((out / "mirrored" / "results.json").read_text())
    assert results["step"] == TINY["max_steps"] and results["tokens_seen"] == 8 * 4 * 32
    # Only the chief wrote: one set of lines per step after the resume point, and one skipped batch.
    records = log_records(out / "mirrored")
    assert [r["step"] for r in records if "loss" in r] == list(range(1, KILL_AT)) + list(range(checkpoint + 1,
                                                                                                POISONED))
    assert [r["step"] for r in records if r.get("skipped_batch")] == [POISONED]
    assert "skipped a bad batch" in log


def test_model_parallel_transformer_on_eight_jax_devices(jax_scenario):
    stdout, stderr = jax_scenario.communicate(timeout=300)
    assert jax_scenario.returncode == 0, stderr[-3000:]
    report = json.loads(stdout.strip().splitlines()[-1])
    assert report["q_proj_shards"] == [[32, 8]]  # columns split four ways (d_model 32 / model 4)
    assert len(report["split"]) == 10  # every Megatron rule applies to this shape
    assert report["logits_max_diff"] < 1e-5
    assert report["loss_sharded"] == pytest.approx(report["loss_single"], abs=1e-6)
    assert report["weights_moved"] > 1e-4  # the step changed the weights ...
    assert report["weights_max_diff"] < 1e-5  # ... the same way, read back on one device through a checkpoint
    assert report["distribution"]  # no global distribution left behind
    # The layout for other shapes: llama-small's SwiGLU and grouped k/v split four ways; a 67-symbol
    # embedding stays whole (4 does not divide it); a family without a layout is refused.
    assert set(report["llama_split"]) >= {r".*mlp/(fc|gate_proj|up_proj)/kernel", r".*mlp/down_proj/kernel",
                                          r".*attention/(k|v)_proj/kernel", r".*token_embedding/embeddings"}
    assert r".*token_embedding/embeddings" not in report["odd_vocab_split"]
    assert r".*attention/q_proj/kernel" in report["odd_vocab_split"]
    assert "distribute=data" in report["rnn_error"]


def test_distribute_settings_are_checked():
    assert TrainConfig(distribute="model", mesh="batch=2,model=4").mesh == "batch=2,model=4"
    for fields, field in [(dict(distribute="both"), "distribute"), (dict(distribute="model", mesh="model=x"), "mesh"),
                          (dict(distribute="model", mesh="rows=2"), "mesh"), (dict(distribute="data", mesh="model=2"),
                                                                             "mesh"),
                          (dict(distribute="model", mesh="batch=2,batch=2"), "mesh")]:
        with pytest.raises(ConfigError, match=field):
            TrainConfig(**fields)


def test_launch_gives_each_worker_its_cluster_environment():
    from lmlab.training.distribute.launch import worker_environments

    tf_envs = worker_environments(2, "tensorflow", ports=[1111, 2222])
    assert [json.loads(e["TF_CONFIG"])["task"] for e in tf_envs] == [{"type": "worker", "index": 0},
                                                                     {"type": "worker", "index": 1}]
    assert json.loads(tf_envs[1]["TF_CONFIG"])["cluster"]["worker"] == ["localhost:1111", "localhost:2222"]
    jax_envs = worker_environments(3, "jax", ports=[1111, 2222, 3333])
    assert {e["KERAS_DISTRIBUTION_JOB_ADDRESSES"] for e in jax_envs} == {"localhost:1111"}
    assert [e["KERAS_DISTRIBUTION_PROCESS_ID"] for e in jax_envs] == ["0", "1", "2"]
    with pytest.raises(ConfigError, match="backend"):
        worker_environments(2, "torch")

