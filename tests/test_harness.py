"""The lm-evaluation-harness model (lmlab.evaluation.harness, ``lmlab harness``) on a tiny random decoder.

- ``loglikelihood`` and ``loglikelihood_rolling`` equal ``lmlab score``'s per-token log-probabilities
  of the same strings, greedy flags equal the argmax of a plain forward pass;
- the harness's own ``simple_evaluate`` on three local tasks (multiple choice, rolling perplexity,
  generation) from JSONL in tmp_path, no hub: accuracy, word perplexity and generations equal what
  lmlab's scorer and generator give on the same documents; the same through ``lmlab harness``.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

pytest.importorskip("lm_eval")

from lmlab.evaluation.harness import LmlabLM, evaluate  # noqa: E402
from lmlab.evaluation.score import score_texts  # noqa: E402
from lmlab.generate.decoder import generate_uncached  # noqa: E402
from lmlab.runs.load import load_run  # noqa: E402
from lmlab.tokenizers import train_tokenizer  # noqa: E402
from tests.test_scoring import DECODERS, TEXTS, random_run  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning",
                                        "ignore::FutureWarning")

CHOICES = [{"context": "the cat", "choices": ["sat", "ran", "park"], "label": 0},
           {"context": "a dog ran in the", "choices": ["park", "mat"], "label": 0},
           {"context": "the", "choices": ["cat", "dog", "mat"], "label": 2}]
ROLLING = [{"text": "the cat sat on the mat"}, {"text": TEXTS[3]}]  # the second is longer than the block
PROMPTS = [{"prompt": "the cat", "answer": "sat"}, {"prompt": "a dog ran", "answer": "in"}]


class Request:  # what the harness hands a model: an object with .args
    def __init__(self, *args):
        self.args = args


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tokenizer = train_tokenizer("word", TEXTS)
    return load_run(random_run(tmp_path_factory.mktemp("h") / "run", "transformer", tokenizer,
                               **DECODERS["transformer"]))


@pytest.fixture(scope="module")
def lm(run):
    return LmlabLM(run, batch_size=3)


def token_logprobs(run, text):
    return next(score_texts(run, [text], tokens=True))["token_logprobs"]


def test_loglikelihood_equals_lmlab_score(lm, run):
    requests = [Request(d["context"], " " + c) for d in CHOICES for c in d["choices"]] + [
        Request("", "the cat ran"), Request(TEXTS[3], " cat")]  # the last is longer than the block: cut
    results = lm.loglikelihood(requests)
    for request, (value, _) in zip(requests[:-1], results[:-1]):
        context, continuation = request.args
        per_token = token_logprobs(run, (context + continuation).strip())
        first = len(context.split())
        assert value == pytest.approx(sum(per_token[first:first + len(continuation.split())]), abs=1e-5)
    long_value = results[-1][0]
    assert np.isfinite(long_value) and long_value < 0
    # greedy: each continuation token is the argmax of a plain forward pass
    best = generate_uncached(run.model, [run.tokenizer.eos_id, *run.tokenizer.encode("the cat")], 1)[0]
    other = next(w for w in TEXTS[3].split() if w != run.tokenizer.id_to_token(best))
    flags = lm.loglikelihood([Request("the cat", " " + run.tokenizer.id_to_token(best)), Request("the cat", " " + other)])
    assert [flag for _, flag in flags] == [True, False]


def test_rolling_equals_lmlab_score_without_the_end_token(lm, run):
    texts = [d["text"] for d in ROLLING]
    values = lm.loglikelihood_rolling([Request(t) for t in texts])
    for text, value in zip(texts, values):
        record = next(score_texts(run, [text], tokens=True))
        assert value == pytest.approx(record["logprob"] - record["token_logprobs"][-1], abs=1e-5)


def write_tasks(folder):
    """Three harness tasks over local JSONL files (the harness's ``json`` builder: nothing downloaded)."""
    for name, docs in (("choice", CHOICES), ("rolling", ROLLING), ("gen", PROMPTS)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    common = "dataset_path: json\ntest_split: test\ndataset_kwargs:\n  data_files:\n    test: {path}\n"
    (folder / "choice.yaml").write_text(
        "task: lmlab_toy_choice\n" + common.format(path=folder / "choice.jsonl") +
        "output_type: multiple_choice\ndoc_to_text: '{{context}}'\ndoc_to_choice: '{{choices}}'\n"
        "doc_to_target: '{{label}}'\nmetric_list:\n  - metric: acc\n", encoding="utf-8")
    (folder / "rolling.yaml").write_text(
        "task: lmlab_toy_rolling\n" + common.format(path=folder / "rolling.jsonl") +
        "output_type: loglikelihood_rolling\ndoc_to_text: ''\ndoc_to_target: '{{text}}'\n"
        "metric_list:\n  - metric: word_perplexity\n", encoding="utf-8")
    (folder / "gen.yaml").write_text(
        "task: lmlab_toy_gen\n" + common.format(path=folder / "gen.jsonl") +
        "output_type: generate_until\ndoc_to_text: '{{prompt}}'\ndoc_to_target: '{{answer}}'\n"
        "generation_kwargs:\n  until: ['mat']\n  max_gen_toks: 4\n  do_sample: false\n"
        "metric_list:\n  - metric: exact_match\n", encoding="utf-8")
    return folder


def expected_accuracy(run):
    right = 0
    for doc in CHOICES:
        first = len(doc["context"].split())
        scores = [token_logprobs(run, f"{doc['context']} {c}")[first] for c in doc["choices"]]
        right += int(np.argmax(scores)) == doc["label"]
    return right / len(CHOICES)


def test_simple_evaluate_on_local_tasks(run, tmp_path, monkeypatch, cli):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    tasks = write_tasks(tmp_path)
    out = evaluate(run, ["lmlab_toy_choice", "lmlab_toy_rolling", "lmlab_toy_gen"], include_path=tasks,
                   batch_size=2, log_samples=True)
    results = out["results"]
    assert results["lmlab_toy_choice"]["acc,none"] == pytest.approx(expected_accuracy(run))
    nats = sum(sum(next(score_texts(run, [d["text"]], tokens=True))["token_logprobs"][:-1]) for d in ROLLING)
    words = sum(len(d["text"].split()) for d in ROLLING)
    assert results["lmlab_toy_rolling"]["word_perplexity,none"] == pytest.approx(math.exp(-nats / words), rel=1e-5)
    for sample, doc in zip(out["samples"]["lmlab_toy_gen"], PROMPTS):
        words = [run.tokenizer.id_to_token(t) for t in generate_uncached(
            run.model, [run.tokenizer.eos_id, *run.tokenizer.encode(doc["prompt"])], 4)]
        words = words[:words.index(run.tokenizer.eos_token)] if run.tokenizer.eos_token in words else words
        assert sample["resps"][0][0] == "".join(" " + w for w in words).split("mat")[0]
    code, printed, err = cli("harness", run.folder, "--tasks", "lmlab_toy_choice", "--include-path", tasks,
                             "--out", tmp_path / "h.json")
    assert code == 0, err
    assert "lmlab_toy_choice" in printed and "acc" in printed
    saved = json.loads((tmp_path / "h.json").read_text())
    assert saved["results"]["lmlab_toy_choice"]["acc,none"] == pytest.approx(expected_accuracy(run))


def test_only_decoder_runs(tmp_path):
    from lmlab.core.errors import ConfigError

    tokenizer = train_tokenizer("word", TEXTS)
    folder = random_run(tmp_path / "enc", "encoder", tokenizer, n_layer=1, n_head=2, d_model=8, d_ff=12)
    with pytest.raises(ConfigError, match="needs a decoder run"):
        LmlabLM(folder)
