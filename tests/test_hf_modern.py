"""Today's open checkpoints in and out, exact against `transformers`: Qwen2, Qwen3, Llama 3.1 (`llama3`
rotary scaling), Llama with `yarn` and `linear` scaling, and Mistral (sliding-window attention).

Tiny random models, no hub: each is built by `transformers` (2 layers, width 48, vocabulary 300), every
parameter perturbed so biases and norms are not their trivial initial values, saved, imported into lmlab
and exported back. Imported, our logits equal theirs within 1e-4 and lmlab's KV-cache decoder
(:func:`lmlab.generate.decoder.generate_ids`) makes the same 32 greedy tokens as `generate(do_sample=False)`;
exported, `transformers` loads the folder as the same class with the same logits. Mistral's window (6) is
shorter than the test sequences, and generation runs far past it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformers

from lmlab.core.errors import ConfigError
from lmlab.generate.decoder import generate_ids
from lmlab.generate.samplers import SamplerConfig
from lmlab.interop import export_hf, import_hf
from lmlab.runs.load import load_run
from lmlab.tokenizers import train_tokenizer
from tests.test_interop import hf_logits, perturbed

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

VOCAB, WIDTH, D_FF, POSITIONS, NEW = 300, 48, 40, 64, 32
CORPUS = ["The quick brown fox jumps over the lazy dog; 床前明月光，疑是地上霜。",
          "Shall I compare thee to a summer's day? Numbers 0123456789"] * 5
TEMPLATE = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
COMMON = dict(vocab_size=VOCAB, hidden_size=WIDTH, intermediate_size=D_FF, num_hidden_layers=2,
              max_position_embeddings=POSITIONS, initializer_range=0.3, rms_norm_eps=1e-5, bos_token_id=0,
              eos_token_id=0)

# name -> (config class, model class, config fields)
CASES = {
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM,
              dict(num_attention_heads=6, num_key_value_heads=2, tie_word_embeddings=True, rope_theta=500.0)),
    "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM,  # 4 heads of 16: q is 64 wide, not 48
              dict(num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=False,
                   rope_theta=1000.0)),
    "llama3": (transformers.LlamaConfig, transformers.LlamaForCausalLM,
               dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                    rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                                     "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                     "original_max_position_embeddings": 16})),
    "yarn": (transformers.LlamaConfig, transformers.LlamaForCausalLM,
             dict(num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=True,
                  rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                                   "original_max_position_embeddings": 16})),
    "linear": (transformers.LlamaConfig, transformers.LlamaForCausalLM,
               dict(num_attention_heads=6, num_key_value_heads=3, tie_word_embeddings=False,
                    rope_parameters={"rope_type": "linear", "rope_theta": 500.0, "factor": 3.0})),
    "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM,
                dict(num_attention_heads=4, num_key_value_heads=2, sliding_window=6, tie_word_embeddings=False,
                     rope_theta=10000.0)),
}
ARCHITECTURE = {"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM", "llama3": "LlamaForCausalLM",
                "yarn": "LlamaForCausalLM", "linear": "LlamaForCausalLM", "mistral": "MistralForCausalLM"}


def quiet(*_):
    pass


def hf_config(name: str, **overrides):
    config_class, _, fields = CASES[name]
    return config_class(**{**COMMON, **fields, **overrides})


def hf_model(name: str, seed: int = 0):
    torch.manual_seed(seed)
    return perturbed(CASES[name][1](hf_config(name)))


def hf_greedy(model, prompt: list[int], new: int = NEW) -> list[int]:
    config = transformers.GenerationConfig(do_sample=False, max_new_tokens=new, eos_token_id=None,
                                           bos_token_id=None, pad_token_id=0)
    model.generation_config.eos_token_id = None  # else transformers 5 fills in the model's end token and stops
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), generation_config=config)
    return out[0, len(prompt):].tolist()


def token_ids(batch: int = 2, length: int = 20, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, size=(batch, length)).astype(np.int32)


@pytest.fixture(scope="module")
def bpe_json() -> str:
    return train_tokenizer("bpe", CORPUS, vocab_size=VOCAB - 1).hf_json()


@pytest.fixture(scope="module", params=list(CASES))
def imported(request, tmp_path_factory, bpe_json):
    """Per case: the transformers model, its folder and the lmlab run imported from it."""
    name = request.param
    root = tmp_path_factory.mktemp(name)
    model = hf_model(name)
    model.save_pretrained(root / "hf")
    (root / "hf" / "tokenizer.json").write_text(bpe_json, encoding="utf-8")
    (root / "hf" / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>", "chat_template": TEMPLATE}))
    import_hf(root / "hf", root / "run", log=quiet)
    return name, model, root, load_run(root / "run")


def test_imported_logits_and_cached_greedy_decoding_match_transformers(imported):
    name, model, _, run = imported
    ids = token_ids()
    expected = hf_logits(model, ids)
    ours = np.asarray(run.model(ids))
    assert ours.shape == expected.shape == (2, 20, VOCAB)
    assert np.abs(ours - expected).max() < 1e-4, name
    assert np.ptp(expected, axis=-1).min() > 0.5  # far from uniform: argmax is meaningful
    prompt = ids[0, :5].tolist()
    theirs = hf_greedy(model, prompt)
    assert len(theirs) == NEW
    assert generate_ids(run.model, [prompt], NEW, SamplerConfig(temperature=0.0))[0] == theirs, name


def test_export_loads_in_transformers_as_the_same_architecture_with_equal_logits(imported):
    name, model, root, run = imported
    export_hf(root / "run", root / "export", log=quiet)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(root / "export").eval()
    assert type(theirs).__name__ == ARCHITECTURE[name]
    ids = token_ids(seed=2)
    assert np.abs(hf_logits(theirs, ids) - hf_logits(model, ids)).max() < 1e-4
    assert np.abs(hf_logits(theirs, ids) - np.asarray(run.model(ids))).max() < 1e-4
    config = json.loads((root / "export" / "config.json").read_text())
    expected = model.config.rope_parameters  # ours may add the defaults transformers reads (yarn's beta_fast, ...)
    assert {k: config["rope_parameters"][k] for k in expected} == expected
    if expected["rope_type"] != "default":  # the transformers 4 spelling too
        assert config["rope_scaling"]["rope_type"] == expected["rope_type"]
    assert config["rope_theta"] == expected["rope_theta"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(root / "export")
    assert tokenizer.chat_template == TEMPLATE  # kept through import and export


@pytest.mark.parametrize("imported", ["mistral"], indirect=True)
def test_continuous_batching_gives_each_row_the_greedy_tokens_of_transformers(imported):
    """The server's slot batch (a cache position per row, written with per-row slice_update) keeps the
    window: rows of different lengths, all going past Mistral's window, decode as transformers does."""
    import threading

    from lmlab.serve.engine import Engine, Job

    name, model, _, run = imported
    prompts = [token_ids(1, length, seed=length)[0].tolist() for length in (3, 7, 10)]
    engine = Engine(run.model, run.tokenizer, slots=3, max_queue=8).start()
    try:
        jobs = []
        for prompt in prompts:
            done, tokens = threading.Event(), []

            def emit(events, done=done, tokens=tokens):
                for event in events:
                    if event["type"] == "token":
                        tokens.append(event["token"])
                    elif event["type"] == "finish":
                        done.set()

            jobs.append((done, tokens))
            engine.submit([Job(prompt, SamplerConfig(temperature=0), NEW, emit, n=1, seed=None, ignore_eos=True)])
        assert all(done.wait(120) for done, _ in jobs)
    finally:
        engine.stop()
    assert [tokens for _, tokens in jobs] == [hf_greedy(model, prompt) for prompt in prompts], name


def test_switches_read_from_each_config(imported):
    name, _, _, run = imported
    model = run.config["model"]
    switches = {k: model[k] for k in ("attention_bias", "attention_out_bias", "mlp_bias", "qk_norm", "head_dim",
                                      "sliding_window", "tie_embeddings")}
    expected = {
        "qwen2": (True, False, False, False, 8, None, True), "qwen3": (False, False, False, True, 16, None, False),
        "llama3": (False, False, False, False, 12, None, False), "yarn": (False, False, False, False, 12, None, True),
        "linear": (False, False, False, False, 8, None, False), "mistral": (False, False, False, False, 12, 6, False),
    }[name]
    assert tuple(switches.values()) == expected
    from lmlab.models.transformer import count_parameters

    assert count_parameters(run.model.config) == run.model.num_parameters()  # the closed form knows the switches
    assert (model["rope_scaling"] or {}).get("rope_type", "default") == \
        CASES[name][2].get("rope_parameters", {}).get("rope_type", "default")


def test_qwen3_bias_and_mistral_window_inside_the_window_are_plain_attention(tmp_path, bpe_json):
    """Qwen3 with attention_bias (on q, k, v and o) imports and exports; a window longer than the sequence
    changes nothing."""
    torch.manual_seed(4)
    model = transformers.Qwen3ForCausalLM(hf_config("qwen3", attention_bias=True)).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    model.save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "tokenizer.json").write_text(bpe_json, encoding="utf-8")
    import_hf(tmp_path / "hf", tmp_path / "run", log=quiet)
    run = load_run(tmp_path / "run")
    ids = token_ids(length=9)
    assert np.abs(np.asarray(run.model(ids)) - hf_logits(model, ids)).max() < 1e-4
    export_hf(tmp_path / "run", tmp_path / "export", log=quiet)
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    assert (config["architectures"], config["attention_bias"]) == (["Qwen3ForCausalLM"], True)


def test_unsupported_settings_are_refused_by_name(tmp_path):
    folder = tmp_path / "hf"
    folder.mkdir()
    llama = hf_config("linear").to_dict()
    cases = [
        ({**llama, "rope_parameters": {"rope_type": "longrope", "rope_theta": 1e4, "short_factor": [1.0]}},
         "rope_parameters.rope_type='longrope'"),
        ({**llama, "rope_parameters": {"rope_type": "linear", "rope_theta": 1e4, "factor": 2.0,
                                       "partial_rotary_factor": 0.5}}, "partial_rotary_factor=0.5"),
        ({**llama, "rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 2.0, "beta_fast": 8,
                                       "mystery": 1}}, "rope_parameters.mystery=1"),
        ({**hf_config("qwen2", use_sliding_window=True, sliding_window=4, max_window_layers=1).to_dict()},
         "layer_types=.* some layers slide a window"),
        ({**llama, "hidden_act": "gelu"}, "hidden_act='gelu'"),
    ]
    for config, message in cases:
        (folder / "config.json").write_text(json.dumps(config))
        with pytest.raises(ConfigError, match=message):
            import_hf(folder, tmp_path / "run", log=quiet)


def test_dynamic_scaling_is_plain_inside_the_block_and_refused_beyond():
    """transformers' dynamic NTK scaling keeps the plain frequencies up to max_position_embeddings, lmlab's
    block; a longer block would need frequencies that change with the length, which lmlab refuses."""
    from lmlab.interop.hf_config import from_hf, to_hf
    from lmlab.layers.rotary import inverse_frequencies, scaled_frequencies

    hf = {**hf_config("linear").to_dict(), "rope_parameters": {"rope_type": "dynamic", "rope_theta": 500.0,
                                                                "factor": 2.0}}
    arch, config = from_hf(hf, "config.json")
    assert config.rope_scaling == {"rope_type": "dynamic", "factor": 2.0,
                                   "original_max_position_embeddings": POSITIONS}
    inv_freq, factor = scaled_frequencies(config.head_dim, config.rope_theta, config.rope_scaling)
    assert np.array_equal(inv_freq, inverse_frequencies(config.head_dim, 500.0)) and factor == 1.0
    assert to_hf(arch, config, {})["rope_parameters"] == {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 500.0}
    with pytest.raises(ConfigError, match="rope_type='dynamic'.*block_size=128"):
        config.replace(block_size=128)


def test_rotary_frequencies_equal_transformers():
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from lmlab.interop.hf_config import rope_settings
    from lmlab.layers.rotary import scaled_frequencies

    for name in ("llama3", "yarn", "linear"):
        hf = hf_config(name)
        theta, scaling = rope_settings(hf.to_dict(), "config.json")
        inv_freq, factor = ROPE_INIT_FUNCTIONS[scaling["rope_type"]](hf, "cpu")
        ours, our_factor = scaled_frequencies(hf.head_dim, theta, scaling)
        np.testing.assert_allclose(ours, inv_freq.numpy(), rtol=1e-6)
        assert our_factor == pytest.approx(factor)


NATIVE = {  # lmlab configs (no checkpoint behind them) -> the architecture their export must be
    "Qwen2ForCausalLM": dict(n_head=6, n_kv_head=2, attention_bias=True, attention_out_bias=False, mlp_bias=False,
                             sliding_window=5, tie_embeddings=True),
    "Qwen3ForCausalLM": dict(n_head=4, n_kv_head=2, head_dim=10, qk_norm=True, sliding_window=7,
                             rope_scaling={"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 32}),
    "LlamaForCausalLM": dict(n_head=4, attention_bias=True, attention_out_bias=True, mlp_bias=False,
                             tie_embeddings=False,
                             rope_scaling={"rope_type": "linear", "factor": 2.0}),
}


@pytest.mark.parametrize("architecture", list(NATIVE))
def test_lmlab_configs_export_as_the_architecture_that_holds_them(tmp_path, bpe_json, architecture):
    from lmlab.models.transformer import TransformerConfig, build_transformer
    from lmlab.runs.folder import write_run
    from lmlab.tokenizers import HFTokenizer
    from lmlab.training.config import TrainConfig

    config = TransformerConfig(vocab_size=VOCAB, block_size=POSITIONS, n_layer=2, d_model=WIDTH, d_ff=D_FF,
                               style="llama", rope_theta=700.0, **NATIVE[architecture])
    ours = build_transformer(config, seed=3)
    rng = np.random.default_rng(3)
    for weight in ours.weights:
        base = 1.0 if weight.path.endswith("scale") else 0.0
        weight.assign((base + rng.normal(0, 0.3 if len(weight.shape) > 1 else 0.1, weight.shape)).astype("float32"))
    train = TrainConfig(shape="debug", model={k: v for k, v in config.to_dict().items() if k != "family"})
    write_run(tmp_path / "run", ours, HFTokenizer(bpe_json, kind="bpe"), train, None)
    export_hf(tmp_path / "run", tmp_path / "hf", log=quiet)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert type(theirs).__name__ == architecture
    ids = token_ids(seed=5)
    assert np.abs(hf_logits(theirs, ids) - np.asarray(ours(ids))).max() < 1e-4


def test_configs_no_architecture_holds_are_refused_on_export():
    from lmlab.interop.hf_config import architecture_for
    from lmlab.models.transformer import TransformerConfig

    base = dict(vocab_size=VOCAB, d_model=WIDTH, n_head=4, style="llama")
    for fields, message in ((dict(sliding_window=4, mlp_bias=True), "Mistral has no biases"),
                            (dict(qk_norm=True, mlp_bias=True), "exports as Qwen3"),
                            (dict(attention_bias=False, attention_out_bias=True), "attention_bias covers")):
        with pytest.raises(ConfigError, match=message):
            architecture_for(TransformerConfig(**base, **fields))
