"""``lmlab serve`` as clients meet it: the real server in a subprocess on a loopback port, the official
``openai`` client and plain HTTP against it, a tiny Transformer with random weights.

- greedy completions equal the library's own decoder (``generate_ids``), alone and batched with others;
- streaming equals non-streaming at temperature 0 (completions and chat); ``n=3`` with a seed is reproducible;
- ``echo`` + ``logprobs`` + ``max_tokens=0`` equals ``lmlab score --tokens`` on the same text to 1e-5;
- every error case is a 4xx in OpenAI's JSON shape; a full server says 429; a client that goes away
  mid-stream frees its slot (the cancelled counter, the running gauge, the next request gets in).
"""

from __future__ import annotations

import json
import time

import pytest

from tests.serving import BLOCK, greedy_beside_sampled, metric, open_stream, request, running_server, tiny_run

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
openai = pytest.importorskip("openai", reason="pip install 'lmlab[test]' (the openai client)")

SLOTS, QUEUE = 4, 2
PROMPTS = ["the cat sat on", "a dog ran in the park and", "the"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("serve") / "run")


@pytest.fixture(scope="module")
def server(run):
    with running_server(run, "--max-batch", str(SLOTS), "--max-queue", str(QUEUE), "--model-name", "tiny") as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def loaded(run):
    from lmlab.runs.load import load_run

    return load_run(run)


def greedy(client, prompt, max_tokens=12, **extra):
    return client.completions.create(model="tiny", prompt=prompt, max_tokens=max_tokens, temperature=0,
                                     logprobs=1, extra_body={"ignore_eos": True, **extra})


def test_models_health_tokenize(server, client, loaded):
    assert [m.id for m in client.models.list().data] == ["tiny"]
    assert request(server, "GET", "/health") == (200, {"status": "ok", "model": "tiny", "checkpoint": "step-000000",
                                                        "step": 0})
    status, body = request(server, "POST", "/tokenize", {"prompt": PROMPTS[1]})
    assert status == 200 and body["tokens"] == loaded.tokenizer.encode(PROMPTS[1]) and body["max_model_len"] == BLOCK
    assert request(server, "POST", "/detokenize", {"tokens": body["tokens"]}) == (200, {"prompt": PROMPTS[1]})


def test_greedy_equals_the_library_decoder_alone_and_batched(client, loaded):
    from lmlab.generate.decoder import generate_ids
    from lmlab.generate.samplers import SamplerConfig

    tokenizer = loaded.tokenizer
    expected = generate_ids(loaded.model, [[tokenizer.eos_id] + tokenizer.encode(p) for p in PROMPTS], 12,
                            SamplerConfig(temperature=0))
    alone = [greedy(client, p).choices[0] for p in PROMPTS]
    for choice, ids in zip(alone, expected):
        assert choice.logprobs.tokens == [tokenizer.id_to_token(t) for t in ids]
        assert choice.finish_reason == "length"
    # The same prompts while three sampled requests decode beside them, joining and leaving as they go.
    results = greedy_beside_sampled(client, "tiny", PROMPTS, greedy)
    assert [r.text for r in results] == [a.text for a in alone]
    # bit for bit: the step has one shape whoever shares it, and rows never mix
    assert [r.logprobs.token_logprobs for r in results] == [a.logprobs.token_logprobs for a in alone]


def test_streaming_equals_not_streaming(client):
    whole = greedy(client, PROMPTS[0], 20)
    chunks = list(client.completions.create(model="tiny", prompt=PROMPTS[0], max_tokens=20, temperature=0,
                                            logprobs=1, stream=True, stream_options={"include_usage": True},
                                            extra_body={"ignore_eos": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    tokens = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.tokens]
    assert text == whole.choices[0].text and tokens == whole.choices[0].logprobs.tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens == 20
    assert whole.usage.prompt_tokens == 4


def test_chat_streaming_equals_not_streaming(client):
    messages = [{"role": "system", "content": "the cat"}, {"role": "user", "content": "a dog ran"}]
    whole = client.chat.completions.create(model="tiny", messages=messages, max_tokens=15, temperature=0)
    assert whole.choices[0].message.role == "assistant" and whole.choices[0].finish_reason in ("stop", "length")
    parts = list(client.chat.completions.create(model="tiny", messages=messages, max_tokens=15, temperature=0,
                                                stream=True))
    assert parts[0].choices[0].delta.role == "assistant"
    assert "".join(p.choices[0].delta.content or "" for p in parts) == whole.choices[0].message.content
    assert parts[-1].choices[0].finish_reason == whole.choices[0].finish_reason


def test_n3_with_a_seed_is_reproducible(client):
    def three(seed):
        reply = client.completions.create(model="tiny", prompt=PROMPTS[2], max_tokens=10, n=3, seed=seed,
                                          temperature=1.0, top_p=0.95, extra_body={"top_k": 10})
        return [c.text for c in sorted(reply.choices, key=lambda c: c.index)]

    first = three(11)
    assert three(11) == first
    assert len(set(first)) > 1  # each choice draws for itself
    assert three(12) != first


def test_stop_string_ends_the_text(client):
    free = greedy(client, PROMPTS[0], 12).choices[0].text
    word = free.split()[2]
    stopped = greedy(client, PROMPTS[0], 12, stop=[f" {word}"]).choices[0]
    assert stopped.finish_reason == "stop" and stopped.text == free[:free.index(f" {word}")]


def test_echo_logprobs_equal_lmlab_score(client, run, tmp_path, cli):
    text = "the cat sat on the mat while a dog ran"
    (tmp_path / "lines.txt").write_text(text + "\n")
    code, out, _ = cli("score", run, "--input", tmp_path / "lines.txt", "--tokens", "--quiet")
    assert code == 0
    scored = json.loads(out)
    reply = client.completions.create(model="tiny", prompt=text, max_tokens=0, echo=True, logprobs=2)
    choice = reply.choices[0]
    assert choice.text == text and choice.finish_reason == "length"
    # lmlab score also predicts the line's end token; the prompt's own tokens come first.
    assert choice.logprobs.tokens == scored["token_strings"][:-1]
    assert choice.logprobs.token_logprobs == pytest.approx(scored["token_logprobs"][:-1], abs=1e-5)
    assert reply.usage.completion_tokens == 0 and reply.usage.prompt_tokens == len(choice.logprobs.tokens)
    # the top alternatives are the most probable tokens, the chosen one among them when it is the argmax
    for top, chosen in zip(choice.logprobs.top_logprobs, choice.logprobs.token_logprobs):
        assert len(top) == 2 and max(top.values()) >= chosen - 1e-6


@pytest.mark.parametrize("body, status, param, code", [
    (b"{not json", 400, None, "invalid_json"),
    ({"prompt": "the", "temprature": 0.5}, 400, "temprature", "unknown_field"),
    ({"model": "gpt-9", "prompt": "the"}, 404, "model", "model_not_found"),
    ({"prompt": [5] * (BLOCK + 1)}, 400, "prompt", "context_length_exceeded"),
    ({"prompt": "the cat", "max_tokens": BLOCK - 1}, 400, "max_tokens", "context_length_exceeded"),
    ({"prompt": "the", "temperature": -1}, 400, "temperature", "invalid_value"),
    ({"prompt": "the", "top_p": 0}, 400, "top_p", "invalid_value"),
    ({"prompt": "the", "top_k": -2}, 400, "top_k", "invalid_value"),
    ({"prompt": "the", "n": 0}, 400, "n", "invalid_value"),
    ({"prompt": "the", "logprobs": 99}, 400, "logprobs", "invalid_value"),
    ({"prompt": "the", "max_tokens": -1}, 400, "max_tokens", "invalid_value"),
    ({"prompt": [10**6]}, 400, "prompt", None),
    ({"prompt": {"text": "the"}}, 400, "prompt", "invalid_value"),
    ({}, 400, "prompt", "missing_field"),
])
def test_errors_are_openai_json(server, body, status, param, code):
    got, reply = request(server, "POST", "/v1/completions", body)
    assert got == status, reply
    assert set(reply) == {"error"} and set(reply["error"]) == {"message", "type", "param", "code"}
    assert reply["error"]["param"] == param and reply["error"]["code"] == code and reply["error"]["message"]


def test_chat_errors_and_the_client_raising(server, client):
    got, reply = request(server, "POST", "/v1/chat/completions", {"messages": [{"role": "robot", "content": "x"}]})
    assert got == 400 and reply["error"]["param"] == "messages[0]"
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="tiny", prompt="the", top_p=1.5)
    assert caught.value.status_code == 400
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="the")
    assert request(server, "GET", "/v1/nothing")[0] == 404


def test_a_full_server_says_429_and_a_client_gone_mid_stream_frees_its_slot(server, client):
    cancelled = metric(server, "lmlab_requests_cancelled_total")
    long = {"prompt": "the", "max_tokens": BLOCK - 8, "ignore_eos": True, "temperature": 0}
    streams = [open_stream(server, long) for _ in range(SLOTS + QUEUE)]  # every slot busy, the queue full
    try:
        assert all(response.status == 200 for _, response in streams)
        assert streams[0][1].readline().startswith(b"data: ")  # tokens are flowing
        got, reply = request(server, "POST", "/v1/completions", {"prompt": "the", "max_tokens": 2})
        assert got == 429 and reply["error"]["code"] == "rate_limit_exceeded"
        with pytest.raises(openai.RateLimitError):
            client.completions.create(model="tiny", prompt="the", max_tokens=2)
    finally:
        for connection, _ in streams:  # every client hangs up mid-stream
            connection.sock.shutdown(2)
            connection.close()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (metric(server, "lmlab_running_sequences")
                                           or metric(server, "lmlab_queue_length")):
        time.sleep(0.1)
    assert metric(server, "lmlab_running_sequences") == 0 and metric(server, "lmlab_queue_length") == 0
    assert metric(server, "lmlab_requests_cancelled_total") - cancelled == SLOTS + QUEUE  # none ran to its end
    assert greedy(client, "the", 3).usage.completion_tokens == 3


def test_metrics_are_prometheus_text(server, client):
    greedy(client, "the cat", 2)
    status, text = request(server, "GET", "/metrics")
    assert status == 200
    assert 'lmlab_requests_total{endpoint="/v1/completions",status="200"}' in text
    assert metric(server, "lmlab_generation_tokens_total") >= 2
    assert metric(server, "lmlab_time_to_first_token_seconds_count") >= 1
    assert "# TYPE lmlab_time_to_first_token_seconds histogram" in text


def test_playground_is_served(server):
    status, page = request(server, "GET", "/")
    assert status == 200 and "<title>lmlab playground</title>" in page and "http" not in page.split("<script>")[1]
