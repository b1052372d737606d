"""The serving engine in-process, for every decoder family: continuous batching gives each sequence the
tokens it gets alone (bit for bit) and the library decoder's greedy tokens; the host sampler keeps the
compiled sampler's rules; stop strings are held back and cut as OpenAI's are."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from lmlab.generate.samplers import SamplerConfig, filter_logits
from lmlab.serve.sampling import filtered_probs, top_log_probs
from lmlab.serve.text import TextStream
from tests.serving import tiny_run
from tests.test_scoring import DECODERS

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

PROMPTS = ["the cat sat on", "a dog", "the cat ran in the park and the"]  # three lengths


def collect(engine, prompt_ids, max_tokens, sampler, seed=None, n=1):
    """Submit one job; wait for it; its choices' token lists and finish reasons."""
    from lmlab.serve.engine import Job

    done, tokens, reasons = threading.Event(), [[] for _ in range(n)], [None] * n

    def emit(event):
        if event["type"] == "token":
            tokens[event["choice"]].append(event["token"])
        elif event["type"] == "finish":
            reasons[event["choice"]] = event["reason"]
            if all(reasons):
                done.set()

    engine.submit([Job(prompt_ids, sampler, max_tokens, emit, n=n, seed=seed, ignore_eos=True)])
    return done, tokens, reasons


@pytest.mark.parametrize("family", sorted(DECODERS))
def test_batched_equals_alone_equals_generate_ids(tmp_path, family):
    from lmlab.generate.decoder import generate_ids
    from lmlab.runs.load import load_run
    from lmlab.serve.engine import Engine

    loaded = load_run(tiny_run(tmp_path / "run", family, block=48, **DECODERS[family]))
    tok = loaded.tokenizer
    prompts = [[tok.eos_id] + tok.encode(p) for p in PROMPTS]
    engine = Engine(loaded.model, tok, slots=3, max_queue=8).start()
    try:
        greedy = SamplerConfig(temperature=0)
        alone = []
        for ids in prompts:
            done, tokens, reasons = collect(engine, ids, 20, greedy)
            assert done.wait(60) and reasons == ["length"]
            alone.append(tokens[0])
        expected = generate_ids(loaded.model, prompts, 20, greedy)
        assert alone == expected
        # all at once, with a sampled request joining and leaving among them (a slot short: one waits)
        noisy = collect(engine, prompts[1], 7, SamplerConfig(temperature=1.0), seed=3)
        together = [collect(engine, ids, 20, greedy) for ids in prompts]
        assert all(done.wait(60) for done, _, _ in together) and noisy[0].wait(60)
        assert [tokens[0] for _, tokens, _ in together] == alone
    finally:
        engine.stop()


def test_seeded_choices_repeat_and_differ(tmp_path):
    from lmlab.runs.load import load_run
    from lmlab.serve.engine import Engine

    loaded = load_run(tiny_run(tmp_path / "run", block=48))
    ids = [loaded.tokenizer.eos_id] + loaded.tokenizer.encode("the")
    engine = Engine(loaded.model, loaded.tokenizer, slots=4, max_queue=8).start()
    try:
        runs = [collect(engine, ids, 12, SamplerConfig(temperature=1.0), seed=seed, n=3) for seed in (5, 5, 6)]
        assert all(done.wait(60) for done, _, _ in runs)
        first, again, other = (tokens for _, tokens, _ in runs)
        assert first == again and first != other and len({tuple(t) for t in first}) > 1
    finally:
        engine.stop()


@pytest.mark.parametrize("config", [SamplerConfig(0.7, 5, 1.0), SamplerConfig(1.0, 0, 0.6), SamplerConfig(1.3, 4, 0.8)])
def test_host_filter_keeps_the_compiled_samplers_tokens(config):
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (4, 29)).astype(np.float32)
    logits[0, :3] = logits[0, 3]  # ties at the top
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    device = np.asarray(filter_logits(log_probs, config))
    for row in range(4):
        host = filtered_probs(log_probs[row], config)
        assert np.array_equal(host > 0, np.isfinite(device[row]))
        expected = np.exp(device[row] - device[row].max())
        np.testing.assert_allclose(host, expected / expected.sum(), rtol=1e-5, atol=1e-7)


def test_top_log_probs_are_the_largest_in_order():
    values = np.log(np.array([0.1, 0.4, 0.05, 0.3, 0.15]))
    assert [i for i, _ in top_log_probs(values, 3)] == [1, 3, 4]
    assert top_log_probs(values, 0) == []


class Letters:
    """A character tokenizer over a few letters: id i is ``ALPHABET[i]``."""

    ALPHABET = "ab cdxy"

    def decode(self, ids):
        return "".join(self.ALPHABET[i] for i in ids)


def test_stop_strings_are_held_back_and_cut():
    letters = Letters()
    stream = TextStream(letters, [0], stop=["cdx"])
    sent = [stream.add(letters.ALPHABET.index(c)) for c in "ab cd"]
    assert "".join(sent) == "ab " and not stream.stopped  # "cd" might begin the stop string
    assert stream.add(letters.ALPHABET.index("y")) == "cdy"  # it did not
    assert stream.add(3) == "" and stream.add(4) == "" and not stream.stopped  # "cd" again
    assert stream.add(5) == "" and stream.stopped and stream.flush() == ""  # "cdx": cut before it
    assert stream.text == "ab cdy"
