"""Hugging Face interop: GPT-2 and Llama checkpoints in and out, with `transformers` as the reference.

Random weights, no hub: `transformers` builds tiny models with deliberately odd
sizes (vocabulary 301, width 48, 3 layers, d_ff 37; Llama with 6 query heads
sharing 2 kv heads), every parameter perturbed so biases and norms are not
their trivial initial values. Imported, our logits must equal theirs within
1e-4 and greedy decoding must agree for 20 tokens; exported from lmlab, the
same holds in `transformers`. Tokenizers must encode exactly as AutoTokenizer
on mixed English and Chinese text.
"""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch  # the [dev] extra installs transformers and torch: these tests run in CI, never skipped
import transformers

from lmlab.core.errors import ConfigError
from lmlab.interop import export_hf, import_hf
from lmlab.runs.folder import write_run
from lmlab.interop.weight_files import CheckpointTensors, write_safetensors
from lmlab.runs.load import load_run
from lmlab.tokenizers import HFTokenizer, WordTokenizer, train_tokenizer

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

VOCAB, WIDTH, LAYERS, D_FF, POSITIONS = 301, 48, 3, 37, 40
MIXED = ("The quick brown fox jumps over the lazy dog; 床前明月光，疑是地上霜。 Hello, 世界!\n"
         "  Tabs\tand   spaces, digits 12345 and émigré café. 举头望明月，低头思故乡。")
CORPUS = [MIXED, "Shall I compare thee to a summer's day? 春眠不觉晓，处处闻啼鸟。", "Numbers 0123456789"] * 5


def quiet(*_):
    pass


def hf_config(style: str, **overrides):
    if style == "gpt2":
        fields = dict(vocab_size=VOCAB, n_positions=POSITIONS, n_embd=WIDTH, n_layer=LAYERS, n_head=4,
                      n_inner=D_FF, initializer_range=0.3, bos_token_id=0, eos_token_id=0)
        return transformers.GPT2Config(**{**fields, **overrides})
    fields = dict(vocab_size=VOCAB, hidden_size=WIDTH, intermediate_size=D_FF, num_hidden_layers=LAYERS,
                  num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=POSITIONS,
                  initializer_range=0.3, rope_theta=500.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
                  bos_token_id=0, eos_token_id=0)
    return transformers.LlamaConfig(**{**fields, **overrides})


def hf_model(style: str, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    config = hf_config(style, **overrides)
    return perturbed((transformers.GPT2LMHeadModel if style == "gpt2" else transformers.LlamaForCausalLM)(config))


def perturbed(model):
    """``model`` in eval mode with every parameter moved by N(0, 0.1): biases and norm scales away from 0 and 1."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    return model.eval()


def hf_logits(model, ids: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor(ids, dtype=torch.long)).logits.numpy()


def hf_greedy(model, prompt: list[int], new: int = 20) -> list[int]:
    config = transformers.GenerationConfig(do_sample=False, max_new_tokens=new, eos_token_id=None,
                                           bos_token_id=None, pad_token_id=0)
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), generation_config=config)
    generated = out[0, len(prompt):].tolist()
    assert len(generated) == new
    return generated


def agrees_with_greedy(model, prompt: list[int], continuation: list[int]) -> bool:
    """Whether greedy decoding with ``model`` from ``prompt`` yields exactly ``continuation``.

    One causal forward pass over ``prompt + continuation``: if the argmax at
    every position from the prompt's last on is the next token of the
    sequence, greedy decoding picks each of them in turn (by induction), so
    this is token-for-token agreement at the cost of one call instead of 20.
    """
    sequence = np.array([prompt + continuation], dtype=np.int32)
    logits = np.asarray(model(sequence[:, :-1]))[0, len(prompt) - 1:]  # (len(continuation), V)
    return logits.argmax(-1).tolist() == continuation


def token_ids(batch: int = 3, length: int = 11, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, size=(batch, length)).astype(np.int32)


@pytest.fixture(scope="module")
def bpe_json() -> str:
    """A byte-level BPE tokenizer.json (GPT-2's scheme) trained on mixed English and Chinese."""
    return train_tokenizer("bpe", CORPUS, vocab_size=VOCAB - 1).hf_json()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, bpe_json):
    """Per style: the transformers model, its saved folder and the lmlab run imported from it."""
    root = tmp_path_factory.mktemp("hf")
    made = {}
    for style in ("gpt2", "llama"):
        model = hf_model(style)
        folder = root / style
        model.save_pretrained(folder)
        (folder / "tokenizer.json").write_text(bpe_json, encoding="utf-8")
        import_hf(folder, root / f"{style}-run", log=quiet)
        made[style] = (model, folder, load_run(root / f"{style}-run"))
    return made


# ---------------------------------------------------------------- import parity


@pytest.mark.parametrize("style", ["gpt2", "llama"])
def test_imported_logits_and_greedy_decoding_match_transformers(checkpoints, style):
    model, _, run = checkpoints[style]
    ids = token_ids()
    expected = hf_logits(model, ids)
    ours = np.asarray(run.model(ids))
    assert ours.shape == expected.shape == (3, 11, VOCAB)
    assert np.abs(ours - expected).max() < 1e-4
    assert np.ptp(expected[..., :], axis=-1).min() > 0.5  # logits far from uniform: argmax is meaningful
    prompt = ids[0, :5].tolist()
    assert agrees_with_greedy(run.model, prompt, hf_greedy(model, prompt))


def test_imported_config_and_tokenizer(checkpoints):
    gpt2, llama = checkpoints["gpt2"][2], checkpoints["llama"][2]
    expected = {"style": "gpt2", "d_ff": D_FF, "bias": True, "tie_embeddings": True, "block_size": POSITIONS,
                "n_kv_head": 4, "d_model": WIDTH, "n_layer": LAYERS, "vocab_size": VOCAB}
    assert {k: gpt2.config["model"][k] for k in expected} == expected
    assert (llama.config["model"]["n_kv_head"], llama.config["model"]["rope_theta"]) == (2, 500.0)
    assert llama.config["model"]["tie_embeddings"] is False and llama.config["model"]["bias"] is False
    assert gpt2.config["imported_from"]["architecture"] == "GPT2LMHeadModel"
    assert isinstance(gpt2.tokenizer, HFTokenizer) and gpt2.tokenizer.eos_token == "<|endoftext|>"


def test_our_tokenizer_encodes_as_autotokenizer(checkpoints):
    _, folder, run = checkpoints["llama"]
    reference = transformers.AutoTokenizer.from_pretrained(folder)
    for text in (MIXED, MIXED.upper(), "  leading spaces and 🙂 emoji 在中文里"):
        assert run.tokenizer.encode(text) == reference(text, add_special_tokens=False)["input_ids"]


# ---------------------------------------------------------------- export parity


def random_lmlab_run(folder, config, tokenizer, seed: int = 3):
    """A run whose weights are random and large enough that greedy decoding has clear winners."""
    from lmlab.models.transformer import build_transformer
    from lmlab.training.config import TrainConfig

    model = build_transformer(config, seed=seed)
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        base = 1.0 if weight.path.endswith(("gamma", "scale")) else 0.0
        weight.assign((base + rng.normal(0, 0.3 if len(weight.shape) > 1 else 0.1, weight.shape)).astype("float32"))
    train = TrainConfig(shape="debug", model={k: v for k, v in config.to_dict().items() if k != "family"})
    write_run(folder, model, tokenizer, train, None)
    return model


@pytest.mark.parametrize("style", ["gpt2", "llama"])
def test_exported_model_loads_in_transformers_with_equal_logits_and_decoding(tmp_path, bpe_json, style):
    from lmlab.models.transformer import TransformerConfig

    # The other cases than the import test: GPT-2 untied and without biases (written as zeros),
    # Llama tied, with biases, grouped 6 -> 3.
    extra = dict(n_head=4, tie_embeddings=False, bias=False) if style == "gpt2" else \
        dict(n_head=6, n_kv_head=3, tie_embeddings=True, bias=True, rope_theta=1000.0)
    config = TransformerConfig(vocab_size=VOCAB, block_size=POSITIONS, n_layer=LAYERS, d_model=WIDTH, d_ff=D_FF,
                               style=style, **extra)
    ours = random_lmlab_run(tmp_path / "run", config, HFTokenizer(bpe_json, kind="bpe"))
    export_hf(tmp_path / "run", tmp_path / "hf", log=quiet)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert type(theirs).__name__ == ("GPT2LMHeadModel" if style == "gpt2" else "LlamaForCausalLM")
    ids = token_ids(seed=2)
    assert np.abs(hf_logits(theirs, ids) - np.asarray(ours(ids))).max() < 1e-4
    prompt = ids[1, :4].tolist()
    assert agrees_with_greedy(ours, prompt, hf_greedy(theirs, prompt))
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert tokenizer(MIXED, add_special_tokens=False)["input_ids"] == HFTokenizer(bpe_json).encode(MIXED)
    assert tokenizer.eos_token_id == theirs.config.eos_token_id == HFTokenizer(bpe_json).eos_id


def test_import_then_export_gives_back_the_same_tensors(checkpoints, tmp_path):
    _, folder, _ = checkpoints["gpt2"]
    export_hf(folder.parent / "gpt2-run", tmp_path, log=quiet)
    before, after = CheckpointTensors.open(folder), CheckpointTensors.open(tmp_path)
    assert sorted(before.names) == sorted(after.names)  # the tied head is absent from both
    for name in before.names:
        assert np.array_equal(before.read(name), after.read(name)), name
    config = json.loads((tmp_path / "config.json").read_text())
    assert (config["n_inner"], config["n_positions"], config["tie_word_embeddings"]) == (D_FF, POSITIONS, True)


@pytest.mark.parametrize("kind", ["char", "word"])
def test_char_and_word_tokenizers_export_as_equivalent_tokenizer_json(tmp_path, kind):
    from lmlab.models.transformer import TransformerConfig

    tokenizer = train_tokenizer(kind, CORPUS)
    config = TransformerConfig(vocab_size=tokenizer.vocab_size, block_size=16, n_layer=1, n_head=2, d_model=8)
    random_lmlab_run(tmp_path / "run", config, tokenizer)
    export_hf(tmp_path / "run", tmp_path / "hf", log=quiet)
    reference = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    # Every separator Python's str.split knows, unknown symbols, Chinese, newlines.
    texts = [MIXED, "a\x1cb\x1dc\x1ed\x1fe\u3000f\u2028g\xa0h\x85i\tj\x0bk\x0cl\rm", "未见过的字 zebra ¿qué?\n\n"]
    for text in texts:
        ids = tokenizer.encode(text)
        assert reference(text, add_special_tokens=False)["input_ids"] == ids, repr(text)
        if kind == "char":
            assert reference.decode(ids) == tokenizer.decode(ids)
    assert reference.eos_token == "<eos>" and reference.unk_token == "<unk>"


def test_jieba_word_tokenizer_cannot_be_exported_but_the_model_can(tmp_path):
    from lmlab.models.transformer import TransformerConfig

    tokenizer = WordTokenizer(["<eos>", "<unk>", "床前", "明月光"], segmenter="jieba")
    config = TransformerConfig(vocab_size=tokenizer.vocab_size, block_size=8, n_layer=1, n_head=2, d_model=8)
    random_lmlab_run(tmp_path / "run", config, tokenizer)
    with pytest.raises(ConfigError, match="jieba word tokenizer has no tokenizer.json equivalent"):
        export_hf(tmp_path / "run", tmp_path / "hf", log=quiet)
    export_hf(tmp_path / "run", tmp_path / "hf", with_tokenizer=False, log=quiet)
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == ["config.json", "generation_config.json",
                                                                    "model.safetensors"]


# ---------------------------------------------------------------- checkpoint files


def test_sharded_checkpoint_imports(tmp_path, bpe_json):
    model = hf_model("llama", seed=5)
    model.save_pretrained(tmp_path / "hf", max_shard_size="60KB")
    shards = sorted(p.name for p in (tmp_path / "hf").glob("model-*.safetensors"))
    assert len(shards) > 2 and (tmp_path / "hf" / "model.safetensors.index.json").exists()
    (tmp_path / "hf" / "tokenizer.json").write_text(bpe_json, encoding="utf-8")
    import_hf(tmp_path / "hf", tmp_path / "run", log=quiet)
    ids = token_ids(seed=4)
    assert np.abs(np.asarray(load_run(tmp_path / "run").model(ids)) - hf_logits(model, ids)).max() < 1e-4


def test_half_precision_weights_widen_exactly(tmp_path):
    from safetensors.torch import save_file

    values = torch.randn(5, 7)
    save_file({"b": values.bfloat16(), "h": values.half(), "f": values}, str(tmp_path / "w.safetensors"))
    from lmlab.interop.weight_files import SafetensorsFile

    weights = SafetensorsFile(tmp_path / "w.safetensors")
    assert np.array_equal(weights.read("b"), values.bfloat16().float().numpy())
    assert np.array_equal(weights.read("h"), values.half().float().numpy())
    assert np.array_equal(weights.read("f"), values.numpy())


def test_streamed_safetensors_read_back_with_the_library_and_truncation_is_caught(tmp_path):
    from safetensors.numpy import load_file

    from lmlab.core.errors import DataError
    from lmlab.interop.weight_files import SafetensorsFile

    tensors = {"t": np.arange(6, dtype=np.float32).reshape(2, 3).T, "empty": np.zeros((0, 3), np.float32),
               "scalar": np.float32(3.5), "v": np.linspace(-1, 1, 7, dtype=np.float32)}
    write_safetensors(tmp_path / "w.safetensors", tensors, {"format": "pt"})
    back = load_file(str(tmp_path / "w.safetensors"))
    assert all(np.array_equal(back[k], v) and back[k].shape == np.shape(v) for k, v in tensors.items())
    data = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-8])
    with pytest.raises(DataError, match="lies outside the file"):
        SafetensorsFile(tmp_path / "cut.safetensors")


class _RunsCodeWhenUnpickled:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_weights_are_refused_and_never_loaded(tmp_path):
    folder = tmp_path / "hf"
    folder.mkdir()
    hf_config("gpt2").save_pretrained(folder)
    marker = tmp_path / "the-pickle-ran"
    with open(folder / "pytorch_model.bin", "wb") as handle:
        pickle.dump(_RunsCodeWhenUnpickled(str(marker)), handle)
    with pytest.raises(ConfigError, match=r"pytorch_model.bin, a PyTorch pickle; unpickling runs"):
        import_hf(folder, tmp_path / "run", log=quiet)
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_unsupported_architectures_and_settings_are_named(tmp_path):
    folder = tmp_path / "hf"
    folder.mkdir()
    cases = [
        ({"model_type": "bert", "architectures": ["BertForSequenceClassification"]},
         r"model_type 'bert' with architectures BertForSequenceClassification is not supported; lmlab imports "
         r"GPT2LMHeadModel \(gpt2\), LlamaForCausalLM \(llama\)"),
        ({**hf_config("gpt2").to_dict(), "activation_function": "relu"}, "activation_function='relu'"),
        # llama3, yarn, linear and dynamic scaling and an explicit head_dim are read (tests/test_hf_modern.py)
        ({**hf_config("llama").to_dict(), "rope_parameters": {"rope_type": "longrope", "rope_theta": 1e4}},
         "rope_parameters.rope_type='longrope'"),
        ({**hf_config("llama").to_dict(), "rope_parameters": {"rope_type": "llama3", "rope_theta": 1e4}},
         "rope_parameters.factor is missing"),
        ({**hf_config("llama").to_dict(), "partial_rotary_factor": 0.5}, "partial_rotary_factor=0.5"),
    ]
    for config, message in cases:
        (folder / "config.json").write_text(json.dumps(config))
        with pytest.raises(ConfigError, match=message):
            import_hf(folder, tmp_path / "run", log=quiet)


def test_every_tensor_is_consumed_and_every_shape_checked(checkpoints, tmp_path):
    _, source, _ = checkpoints["gpt2"]
    original = CheckpointTensors.open(source)
    tensors = {name: original.read(name) for name in original.names}
    cases = {
        "extra": ({**tensors, "transformer.h.0.attn.rotary": np.zeros(3, np.float32)},
                  r"1 tensor\(s\) a GPT2LMHeadModel with this config.json does not have: transformer.h.0.attn.rotary"),
        "missing": ({k: v for k, v in tensors.items() if k != "transformer.h.2.mlp.c_fc.bias"},
                    "tensor transformer.h.2.mlp.c_fc.bias is missing"),
        "shape": ({**tensors, "transformer.h.1.mlp.c_fc.weight": np.zeros((WIDTH, 36), np.float32)},
                  r"tensor transformer.h.1.mlp.c_fc.weight has shape \(48, 36\), config.json implies \(48, 37\)"),
        "head": ({**tensors, "lm_head.weight": tensors["transformer.wte.weight"] + 1},
                 "lm_head.weight differs from the token embedding"),
    }
    for name, (variant, message) in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text((source / "config.json").read_text())
        (folder / "tokenizer.json").write_text((source / "tokenizer.json").read_text())
        write_safetensors(folder / "model.safetensors", variant, {"format": "pt"})
        with pytest.raises(ConfigError, match=message):
            import_hf(folder, tmp_path / f"{name}-run", log=quiet)
        assert not (tmp_path / f"{name}-run").exists()  # nothing half-written
    # A base-model checkpoint (GPT2Model: no "transformer." prefix, old mask buffers) reads the same.
    folder = tmp_path / "base"
    folder.mkdir()
    (folder / "config.json").write_text((source / "config.json").read_text())
    (folder / "tokenizer.json").write_text((source / "tokenizer.json").read_text())
    base = {k.removeprefix("transformer."): v for k, v in tensors.items()}
    base["h.0.attn.bias"] = np.tril(np.ones((1, 1, POSITIONS, POSITIONS), np.float32))
    write_safetensors(folder / "model.safetensors", base, {"format": "pt"})
    import_hf(folder, tmp_path / "base-run", log=quiet)
    ids = token_ids(seed=6)
    assert np.abs(np.asarray(load_run(tmp_path / "base-run").model(ids)) -
                  np.asarray(checkpoints["gpt2"][2].model(ids))).max() == 0


# ---------------------------------------------------------------- the command line, fine-tuning included


def test_cli_import_fine_tune_evaluate_and_export(bpe_json, tmp_path, cli):
    folder = tmp_path / "hf"  # one layer: training compiles in a third of the time
    hf_model("llama", seed=8, num_hidden_layers=1).save_pretrained(folder)
    (folder / "tokenizer.json").write_text(bpe_json, encoding="utf-8")
    text = tmp_path / "text.txt"
    text.write_text("\n\n".join(CORPUS * 4), encoding="utf-8")
    code, _, err = cli("prepare", text, "--tokenizer", folder / "tokenizer.json", "--split", "0.8,0.2,0",
                       "--split-order", "ordered", "--no-dedup", "--workers", "1", "--out", tmp_path / "data",
                       "--quiet")
    assert code == 0, err
    code, _, err = cli("import", folder, "--out", tmp_path / "run", "--set", "model.n_layer=2")
    assert code == 1 and "model.n_layer comes from the checkpoint's config.json" in err
    settings = ["max_steps=3", "warmup_steps=1", "eval_interval=3", "batch_size=2", "eval_batches=1",
                "log_interval=1", "model.block_size=16"]
    code, out, err = cli("import", folder, "--out", tmp_path / "run", "--data", tmp_path / "data",
                         *[a for s in settings for a in ("--set", s)])
    assert code == 0, err
    assert json.loads(out)["finetune_ready"] is True
    code, out, err = cli("train", "--resume", tmp_path / "run", "--quiet")
    assert code == 0, err
    result = json.loads(out)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert result["step"] == 3 and len(losses) == 3 and all(np.isfinite(losses))
    code, out, err = cli("eval", tmp_path / "run", "--split", "valid", "--json")
    assert code == 0 and json.loads(out)["loss"] > 0, err
    code, out, err = cli("export", tmp_path / "run", "--out", tmp_path / "back")
    assert code == 0, err
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "back").eval()
    tuned = load_run(tmp_path / "run")
    assert tuned.step == 3
    ids = token_ids(length=9, seed=7)
    assert np.abs(hf_logits(theirs, ids) - np.asarray(tuned.model(ids))).max() < 1e-4
    assert theirs.config.max_position_embeddings == 16
    code, _, err = cli("export", tmp_path / "run", "--out", tmp_path / "back")
    assert code == 1 and "is not empty; choose another --out or give --overwrite" in err


def test_data_prepared_with_another_tokenizer_is_refused(checkpoints, tmp_path):
    from lmlab.data import prepare

    prepare(["train=" + str(_write(tmp_path / "t.txt", MIXED)), "valid=" + str(_write(tmp_path / "v.txt", MIXED))],
            tmp_path / "data", tokenizer="char", log=quiet)
    with pytest.raises(ConfigError, match="prepared with another tokenizer than the checkpoint's"):
        import_hf(checkpoints["gpt2"][1], tmp_path / "run", data=tmp_path / "data", log=quiet)


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path
