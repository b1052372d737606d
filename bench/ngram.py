"""Benchmark the n-gram builder against KenLM's ``lmplz`` on WikiText-2.

    python bench/ngram.py [--data ../shared/data] [--repeats 3] [--no-10x]

Each measurement runs in a fresh child process (``--child JOB``), as ``lmplz`` does:

1. build the 5-gram and the 3-gram on ``train.txt`` (``<unk>`` renamed ``<oov>`` as the
   KenLM reference did) and save them in our format (JSON + safetensors): read, count,
   estimate, write. ``build_s`` is that, timed inside the child (without the ~0.3 s of
   Python and NumPy start-up); the median of ``--repeats`` runs;
2. score ``test.txt`` with them: perplexity (KenLM: 220.139 and 226.051);
3. export the saved 5-gram as ARPA, timed on its own;
4. build the 5-gram on the training text repeated ten times (streamed, 20.9 M tokens)
   to show how time and memory grow (with ``discount_fallback``, as ``lmplz`` would need
   ``--discount_fallback``: no 5-gram is seen once in ten copies).

On a shared VM other jobs slow the wall clock: the median and best wall times, the
CPU time and the load average are all reported. Peak memory is the child's resident-set high-water mark (``VmHWM`` in
``/proc/self/status``, exact), cross-checked by sampling ``/proc/PID/status`` every
20 ms from here. KenLM on this machine (kenlm-reference/README.md): 5-gram 2.63 s,
3-gram 1.32 s, peak 258-287 MiB. Prints one JSON line at the end.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("LMLAB_DATA", REPO.parent / "shared" / "data"))
RENAME = [("<unk>", "<oov>")]
KENLM = {"build_s_o5": 2.63, "build_s_o3": 1.32, "peak_rss_mb": 258.0}


def high_water_mark_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(job: str, data: Path, folder: Path) -> dict:
    """One measurement in this (fresh) process; returns what it measured."""
    from lmlab.models.ngram import NGramConfig, NGramLM, read_sentences

    train = data / "wikitext-2" / "train.txt"
    result: dict = {"job": job}
    if job.startswith("build"):  # build-o5, build-o3, build-o5-10x
        order = int(job.split("-")[1][1:])
        copies = 10 if job.endswith("10x") else 1
        start, cpu = time.perf_counter(), time.process_time()
        sentences = itertools.chain.from_iterable(read_sentences(train, RENAME) for _ in range(copies))
        # Repeated ten times, every 5-gram is seen a multiple of ten times: no count is 1,
        # D1 cannot be estimated, and lmplz needs --discount_fallback just the same.
        fallback = (0.5, 1.0, 1.5) if copies > 1 else None
        model = NGramLM.train(sentences, NGramConfig(order=order, discount_fallback=fallback))
        model.save(folder / f"o{order}-{copies}x")
        result["build_s"] = time.perf_counter() - start
        result["build_cpu_s"] = time.process_time() - cpu  # less sensitive to other jobs on a shared VM
        result["counts"] = model.counts
        result["tokens"] = model.statistics["tokens"]
        result["peak_rss_mb"] = high_water_mark_mb()
        if copies == 1:
            test = list(read_sentences(data / "wikitext-2" / "test.txt", RENAME))
            start = time.perf_counter()
            result["perplexity"] = model.perplexity(test)
            result["score_s"] = time.perf_counter() - start
    elif job.startswith("arpa"):  # arpa-o5
        model = NGramLM.load(folder / f"{job.split('-')[1]}-1x")
        start = time.perf_counter()
        path = model.to_arpa(folder / "model.arpa")
        result["arpa_write_s"] = time.perf_counter() - start
        result["arpa_mb"] = path.stat().st_size / 2**20
        start = time.perf_counter()
        NGramLM.from_arpa(path)
        result["arpa_read_s"] = time.perf_counter() - start
    else:
        raise SystemExit(f"unknown job {job!r}")
    return result


def sampled_rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_child(job: str, data: Path, folder: Path) -> dict:
    """Run one job in a fresh process, sampling its memory; its result plus the wall time."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, __file__, "--child", job, "--data", str(data), "--folder", str(folder)],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    peak = [0.0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], sampled_rss_mb(process.pid))
            done.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = process.communicate()
    done.set()
    sampler.join()
    if process.returncode != 0:
        raise SystemExit(f"child {job} failed:\n{err}")
    result = json.loads(out.strip().splitlines()[-1])
    result["process_wall_s"] = time.perf_counter() - start
    result["sampled_peak_rss_mb"] = peak[0]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-10x", action="store_true", help="skip the ten-times corpus")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.data, args.folder)))
        return
    if not (args.data / "wikitext-2" / "train.txt").exists():
        raise SystemExit(f"WikiText-2 not found under {args.data} (set --data or LMLAB_DATA)")

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        runs: dict[str, list[dict]] = {}
        for _ in range(args.repeats):
            for job in ("build-o5", "build-o3"):
                result = run_child(job, args.data, folder)
                runs.setdefault(job, []).append(result)
                print(f"{job}: build {result['build_s']:.2f} s (CPU {result['build_cpu_s']:.2f} s, process "
                      f"{result['process_wall_s']:.2f} s, load {os.getloadavg()[0]:.1f}), "
                      f"peak {result['peak_rss_mb']:.0f} MiB (sampled {result['sampled_peak_rss_mb']:.0f}), "
                      f"test perplexity {result['perplexity']['perplexity']:.4f}", flush=True)
        arpa = run_child("arpa-o5", args.data, folder)
        print(f"ARPA 5-gram: write {arpa['arpa_write_s']:.2f} s ({arpa['arpa_mb']:.0f} MiB), "
              f"read back {arpa['arpa_read_s']:.2f} s", flush=True)
        big = None
        if not args.no_10x:
            big = run_child("build-o5-10x", args.data, folder)
            print(f"build-o5-10x: build {big['build_s']:.2f} s for {big['tokens']:,} tokens, "
                  f"peak {big['peak_rss_mb']:.0f} MiB (sampled {big['sampled_peak_rss_mb']:.0f})", flush=True)

    def median(job, key):
        return statistics.median(r[key] for r in runs[job])

    summary = {
        "ppl_o3": runs["build-o3"][0]["perplexity"]["perplexity"],
        "ppl_o5": runs["build-o5"][0]["perplexity"]["perplexity"],
        "build_s_o5": round(median("build-o5", "build_s"), 3),
        "build_s_o3": round(median("build-o3", "build_s"), 3),
        "build_cpu_s_o5": round(median("build-o5", "build_cpu_s"), 3),
        "build_cpu_s_o3": round(median("build-o3", "build_cpu_s"), 3),
        "best_build_s_o5": round(min(r["build_s"] for r in runs["build-o5"]), 3),
        "best_build_s_o3": round(min(r["build_s"] for r in runs["build-o3"]), 3),
        "peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs["build-o5"] + runs["build-o3"]), 1),
        "arpa_write_s": round(arpa["arpa_write_s"], 3),
        "build_s_o5_10x": round(big["build_s"], 3) if big else None,
        "peak_rss_mb_10x": round(big["peak_rss_mb"], 1) if big else None,
        "score_s_test_o5": round(median("build-o5", "score_s"), 3),
        "arpa_read_s": round(arpa["arpa_read_s"], 3),
        "kenlm": KENLM,
        "ratio_o5_vs_kenlm": round(median("build-o5", "build_s") / KENLM["build_s_o5"], 2),
        "ratio_o3_vs_kenlm": round(median("build-o3", "build_s") / KENLM["build_s_o3"], 2),
        "repeats": args.repeats,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
