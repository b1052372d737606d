"""Shared fixtures: where the shared data sets are, and running the CLI in-process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LMLAB_DATA", REPO.parent / "shared" / "data"))
os.environ["LMLAB_DATA"] = str(DATA)  # what lmlab itself reads (WordNet, experiment files), wherever pytest runs


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: a worker per core, at most 4 (each runs TensorFlow on every core; more would only contend)."""
    return max(1, min(os.cpu_count() or 1, 4))


def data_path(*parts: str) -> Path:
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not found: {path} (set LMLAB_DATA)")
    return path


@pytest.fixture
def cli(capsys):
    """Run ``lmlab ARGS`` in-process; return (exit code, stdout, stderr)."""
    from lmlab.cli import main

    def run(*args):
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture
def terminal(monkeypatch):
    """The CLI believes stderr is a terminal (progress on unless --quiet)."""
    import lmlab.cli.quiet

    monkeypatch.setattr(lmlab.cli.quiet, "stderr_is_terminal", lambda: True)
