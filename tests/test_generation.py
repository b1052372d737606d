"""The compiled decoding loop against a token-by-token loop built from the same model.

``generate_ids`` makes up to ``CHUNK`` tokens per compiled call (the loop runs inside
XLA). The reference here calls the model once per token from Python, with the
same per-token seeds, so sampled (not only greedy) sequences must agree exactly,
across chunk boundaries, cache rebuilds and end tokens.
"""

from __future__ import annotations

import numpy as np
import pytest

from lmlab.generate.decoder import CACHE_STEP, CHUNK, decoder_for, step_seed, cache_length, generate_ids
from lmlab.models.transformer import build_transformer, shape
from lmlab.generate.samplers import SamplerConfig

VOCAB, BLOCK = 37, 24
SAMPLING = SamplerConfig(temperature=1.5, top_k=10)


@pytest.fixture(scope="module")
def model():
    return build_transformer(shape("debug", vocab_size=VOCAB, block_size=BLOCK), seed=3)


def one_token_at_a_time(model, prompts, max_new_tokens, sampler, seed, eos_id=None):
    """The reference: one compiled single-token call per token, driven from Python, with a full-context cache."""
    BLOCK = model.config.block_size
    decoder = decoder_for(model, sampler)
    history = [list(p) for p in prompts]
    new = [[] for _ in prompts]
    finished = [False] * len(prompts)

    def prefill(step):
        context = np.array([h[-(BLOCK // 2 if len(h) >= BLOCK else BLOCK):] for h in history])
        ids, cache = decoder.prefill(context, model.init_cache(len(prompts), BLOCK), 0, step_seed(seed, step))
        return ids, cache, context.shape[1]

    ids, cache, index = prefill(0)
    for step in range(max_new_tokens):
        for row, token in enumerate(ids.tolist()):
            if not finished[row]:
                new[row].append(token)
                history[row].append(token)
                finished[row] = token == eos_id
        if all(finished) or step == max_new_tokens - 1:
            break
        if index >= BLOCK:
            ids, cache, index = prefill(step + 1)
            continue
        ids, cache = decoder.prefill(ids[:, None], cache, index, step_seed(seed, step + 1))
        index += 1
    return new


@pytest.mark.parametrize("sampler", [SamplerConfig(temperature=0), SAMPLING], ids=["greedy", "sampling"])
def test_compiled_loop_equals_token_by_token(model, sampler):
    prompts = [[1, 2, 3], [4, 5, 6]]
    n = CHUNK + 2 * BLOCK  # crosses chunk boundaries and rebuilds the full cache twice
    expected = one_token_at_a_time(model, prompts, n, sampler, seed=7)
    assert generate_ids(model, prompts, n, sampler, seed=7) == expected
    assert all(len(row) == n for row in expected)


def test_end_token_stops_each_row_and_the_loop(model):
    prompts = [[1, 2, 3], [9, 8, 7]]
    free = generate_ids(model, prompts, 40, SAMPLING, seed=11)
    eos = free[0][5]  # row 0 makes this token at step 5 (maybe earlier too)
    expected = one_token_at_a_time(model, prompts, 40, SAMPLING, seed=11, eos_id=eos)
    streamed: list[tuple[int, int]] = []
    got = generate_ids(model, prompts, 40, SAMPLING, seed=11, eos_id=eos, on_token=lambda r, t: streamed.append((r, t)))
    assert got == expected
    assert got[0][-1] == eos and len(got[0]) <= 6
    assert sorted(streamed) == sorted((r, t) for r, row in enumerate(got) for t in row)


def test_rows_that_finish_all_stop_early(model):
    prompt = [[2, 4, 6]]
    first = generate_ids(model, prompt, 1, SamplerConfig(temperature=0))[0][0]
    assert generate_ids(model, prompt, 50, SamplerConfig(temperature=0), eos_id=first) == [[first]]
    assert generate_ids(model, prompt, 0, SamplerConfig(temperature=0)) == [[]]


def test_short_generations_use_a_short_cache_with_the_same_tokens():
    long_context = build_transformer(shape("debug", vocab_size=VOCAB, block_size=4 * CACHE_STEP), seed=5)
    assert cache_length(4 * CACHE_STEP, 3 + 40) == CACHE_STEP
    assert cache_length(4 * CACHE_STEP, 2 * CACHE_STEP + 1) == 3 * CACHE_STEP
    assert cache_length(4 * CACHE_STEP, 10 * CACHE_STEP) == 4 * CACHE_STEP
    prompts = [[1, 2, 3], [4, 5, 6]]  # 3 + 40 positions: a 64-slot cache, against the reference's 256
    assert generate_ids(long_context, prompts, 40, SAMPLING, seed=2) == \
        one_token_at_a_time(long_context, prompts, 40, SAMPLING, seed=2)
