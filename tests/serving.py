"""Helpers of the serving tests: a tiny run to serve, and the real server as a subprocess on a loopback port."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.test_scoring import TEXTS, random_run

TINY = {"n_layer": 1, "n_head": 2, "d_model": 8, "d_ff": 12}
BLOCK = 4096  # long enough that a stream of ignore_eos tokens is still running when a test closes it


def tiny_run(folder: Path, family: str = "transformer", block: int = BLOCK, **fields) -> Path:
    from lmlab.tokenizers import train_tokenizer

    return random_run(folder, family, train_tokenizer("word", TEXTS), block=block, **(fields or TINY))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(run: Path, *options: str, start_timeout: float = 90.0):
    """``lmlab serve RUN OPTIONS`` on 127.0.0.1 and a free port; yields the base URL; stopped on exit."""
    port = free_port()
    log = open(Path(run).parent / f"serve-{port}.log", "w+")
    process = subprocess.Popen([sys.executable, "-m", "lmlab", "serve", str(run), "--port", str(port), *options],
                               stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"lmlab serve exited with {process.returncode}:\n{log.read()[-3000:]}")
            try:
                if request(url, "GET", "/health", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"lmlab serve did not answer within {start_timeout:.0f} s")
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def metric(url: str, name: str) -> float:
    """One unlabelled value of ``GET /metrics``."""
    for line in request(url, "GET", "/metrics")[1].splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)


def request(url: str, method: str, path: str, body=None, timeout: float = 30) -> tuple[int, object]:
    """``(status, JSON or text)`` of one plain HTTP call; ``body``: bytes as they are, anything else as JSON."""
    connection = http.client.HTTPConnection(url.split("//")[1], timeout=timeout)
    try:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        connection.request(method, path, data, {"Content-Type": "application/json"})
        response = connection.getresponse()
        text = response.read().decode("utf-8")
        kind = response.getheader("content-type", "")
        return response.status, json.loads(text) if kind.startswith("application/json") else text
    finally:
        connection.close()


def open_stream(url: str, body: dict, timeout: float = 30) -> tuple[http.client.HTTPConnection, object]:
    """A streaming completion left open: ``(connection, response)``, the status and headers read."""
    connection = http.client.HTTPConnection(url.split("//")[1], timeout=timeout)
    connection.request("POST", "/v1/completions", json.dumps({**body, "stream": True}).encode(),
                       {"Content-Type": "application/json"})
    return connection, connection.getresponse()


def greedy_beside_sampled(client, model: str, prompts, greedy, noise_tokens: int = 30, step: int = 7) -> list:
    """``greedy(client, prompt)`` for each prompt while one sampled request per prompt decodes beside them
    (joining and leaving as they go); the greedy choices, in order."""
    noise = [threading.Thread(target=client.completions.create,
                              kwargs=dict(model=model, prompt=p, max_tokens=noise_tokens + step * i, seed=i,
                                          temperature=1.0))
             for i, p in enumerate(prompts)]
    results = [None] * len(prompts)

    def ask(i):
        results[i] = greedy(client, prompts[i]).choices[0]

    asks = [threading.Thread(target=ask, args=(i,)) for i in range(len(prompts))]
    for thread in noise + asks:
        thread.start()
    for thread in noise + asks:
        thread.join(60)
    return results
