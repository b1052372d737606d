"""LoRA fine-tuning (lmlab.models.lora, lmlab.tasks) and PEFT-format adapters (lmlab.interop.peft).

Fine-tuning with adapters must leave every base weight as it was and store only the adapters and
the head; merged weights (W + (alpha/r)·A·B) must give the adapted model's logits. PEFT parity
uses `transformers` and `peft` on tiny random models, both ways: `peft` loads our adapter onto the
model lmlab's HF export wrote, and we load an adapter `peft` saved (random A and B, ranks that
differ by module, GPT-2's fused c_attn) onto the run lmlab's HF import wrote; logits within 1e-4.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from lmlab.core.errors import ConfigError
from lmlab.core.io import read_json, write_json
from lmlab.tasks.config import FinetuneConfig
from tests.test_tasks_finetune import make_base_run, numbers_file, sentiment_file

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning", "ignore::FutureWarning")


def quiet(*_):
    pass


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    return {"root": root, "train": sentiment_file(root / "train.tsv", 64, 0),
            "valid": sentiment_file(root / "valid.tsv", 16, 1), "pairs": numbers_file(root / "pairs.txt", 48, 2)}


def randomise_adapters(model, seed=0):
    """B starts at zero (the adapted model is the base): give it values so the adapters matter."""
    from lmlab.models.lora import lora_layers

    rng = np.random.default_rng(seed)
    for layer in lora_layers(model).values():
        layer.lora_kernel_b.assign(rng.normal(0, 0.3, layer.lora_kernel_b.shape).astype("float32"))


# ---------------------------------------------------------------- fine-tuning


@pytest.mark.parametrize("family", ["transformer", "encoder"])
def test_lora_classifier_trains_only_adapters_and_head_and_merges_exactly(work, family, cli):
    from lmlab.models.lora import lora_layers
    from lmlab.runs.checkpoint import load_tensors
    from lmlab.runs.load import load_run
    from lmlab.tasks.finetune import finetune
    from lmlab.tasks.folder import load_finetuned

    base = make_base_run(work["root"] / f"base-{family}", family=family)
    out = work["root"] / f"lora-{family}"
    config = FinetuneConfig(task="classify", max_steps=8, batch_size=16, learning_rate=1e-2, eval_interval=4,
                            lora_rank=2, lora_alpha=4.0, lora_targets="q,v,o,fc" if family == "transformer" else "all",
                            pooling="last" if family == "transformer" else "cls")
    finetune(base, out, work["train"], work["valid"], config, log=quiet)

    saved = read_json(out / "config.json")
    best = out / "checkpoints" / read_json(out / "checkpoints" / "best.json")["checkpoint"]
    assert {p.name for p in best.iterdir()} == {"adapter.safetensors", "head.safetensors", "state.json"}
    adapters = load_tensors(best / "adapter.safetensors")
    assert all(k.endswith(("/lora_kernel_a", "/lora_kernel_b")) for k in adapters)
    assert saved["lora"]["trainable"] == sum(a.size for a in adapters.values())
    assert saved["parameters"]["trainable"] == saved["lora"]["trainable"] + 2 * saved["model"]["d_model"] + 2

    tuned = load_finetuned(out)
    base_run = load_run(base)
    before = {v.path.split("/", 1)[1]: v.numpy() for v in base_run.model.weights}
    after = {v.path.split("/", 1)[1]: v for v in tuned.lm.weights}
    frozen = [k for k in before if not np.array_equal(before[k], after[k].numpy() if k in after else None)]
    assert frozen == []  # the stored kernels, biases, norms and embeddings are the base run's
    assert all(np.abs(layer.lora_kernel_b.numpy()).max() > 0 for layer in lora_layers(tuned.lm).values())

    code, stdout, err = cli("lora-merge", out, "--out", work["root"] / f"merged-{family}")
    assert code == 0, err
    merged = load_finetuned(work["root"] / f"merged-{family}")
    assert not lora_layers(merged.lm) and json.loads(stdout)["merged_layers"] == len(lora_layers(tuned.lm))
    ids, lengths = np.array([[3, 5, 7, 9, 2, 0]], np.int32), np.array([5], np.int32)
    assert np.abs(np.asarray(merged.lm(ids)) - np.asarray(tuned.lm(ids))).max() < 1e-5
    assert np.abs(np.asarray(merged.classifier(ids, lengths)) - np.asarray(tuned.classifier(ids, lengths))).max() < 1e-5
    assert np.abs(np.asarray(merged.lm(ids)) - np.asarray(base_run.model(ids))).max() > 1e-3  # adapters did something


def test_lora_generation_from_the_command_line_predicts_and_exports_peft(work, cli):
    base = make_base_run(work["root"] / "base-generate")
    out = work["root"] / "lora-generate"
    code, stdout, err = cli("finetune", base, "--task", "generate", "--template", "translate", "--train", work["pairs"],
                            "--out", out, "--max-steps", "3", "--batch-size", "8", "--lora-rank", "3",
                            "--lora-targets", "q,k,v,o", "--eval-interval", "3")
    assert code == 0, err
    assert "LoRA rank 3 (alpha 3) on q,k,v,o: 4 projections" in err + stdout
    code, stdout, err = cli("predict", out, "one two", "--max-new-tokens", "3", "--json")
    assert code == 0, err
    assert len(json.loads(stdout)) == 1
    code, stdout, err = cli("lora-export", out, "--out", work["root"] / "generate-peft")
    assert code == 0, err
    peft_config = read_json(work["root"] / "generate-peft" / "adapter_config.json")
    # GPT-2's fused c_attn holds q, k and v: one adapter of rank 3 + 3 + 3, plus attn.c_proj (o) at rank 3.
    assert peft_config["r"] == 3 and peft_config["rank_pattern"] == {"transformer.h.0.attn.c_attn": 9}
    assert peft_config["target_modules"] == ["transformer.h.0.attn.c_attn", "transformer.h.0.attn.c_proj"]


def test_lora_extractive_qa_on_an_encoder(work, cli):
    from lmlab.models import registry
    from lmlab.runs.checkpoint import save_checkpoint
    from lmlab.tasks.finetune import finetune
    from lmlab.training.config import TrainConfig
    from lmlab.tokenizers import HFTokenizer
    from lmlab.tokenizers.wordpiece import train_wordpiece
    from tests.test_mlm import CHINESE, ENGLISH, QUESTIONS, squad_file

    tokenizer = HFTokenizer(train_wordpiece([ENGLISH, CHINESE] * 20, vocab_size=120, min_freq=1), kind="hf")
    base = work["root"] / "base-span"
    config = registry.model_config("encoder", "debug", tokenizer.vocab_size, {"n_layer": 1, "block_size": 48})
    base.mkdir()
    (base / "tokenizer.json").write_text(tokenizer.hf_json(), encoding="utf-8")
    write_json(base / "config.json", {"train": TrainConfig().to_dict(), "model": config.to_dict(), "data": None})
    save_checkpoint(base, 1, registry.build_model(config, seed=0), None, {"val_loss": 1.0}, best=True)
    qa = squad_file(work["root"] / "qa.json", QUESTIONS)
    out = work["root"] / "lora-span"
    result = finetune(base, out, qa, qa, FinetuneConfig(task="span", max_steps=2, batch_size=8, lora_rank=2,
                                                        lora_targets="q,k,v,o"), log=quiet)
    assert 0 <= result["val_exact_match"] <= result["val_f1"] <= 100
    best = out / "checkpoints" / read_json(out / "checkpoints" / "best.json")["checkpoint"]
    assert {p.name for p in best.iterdir()} == {"adapter.safetensors", "head.safetensors", "state.json"}
    assert read_json(out / "config.json")["lora"]["adapted_layers"] == 4
    code, stdout, err = cli("evaluate-task", out, "--test", qa, "--json", "--quiet")
    assert code == 0, err
    assert abs(json.loads(stdout)["f1"] - result["val_f1"]) < 1e-6  # the adapters reload onto the base as trained


def test_bad_lora_settings_are_refused_by_name(work, cli):
    from lmlab.models import registry
    from lmlab.models.lora import enable_lora

    model = registry.build_model(registry.model_config("transformer", "debug", 40, {"n_layer": 1}))
    with pytest.raises(ConfigError, match="rank must be an integer >= 1, got 0"):
        enable_lora(model, 0)
    with pytest.raises(ConfigError, match="unknown LoRA target.*qq"):
        enable_lora(model, 2, targets="q,qq")
    with pytest.raises(ConfigError, match="no gate projection.*targets are q, k, v, o, fc, proj"):
        enable_lora(model, 2, targets="q,gate")
    with pytest.raises(ConfigError, match="alpha must be a number > 0"):
        enable_lora(model, 2, alpha=-1.0)
    with pytest.raises(ConfigError, match="choose one"):
        FinetuneConfig(lora_rank=4, freeze=True)
    with pytest.raises(ConfigError, match="lora_rank must be an integer >= 0"):
        FinetuneConfig(lora_rank=-2)
    code, _, err = cli("finetune", "nowhere", "--task", "classify", "--train", work["train"], "--out",
                       work["root"] / "never", "--lora-rank", "0")
    assert code != 0 and "--lora-rank must be >= 1" in err
    code, _, err = cli("finetune", "nowhere", "--task", "classify", "--train", work["train"], "--out",
                       work["root"] / "never", "--lora-rank", "2", "--lora-targets", "x")
    assert code != 0 and "unknown LoRA target(s) x" in err


def test_rank_8_on_gpt2_small_trains_a_quarter_of_a_percent():
    from lmlab.models.lora import enable_lora
    from lmlab.models.transformer import TransformerConfig, build_transformer

    config = TransformerConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, d_model=768, d_ff=3072)
    model = build_transformer(config)
    summary = enable_lora(model, 8, 16.0)  # q and v, the paper's choice
    assert summary["base_parameters"] == 124_439_808  # GPT-2 small, tied head
    assert summary["trainable"] == 12 * 2 * (768 * 8 + 8 * 768) == sum(int(np.prod(v.shape))
                                                                       for v in model.trainable_variables)
    assert 0.1 < summary["percent"] < 0.3


# ---------------------------------------------------------------- PEFT format


@pytest.mark.parametrize("style", ["gpt2", "llama"])
def test_peft_loads_our_adapter_onto_the_exported_model(tmp_path, style):
    import peft
    import torch
    import transformers

    from lmlab.interop import export_hf
    from lmlab.interop.peft import save_peft_adapter
    from lmlab.models.lora import enable_lora
    from lmlab.models.transformer import TransformerConfig
    from lmlab.tokenizers import WordTokenizer
    from tests.test_interop import random_lmlab_run, token_ids

    extra = dict(n_head=4) if style == "gpt2" else dict(n_head=6, n_kv_head=2, tie_embeddings=False, bias=False)
    config = TransformerConfig(vocab_size=301, block_size=40, n_layer=2, d_model=48, d_ff=37, style=style, **extra)
    tokenizer = WordTokenizer(["<eos>", "<unk>"] + [f"w{i}" for i in range(20)])
    ours = random_lmlab_run(tmp_path / "run", config, tokenizer)
    export_hf(tmp_path / "run", tmp_path / "hf", log=quiet)
    # GPT-2: q and v only inside the fused c_attn (k's block of B stays zero), o and the MLP's fc.
    enable_lora(ours, 4, 8.0, "q,v,o,fc" if style == "gpt2" else "all")
    randomise_adapters(ours)
    save_peft_adapter(ours, tmp_path / "adapter", base_model=str(tmp_path / "hf"))
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    ids = token_ids(seed=2)
    with torch.no_grad():
        without = theirs(torch.tensor(ids, dtype=torch.long)).logits.numpy()
        wrapped = peft.PeftModel.from_pretrained(theirs, tmp_path / "adapter").eval()  # adapts theirs in place
        reference = wrapped(torch.tensor(ids, dtype=torch.long)).logits.numpy()
    mine = np.asarray(ours(ids))
    assert np.abs(reference - mine).max() < 1e-4
    assert np.abs(without - mine).max() > 1e-2  # the adapters matter


@pytest.mark.parametrize("style", ["gpt2", "llama"])
def test_we_load_an_adapter_peft_saved(tmp_path, style):
    import peft
    import torch

    from lmlab.interop import import_hf
    from lmlab.interop.hf_tokenizer import tokenizer_json
    from lmlab.interop.peft import load_peft_adapter
    from lmlab.runs.load import load_run
    from lmlab.tokenizers import WordTokenizer
    from tests.test_interop import hf_model, token_ids

    hf = hf_model(style)
    hf.save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "tokenizer.json").write_text(
        tokenizer_json(WordTokenizer(["<eos>", "<unk>"] + [f"w{i}" for i in range(20)])), encoding="utf-8")
    import_hf(tmp_path / "hf", tmp_path / "run", log=quiet)
    run = load_run(tmp_path / "run")
    if style == "gpt2":  # fused c_attn, and a rank and alpha of its own for the MLP
        settings = dict(target_modules=["c_attn", "c_proj", "c_fc"], rank_pattern={"c_fc": 2},
                        alpha_pattern={"c_fc": 7}, fan_in_fan_out=True)
    else:  # rsLoRA scaling, alpha / sqrt(r)
        settings = dict(target_modules=["q_proj", "v_proj", "down_proj", "up_proj"], use_rslora=True)
    torch.manual_seed(1)
    wrapped = peft.get_peft_model(hf, peft.LoraConfig(r=3, lora_alpha=5, init_lora_weights=False, **settings)).eval()
    wrapped.save_pretrained(tmp_path / "adapter")
    summary = load_peft_adapter(run.model, tmp_path / "adapter")
    assert summary["modules"] == 3 * 4  # 3 layers; GPT-2's c_proj names both the attention's and the MLP's
    ids = token_ids(seed=4)
    with torch.no_grad():
        reference = wrapped(torch.tensor(ids, dtype=torch.long)).logits.numpy()
    assert np.abs(reference - np.asarray(run.model(ids))).max() < 1e-4
    assert all(not v.trainable for v in run.model.weights if "lora_kernel" not in v.path)


def test_what_keras_lora_cannot_hold_is_refused(tmp_path):
    from safetensors.numpy import save_file

    from lmlab.interop.peft import load_peft_adapter
    from lmlab.models import registry

    model = registry.build_model(registry.model_config("transformer", "debug", 40, {"n_layer": 1}))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    base = {"peft_type": "LORA", "r": 2, "lora_alpha": 2, "target_modules": ["c_attn"], "bias": "none"}
    write_json(adapter / "adapter_config.json", {**base, "use_dora": True})
    with pytest.raises(ConfigError, match="DoRA"):
        load_peft_adapter(model, adapter)
    write_json(adapter / "adapter_config.json", {**base, "bias": "lora_only"})
    with pytest.raises(ConfigError, match="trains biases"):
        load_peft_adapter(model, adapter)
    write_json(adapter / "adapter_config.json", base)
    save_file({"base_model.model.lm_head.lora_A.weight": np.zeros((2, 32), np.float32),
               "base_model.model.lm_head.lora_B.weight": np.zeros((40, 2), np.float32)},
              str(adapter / "adapter_model.safetensors"))
    with pytest.raises(ConfigError, match="adapts lm_head, which is not an attention or MLP projection"):
        load_peft_adapter(model, adapter)
