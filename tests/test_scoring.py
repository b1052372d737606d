"""Scoring lines (lmlab.evaluation.score, ``lmlab score``) and minimal pairs (lmlab.evaluation.pairs, ``eval-pairs``).

- decoders (Transformer, LSTM, gated CNN; random weights): each line's score equals ``lmlab eval --text``'s
  total nats on a file holding ``<eos> line <eos>``, windows included for a line longer than the context;
- n-gram: a run holding KenLM's own ARPA model scores WikiText-2 test lines as KenLM's ``query`` did
  (shared/data/kenlm-reference, per-line log10 × ln 10);
- masked LM: the batched pseudo-log-likelihood equals a slow loop masking one token at a time;
- minimal pairs on hand-made files (JSONL and CSV) and on BLiMP; bad lines; the command line; the bar.
"""

from __future__ import annotations

import io
import json
import math
import sys

import numpy as np
import pytest

from lmlab.evaluation.pairs import evaluate_pairs, read_pairs
from lmlab.evaluation.perplexity import evaluate_run
from lmlab.evaluation.score import score_texts
from lmlab.runs.load import load_run
from lmlab.tokenizers import train_tokenizer
from lmlab.tokenizers.vocab import EOS, UNK, WordTokenizer
from tests.bars import finished_bar, no_bar
from tests.conftest import data_path

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

TEXTS = ["the cat sat on the mat", "a dog ran in the park", "the cat ran",
         "the cat sat on the mat while a dog ran in the park and the cat sat"]  # 16 + 1 targets > block 8
BLOCK = 8


def random_run(folder, family, tokenizer, block=BLOCK, **fields):
    from lmlab.models import registry
    from lmlab.runs.folder import write_run
    from lmlab.training.config import TrainConfig

    config = registry.config_from_dict({"family": family, "vocab_size": tokenizer.vocab_size, "block_size": block,
                                        **fields})
    model = registry.build_model(config, seed=7)
    rng = np.random.default_rng(7)
    for weight in model.weights:  # large enough that the scores differ clearly between lines
        if len(weight.shape) > 1:
            weight.assign(rng.normal(0, 0.3, weight.shape).astype("float32"))
    train = TrainConfig(shape="debug", model={k: v for k, v in config.to_dict().items() if k != "family"})
    write_run(folder, model, tokenizer, train, None)
    return folder


DECODERS = {
    "transformer": {"n_layer": 1, "n_head": 2, "d_model": 8, "d_ff": 12},
    "rnn": {"n_layer": 1, "d_model": 8, "dropout": 0.0},
    "gated_cnn": {"n_layer": 1, "d_model": 8, "kernel_size": 3},
}


@pytest.fixture(scope="module")
def word_tokenizer():
    return train_tokenizer("word", TEXTS)


@pytest.fixture(scope="module")
def decoder_run(tmp_path_factory, word_tokenizer):
    return random_run(tmp_path_factory.mktemp("transformer") / "run", "transformer", word_tokenizer,
                      **DECODERS["transformer"])


@pytest.mark.parametrize("family", sorted(DECODERS))
def test_decoder_score_equals_eval_total_nats(tmp_path, word_tokenizer, family):
    run = random_run(tmp_path / "run", family, word_tokenizer, **DECODERS[family])
    loaded = load_run(run)
    texts = TEXTS if family == "transformer" else [TEXTS[0], TEXTS[3]]  # one short, one windowed (time)
    for stride in (None, 3) if family == "transformer" else (None,):
        records = list(score_texts(loaded, texts, stride=stride, batch_size=3))
        for text, record in zip(texts, records):
            (tmp_path / "line.txt").write_text(f"{EOS} {text} {EOS}", encoding="utf-8")
            expected = evaluate_run(run, text_file=tmp_path / "line.txt", stride=stride)
            assert record["tokens"] == expected["tokens"] == len(text.split()) + 1
            assert record["logprob"] == pytest.approx(-expected["nats"], rel=1e-5, abs=1e-5)
            assert record["perplexity"] == pytest.approx(math.exp(-record["logprob"] / record["tokens"]))
            assert record.get("windows", 1) == (1 if len(text.split()) + 1 <= BLOCK else
                                                1 + math.ceil((len(text.split()) + 1 - BLOCK) / (stride or BLOCK)))


def test_tokens_option_lists_each_token_and_the_end_token(decoder_run):
    record = next(score_texts(decoder_run, ["the cat ran"], tokens=True))
    assert record["token_strings"] == ["the", "cat", "ran", EOS]
    assert sum(record["token_logprobs"]) == pytest.approx(record["logprob"])
    assert all(v < 0 for v in record["token_logprobs"])


# ---------------------------------------------------------------- n-gram against KenLM


def kenlm_run_folder(folder):
    """A run at ``folder`` holding KenLM's own order-3 model of WikiText-2's valid.txt, with a word tokenizer over
    its words."""
    from lmlab.models.ngram import NGramLM
    from lmlab.core.io import write_json

    model = NGramLM.from_arpa(data_path("kenlm-reference", "valid.o3.arpa.gz"))
    model.save(folder / "model")
    words = [w for w in model.vocabulary.words if w not in ("<s>", "</s>", "<unk>")]
    WordTokenizer([EOS, UNK, *words]).save(folder / "tokenizer.json")  # the text's <unk> plays <oov>, as for KenLM
    write_json(folder / "config.json", {"train": {}, "model": {"family": "ngram", **model.get_config()}})
    return folder


@pytest.fixture(scope="module")
def kenlm_run(tmp_path_factory):
    return kenlm_run_folder(tmp_path_factory.mktemp("kenlm") / "run")


def test_ngram_score_equals_kenlm_per_sentence(kenlm_run):
    run = load_run(kenlm_run)
    vocabulary = set(run.tokenizer.index) | {"<unk>"}
    expected = np.loadtxt(data_path("kenlm-reference", "test.valid-o3.sentence-log10.txt"))
    lines = data_path("wikitext-2", "test.txt").read_text(encoding="utf-8").split("\n")[:len(expected)]
    # Lines whose words the model knows (a word it never saw is KenLM's <unk>, but our tokenizer's <oov>).
    chosen = [i for i, line in enumerate(lines) if line.strip() and set(line.split()) <= vocabulary][:400]
    assert len(chosen) == 400
    records = list(score_texts(run, [lines[i] for i in chosen]))
    for i, record in zip(chosen, records):
        assert record["tokens"] == len(lines[i].split()) + 1
        assert record["logprob"] == pytest.approx(expected[i] * math.log(10), rel=1e-6, abs=3e-4)  # KenLM sums in float32


# ---------------------------------------------------------------- masked LM: pseudo-log-likelihood


def test_pseudo_log_likelihood_equals_a_slow_loop(tmp_path):
    from keras import ops

    from lmlab.tokenizers import HFTokenizer
    from lmlab.tokenizers.specials import special_ids
    from lmlab.tokenizers.wordpiece import train_wordpiece

    tokenizer = HFTokenizer(train_wordpiece(TEXTS * 5, vocab_size=60, min_freq=1), kind="hf")
    special = special_ids(tokenizer)
    run = random_run(tmp_path / "run", "encoder", tokenizer, block=10, n_layer=1, n_head=2, d_model=12, d_ff=20,
                     pad_token_id=special.pad)
    loaded = load_run(run)
    records = list(score_texts(loaded, TEXTS, tokens=True, batch_size=5))
    for text, record in zip(TEXTS, records):
        ids = tokenizer.encode(text)
        assert record["tokens"] == len(ids) and record.get("windows", 1) == math.ceil(len(ids) / 8)
        slow = 0.0
        for start in range(0, len(ids), 8):  # rows of block - 2 tokens, each [CLS] ... [SEP]
            row = np.array([special.cls, *ids[start:start + 8], special.sep], np.int32)
            for position in range(1, len(row) - 1):
                x = row.copy()
                x[position] = special.mask
                logits = np.asarray(ops.convert_to_numpy(loaded.model(x[None], training=False)), np.float64)[0]
                log_z = np.log(np.exp(logits[position] - logits[position].max()).sum()) + logits[position].max()
                slow += logits[position, row[position]] - log_z
        assert record["logprob"] == pytest.approx(slow, abs=1e-4)


# ---------------------------------------------------------------- minimal pairs

PAIRS = [  # the first two the right way round, the third reversed, the fourth a tie: accuracy 1/2
    {"good": "the game was released in japan", "bad": "the game were released in japan", "group": "a", "field": "f"},
    {"good": "he played in the first season", "bad": "he played in the first seasons the", "group": "a", "field": "f"},
    {"good": "season first the in played he", "bad": "he played in the first season", "group": "b", "field": "g"},
    {"good": "the song", "bad": "the song", "group": "b", "field": "g"},
]


def test_pairs_accuracy_follows_the_scores(kenlm_run, tmp_path):
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(p) for p in PAIRS) + "\n", encoding="utf-8")
    (tmp_path / "pairs.csv").write_text("good,bad,group,field\n" + "".join(
        f"{p['good']},{p['bad']},{p['group']},{p['field']}\n" for p in PAIRS), encoding="utf-8")
    run = load_run(kenlm_run)
    scores = [r["logprob"] for r in score_texts(run, [s for p in PAIRS for s in (p["good"], p["bad"])])]
    expected = [good > bad for good, bad in zip(scores[::2], scores[1::2])]
    assert expected == [True, True, False, False]
    for name in ("pairs.jsonl", "pairs.csv"):
        result = evaluate_pairs(run, read_pairs(tmp_path / name))
        assert result["accuracy"] == 0.5 and result["pairs"] == 4 and result["method"] == "backoff"
        assert result["paradigms"]["a"]["accuracy"] == 1.0 and result["paradigms"]["b"]["accuracy"] == 0.0
        assert result["fields"] == {"f": {"accuracy": 1.0, "pairs": 2}, "g": {"accuracy": 0.0, "pairs": 2}}


def test_eval_pairs_on_blimp_through_the_cli(kenlm_run, tmp_path, cli):
    blimp = data_path("blimp", "data")
    code, out, err = cli("eval-pairs", kenlm_run, "--data", blimp, "--limit", "3", "--json", "--out", tmp_path / "o")
    assert code == 0, err
    result = json.loads(out)
    assert result["pairs"] == 67 * 3 and len(result["paradigms"]) == 67
    # Four fields, and principle_A_case_2's 'syntax/semantics' kept as published (MANIFEST.md).
    assert sorted(result["fields"]) == ["morphology", "semantics", "syntax", "syntax/semantics", "syntax_semantics"]
    assert result["paradigms"]["adjunct_island"]["field"] == "syntax"
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["accuracy.png", "results.json", "results.md"]
    assert "| **overall** | 201 |" in (tmp_path / "o" / "results.md").read_text(encoding="utf-8")
    code, out, err = cli("eval-pairs", kenlm_run, "--data", blimp / "adjunct_island.jsonl", "--limit", "2")
    assert code == 0 and "| adjunct_island | 2 |" in out and "overall accuracy" in err


def test_bad_pair_files(tmp_path, kenlm_run, cli):
    (tmp_path / "bad.jsonl").write_text('{"good": "a b"}\n', encoding="utf-8")
    code, _, err = cli("eval-pairs", kenlm_run, "--data", tmp_path / "bad.jsonl")
    assert code == 1 and "bad.jsonl:1: the bad sentence is missing or empty" in err
    (tmp_path / "bad.csv").write_text("first,second\na,b\n", encoding="utf-8")
    code, _, err = cli("eval-pairs", kenlm_run, "--data", tmp_path / "bad.csv")
    assert code == 1 and "header row with good and bad" in err


# ---------------------------------------------------------------- bad lines, the command line, the bar

RAW = b"the cat sat\n\n\xff\xfe the\n   \nthe cat ran"  # ok, empty, invalid UTF-8, blank, ok (no final newline)


def test_bad_lines_get_error_records(decoder_run, tmp_path, cli):
    (tmp_path / "in.txt").write_bytes(RAW)
    code, out, err = cli("score", decoder_run, "--input", tmp_path / "in.txt")
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["line"] for r in records] == [1, 2, 3, 4, 5]
    assert [r.get("error") for r in records] == [None, "empty line", "invalid UTF-8 at byte 0", "empty line", None]
    assert records[4]["text"] == "the cat ran" and records[4]["tokens"] == 4
    assert "scored 2 of 5 lines by chain (3 error records, 2 of them empty lines" in err
    (tmp_path / "in.jsonl").write_text('{"text": "the cat"}\nnot json\n{"other": 1}\n', encoding="utf-8")
    code, out, err = cli("score", decoder_run, "--input", tmp_path / "in.jsonl", "--field", "text", "--quiet")
    records = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and not err and records[0]["tokens"] == 3
    assert records[1]["error"].startswith("not JSON") and records[2]["error"] == "no string field 'text'"


def test_score_cli_equals_eval_cli_and_reads_stdin(decoder_run, tmp_path, cli, monkeypatch):
    text = TEXTS[3]
    (tmp_path / "doc.txt").write_text(f"{EOS} {text} {EOS}", encoding="utf-8")
    code, out, _ = cli("eval", decoder_run, "--text", tmp_path / "doc.txt", "--json")
    nats = json.loads(out)["nats"]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(f"{text}\n".encode())))
    code, out, err = cli("score", decoder_run, "--input", "-", "--out", tmp_path / "out.jsonl", "--tokens")
    assert code == 0 and out == "" and "wrote" in err
    record = json.loads((tmp_path / "out.jsonl").read_text(encoding="utf-8"))
    assert record["logprob"] == pytest.approx(-nats, rel=1e-5) and record["windows"] == 3
    assert len(record["token_logprobs"]) == len(text.split()) + 1


def test_score_progress_bar(decoder_run, tmp_path, cli, terminal):
    (tmp_path / "in.txt").write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    code, _, err = cli("score", decoder_run, "--input", tmp_path / "in.txt")
    assert code == 0 and finished_bar(err, "score", len(TEXTS))
    code, _, err = cli("score", decoder_run, "--input", tmp_path / "in.txt", "--quiet")
    assert code == 0 and no_bar(err) and not err


def test_empty_text_from_python_is_an_error_record(decoder_run):
    records = list(score_texts(decoder_run, ["the cat", " "]))
    assert "error" not in records[0] and records[1] == {"line": 2, "text": " ", "error": "empty line"}
