"""``lmlab serve`` on an n-gram run: a trigram counted from WikiText-2's valid.txt behind the real server
(a subprocess on a loopback port), talked to with the official ``openai`` client.

- greedy completions are the chain of each step's most probable word under the counts (the model's own
  back-off distribution, :meth:`TokenNGram.next_log_probs`), alone and batched with sampled requests;
- ``echo`` + ``logprobs`` + ``max_tokens=0`` equals ``lmlab score --tokens`` to 1e-5, a word the model never
  counted (its ``<unk>``) included;
- streaming equals non-streaming; ``n=3`` with a seed is reproducible and the choices differ;
- the distribution sums to 1 over the tokenizer's ids and never offers ``<s>`` or a special token.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tests.conftest import data_path
from tests.serving import greedy_beside_sampled, request, running_server

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
openai = pytest.importorskip("openai", reason="pip install 'lmlab[test]' (the openai client)")

PROMPTS = ["The game was released in", "In the first", "He"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from lmlab.cli import main
    from lmlab.data import prepare

    work = tmp_path_factory.mktemp("serve-ngram")
    wt2 = data_path("wikitext-2")
    prepare([f"train={wt2 / 'valid.txt'}", f"valid={wt2 / 'test.txt'}"], work / "data", tokenizer="word",
            unit="paragraph", clean={"dedup": False})
    assert main(["train", "--model", "ngram", "--data", str(work / "data"), "--set", "model.order=3",
                 "--out", str(work / "run"), "--quiet"]) == 0
    return work / "run"


@pytest.fixture(scope="module")
def loaded(run):
    from lmlab.runs.load import load_run

    return load_run(run)


@pytest.fixture(scope="module")
def server(run):
    with running_server(run, "--max-batch", "4", "--model-name", "trigram") as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=60)


def greedy(client, prompt, max_tokens=10):
    return client.completions.create(model="trigram", prompt=prompt, max_tokens=max_tokens, temperature=0,
                                     logprobs=1, extra_body={"ignore_eos": True})


def test_the_next_token_distribution_is_the_counts(loaded):
    model, tokenizer = loaded.model, loaded.tokenizer
    history = [tokenizer.eos_id] + tokenizer.encode(PROMPTS[0])
    log_probs = model.next_log_probs(history)
    assert log_probs.shape == (tokenizer.vocab_size,)
    assert np.exp(log_probs.astype(np.float64)).sum() == pytest.approx(1.0, abs=1e-5)
    # each entry is the probability the scorer gives that word there (lmlab score, KenLM's rule)
    for word in ("Japan", "the", "1999"):
        token = tokenizer.encode(word)[0]
        assert log_probs[token] == pytest.approx(model.log_prob(history, token), abs=1e-5)
    # a sentence ends with the end token: the history after it starts again from <s>
    again = model.next_log_probs(history + [tokenizer.eos_id])
    assert np.array_equal(again, model.next_log_probs([tokenizer.eos_id]))


def test_models_health_and_the_context_bound(server, client):
    assert [m.id for m in client.models.list().data] == ["trigram"]
    status, health = request(server, "GET", "/health")
    assert status == 200 and health["status"] == "ok" and health["step"] == 0
    status, body = request(server, "POST", "/v1/completions", {"prompt": "the", "max_tokens": 5000})
    assert status == 400 and body["error"]["code"] == "context_length_exceeded"


def test_greedy_is_the_most_probable_chain_alone_and_batched(client, loaded):
    model, tokenizer = loaded.model, loaded.tokenizer
    alone = [greedy(client, p).choices[0] for p in PROMPTS]
    for prompt, choice in zip(PROMPTS, alone):
        history = [tokenizer.eos_id] + tokenizer.encode(prompt)
        expected = []
        for _ in range(10):
            expected.append(int(np.argmax(model.next_log_probs(history))))
            history.append(expected[-1])
        assert choice.logprobs.tokens == [tokenizer.id_to_token(t) for t in expected]
        assert choice.finish_reason == "length"
    results = greedy_beside_sampled(client, "trigram", PROMPTS, greedy, noise_tokens=15, step=5)
    assert [r.logprobs.token_logprobs for r in results] == [a.logprobs.token_logprobs for a in alone]


def test_echo_logprobs_equal_lmlab_score(client, run, tmp_path, cli):
    text = "The game was released in Japan by Zzyzxqv ."  # the made-up word is the model's <unk>
    (tmp_path / "lines.txt").write_text(text + "\n")
    code, out, _ = cli("score", run, "--input", tmp_path / "lines.txt", "--tokens", "--quiet")
    assert code == 0
    scored = json.loads(out)
    reply = client.completions.create(model="trigram", prompt=text, max_tokens=0, echo=True, logprobs=3)
    choice = reply.choices[0]
    assert choice.logprobs.tokens == scored["token_strings"][:-1]  # score also predicts the end token
    assert choice.logprobs.token_logprobs == pytest.approx(scored["token_logprobs"][:-1], abs=1e-5)
    assert all(math.isfinite(v) for v in choice.logprobs.token_logprobs)
    for top in choice.logprobs.top_logprobs:
        assert len(top) == 3 and "<s>" not in top


def test_streaming_equals_not_streaming_and_seeds_reproduce(client):
    whole = greedy(client, PROMPTS[1], 12)
    chunks = list(client.completions.create(model="trigram", prompt=PROMPTS[1], max_tokens=12, temperature=0,
                                            logprobs=1, stream=True, extra_body={"ignore_eos": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text

    def three(seed):
        reply = client.completions.create(model="trigram", prompt=PROMPTS[2], max_tokens=8, n=3, seed=seed,
                                          temperature=1.0, top_p=0.9, extra_body={"top_k": 50})
        return [c.text for c in sorted(reply.choices, key=lambda c: c.index)]

    first = three(5)
    assert three(5) == first and len(set(first)) > 1 and three(6) != first


def test_a_masked_lm_is_refused_in_one_line(tmp_path):
    from lmlab.core.errors import ConfigError
    from lmlab.serve import build_engine
    from lmlab.tokenizers import HFTokenizer
    from lmlab.tokenizers.specials import special_ids
    from lmlab.tokenizers.wordpiece import train_wordpiece
    from tests.test_scoring import TEXTS, random_run

    tokenizer = HFTokenizer(train_wordpiece(TEXTS * 5, vocab_size=60, min_freq=1), kind="hf")
    run = random_run(tmp_path / "run", "encoder", tokenizer, block=10, n_layer=1, n_head=2, d_model=12, d_ff=20,
                     pad_token_id=special_ids(tokenizer).pad)
    with pytest.raises(ConfigError, match="masked language model.*fill-mask"):
        build_engine(run)
