"""The serving engine in-process, for every decoder family: continuous batching gives each sequence the
tokens it gets alone (bit for bit) and the library decoder's greedy tokens; the per-row sampler keeps the
compiled sampler's rules and draws by inverse CDF; stop strings are held back and cut as OpenAI's are."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from lmlab.generate.samplers import SamplerConfig, filter_logits
from lmlab.generate.batching import filter_rows, pick_rows
from lmlab.serve.sampling import top_log_probs
from lmlab.serve.text import TextStream
from tests.serving import tiny_run
from tests.test_scoring import DECODERS

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

PROMPTS = ["the cat sat on", "a dog", "the cat ran in the park and the"]  # three lengths


def collect(engine, prompt_ids, max_tokens, sampler, seed=None, n=1):
    """Submit one job; wait for it; its choices' token lists and finish reasons."""
    from lmlab.serve.engine import Job

    done, tokens, reasons = threading.Event(), [[] for _ in range(n)], [None] * n

    def emit(events):
        for event in events:
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


CONFIGS = [SamplerConfig(0.7, 5, 1.0), SamplerConfig(1.0, 0, 0.6), SamplerConfig(1.3, 4, 0.8), SamplerConfig(0.9, 40, 1.0)]


def test_per_row_filter_keeps_the_compiled_samplers_tokens():
    """Rows with different settings in one call each keep exactly what filter_logits keeps with theirs."""
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (len(CONFIGS), 29)).astype(np.float32)
    logits[0, :3] = logits[0, 3]  # ties at the top
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    rows = np.asarray(filter_rows(log_probs, np.float32([c.temperature for c in CONFIGS]),
                                  np.int32([c.top_k for c in CONFIGS]), np.float32([c.top_p for c in CONFIGS])))
    for row, config in enumerate(CONFIGS):
        expected = np.asarray(filter_logits(log_probs[row:row + 1], config))[0]
        assert np.array_equal(np.isfinite(rows[row]), np.isfinite(expected)), config
        np.testing.assert_allclose(rows[row][np.isfinite(expected)], expected[np.isfinite(expected)], rtol=1e-6)


def test_pick_rows_draws_by_inverse_cdf_and_argmax_when_greedy():
    rng = np.random.default_rng(1)
    log_probs = np.log(rng.dirichlet(np.ones(11), size=4)).astype(np.float32)
    configs = [SamplerConfig(0), SamplerConfig(1.0), SamplerConfig(1.0, 3, 1.0), SamplerConfig(0.5, 0, 0.7)]
    temperature = np.float32([c.temperature for c in configs])
    top_k, top_p = np.int32([c.top_k for c in configs]), np.float32([c.top_p for c in configs])
    probs = np.exp(np.asarray(filter_rows(log_probs, temperature, top_k, top_p), np.float64))
    probs /= probs.sum(-1, keepdims=True)
    seen = set()
    for uniform in np.linspace(0.01, 1.0, 37, dtype=np.float32):
        picked = np.asarray(pick_rows(log_probs, temperature, top_k, top_p, np.full(4, uniform, np.float32)))
        assert picked[0] == np.argmax(log_probs[0])
        for row in range(1, 4):
            expected = min(np.searchsorted(np.cumsum(probs[row]), uniform, side="left"), 10)
            assert picked[row] == expected or abs(np.cumsum(probs[row])[expected] - uniform) < 1e-5
            assert probs[row, picked[row]] > 0
            seen.add((row, int(picked[row])))
    assert len({t for r, t in seen if r == 2}) == 3  # top-k 3: every kept token is reachable, no other


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


def test_a_long_stream_decodes_as_the_whole_and_still_stops():
    """Past COMMIT_EVERY tokens the stream decodes only the newest ones: the text must stay the whole decode."""
    from lmlab.serve.text import COMMIT_EVERY
    from lmlab.tokenizers import train_tokenizer

    tokenizer = train_tokenizer("word", ["the cat sat on the mat and a dog ran in the park"])
    ids = tokenizer.encode("the cat sat on the mat and a dog ran in the park " * 9)
    assert len(ids) > 3 * COMMIT_EVERY
    prompt = tokenizer.encode("a dog")
    stream = TextStream(tokenizer, prompt, stop=[])
    sent = "".join(stream.add(t) for t in ids) + stream.flush()
    whole = tokenizer.decode(prompt + ids)
    assert sent == stream.text == whole[len(tokenizer.decode(prompt)):]
    ids = tokenizer.encode("the cat sat on the mat and a dog ran in the park " * 6 + "dog dog cat")  # stop: at the end
    stream = TextStream(tokenizer, prompt, stop=["dog dog"])
    sent = "".join(stream.add(t) for t in ids)
    continuation = tokenizer.decode(prompt + ids)[len(tokenizer.decode(prompt)):]
    assert stream.stopped and sent == stream.text == continuation[:continuation.index("dog dog")]
    assert sent.count("park") == 6
