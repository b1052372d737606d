"""``lmlab serve`` under load: continuous batching against the same model served one request at a time.

    python bench/serve.py [--shape large] [--requests 64] [--new-tokens 128] [--levels 1,4,16,64]
                          [--max-batch 16] [--time-limit 600]

What is measured: a GPT-2-style Transformer with random weights (``large``: 6 layers, 6 heads, 384
wide, block 512; ``tiny``: 1 layer, 32 wide, for a quick check), a character vocabulary (about 65
tokens), served by ``lmlab serve`` on 127.0.0.1 in a subprocess. At each concurrency level, that many
client threads send streaming ``/v1/completions`` (a 16-character prompt, ``--new-tokens`` tokens,
``temperature: 0``, ``ignore_eos``) until ``--requests`` have been sent (at least one per thread), or
the level's share of ``--time-limit`` is spent. Per level: p50 and p99 latency, p50 time to first
token, total generated tokens/s (all tokens / the level's wall time) and failed requests (any
non-200 or a stream without ``[DONE]``). The baseline is the same model and settings served with
``--max-batch 1`` (no batching: one request decodes at a time), measured at concurrency 1 in the
same run, before and after the batched levels (both servers stay up); ``speedup_c16`` = tokens/s at
concurrency 16 / the faster of the two baselines. Both servers run the same decoding code (up to 16
tokens per compiled call, sampling on the device); only the batch differs.

The machine may be shared: other processes' load moves every figure (compare within one run).
Progress goes to stderr; the table, then one JSON line (every figure, ``speedup_c16``, ``failed`` and
the CPU facts of ``bench/contenders.py``), to stdout.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from contenders import cpu_facts  # noqa: E402

SHAPES = {"large": dict(n_layer=6, n_head=6, d_model=384, block=512),
          "tiny": dict(n_layer=1, n_head=2, d_model=32, block=256)}
PROMPT = "First Citizen:\nB"  # 16 characters


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def make_run(folder: Path, shape: dict) -> Path:
    import numpy as np
    from lmlab.models import registry
    from lmlab.runs.folder import write_run
    from lmlab.tokenizers import train_tokenizer
    from lmlab.training.config import TrainConfig

    letters = "".join(chr(c) for c in range(32, 127)) + "\n"
    tokenizer = train_tokenizer("char", [letters[:64]])
    config = registry.config_from_dict({"family": "transformer", "vocab_size": tokenizer.vocab_size,
                                        "block_size": shape["block"], "n_layer": shape["n_layer"],
                                        "n_head": shape["n_head"], "d_model": shape["d_model"], "dropout": 0.0})
    model = registry.build_model(config, seed=0)
    rng = np.random.default_rng(0)
    for weight in model.weights:
        if len(weight.shape) > 1:
            weight.assign(rng.normal(0, 0.05, weight.shape).astype("float32"))
    train = TrainConfig(shape="debug", model={k: v for k, v in config.to_dict().items() if k != "family"})
    write_run(folder, model, tokenizer, train, None)
    return folder


class Server:
    """``lmlab serve`` in a subprocess on a free loopback port, until :meth:`stop`."""

    def __init__(self, run: Path, *options: str):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.process = subprocess.Popen([sys.executable, "-m", "lmlab", "serve", str(run), "--port", str(self.port),
                                         *options], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                connection.request("GET", "/health")
                if connection.getresponse().status == 200:
                    return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError("lmlab serve did not start")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()


def one_request(port: int, new_tokens: int) -> dict:
    """A streaming completion: latency, time to first token, tokens, and whether it ended well."""
    started = time.monotonic()
    body = {"prompt": PROMPT, "max_tokens": new_tokens, "temperature": 0, "ignore_eos": True, "stream": True}
    first, tokens, done = None, 0, False
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        connection.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
        response = connection.getresponse()
        if response.status != 200:
            return {"ok": False, "status": response.status}
        for line in response:
            if not line.startswith(b"data: "):
                continue
            if line.strip() == b"data: [DONE]":
                done = True
                break
            if b'"finish_reason": null' in line:  # a token's chunk; a substring test keeps the client's CPU small
                tokens += 1
                first = first or time.monotonic() - started
        connection.close()
    except (OSError, ValueError) as error:
        return {"ok": False, "error": str(error)}
    return {"ok": done and tokens == new_tokens, "latency": time.monotonic() - started, "ttft": first,
            "tokens": tokens}


def level(port: int, concurrency: int, requests: int, new_tokens: int, time_limit: float) -> dict:
    """``concurrency`` threads sending requests until ``requests`` were sent or ``time_limit`` has passed."""
    results, lock, sent = [], threading.Lock(), [0]
    deadline = time.monotonic() + time_limit

    def client():
        while True:
            with lock:
                if sent[0] >= max(requests, concurrency) or time.monotonic() > deadline:
                    return
                sent[0] += 1
            result = one_request(port, new_tokens)
            with lock:
                results.append(result)

    started = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - started
    good = [r for r in results if r["ok"]]
    latencies = sorted(r["latency"] for r in good) or [float("nan")]
    return {"concurrency": concurrency, "requests": len(results), "failed": len(results) - len(good),
            "p50_latency_s": round(statistics.median(latencies), 4),
            "p99_latency_s": round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 4),
            "p50_ttft_s": round(statistics.median([r["ttft"] for r in good]) if good else float("nan"), 4),
            "tokens_per_s": round(sum(r["tokens"] for r in good) / wall, 1), "wall_s": round(wall, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="large")
    parser.add_argument("--requests", type=int, default=64, help="requests per level (at least one per thread)")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--levels", default="1,4,16,64")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--time-limit", type=float, default=600, help="seconds for all levels together")
    args = parser.parse_args()
    levels = [int(c) for c in args.levels.split(",")]
    shape = SHAPES[args.shape]
    share = args.time_limit / (len(levels) + 1)
    context = min(shape["block"], -(-(len(PROMPT) + 1 + args.new_tokens) // 64) * 64)  # slots sized to the work
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        run = make_run(Path(folder) / "run", shape)
        rows, baselines = [], []
        # Both servers stay up (an idle one costs nothing), so the baseline is measured before and after the
        # batched levels: a machine whose load drifts meanwhile cannot flatter the ratio.
        single = Server(run, "--max-batch", "1", "--max-queue", "128", "--context", str(context))
        try:
            batched = Server(run, "--max-batch", str(args.max_batch), "--max-queue", str(max(levels) * 2),
                             "--context", str(context))
            try:
                for server in (single, batched):
                    level(server.port, 1, 1, args.new_tokens, share)  # warm: compiles the prompt's prefill width
                log(f"baseline: --max-batch 1, concurrency 1, {args.requests} requests of {args.new_tokens} tokens")
                baselines.append(level(single.port, 1, args.requests, args.new_tokens, share / 2))
                log(f"  {baselines[-1]}")
                for concurrency in levels:
                    rows.append(level(batched.port, concurrency, args.requests, args.new_tokens, share))
                    log(f"  {rows[-1]}")
                baselines.append(level(single.port, 1, args.requests, args.new_tokens, share / 2))
                log(f"  baseline again: {baselines[-1]}")
            finally:
                batched.stop()
        finally:
            single.stop()
    baseline = max(baselines, key=lambda b: b["tokens_per_s"])  # the faster of the two: the ratio's worst case
    print(f"{'':>10} {'requests':>8} {'failed':>6} {'p50 s':>8} {'p99 s':>8} {'TTFT s':>8} {'tokens/s':>9}")
    for name, row in ([(f"baseline{i + 1}", b) for i, b in enumerate(baselines)]
                      + [(f"c={r['concurrency']}", r) for r in rows]):
        print(f"{name:>10} {row['requests']:>8} {row['failed']:>6} {row['p50_latency_s']:>8} {row['p99_latency_s']:>8} "
              f"{row['p50_ttft_s']:>8} {row['tokens_per_s']:>9}")
    at16 = next((r for r in rows if r["concurrency"] == 16), None)
    summary = {"shape": args.shape, **{k: v for k, v in shape.items()}, "new_tokens": args.new_tokens,
               "max_batch": args.max_batch, "context": context, "baseline": baseline, "baselines": baselines,
               "levels": rows,
               "speedup_c16": round(at16["tokens_per_s"] / baseline["tokens_per_s"], 2) if at16 and
               baseline["tokens_per_s"] else None,
               "failed": sum(b["failed"] for b in baselines) + sum(r["failed"] for r in rows),
               "load_average_before": [round(x, 2) for x in load_before],
               "load_average_after": [round(x, 2) for x in os.getloadavg()], **cpu_facts(),
               "backend": os.environ.get("KERAS_BACKEND", "tensorflow")}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
