"""A newcomer's first hour: the demo anywhere, quiet, in a terminal; a lean install; no traps in prepare.

- ``lmlab demo`` run from a folder outside the repository, with ``LMLAB_DATA`` unset and no
  ``../shared``, uses the Tiny Shakespeare shipped inside lmlab and writes nothing on stderr;
- in a pseudo-terminal it shows its progress bar and a sample, and exits 0;
- ``pip install lmlab`` (no extras) asks for none of torch, jax, transformers, datasets, pyarrow,
  and a feature that needs one says which extra brings it;
- a one-sentence-a-line corpus prepared with the default ``--doc-sep blank`` gets a warning
  naming ``--doc-sep line``, and with it every line is a document.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LMLAB = [sys.executable, "-m", "lmlab"]


def outside_env(tmp_path: Path) -> dict:
    """An environment as on a fresh machine: no LMLAB_DATA, a HOME of its own, nothing verbose."""
    env = {k: v for k, v in os.environ.items() if k not in ("LMLAB_DATA", "LMLAB_VERBOSE", "TF_CPP_MIN_LOG_LEVEL")}
    env["HOME"] = str(tmp_path)
    return env


@pytest.fixture(scope="module")
def outside(tmp_path_factory):
    folder = tmp_path_factory.mktemp("newcomer") / "elsewhere"
    folder.mkdir()
    assert not (folder.parent / "shared").exists()
    return folder


def test_demo_in_a_terminal_shows_progress_and_a_sample(outside):
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(LMLAB[0], LMLAB[1:] + ["demo", "--steps", "40", "--out", "demo"], cwd=str(outside),
                          env=outside_env(outside), encoding="utf-8", timeout=600, dimensions=(40, 120))
    child.expect(r"1/4 prepare: \S*tinyshakespeare\.txt\.xz")
    child.expect(r"2/4 train")
    child.expect(r"\d+/40 \[")  # tqdm's bar: steps done of 40
    child.expect(r"3/4 evaluate on the validation text: loss \d")
    child.expect(r"ROMEO:")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before


def test_demo_outside_the_repository_prints_nothing_on_stderr(outside):
    result = subprocess.run(LMLAB + ["demo", "--steps", "40", "--out", "demo"], cwd=outside, env=outside_env(outside),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "tinyshakespeare.txt.xz" in result.stdout and "is already trained; reusing it" in result.stdout
    assert "4/4 generate" in result.stdout and "ROMEO:" in result.stdout


def test_verbose_lets_tensorflow_speak_and_the_filter_keeps_lmlab_errors(tmp_path):
    from lmlab.cli.quiet import is_noise

    assert is_noise("I0000 00:00:1796586601.926895    8881 port.cc:153] oneDNN custom operations are on.")
    assert is_noise("E0000 00:00:1796586606.816613    8881 cuda_platform.cc:52] failed call to cuInit: INTERNAL")
    assert not is_noise("E0000 00:00:1.5    8881 a.cc:5] a real failure")
    assert not is_noise("lmlab: error: something the user must see")
    result = subprocess.run(LMLAB + ["eval", str(tmp_path / "nothing")], env=outside_env(tmp_path),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and result.stderr == f"lmlab: error: {tmp_path / 'nothing'}: not a run folder " \
                                                       f"(no config.json)\n"


def test_version_has_one_source():
    import lmlab

    assert importlib.metadata.version("lmlab") == lmlab.__version__
    result = subprocess.run(LMLAB + ["--version"], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == f"lmlab {lmlab.__version__}"


def test_lean_install_pulls_no_heavy_optional_package():
    required = importlib.metadata.requires("lmlab") or []
    core = [r.split(";")[0].strip() for r in required if "extra ==" not in r]
    names = {r.split(">")[0].split("=")[0].split("<")[0].split("[")[0].strip().lower() for r in core}
    assert names and not names & {"torch", "jax", "jaxlib", "transformers", "datasets", "pyarrow"}, names
    assert (REPO / "LICENSE").read_text().startswith(" " * 33 + "Apache License")


def test_a_missing_optional_package_names_its_extra(cli, tmp_path):
    script = ("import sys; sys.modules['datasets'] = None\n"
              "from lmlab.cli import main\n"
              "sys.exit(main(['prepare', 'hf:some/dataset', '--out', sys.argv[1]]))\n")
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "out")], capture_output=True, text=True,
                            timeout=120, env=outside_env(tmp_path))
    assert result.returncode == 1
    assert "needs the 'datasets' package: pip install 'lmlab[datasets]'" in result.stderr
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("a small corpus of words\n\nanother paragraph here\n" * 50, encoding="utf-8")
    assert cli("prepare", corpus, "--out", tmp_path / "data", "--tokenizer", "char", "--quiet")[0] == 0
    script = ("import sys; sys.modules['jax'] = None\n"
              "from lmlab.cli import main\n"
              "sys.exit(main(['train', '--data', sys.argv[1], '--out', sys.argv[2], '--set', 'max_steps=2', '--set', 'warmup_steps=1']))\n")
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "data"), str(tmp_path / "run")],
                            capture_output=True, text=True, timeout=300,
                            env={**outside_env(tmp_path), "KERAS_BACKEND": "jax"})
    assert result.returncode == 1, result.stderr
    assert "needs the 'jax' package: pip install 'lmlab[jax]'" in result.stderr


def test_one_sentence_a_line_corpus_is_detected(cli, tmp_path):
    rng = __import__("random").Random(0)
    words = "the a cat dog sat ran on under mat log quickly slowly".split()
    lines = [" ".join([rng.choice(words) for _ in range(rng.randint(3, 9))] + [f"w{i}"]) for i in range(1200)]
    corpus = tmp_path / "ptb.train.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, out, err = cli("prepare", corpus, "--out", tmp_path / "one", "--tokenizer", "word", "--split", "0.9,0.1,0")
    assert code == 0, err
    assert "1,200 lines before the first blank line" in err and "--doc-sep line" in err
    code, out, err = cli("prepare", corpus, "--out", tmp_path / "lines", "--tokenizer", "word", "--doc-sep", "line",
                         "--split", "0.9,0.1,0")
    assert code == 0, err
    assert "warning" not in err
    from lmlab.data import load_manifest

    splits = load_manifest(tmp_path / "lines")["splits"]
    assert splits["train"]["documents"] + splits["valid"]["documents"] == 1200
