"""Hot reload under load: the real server serves a run while this process writes new best checkpoints into
it, rotating the old ones away (``keep=1``), and a bounded number of requests run meanwhile. None may fail,
the server must end on the last checkpoint, and its greedy tokens must then be that checkpoint's."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from tests.serving import metric, open_stream, request, running_server, tiny_run

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

CHECKPOINTS, CLIENTS, REQUESTS = 12, 3, 8  # written while CLIENTS threads send REQUESTS each
PROMPT = "the cat sat on"


def ask(url: str, stream: bool) -> bool:
    """One completion of 16 tokens; True when it came back whole."""
    body = {"prompt": PROMPT, "max_tokens": 16, "temperature": 0, "ignore_eos": True}
    if not stream:
        status, reply = request(url, "POST", "/v1/completions", body, timeout=60)
        return status == 200 and reply["choices"][0]["finish_reason"] == "length"
    connection, response = open_stream(url, body, timeout=60)
    try:
        text = response.read().decode()
        return response.status == 200 and text.count('"finish_reason": null') == 16 and text.endswith("[DONE]\n\n")
    finally:
        connection.close()


def test_new_best_checkpoints_swap_in_without_failing_a_request(tmp_path):
    from lmlab.generate.decoder import generate_ids
    from lmlab.generate.samplers import SamplerConfig
    from lmlab.runs.checkpoint import save_checkpoint
    from lmlab.runs.load import load_run

    run = tiny_run(tmp_path / "run", block=64)
    writer = load_run(run)
    rng = np.random.default_rng(3)
    with running_server(run, "--max-batch", "4", "--reload-every", "0.05") as url:
        assert request(url, "GET", "/health")[1]["step"] == 0
        outcomes: list[bool] = []

        def client(index: int) -> None:
            for i in range(REQUESTS):
                outcomes.append(ask(url, stream=(index + i) % 2 == 0))

        clients = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        for thread in clients:
            thread.start()
        for step in range(1, CHECKPOINTS + 1):  # a trainer finding a better model every moment
            for weight in writer.model.weights:
                if len(weight.shape) > 1:
                    weight.assign(rng.normal(0, 0.3, weight.shape).astype("float32"))
            save_checkpoint(run, step, writer.model, None, {"step": step, "val_loss": 1.0 / step}, best=True, keep=1)
            time.sleep(0.1)
        for thread in clients:
            thread.join(120)
        assert len(outcomes) == CLIENTS * REQUESTS and all(outcomes)
        deadline = time.monotonic() + 30
        while request(url, "GET", "/health")[1]["step"] != CHECKPOINTS and time.monotonic() < deadline:
            time.sleep(0.1)
        assert request(url, "GET", "/health")[1] == {"status": "ok", "model": "run", "step": CHECKPOINTS,
                                                      "checkpoint": f"step-{CHECKPOINTS:06d}"}
        assert metric(url, "lmlab_reloads_total") >= 2
        assert len(list((run / "checkpoints").glob("step-*"))) < CHECKPOINTS  # rotation did delete some
        tokenizer = writer.tokenizer
        expected = generate_ids(writer.model, [[tokenizer.eos_id] + tokenizer.encode(PROMPT)], 16,
                                SamplerConfig(temperature=0))[0]
        body = {"prompt": PROMPT, "max_tokens": 16, "temperature": 0, "ignore_eos": True, "logprobs": 0}
        reply = request(url, "POST", "/v1/completions", body)[1]
        assert reply["choices"][0]["logprobs"]["tokens"] == [tokenizer.id_to_token(t) for t in expected]


def test_a_checkpoint_rotated_away_mid_read_is_followed_to_the_new_one(tmp_path, monkeypatch):
    """The trainer writes (and rotates away the one being read) exactly while the server reads: the reload goes
    to the newer checkpoint, and the weights the engine gets are that one's."""
    from types import SimpleNamespace

    from lmlab.runs import checkpoint
    from lmlab.runs.load import load_run
    from lmlab.serve.metrics import Metrics
    from lmlab.serve.reload import Reloader

    run = tiny_run(tmp_path / "run", block=16)
    served, writer = load_run(run), load_run(run)
    save = lambda step, scale: (  # noqa: E731
        [w.assign(np.full(w.shape, scale, "float32")) for w in writer.model.weights if len(w.shape) > 1],
        checkpoint.save_checkpoint(run, step, writer.model, None, {"step": step}, best=True, keep=1))
    save(1, 0.01)
    original, reads = checkpoint.read_checkpoint, []

    def racing_read(path):
        reads.append(path.name)
        if len(reads) == 1:  # the trainer moves on twice while this read is under way: step-000001 is gone
            save(2, 0.02)
            save(3, 0.03)
            assert not path.exists()
        return original(path)

    monkeypatch.setattr(checkpoint, "read_checkpoint", racing_read)
    calls = []
    engine = SimpleNamespace(model=served.model, served={"checkpoint": "step-000000", "step": 0}, metrics=Metrics(),
                             call_soon=calls.append)
    reloader = Reloader(engine, run, served=engine.served["checkpoint"])
    assert reloader.check() and reads == ["step-000001", "step-000003"]
    calls.pop()()  # what the engine thread runs between two steps
    assert engine.served == {"checkpoint": "step-000003", "step": 3} and engine.metrics.reloads == 1
    kernel = next(w for w in served.model.weights if len(w.shape) > 1)
    assert np.allclose(np.asarray(kernel), 0.03)
    assert not reloader.check() and calls == []  # nothing new: nothing read, nothing queued
