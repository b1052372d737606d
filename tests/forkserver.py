"""A fork server for the fault tests: pay Keras's start-up once, then fork one child per ``lmlab`` command.

Importing TensorFlow or JAX takes several seconds here, more than a tiny
training run itself; the kill tests start dozens of runs. So this process
imports lmlab, Keras and its backend once (creating no device state, so a fork
is safe) and forks a child for each command it is sent; the child runs
``lmlab.cli.main(args)`` as ``python -m lmlab`` would (on JAX, without the
TensorBoard writer), and the test SIGKILLs it whenever it likes. With a
persistent compilation cache, a child skips compilation too.

Protocol, one JSON object per line: ``{"run": [args], "env": {...}, "output": PATH}``
answers ``{"pid": PID}``; ``{"wait": PID}`` answers ``{"code": EXIT_CODE}`` (-9 when killed).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import os
import subprocess
import sys
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _child(request: dict) -> None:
    code = 70
    try:
        os.environ.update(request.get("env", {}))
        output = os.open(request["output"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(output, 1)
        os.dup2(output, 2)
        from lmlab.cli import main

        code = main(request["run"])
    except BaseException:  # a child must never return into the server's loop
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def serve() -> None:
    import jax  # noqa: F401 - imported before forking, as the children use it

    cache = os.environ.get("LMLAB_TEST_JAX_CACHE")
    if cache:  # compiled steps are shared by all children (and later runs)
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    # Keras and what a child runs: imported, not started. TensorFlow is kept out (its import alone takes
    # seconds): the trainer's optional TensorBoard writer is then off, as when TensorFlow is not installed.
    sys.modules["tensorflow"] = None
    for module in ("keras", "lmlab.cli", "lmlab.models.transformer", "lmlab.training.trainer"):
        importlib.import_module(module)

    print(json.dumps({"ready": os.getpid()}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if "run" in request:
            pid = os.fork()
            if pid == 0:
                _child(request)
            reply = {"pid": pid}
        else:
            _, status = os.waitpid(request["wait"], 0)
            reply = {"code": os.waitstatus_to_exitcode(status)}
        print(json.dumps(reply), flush=True)


class ForkServer:
    """The test side: start the server, run commands in children, wait for them."""

    _shared: "ForkServer | None" = None

    @classmethod
    def shared(cls, jax_cache: Path) -> "ForkServer":
        """One server for the whole test session (closed when Python exits)."""
        if cls._shared is None:
            cls._shared = cls(jax_cache)
            atexit.register(cls._shared.close)
        return cls._shared

    def __init__(self, jax_cache: Path):
        env = {**os.environ, "KERAS_BACKEND": "jax", "LMLAB_TEST_JAX_CACHE": str(jax_cache),
               "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"}
        self.process = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, cwd=REPO, env=env, text=True)
        ready = self._read()
        assert "ready" in ready, ready

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the fork server died")
        return json.loads(line)

    def _ask(self, request: dict) -> dict:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return self._read()

    def start(self, args, output: Path, env: dict | None = None) -> int:
        return self._ask({"run": [str(a) for a in args], "env": env or {}, "output": str(output)})["pid"]

    def wait(self, pid: int) -> int:
        return self._ask({"wait": pid})["code"]

    def run(self, args, output: Path, env: dict | None = None) -> int:
        return self.wait(self.start(args, output, env))

    def close(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.kill()  # it holds nothing worth a clean exit, and Python's exit with TF and JAX is slow
        self.process.wait()
        self.process.stdin.close()
        self.process.stdout.close()


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    serve()
