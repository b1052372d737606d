"""A Keras backend lmlab does not run on (lmlab.core.backend.check_backend): one line and exit status 2 from the
command line, a clear error from the Python API, and keras.json read as Keras reads it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lmlab.core import backend
from tests.conftest import REPO


def lmlab(*args, **env):
    return subprocess.run([sys.executable, "-m", "lmlab", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


def test_an_unsupported_backend_is_one_line_and_status_2(tmp_path):
    result = lmlab("data", "stats", str(tmp_path), KERAS_BACKEND="torch")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == ["lmlab: error: KERAS_BACKEND=torch, but lmlab supports only tensorflow and jax: "
                     "set KERAS_BACKEND=tensorflow (or jax) and run it again"], result.stderr
    assert lmlab("--version", KERAS_BACKEND="torch").returncode == 0  # nothing that needs a backend is refused


def test_keras_json_is_read_as_keras_reads_it(tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "keras", raising=False)  # as if Keras were not imported yet
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert backend.configured_backend() == ("tensorflow", "the default")
    (tmp_path / "keras.json").write_text(json.dumps({"backend": "torch"}))
    assert backend.configured_backend() == ("torch", str(tmp_path / "keras.json"))
    with pytest.raises(backend.UnsupportedBackend, match=r"keras.json sets the Keras backend to torch"):
        backend.check_backend()
    monkeypatch.setenv("KERAS_BACKEND", "jax")  # the variable wins over the file
    assert backend.check_backend() == "jax"
