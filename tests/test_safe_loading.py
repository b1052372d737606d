"""Loading never executes code from a file: crafted malicious checkpoints, tokenizers, configs and imports.

Each payload, if it were ever unpickled or evaluated, would create a marker
file; the tests first show that the payload is live (unpickling it in the test
does create the marker), then that every lmlab loader refuses the file with a
clean LmlabError and the marker never appears.
"""

from __future__ import annotations

import ast
import builtins
import io
import json
import pickle
import zipfile
from pathlib import Path

import pytest

from lmlab.core.errors import LmlabError
from tests.conftest import REPO
from tests.fakes import Holder
from tests.forkserver import ForkServer


class CreatesMarker:
    """Unpickling this calls ``open(marker, "w")``: the file appears if the pickle is ever loaded."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "payload-ran"


@pytest.fixture
def payloads(marker, tmp_path) -> dict[str, bytes]:
    """A plain pickle, a PyTorch-style zip holding one, and pickle-shaped JSON; the pickles shown to be live."""
    plain = pickle.dumps({"weight": CreatesMarker(marker)})
    pickle.loads(plain)  # the payload works: loading it runs code
    assert marker.exists()
    marker.unlink()
    torch_style = io.BytesIO()
    with zipfile.ZipFile(torch_style, "w") as archive:  # the layout of torch.save: archive/data.pkl
        archive.writestr("archive/data.pkl", plain)
        archive.writestr("archive/version", "3\n")
    return {"pickle": plain, "torch.save zip": torch_style.getvalue(),
            "jsonpickle": json.dumps({"py/reduce": [{"py/function": "builtins.open"},
                                                    {"py/tuple": [str(marker), "w"]}]}).encode()}


def assert_refused(load, marker: Path, match: str = "") -> str:
    with pytest.raises(LmlabError, match=match) as error:
        load()
    assert not marker.exists(), "the payload ran"
    assert "\n" not in str(error.value).strip()
    return str(error.value)


# ---------------------------------------------------------------- checkpoints


def test_checkpoint_files_holding_pickles_are_refused(tmp_path, marker, payloads):
    from lmlab.runs import checkpoint

    checkpoint.save_checkpoint(tmp_path, 3, Holder(1, "model"), Holder(2, "adamw"), {"val_loss": 1.0})
    folder = tmp_path / "checkpoints" / "step-000003"
    good = {name: (folder / name).read_bytes() for name in ("model.safetensors", "optimizer.safetensors")}
    for name in good:
        for kind, payload in payloads.items():
            (folder / name).write_bytes(payload)
            message = assert_refused(lambda: checkpoint.load_checkpoint(folder, Holder(3, "model"),
                                                                        Holder(4, "adamw")), marker,
                                     "not a readable safetensors file")
            assert name in message, (kind, message)
        (folder / name).write_bytes(good[name])
    # Pointers and state are data: a pointer out of the run, or a state that is not one, is refused by name.
    (tmp_path / "checkpoints" / "last.json").write_text(json.dumps({"checkpoint": "../../../etc"}))
    assert_refused(lambda: checkpoint.find_checkpoint(tmp_path, "last"), marker, "not a checkpoint pointer")
    (folder / "state.json").write_bytes(payloads["jsonpickle"])
    assert_refused(lambda: checkpoint.load_checkpoint(folder, Holder(3, "model")), marker, "step must be an integer")
    (folder / "state.json").write_bytes(payloads["pickle"])
    assert_refused(lambda: checkpoint.load_checkpoint(folder, Holder(3, "model")), marker, "not valid UTF-8")


def test_run_loading_refuses_malicious_files_end_to_end(tmp_path, marker, payloads, request):
    """``lmlab generate`` on a run whose weights are a pickle: one clean line, nothing run."""
    from lmlab.tokenizers import train_tokenizer

    run = tmp_path / "run"
    (run / "checkpoints" / "step-000001").mkdir(parents=True)
    tokenizer = train_tokenizer("char", ["ROMEO: what light through yonder window breaks"])
    tokenizer.save(run / "tokenizer.json")
    model = {"family": "transformer", "vocab_size": tokenizer.vocab_size, "block_size": 16, "n_layer": 1,
             "n_head": 2, "d_model": 16}
    (run / "config.json").write_text(json.dumps({"train": {"data": "", "shape": "debug"}, "model": model}))
    (run / "checkpoints" / "last.json").write_text(json.dumps({"checkpoint": "step-000001", "step": 1}))
    (run / "checkpoints" / "step-000001" / "state.json").write_text(json.dumps({"step": 1}))
    server = ForkServer.shared(request.config.cache.mkdir("lmlab-jax-compilation"))
    (run / "checkpoints" / "step-000001" / "model.safetensors").write_bytes(payloads["torch.save zip"])
    assert server.run(["generate", run, "--checkpoint", "last"], tmp_path / "out.txt") == 1
    out = (tmp_path / "out.txt").read_text()
    assert out.startswith("lmlab: error: ") and "model.safetensors: not a readable safetensors file" in out, out
    assert "Traceback" not in out and not marker.exists()
    # A run config whose model section tries to name code is refused field by field.
    (run / "config.json").write_text(json.dumps({"train": {}, "model": {
        **model, "__class__": "builtins.open", "activation": {"class_name": "Lambda", "config": {"function": "x"}}}}))
    assert server.run(["generate", run, "--checkpoint", "last"], tmp_path / "out.txt") == 1
    out = (tmp_path / "out.txt").read_text()
    assert out.startswith("lmlab: error: unknown TransformerConfig field(s): __class__, activation"), out
    assert not marker.exists()


# ---------------------------------------------------------------- tokenizers


def test_tokenizer_files_with_odd_content_are_refused(tmp_path, marker, payloads):
    from lmlab.tokenizers import load_tokenizer

    path = tmp_path / "tokenizer.json"
    cases = {
        "pickle": (payloads["pickle"], "not valid UTF-8"),
        "torch.save zip": (payloads["torch.save zip"], "not valid UTF-8|not valid JSON"),
        "jsonpickle": (payloads["jsonpickle"], "not an lmlab tokenizer nor a Hugging Face tokenizer.json"),
        "code as kind": (json.dumps({"lmlab_tokenizer": 1, "kind": f"__import__('builtins').open('{marker}', 'w')",
                                     "vocab": ["<eos>", "<unk>"]}).encode(), "unknown tokenizer kind"),
        "python pre-tokenizer": (json.dumps({"version": "1.0", "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
                                             "pre_tokenizer": {"type": "Python", "module": "builtins",
                                                               "function": "open"}}).encode(),
                                 "not a valid tokenizer.json"),
        "class in model": (json.dumps({"model": {"type": "__main__.CreatesMarker", "marker": str(marker)}}).encode(),
                           "not a valid tokenizer.json"),
        "object as vocabulary": (json.dumps({"lmlab_tokenizer": 1, "kind": "char", "eos_token": "<eos>",
                                             "unk_token": "<unk>", "vocab": [{"py/object": "builtins.open"}]}).encode(),
                                 "char tokenizer JSON has a field of the wrong type"),
    }
    for name, (content, match) in cases.items():
        path.write_bytes(content)
        assert_refused(lambda: load_tokenizer(path), marker, match)


# ---------------------------------------------------------------- configs and imported models


def test_config_files_cannot_construct_objects(tmp_path, marker):
    from lmlab.training.config import build_config

    yaml_file = tmp_path / "run.yaml"
    for tag in ("!!python/object/apply:builtins.open", "!!python/object/new:builtins.open",
                "!!python/name:builtins.open"):
        yaml_file.write_text(f"data: x\nbatch_size: {tag} ['{marker}', 'w']\n")
        assert_refused(lambda: build_config(yaml_file), marker, "not valid YAML")
    yaml_file.write_text("model:\n  __class__: builtins.open\n  n_layer: 2\n")  # data only: reaches the model check
    assert build_config(yaml_file).model == {"__class__": "builtins.open", "n_layer": 2}
    toml_file = tmp_path / "run.toml"
    toml_file.write_text(f'data = "x"\nbatch_size = "__import__(\'builtins\').open(\'{marker}\', \'w\')"\n')
    assert_refused(lambda: build_config(toml_file), marker, "batch_size must be a positive integer")


def test_imported_models_never_unpickle(tmp_path, marker, payloads):
    from lmlab.interop.weight_files import CheckpointTensors
    from lmlab.models.ngram import NGramLM

    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    for kind in ("pickle", "torch.save zip"):  # a pickle under the safetensors name
        (hf / "model.safetensors").write_bytes(payloads[kind])
        assert_refused(lambda: CheckpointTensors.open(hf), marker, "not a safetensors file")
    (hf / "model.safetensors").unlink()
    (hf / "pytorch_model.bin").write_bytes(payloads["torch.save zip"])
    assert_refused(lambda: CheckpointTensors.open(hf), marker, "a PyTorch pickle; unpickling runs")
    arpa = tmp_path / "model.arpa"
    arpa.write_bytes(payloads["pickle"])
    assert_refused(lambda: NGramLM.from_arpa(arpa), marker, "not valid UTF-8|not an ARPA file")
    ngram = tmp_path / "ngram"
    ngram.mkdir()
    (ngram / "config.json").write_bytes(payloads["jsonpickle"])
    assert_refused(lambda: NGramLM.load(ngram), marker, "not an n-gram model")


# ---------------------------------------------------------------- the code itself

UNSAFE_CALLS = {("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("torch", "load"),
                ("np", "load"), ("numpy", "load"), ("yaml", "unsafe_load"), ("yaml", "full_load"),
                ("marshal", "loads"), ("dill", "load"), ("dill", "loads"), ("joblib", "load"),
                ("saving", "load_model"), ("models", "load_model"), ("keras", "load_model")}
UNSAFE_YAML_LOADERS = {"Loader", "UnsafeLoader", "FullLoader"}


def test_lmlab_has_no_code_executing_loader():
    """No unpickling, no eval/exec, no unsafe YAML, no Keras model loading (safe_mode off or on) in lmlab."""
    found = []
    for path in sorted((REPO / "lmlab").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            function = node.func
            name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")
            owner = function.value.id if isinstance(function, ast.Attribute) and isinstance(function.value,
                                                                                             ast.Name) else ""
            if (owner, name) in UNSAFE_CALLS or name in ("eval", "exec") and not owner:
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {owner}.{name}")
            for keyword in node.keywords:
                if keyword.arg in ("allow_pickle", "trust_remote_code") and not (
                        isinstance(keyword.value, ast.Constant) and keyword.value.value is False):
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}: {keyword.arg}=")
                if keyword.arg == "safe_mode":
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}: safe_mode=")
                if keyword.arg == "Loader" and isinstance(keyword.value, ast.Attribute) \
                        and keyword.value.attr in UNSAFE_YAML_LOADERS:
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}: yaml Loader={keyword.value.attr}")
    assert found == []
