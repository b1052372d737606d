"""``lmlab launch --workers N COMMAND ...``: N local worker processes of one distributed run.

For trying multi-process training on one machine (and for the tests): each
worker runs ``python -m lmlab COMMAND ...`` with the environment a cluster
scheduler would give it on separate machines, with loopback addresses:

- TensorFlow: ``TF_CONFIG`` naming N workers on ``localhost`` ports and this
  worker's index (read by ``MultiWorkerMirroredStrategy``);
- JAX: ``KERAS_DISTRIBUTION_JOB_ADDRESSES`` (the coordinator, worker 0),
  ``KERAS_DISTRIBUTION_NUM_PROCESSES`` and ``KERAS_DISTRIBUTION_PROCESS_ID``
  (read by ``keras.distribution.initialize``, which calls
  ``jax.distributed.initialize``).

Worker 0 is the chief: it prints and writes the run folder. When a worker
fails the others would wait forever in a collective, so they are stopped and
the launcher exits with the failed worker's status.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

from lmlab.core.errors import ConfigError

BACKENDS = ("tensorflow", "jax")


def free_ports(count: int, host: str = "localhost") -> list[int]:
    """Ports the system has just handed out as free (held open together so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def worker_environments(workers: int, backend: str, ports: list[int] | None = None,
                        host: str = "localhost") -> list[dict[str, str]]:
    """The environment variables of each of ``workers`` local processes."""
    if backend not in BACKENDS:
        raise ConfigError(f"launch: backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    ports = ports or free_ports(workers, host)
    addresses = [f"{host}:{port}" for port in ports]
    environments = []
    for index in range(workers):
        if backend == "tensorflow":
            environments.append({"TF_CONFIG": json.dumps({"cluster": {"worker": addresses},
                                                           "task": {"type": "worker", "index": index}})})
        else:
            environments.append({"KERAS_DISTRIBUTION_JOB_ADDRESSES": addresses[0],
                                 "KERAS_DISTRIBUTION_NUM_PROCESSES": str(workers),
                                 "KERAS_DISTRIBUTION_PROCESS_ID": str(index)})
    return environments


def launch(workers: int, command: list[str], backend: str | None = None, log=print) -> int:
    """Run ``lmlab COMMAND`` in ``workers`` local processes; return the first failure's exit status, else 0."""
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"--workers must be a positive integer, got {workers!r}")
    if not command:
        raise ConfigError("launch needs a command to run, e.g. lmlab launch --workers 2 train --data DIR "
                          "--distribute data --out RUN")
    backend = backend or os.environ.get("KERAS_BACKEND", "tensorflow")
    environments = worker_environments(workers, backend)
    log(f"launch: {workers} {backend} workers on {', '.join(sorted(set(_addresses(environments))))}")
    processes = []
    for index, extra in enumerate(environments):
        env = {**os.environ, **extra, "KERAS_BACKEND": backend}
        processes.append(subprocess.Popen([sys.executable, "-m", "lmlab", *command], env=env,
                                          stdout=None if index == 0 else subprocess.DEVNULL))
    status = 0
    try:
        running = list(processes)
        while running:
            for process in list(running):
                code = process.poll()
                if code is None:
                    continue
                running.remove(process)
                if code and not status:
                    status = code if code > 0 else 128 - code  # killed by signal N: 128 + N, as a shell says
                    log(f"launch: worker {processes.index(process)} exited with status {status}; stopping the others")
                    for other in running:
                        other.send_signal(signal.SIGTERM)
            time.sleep(0.1)
    except KeyboardInterrupt:
        for process in processes:
            process.send_signal(signal.SIGINT)
        for process in processes:
            process.wait()
        raise
    return status


def _addresses(environments):
    for env in environments:
        if "TF_CONFIG" in env:
            yield from json.loads(env["TF_CONFIG"])["cluster"]["worker"]
        else:
            yield env["KERAS_DISTRIBUTION_JOB_ADDRESSES"]
