"""Inference precision (lmlab.models.precision): bfloat16 and int8 weight-only decoding against float32,
int8 runs written by ``lmlab export --dtype int8`` and loaded without float32 matrices, and ``--dtype``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lmlab.core.errors import ConfigError
from lmlab.generate.decoder import generate_ids
from lmlab.generate.samplers import SamplerConfig
from lmlab.models import precision
from lmlab.runs.checkpoint import MODEL_FILE, find_checkpoint, load_tensors
from lmlab.runs.load import load_run

TEXT = "the quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs. " * 4
GREEDY = SamplerConfig(temperature=0)
PROMPT = [3, 1, 4, 1, 5, 9, 2]


def sharpened(model, seed: int = 3):
    """Random weights large enough that greedy decoding has clear winners (as tests/test_interop.py)."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        base = 1.0 if weight.path.endswith(("gamma", "scale")) else 0.0
        weight.assign((base + rng.normal(0, 0.3 if len(weight.shape) > 1 else 0.1, weight.shape)).astype("float32"))
    return model


def write_float_run(folder, family: str = "transformer", **model):
    from lmlab.models import registry
    from lmlab.runs.folder import write_run
    from lmlab.tokenizers import train_tokenizer
    from lmlab.training.config import TrainConfig

    tokenizer = train_tokenizer("char", [TEXT])
    config = registry.model_config(family, "debug", tokenizer.vocab_size, model)
    float_model = sharpened(registry.build_model(config, seed=0))
    train = TrainConfig(family=family, shape="debug", model=model)
    write_run(folder, float_model, tokenizer, train, None)
    return float_model


@pytest.fixture(scope="module")
def float_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dtype") / "float"
    # Odd sizes (vocab from the text, d_ff 37) so a swapped axis fails; untied so lm_head is quantized too.
    write_float_run(folder, d_model=24, n_head=3, d_ff=37, tie_embeddings=False)
    return folder


@pytest.fixture(scope="module")
def int8_run(float_run):
    from lmlab.runs.export import export_run

    out = float_run.parent / "int8"
    export_run(float_run, out, "int8", log=lambda message: None)
    return out


def greedy(model, tokens: int = 12) -> list[int]:
    return generate_ids(model, [PROMPT], tokens, sampler=GREEDY)[0]


def test_bfloat16_and_int8_decode_as_float32_and_logits_stay_close(float_run):
    import keras

    runs = {dtype: load_run(float_run, dtype=dtype).model for dtype in precision.DTYPES}
    ids = np.array([PROMPT], dtype=np.int32)
    logits = {d: keras.ops.convert_to_numpy(m(ids)).astype(np.float64) for d, m in runs.items()}
    spread = np.abs(logits["float32"]).max()
    # Stated tolerances, relative to the largest float32 logit: int8 rounds each weight to 1/254 of its
    # channel's range, bfloat16 every weight and activation to 8 bits of mantissa.
    assert np.abs(logits["int8"] - logits["float32"]).max() < 0.03 * spread
    assert np.abs(logits["bfloat16"] - logits["float32"]).max() < 0.05 * spread
    assert logits["int8"].tolist() != logits["float32"].tolist()  # quantization did change the numbers
    reference = greedy(runs["float32"])
    assert greedy(runs["int8"])[:8] == reference[:8]
    assert greedy(runs["bfloat16"])[:6] == reference[:6]


def test_int8_quantizes_the_dense_matrices_only(float_run):
    model = load_run(float_run, dtype="int8").model
    int8 = {v.path.split("/", 1)[1] for v in model.variables if v.dtype == "int8"}
    dense = {layer.path.split("/", 1)[1] + "/kernel" for layer in precision.quantized_layers(model)}
    assert int8 == dense and "lm_head/kernel" in int8 and any("mlp/fc" in k for k in int8)
    kept = {v.path.split("/", 1)[1]: v.dtype for v in model.variables if "embedding" in v.path or "norm" in v.path}
    assert kept and set(kept.values()) == {"float32"}


def test_an_int8_run_round_trips_exactly_and_loads_without_float32_matrices(float_run, int8_run):
    from lmlab.runs.checkpoint import model_tensors

    quantized_in_memory = model_tensors(load_run(float_run, dtype="int8").model)
    saved = load_tensors(find_checkpoint(int8_run, "best") / MODEL_FILE)
    loaded = load_run(int8_run)  # the run's own dtype
    assert loaded.config["inference"]["dtype"] == "int8"
    for tensors in (saved, model_tensors(loaded.model)):
        assert tensors.keys() == quantized_in_memory.keys()
        for key, value in quantized_in_memory.items():
            assert tensors[key].dtype == value.dtype and np.array_equal(tensors[key], value), key
    # No float32 matrix but the embeddings: the loaded model's kernels were int8 from the start.
    float_matrices = [v.path for v in loaded.model.variables if v.dtype == "float32" and len(v.shape) == 2]
    assert float_matrices and all("embedding" in path for path in float_matrices)
    sizes = precision.weight_bytes(loaded.model)
    float_sizes = precision.weight_bytes(load_run(float_run).model)
    assert sizes["int8"] > 0 and sum(sizes.values()) < 0.6 * sum(float_sizes.values())
    assert greedy(loaded.model) == greedy(load_run(float_run, dtype="int8").model)


def test_a_quantized_run_refuses_other_dtypes_and_training(int8_run):
    with pytest.raises(ConfigError, match="holds int8 weights"):
        load_run(int8_run, dtype="float32")
    from lmlab.training.config import TrainConfig
    from lmlab.training.trainer import Trainer

    with pytest.raises(ConfigError, match="for inference"):
        Trainer(TrainConfig(), int8_run, resume=True)


def test_bad_dtypes_are_one_line_config_errors(float_run, tmp_path):
    from lmlab.cli.common import DTYPES

    assert DTYPES == precision.DTYPES  # the CLI spells them without importing Keras
    with pytest.raises(ConfigError, match="dtype must be one of float32, bfloat16, int8"):
        load_run(float_run, dtype="int4")
    rnn = tmp_path / "rnn"
    write_float_run(rnn, "rnn")
    with pytest.raises(ConfigError, match="int8 weights are for the transformer family"):
        load_run(rnn, dtype="int8")
    model = load_run(rnn, dtype="bfloat16").model
    assert model.compute_dtype == "bfloat16" and len(greedy(model, 4)) == 4


def test_cli_dtype_for_generate_eval_and_export(cli, float_run, tmp_path):
    code, out, _ = cli("generate", float_run, "--prompt", "the ", "--max-new-tokens", "5", "--temperature", "0",
                       "--dtype", "int8", "--json")
    assert code == 0 and out.startswith("[{")
    text = tmp_path / "held.txt"
    text.write_text(TEXT[:120], encoding="utf-8")
    perplexity = {}
    for dtype in ("float32", "int8"):
        code, out, _ = cli("eval", float_run, "--text", text, "--dtype", dtype, "--json", "--quiet")
        assert code == 0
        result = json.loads(out)
        perplexity[result["dtype"]] = result["perplexity"]
    assert perplexity["int8"] == pytest.approx(perplexity["float32"], rel=0.05)
    lines = tmp_path / "lines.txt"
    lines.write_text(TEXT[:40] + "\n" + TEXT[40:90] + "\n", encoding="utf-8")
    scored = {}
    for dtype in ("float32", "int8"):
        code, out, _ = cli("score", float_run, "--input", lines, "--dtype", dtype, "--quiet")
        assert code == 0
        scored[dtype] = [json.loads(line)["logprob"] for line in out.splitlines()]
    assert len(scored["int8"]) == 2 and scored["int8"] != scored["float32"]  # the int8 model really scored them
    assert scored["int8"] == pytest.approx(scored["float32"], rel=0.05)
    code, out, err = cli("export", float_run, "--dtype", "bfloat16", "--out", tmp_path / "bf16", "--quiet")
    assert code == 0 and '"dtype": "bfloat16"' in out
    assert load_run(tmp_path / "bf16").model.compute_dtype == "bfloat16"
    code, _, err = cli("export", float_run, "--format", "hf", "--dtype", "int8", "--out", tmp_path / "hf")
    assert code == 1 and "--format hf writes float32 weights" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as stopped:
        cli("generate", float_run, "--dtype", "int4")
    assert stopped.value.code == 2
