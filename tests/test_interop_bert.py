"""Hugging Face interop for masked LMs: BertForMaskedLM and RobertaForMaskedLM, both directions.

Random weights, no hub: `transformers` builds tiny models with odd sizes
(vocabulary 301, width 48, 4 heads, 2 layers, d_ff 37), every parameter
perturbed so biases and norms are not their initial values. Inputs carry
segment ids (BERT) and right padding, which `transformers` is told about with
``attention_mask`` and lmlab infers from the padding id; RoBERTa's positions
start after its padding id. Logits must agree within 1e-4 in float32.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformers

from lmlab.core.errors import ConfigError
from lmlab.interop import export_hf, import_hf
from lmlab.runs.folder import write_run
from lmlab.runs.load import load_run
from lmlab.tokenizers import HFTokenizer

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

VOCAB, WIDTH, LAYERS, HEADS, D_FF, POSITIONS = 301, 48, 2, 4, 37, 40
CORPUS = ["The quick brown fox jumps over the lazy dog. Unbelievable jumping foxes!",
          "床前明月光，疑是地上霜。举头望明月，低头思故乡。", "Shall I compare thee to a summer's day?"] * 5


def quiet(*_):
    pass


def roberta_tokenizer_json() -> str:
    """A byte-level BPE tokenizer.json with RoBERTa's special tokens at RoBERTa's ids (<pad> = 1)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=VOCAB - 1, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    return backend.to_str()


def hf_model(style: str, seed: int = 0):
    torch.manual_seed(seed)
    if style == "bert":
        config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=WIDTH, num_hidden_layers=LAYERS,
                                         num_attention_heads=HEADS, intermediate_size=D_FF,
                                         max_position_embeddings=POSITIONS, type_vocab_size=3, pad_token_id=0)
        model = transformers.BertForMaskedLM(config)
    else:
        config = transformers.RobertaConfig(vocab_size=VOCAB, hidden_size=WIDTH, num_hidden_layers=LAYERS,
                                            num_attention_heads=HEADS, intermediate_size=D_FF,
                                            max_position_embeddings=POSITIONS + 2, type_vocab_size=1,
                                            pad_token_id=1, layer_norm_eps=1e-5)
        model = transformers.RobertaForMaskedLM(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    return model.eval()


def inputs(style: str, seed: int = 1):
    """Ids (one row right-padded), segment ids and the padding id."""
    rng = np.random.default_rng(seed)
    pad = 0 if style == "bert" else 1
    ids = rng.integers(5, VOCAB, size=(3, 13)).astype(np.int32)
    ids[1, 9:] = pad
    types = (np.arange(13)[None, :] >= 6).astype(np.int32).repeat(3, 0) * (2 if style == "bert" else 0)
    return ids, types, pad


def hf_logits(model, ids, types, pad):
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids, dtype=torch.long), token_type_ids=torch.tensor(types, dtype=torch.long),
                     attention_mask=torch.tensor(ids != pad, dtype=torch.long)).logits.numpy()


@pytest.fixture(scope="module")
def tokenizers_json():
    from lmlab.tokenizers.wordpiece import train_wordpiece

    return {"bert": train_wordpiece(CORPUS, vocab_size=VOCAB - 1, min_freq=1), "roberta": roberta_tokenizer_json()}


@pytest.fixture(scope="module")
def imported(tmp_path_factory, tokenizers_json):
    root = tmp_path_factory.mktemp("hf-mlm")
    made = {}
    for style in ("bert", "roberta"):
        model = hf_model(style)
        folder = root / style
        model.save_pretrained(folder)
        (folder / "tokenizer.json").write_text(tokenizers_json[style], encoding="utf-8")
        import_hf(folder, root / f"{style}-run", log=quiet)
        made[style] = (model, folder, load_run(root / f"{style}-run"))
    return made


@pytest.mark.parametrize("style", ["bert", "roberta"])
def test_imported_masked_lm_logits_match_transformers(imported, style):
    model, _, run = imported[style]
    ids, types, pad = inputs(style)
    expected = hf_logits(model, ids, types, pad)
    ours = np.asarray(run.model(ids, types))
    assert ours.shape == expected.shape == (3, 13, VOCAB)
    assert np.abs(ours - expected).max() < 1e-4
    assert np.ptp(expected, axis=-1).min() > 0.5
    config = run.config["model"]
    assert config["family"] == "encoder" and config["pad_token_id"] == pad
    assert config["block_size"] == POSITIONS and config["position_offset"] == (2 if style == "roberta" else 0)
    assert run.config["imported_from"]["architecture"] == ("BertForMaskedLM" if style == "bert" else "RobertaForMaskedLM")


@pytest.mark.parametrize("style", ["bert", "roberta"])
def test_exported_masked_lm_loads_in_transformers_with_equal_logits(tmp_path, tokenizers_json, style):
    from lmlab.models.encoder import EncoderConfig, build_encoder
    from lmlab.training.config import TrainConfig

    roberta = style == "roberta"
    config = EncoderConfig(vocab_size=VOCAB, block_size=POSITIONS, n_layer=LAYERS, n_head=HEADS, d_model=WIDTH,
                           d_ff=D_FF, type_vocab_size=1 if roberta else 3, pad_token_id=1 if roberta else 0,
                           position_offset=2 if roberta else 0, norm_eps=1e-5 if roberta else 1e-12)
    ours = build_encoder(config, seed=3)
    rng = np.random.default_rng(3)
    for weight in ours.weights:
        base = 1.0 if weight.path.endswith("gamma") else 0.0
        weight.assign((base + rng.normal(0, 0.3 if len(weight.shape) > 1 else 0.1, weight.shape)).astype("float32"))
    tokenizer = HFTokenizer(tokenizers_json[style], kind="hf")
    train = TrainConfig(family="encoder", shape="debug",
                        model={k: v for k, v in config.to_dict().items() if k != "family"})
    write_run(tmp_path / "run", ours, tokenizer, train, None)
    export_hf(tmp_path / "run", tmp_path / "hf", log=quiet)
    theirs = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "hf").eval()
    assert type(theirs).__name__ == ("RobertaForMaskedLM" if roberta else "BertForMaskedLM")
    ids, types, pad = inputs(style, seed=2)
    assert np.abs(hf_logits(theirs, ids, types, pad) - np.asarray(ours(ids, types))).max() < 1e-4
    reference = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = CORPUS[0] + " " + CORPUS[1]
    assert reference(text, add_special_tokens=False)["input_ids"] == tokenizer.encode(text)
    assert reference.mask_token == ("<mask>" if roberta else "[MASK]")
    saved = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert saved["max_position_embeddings"] == POSITIONS + (2 if roberta else 0)
    from lmlab.interop.savedmodel import export_savedmodel

    with pytest.raises(ConfigError, match="masked language model .* export it with --format hf"):
        export_savedmodel(tmp_path / "run", tmp_path / "savedmodel", log=quiet)


def test_import_export_round_trip_and_refusals(imported, tmp_path):
    from lmlab.interop.weight_files import CheckpointTensors

    _, folder, _ = imported["bert"]
    export_hf(folder.parent / "bert-run", tmp_path / "back", log=quiet)
    before, after = CheckpointTensors.open(folder), CheckpointTensors.open(tmp_path / "back")
    assert sorted(before.names) == sorted(after.names)
    for name in before.names:
        assert np.array_equal(before.read(name), after.read(name)), name
    bad = json.loads((folder / "config.json").read_text()) | {"hidden_act": "relu"}
    (tmp_path / "relu").mkdir()
    (tmp_path / "relu" / "config.json").write_text(json.dumps(bad))
    with pytest.raises(ConfigError, match="hidden_act='relu' is not supported"):
        import_hf(tmp_path / "relu", tmp_path / "relu-run", log=quiet)
