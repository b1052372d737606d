"""The machinery bench/train_step.py and bench/generate.py share: contenders in worker processes.

Each contender (``transformers``, ``lmlab``, ...) runs in its own long-lived worker process
(so two frameworks' thread pools never share a process), builds and warms up, then times
bursts on request over a pipe ("run N"; "quit"). The parent waits for the machine to be
quiet before each burst and records how many cores other processes kept busy during it, so
disturbed bursts can be left out.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUIET = 0.25  # cores other processes may keep busy during a burst that still counts


# ---------------------------------------------------------------------------- the machine


BF16_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2")


def cpu_facts() -> dict:
    """The CPU's model name and the flags that decide which matmul paths exist (printed with every figure)."""
    model, flags = "unknown", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model == "unknown":
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return {"cpu_model": model, "cpu_cores": os.cpu_count(), "cpu_flags": [f for f in BF16_FLAGS if f in flags]}


# ---------------------------------------------------------------------------- machine load


def cpu_busy_s() -> float:
    """CPU seconds the whole machine has spent busy (all cores), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:8]]  # user .. steal
    except OSError:
        return float("nan")
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait


def own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def other_load(seconds: float = 1.0) -> float:
    """Cores kept busy by other processes over ``seconds`` (this process sleeping meanwhile)."""
    busy, own = cpu_busy_s(), own_cpu_s()
    time.sleep(seconds)
    return max(0.0, (cpu_busy_s() - busy) - (own_cpu_s() - own)) / seconds


def wait_idle(limit_s: float, threshold: float = QUIET) -> float:
    """Wait (up to ``limit_s``) until other processes use under ``threshold`` cores; returns their last load."""
    deadline = time.monotonic() + limit_s
    load = other_load()
    while load > threshold and time.monotonic() < deadline:
        load = other_load(2.0)
    return load


class Budget:
    """Seconds left, in all, for waiting on other processes to go quiet."""

    def __init__(self, seconds: float):
        self.left = seconds

    def wait(self, limit_s: float) -> float:
        start = time.monotonic()
        load = wait_idle(max(0.0, min(limit_s, self.left)))
        self.left -= time.monotonic() - start
        return load


# ---------------------------------------------------------------------------- worker (child side)


def timed_burst(run_one, count: int) -> dict:
    """``run_one(i)`` for ``i`` in ``range(count)``, timed one by one (it must block until done)."""
    times = []
    busy, own, start = cpu_busy_s(), own_cpu_s(), time.perf_counter()
    for i in range(count):
        t0 = time.perf_counter()
        run_one(i)
        times.append(time.perf_counter() - t0)
    wall = time.perf_counter() - start
    own_s = own_cpu_s() - own
    return {"times": times, "own_cores": round(own_s / wall, 2),
            "other_cores": round(max(0.0, cpu_busy_s() - busy - own_s) / wall, 2)}


def serve(ready: dict, burst) -> None:
    """Say ``ready`` (a JSON line), then answer "run N" with ``burst(N)`` until "quit" or end of input."""
    print(json.dumps({"ready": True, **ready}), flush=True)
    for line in sys.stdin:
        command = line.split()
        if not command or command[0] == "quit":
            break
        print(json.dumps(burst(int(command[1]))), flush=True)


# ---------------------------------------------------------------------------- driver (parent side)


class Worker:
    """A worker process of ``script`` for one contender, driven over pipes."""

    def __init__(self, args, part: str, shape: str, script: str, extra: tuple = ()):
        self.part, self.shape, self.bursts, self.info = part, shape, [], {}
        command = [sys.executable, script, "--worker", "--part", part, "--shape", shape,
                   "--tf-inter-op", str(args.tf_inter_op), *extra]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        # The worker's stderr (TensorFlow's chatter) goes to a scratch file, shown if the worker dies.
        self.stderr = None if args.verbose else tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True, bufsize=1)

    def _reply(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            err = ""
            if self.stderr is not None:
                self.stderr.seek(0)
                err = self.stderr.read()[-3000:]
            raise RuntimeError(f"worker {self.part} {self.shape} died (exit {self.proc.wait()}):\n{err}")
        return json.loads(line)

    def ready(self) -> dict:
        start = time.perf_counter()
        self.info = self._reply()
        self.info["start_s"] = round(time.perf_counter() - start, 1)
        return self.info

    def burst(self, count: int) -> dict:
        self.proc.stdin.write(f"run {count}\n")
        self.proc.stdin.flush()
        result = self._reply()
        self.bursts.append(result)
        return result

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        if self.stderr is not None:
            self.stderr.close()

    def summary(self, tokens_per_call: int) -> dict:
        """Median and mean over the undisturbed bursts' calls (all, flagged ``contended``, if none was)."""
        quiet = [b for b in self.bursts if b["other_cores"] <= QUIET]
        used = quiet or self.bursts
        times = [t for b in used for t in b["times"]]
        median = statistics.median(times)
        return {"median_s": median, "mean_s": statistics.fmean(times), "steps": len(times),
                "tokens_per_s": round(tokens_per_call / median, 1), "contended": not quiet,
                "other_cores": max(b["other_cores"] for b in used), "warmup_s": self.info.get("warmup_s")}


def start_workers(args, budget: Budget, parts, shape: str, script: str, log, extra: tuple = ()) -> list[Worker]:
    """One ready worker per part, started one at a time on a quiet machine; a worker that dies is logged and left out."""
    workers = []
    for part in parts:
        budget.wait(30)
        w = Worker(args, part, shape, script=script, extra=extra)
        try:
            w.ready()
        except RuntimeError as e:
            log(str(e))
            w.close()
            continue
        workers.append(w)
    return workers


def interleave(workers: list[Worker], counts: list[int], budget: Budget, log, label) -> None:
    """Round ``r`` times a burst of ``counts[r]`` calls on every worker in turn (rotating who goes first).

    ``label(round, worker, count, burst)`` names the burst in the log line.
    """
    for r, count in enumerate(counts):
        for w in workers[r % len(workers):] + workers[:r % len(workers)]:
            load = budget.wait(60)
            b = w.burst(count)
            flag = "" if b["other_cores"] <= QUIET else "  (disturbed: not counted)"
            log(f"  {label(r, w, count, b)}; other processes {b['other_cores']} cores (before: {load:.2f}){flag}")


def add_driver_arguments(parser) -> None:
    """The options every contender benchmark takes (and the hidden ones its workers get)."""
    import argparse

    parser.add_argument("--shapes", default="small,large")
    parser.add_argument("--tf-inter-op", type=int, default=1, help="TensorFlow inter-op threads (1 or 2)")
    parser.add_argument("--idle-budget", type=float, default=300.0,
                        help="seconds in all to wait for other processes to go quiet")
    parser.add_argument("--verbose", action="store_true", help="show the workers' own stderr")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--part", help=argparse.SUPPRESS)
    parser.add_argument("--shape", help=argparse.SUPPRESS)
