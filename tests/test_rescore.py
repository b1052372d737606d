"""N-best rescoring (lmlab.evaluation.nbest, lmlab.evaluation.rescore, ``lmlab rescore``).

- the first pass and the oracle on the shared HyPoradise lists equal the MANIFEST's measured headroom
  (and jiwer's own corpus WER on the same strings);
- λ = 0 reproduces the first pass; an n-gram trained on the references drives WER to the oracle;
- CER on a hand-made Chinese list, raw and normalised, counted by hand;
- Kaldi n-best text with costs and references; bad input gives errors naming the file and line.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from lmlab.core.errors import DataError
from lmlab.evaluation.nbest import Utterance, read_nbest
from lmlab.evaluation.rescore import normalize, rescore
from tests.conftest import data_path

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

def hyporadise(name):
    return data_path("nbest", "hyporadise", f"test_{name}.json")


@pytest.mark.parametrize("name, raw, normal", [("ls_clean", (1.79, 0.89), (1.79, 0.89)),
                                               ("wsj_score", (6.03, 4.56), (4.90, 3.60))])
def test_first_pass_and_oracle_equal_the_manifest(name, raw, normal):
    import jiwer

    utterances = read_nbest(hyporadise(name))
    every = rescore(utterances, lambda texts: [0.0] * len(texts), weights=(0, 0))["parts"]["all"]
    assert (round(every["first_pass"]["raw"], 2), round(every["oracle"]["raw"], 2)) == raw
    assert (round(every["first_pass"]["normalized"], 2), round(every["oracle"]["normalized"], 2)) == normal
    refs, firsts = [u.reference for u in utterances], [u.hypotheses[0] for u in utterances]
    assert every["first_pass"]["raw"] == pytest.approx(100 * jiwer.wer(refs, firsts))
    assert every["first_pass"]["normalized"] == pytest.approx(
        100 * jiwer.wer([normalize(r) for r in refs], [normalize(h) for h in firsts]))
    if name == "wsj_score":  # the file's own first-pass scores, best first
        assert utterances[0].am[0] == pytest.approx(-0.19051286753486185) and utterances[0].am == sorted(
            utterances[0].am, reverse=True)
    else:  # rank is the first pass
        assert utterances[0].am == [0.0, -1.0, -2.0, -3.0, -4.0]


def test_normaliser():
    assert normalize("$Two hundred, dollars. it's re-structuring") == "two hundred dollars it's re structuring"
    assert normalize("今天，天气 很好。") == "今天 天气 很好"
    assert normalize("a_b  \t c") == "a b c"


# ---------------------------------------------------------------- with a real lmlab model


def reference_ngram(folder, sentences):
    """A run holding a 3-gram trained on ``sentences``: it strongly prefers them to near misses."""
    from lmlab.core.io import write_json
    from lmlab.models.ngram import NGramConfig, NGramLM
    from lmlab.tokenizers.vocab import EOS, UNK, WordTokenizer

    words = [s.split() for s in sentences]
    model = NGramLM.train(words * 3, NGramConfig(order=3, discount_fallback=(0.5, 1.0, 1.5)))
    model.save(folder / "model")
    WordTokenizer([EOS, UNK, *sorted({w for s in words for w in s})]).save(folder / "tokenizer.json")
    write_json(folder / "config.json", {"train": {}, "model": {"family": "ngram", **model.get_config()}})
    return folder


@pytest.fixture(scope="module")
def ls_subset():
    """120 LibriSpeech lists whose reference is one of the hypotheses, 40 of them not the first."""
    utterances = read_nbest(hyporadise("ls_clean"))
    wrong = [u for u in utterances if u.reference in u.hypotheses[1:] and u.reference != u.hypotheses[0]][:40]
    right = [u for u in utterances if u.reference == u.hypotheses[0]][:80]
    return [u for k in range(40) for u in (wrong[k], right[2 * k], right[2 * k + 1])]  # 20 wrong in each half


@pytest.fixture(scope="module")
def ngram_run(tmp_path_factory, ls_subset):
    return reference_ngram(tmp_path_factory.mktemp("refs") / "run", [u.reference for u in ls_subset])


def test_lambda_zero_reproduces_the_first_pass(ngram_run, ls_subset):
    result = rescore(ls_subset, ngram_run, weights=(0.0, 0.0))
    for part in result["parts"].values():
        assert part["rescored"] == part["first_pass"]
    assert all(c["rank"] == 1 for c in result["choices"])
    assert result["parts"]["all"]["first_pass"]["normalized"] > 0  # the subset has first-pass errors to remove


def test_reference_ngram_drives_wer_to_the_oracle(ngram_run, ls_subset, tmp_path, cli):
    code, out, err = cli("rescore", ngram_run, "--nbest", write_jsonl(tmp_path / "ls.jsonl", ls_subset),
                         "--json", "--out", tmp_path / "result.json", "--hyps", tmp_path / "hyps.txt", "--quiet")
    assert code == 0, err
    result = json.loads(out)
    assert json.loads((tmp_path / "result.json").read_text())["parts"] == result["parts"]
    test = result["parts"]["test"]
    assert test["first_pass"]["normalized"] > 1.0
    assert test["rescored"]["normalized"] == test["oracle"]["normalized"] == 0.0
    assert result["weights"]["lm"] > 0 and result["weights"]["tuned_on"].startswith("odd")
    chosen = dict(line.split(" ", 1) for line in (tmp_path / "hyps.txt").read_text().splitlines())
    by_id = {u.id: u for u in read_nbest(tmp_path / "ls.jsonl")}
    assert len(chosen) == test["utterances"] == 60
    assert all(by_id[i].reference == text for i, text in chosen.items())
    code, out, _ = cli("rescore", ngram_run, "--nbest", tmp_path / "ls.jsonl", "--weights", "0,0")
    assert code == 0 and "fixed" in out and "| test | 120 |" in out


def write_jsonl(path, utterances, scores=True):
    with open(path, "w", encoding="utf-8") as out:
        for u in utterances:
            hyps = [{"text": h, "score": a} for h, a in zip(u.hypotheses, u.am)] if scores else u.hypotheses
            out.write(json.dumps({"id": u.id, "hypotheses": hyps, "reference": u.reference}, ensure_ascii=False) + "\n")
    return path


def test_dev_file_tunes_and_every_utterance_is_tested(tmp_path):
    utterances = [Utterance("a", ["the cat sat", "a cat sat"], [0.0, -1.0], "a cat sat"),
                  Utterance("b", ["dogs run", "the dogs run"], [0.0, -1.0], "the dogs run")]
    dev = [Utterance("d", ["one cat", "a cat"], [0.0, -1.0], "a cat")]
    prefers_a = lambda texts: [0.0 if t.startswith(("a ", "the dogs")) else -5.0 for t in texts]  # noqa: E731
    result = rescore(utterances, prefers_a, dev=dev)
    assert result["weights"]["tuned_on"] == "a dev set of 1" and result["weights"]["lm"] > 0.2
    assert result["parts"]["test"]["utterances"] == 2
    assert result["parts"]["test"]["first_pass"]["raw"] == pytest.approx(100 * 2 / 6)
    assert result["parts"]["test"]["rescored"]["raw"] == 0.0


# ---------------------------------------------------------------- Chinese, CER


def test_chinese_cer_by_hand(tmp_path):
    lines = [{"id": "c1", "reference": "今天天气很好", "hypotheses": ["今天天器很好。", "今天 天气 很好"]},
             {"id": "c2", "reference": "我们去公园", "hypotheses": ["我们去公园", "我门去公园"]}]
    path = tmp_path / "zh.jsonl"
    path.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n", encoding="utf-8")
    utterances = read_nbest(path)
    truth = {"今天 天气 很好", "我们去公园"}
    fixed = rescore(utterances, lambda t: [0.0] * len(t), unit="char", weights=(0, 0))
    every = fixed["parts"]["all"]
    assert fixed["metric"] == "CER" and every["reference_units"] == {"raw": 11, "normalized": 11}
    assert every["first_pass"]["raw"] == pytest.approx(100 * 2 / 11)  # 器 for 气, and the 。
    assert every["first_pass"]["normalized"] == pytest.approx(100 * 1 / 11)  # the 。 is gone
    assert every["oracle"]["normalized"] == every["oracle"]["raw"] == 0.0
    best = rescore(utterances, lambda texts: [0.0 if t in truth else -10.0 for t in texts], unit="char",
                   weights=(1.0, 0.0))
    assert best["parts"]["all"]["rescored"]["raw"] == 0.0
    assert [c["rank"] for c in best["choices"]] == [2, 1]
    word = rescore(utterances, lambda t: [0.0] * len(t), weights=(0, 0))["parts"]["all"]
    assert word["reference_units"]["raw"] == 2  # as words, each unsegmented line is one word


# ---------------------------------------------------------------- Kaldi n-best text


def test_kaldi_nbest_with_costs_and_references(tmp_path):
    (tmp_path / "nbest.txt").write_text("u1-2 the cat sat\nu1-1 a cat sat\nu2-1 dogs  run\n", encoding="utf-8")
    (tmp_path / "costs").write_text("u1-1 12.5\nu1-2 13.0\nu2-1 4\n", encoding="utf-8")
    (tmp_path / "text").write_text("u1 the cat sat\nu2 dogs run\n", encoding="utf-8")
    utterances = read_nbest(tmp_path / "nbest.txt", tmp_path / "text", tmp_path / "costs")
    assert [(u.id, u.hypotheses, u.am, u.reference) for u in utterances] == [
        ("u1", ["a cat sat", "the cat sat"], [-12.5, -13.0], "the cat sat"), ("u2", ["dogs run"], [-4.0], "dogs run")]
    ranked = read_nbest(tmp_path / "nbest.txt", tmp_path / "text")
    assert ranked[0].am == [0.0, -1.0]
    result = rescore(utterances, lambda texts: [0.0 if t.startswith("the") else -3.0 for t in texts],
                     weights=(1.0, 0.0))
    assert result["parts"]["all"]["first_pass"]["raw"] == pytest.approx(100 / 5)
    assert result["parts"]["all"]["rescored"]["raw"] == 0.0


@pytest.mark.parametrize("name, content, message", [
    ("bad.jsonl", b'{"id": "x", "reference": "a"}\n', "bad.jsonl:1: needs 'hypotheses'"),
    ("bad.jsonl", b'{"hypotheses": ["a"], "reference": "a"}\n{"hypotheses": ["b \xff"], "reference": "b"}\n',
     "bad.jsonl:2: invalid UTF-8 at byte"),
    ("bad.jsonl", b'{"hypotheses": ["a", "b"]}\n', "utterance '1' has no reference (give --ref)"),
    ("bad.jsonl", b'{"hypotheses": [{"text": "a", "score": 1}, {"text": "b"}], "reference": "a"}\n',
     "some hypotheses have a 'score'"),
    ("bad.jsonl", b'{"hypotheses": [{"txt": "a"}], "reference": "a"}\n', "'text' must be a string"),
    ("bad.jsonl", b'not json\n', "bad.jsonl:1: not JSON"),
    ("bad.json", b'{"input": ["a"]}', "one JSON array"),
    ("bad.json", b'[{"input": ["a", "b"], "output": "a", "score": [1]}]', "one number per hypothesis (2)"),
    ("bad.json", b'[{"output": "a"}]', "utterance 1: needs 'input'"),
    ("nbest.txt", b"u1-1 a b\nu1 c d\n", "nbest.txt:2: expected a key UTT-N"),
    ("nbest.txt", b"u1-1 a b\nu1-3 c d\n", "has ranks [1, 3]"),
])
def test_bad_input_names_the_problem(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError) as caught:
        read_nbest(tmp_path / name)
    assert message in str(caught.value)


def test_bad_input_through_the_cli(tmp_path, cli, ngram_run):
    (tmp_path / "n.txt").write_text("u1-1 a b\n", encoding="utf-8")
    (tmp_path / "text").write_text("u2 a b\n", encoding="utf-8")
    code, _, err = cli("rescore", ngram_run, "--nbest", tmp_path / "n.txt", "--ref", tmp_path / "text")
    assert code == 1 and "no reference for utterance 'u1'" in err
    code, _, err = cli("rescore", ngram_run, "--nbest", tmp_path / "n.txt", "--weights", "1")
    assert code == 1 and "--weights must be LAMBDA,BETA" in err
    (tmp_path / "costs").write_text("u1-1 x\n", encoding="utf-8")
    with pytest.raises(DataError, match="costs:1: expected 'UTT-N cost'"):
        read_nbest(tmp_path / "n.txt", costs=tmp_path / "costs")


def test_padding_never_wins():
    """Lists of different lengths: the padded slots (-inf first pass) are never chosen, whatever λ and β."""
    utterances = [Utterance("1", ["a"], [0.0], "b"), Utterance("2", ["a", "b", "c"], [0.0, -1.0, -2.0], "c")]
    for weights in ((0, 0), (5, 0), (0, -5), (100, 100)):
        result = rescore(utterances, lambda texts: [-float(len(t)) for t in texts], weights=weights)
        assert result["choices"][0]["rank"] == 1 and np.isfinite(result["parts"]["all"]["rescored"]["raw"])
