"""``lmlab score``, ``eval --text`` and ``generate`` on every artefact ``lmlab.load`` reads (issue 20).

A run folder keeps its own path (tests/test_scoring.py, tests/test_training.py); any other model goes through
``lmlab.load``'s object and must answer as that object does, in the run path's output format: KenLM's own
ARPA file (shared/data/kenlm-reference) and a tiny random GPT-2 saved by ``transformers``. An option the kind
cannot take is one line naming the option and the kind.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import lmlab
from tests.conftest import data_path
from tests.test_scoring import TEXTS

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning", "ignore::FutureWarning")


# What a run's `lmlab score --tokens` record and `lmlab eval --json` answer hold (tests/test_scoring.py).
RECORD = {"line", "text", "logprob", "tokens", "perplexity", "token_strings", "token_logprobs"}
EVAL = {"run", "checkpoint", "step", "source", "dtype", "loss", "perplexity", "bits_per_byte", "tokens", "utf8_bytes",
        "nats", "block_size", "stride"}


@pytest.fixture(scope="module")
def arpa():
    path = data_path("kenlm-reference", "valid.o3.arpa.gz")
    return path, lmlab.load(path)


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    """A random 1-layer GPT-2 saved by ``transformers`` with a byte-BPE tokenizer.json, and its ``lmlab.load``."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from lmlab.tokenizers import train_tokenizer

    tokenizer = train_tokenizer("bpe", TEXTS * 4, vocab_size=300)
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=tokenizer.vocab_size, n_positions=32, n_embd=16, n_layer=1, n_head=2,
                                     n_inner=24, initializer_range=0.3, bos_token_id=tokenizer.eos_id,
                                     eos_token_id=tokenizer.eos_id)
    folder = tmp_path_factory.mktemp("cli-hf") / "gpt2"
    transformers.GPT2LMHeadModel(config).eval().save_pretrained(folder)
    (folder / "tokenizer.json").write_text(tokenizer.hf_json(), encoding="utf-8")
    return folder, lmlab.load(folder)


def one_line_error(code: int, err: str, *words: str) -> None:
    assert code == 1 and err.startswith("lmlab: error: ") and err.count("\n") == 1, err
    assert all(w in err for w in words), err


def kenlm_lines():
    """The first non-empty WikiText-2 test lines KenLM's reference scored, with their log10 totals."""
    expected = np.loadtxt(data_path("kenlm-reference", "test.valid-o3.sentence-log10.txt"))
    test = data_path("wikitext-2", "test.txt").read_text(encoding="utf-8").replace("<unk>", "<oov>")
    chosen = [(line, expected[i]) for i, line in enumerate(test.split("\n")[:len(expected)]) if line.strip()]
    return chosen[:20]


def test_score_eval_and_generate_an_arpa_file_as_lmlab_load_does(arpa, cli, tmp_path):
    path, lm = arpa
    lines = kenlm_lines()
    texts = [lines[0][0], "", *(line for line, _ in lines[1:])]  # an empty line keeps its number, as a run's
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    code, out, err = cli("score", path, "--input", tmp_path / "in.txt", "--tokens")
    assert code == 0 and "by backoff" in err, err
    records = [json.loads(r) for r in out.splitlines()]
    assert records[1] == {"line": 2, "text": "", "error": "empty line"}
    scored = [r for r in records if "error" not in r]
    assert [r["line"] for r in scored] == [1, *range(3, len(texts) + 1)]
    for record, expected, (_, log10) in zip(scored, lm.score([t for t in texts if t], tokens=True), lines, strict=True):
        assert set(record) == RECORD
        assert record["logprob"] == pytest.approx(expected["logprob"], rel=1e-12)
        assert record["logprob"] / math.log(10) == pytest.approx(log10, rel=1e-6, abs=3e-4)  # KenLM's query
        assert record["token_strings"] == expected["token_strings"]

    text = "\n".join(line for line, _ in lines[:8]) + "\n"
    (tmp_path / "doc.txt").write_text(text, encoding="utf-8")
    code, out, _ = cli("eval", path, "--text", tmp_path / "doc.txt", "--json")
    result = json.loads(out)
    expected = lm.perplexity(text)
    assert code == 0 and EVAL <= set(result) and (result["kind"], result["checkpoint"]) == ("arpa", None)
    for key in ("perplexity", "perplexity_excluding_oov", "oov", "tokens", "bits_per_byte"):
        assert result[key] == pytest.approx(expected[key], rel=1e-12), key

    code, out, _ = cli("generate", path, "--prompt", "the history of", "--max-new-tokens", 12, "--seed", 5, "--json")
    assert code == 0 and json.loads(out) == [{"prompt": "the history of",
                                              "completion": lm.generate("the history of", 12, seed=5)}]


def test_score_eval_and_generate_a_hugging_face_folder_as_lmlab_load_does(hf, cli, tmp_path):
    folder, lm = hf
    (tmp_path / "in.txt").write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    code, out, err = cli("score", folder, "--input", tmp_path / "in.txt", "--tokens", "--quiet")
    records = [json.loads(r) for r in out.splitlines()]
    assert code == 0 and err == ""
    expected = lm.score(TEXTS, tokens=True)
    assert [r["logprob"] for r in records] == pytest.approx([r["logprob"] for r in expected], rel=1e-6)
    assert [r["token_strings"] for r in records] == [r["token_strings"] for r in expected]
    assert all(set(r) == RECORD for r in records)

    (tmp_path / "doc.txt").write_text("\n".join(TEXTS), encoding="utf-8")
    code, out, _ = cli("eval", folder, "--text", tmp_path / "doc.txt", "--json", "--quiet")
    result = json.loads(out)
    assert code == 0 and result["kind"] == "huggingface"
    assert result["perplexity"] == pytest.approx(lm.perplexity("\n".join(TEXTS))["perplexity"], rel=1e-6)
    assert EVAL <= set(result) and (result["checkpoint"], result["step"], result["dtype"]) == (
        "step-000000", 0, "float32")  # the imported run's own, as `lmlab eval` of that run says

    greedy = lm.generate(["the cat", "a dog"], max_new_tokens=8, temperature=0)
    code, out, _ = cli("generate", folder, "--prompt", "the cat", "--prompt", "a dog", "--max-new-tokens", 8,
                       "--temperature", 0, "--json")
    assert code == 0 and [r["completion"] for r in json.loads(out)] == greedy


def test_an_option_the_artefact_cannot_take_is_one_line_naming_it(arpa, hf, cli, tmp_path):
    path, _ = arpa
    folder, _ = hf
    (tmp_path / "in.txt").write_text("the cat\n", encoding="utf-8")
    one_line_error(*cli("eval", path, "--split", "valid")[::2], "--split valid", "an ARPA file", "--text")
    one_line_error(*cli("score", path, "--input", tmp_path / "in.txt", "--stride", 4)[::2], "--stride", "ARPA")
    one_line_error(*cli("score", path, "--input", tmp_path / "in.txt", "--dtype", "int8")[::2], "--dtype int8", "ARPA")
    one_line_error(*cli("generate", path, "--prompt", "the", "--temperature", 0.5, "--top-k", 3)[::2],
                   "--temperature, --top-k", "an ARPA file")
    one_line_error(*cli("generate", folder, "--checkpoint", "last")[::2], "--checkpoint last", "a Hugging Face folder")
    one_line_error(*cli("eval", folder)[::2], "--split test", "a Hugging Face folder")
