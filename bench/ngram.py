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
20 ms from here.

The peer, KenLM's ``lmplz``, runs in the same run, interleaved with lmlab's builds: set
``KENLM_BIN`` to the folder holding ``lmplz`` (or give ``--kenlm-bin``). Each of its runs is
``lmplz -o N -S 1G --text train.txt --arpa model.arpa`` on the same text with ``<unk>``
renamed ``<oov>`` beforehand (not timed), timed from outside (process start to exit, which
includes writing the ARPA file; lmlab's ``build_s`` does not include its ARPA export), with
its exact peak memory from ``wait4``; the ten-times corpus with ``--discount_fallback``.
Without ``lmplz`` the KenLM figures and ratios are ``null`` and ``kenlm`` says why: this
bench never divides by a figure from another run. Prints one JSON line at the end.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from contenders import REPO, cpu_facts  # noqa: E402

DEFAULT_DATA = Path(os.environ.get("LMLAB_DATA", REPO.parent / "shared" / "data"))
RENAME = [("<unk>", "<oov>")]


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


def find_lmplz(kenlm_bin: str | None) -> tuple[Path | None, str]:
    """``lmplz`` in ``kenlm_bin`` (or ``$KENLM_BIN``), and a reason when there is none."""
    folder = kenlm_bin or os.environ.get("KENLM_BIN")
    if not folder:
        return None, "unavailable: set KENLM_BIN (or --kenlm-bin) to the folder holding KenLM's lmplz"
    path = Path(folder) / "lmplz"
    if not os.access(path, os.X_OK):
        return None, f"unavailable: no executable lmplz in {folder}"
    return path, str(path)


def renamed_text(train: Path, out: Path, copies: int = 1) -> Path:
    """``train`` with ``<unk>`` renamed as the KenLM reference did, ``copies`` times over (lmplz's input)."""
    text = train.read_text(encoding="utf-8")
    for old, new in RENAME:
        text = text.replace(old, new)
    with open(out, "w", encoding="utf-8") as handle:
        for _ in range(copies):
            handle.write(text)
    return out


def run_lmplz(lmplz: Path, order: int, text: Path, folder: Path, fallback: bool = False) -> dict:
    """One ``lmplz`` build: wall seconds from start to exit, and its exact peak memory (``wait4``'s maxrss)."""
    command = [str(lmplz), "-o", str(order), "-S", "1G", "-T", str(folder), "--text", str(text),
               "--arpa", str(folder / f"kenlm-o{order}.arpa")]
    if fallback:
        command.append("--discount_fallback")
    with tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            err.seek(0)
            raise SystemExit(f"{' '.join(command)} failed (exit {process.returncode}):\n{err.read()[-2000:]}")
    return {"build_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024, "cpu_s": usage.ru_utime + usage.ru_stime}


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
    parser.add_argument("--kenlm-bin", help="folder holding KenLM's lmplz (default: $KENLM_BIN)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.data, args.folder)))
        return
    if not (args.data / "wikitext-2" / "train.txt").exists():
        raise SystemExit(f"WikiText-2 not found under {args.data} (set --data or LMLAB_DATA)")

    lmplz, kenlm_note = find_lmplz(args.kenlm_bin)
    print(f"KenLM: {kenlm_note}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        train = args.data / "wikitext-2" / "train.txt"
        kenlm_text = renamed_text(train, folder / "train.txt") if lmplz else None
        runs: dict[str, list[dict]] = {}
        kenlm_runs: dict[str, list[dict]] = {}
        for _ in range(args.repeats):
            for job in ("build-o5", "build-o3"):
                result = run_child(job, args.data, folder)
                runs.setdefault(job, []).append(result)
                print(f"{job}: build {result['build_s']:.2f} s (CPU {result['build_cpu_s']:.2f} s, process "
                      f"{result['process_wall_s']:.2f} s, load {os.getloadavg()[0]:.1f}), "
                      f"peak {result['peak_rss_mb']:.0f} MiB (sampled {result['sampled_peak_rss_mb']:.0f}), "
                      f"test perplexity {result['perplexity']['perplexity']:.4f}", flush=True)
                if lmplz:
                    theirs = run_lmplz(lmplz, int(job[-1]), kenlm_text, folder)
                    kenlm_runs.setdefault(job, []).append(theirs)
                    print(f"  lmplz -o {job[-1]}: {theirs['build_s']:.2f} s (CPU {theirs['cpu_s']:.2f} s), "
                          f"peak {theirs['peak_rss_mb']:.0f} MiB", flush=True)
        arpa = run_child("arpa-o5", args.data, folder)
        print(f"ARPA 5-gram: write {arpa['arpa_write_s']:.2f} s ({arpa['arpa_mb']:.0f} MiB), "
              f"read back {arpa['arpa_read_s']:.2f} s", flush=True)
        big = None
        if not args.no_10x:
            big = run_child("build-o5-10x", args.data, folder)
            print(f"build-o5-10x: build {big['build_s']:.2f} s for {big['tokens']:,} tokens, "
                  f"peak {big['peak_rss_mb']:.0f} MiB (sampled {big['sampled_peak_rss_mb']:.0f})", flush=True)
            if lmplz:
                big_text = renamed_text(train, folder / "train-10x.txt", copies=10)
                kenlm_runs["build-o5-10x"] = [run_lmplz(lmplz, 5, big_text, folder, fallback=True)]
                print(f"  lmplz -o 5 (10x): {kenlm_runs['build-o5-10x'][0]['build_s']:.2f} s, peak "
                      f"{kenlm_runs['build-o5-10x'][0]['peak_rss_mb']:.0f} MiB", flush=True)

    def median(job, key, of=runs):
        return statistics.median(r[key] for r in of[job])

    kenlm: dict = {"lmplz": kenlm_note}
    if kenlm_runs:
        kenlm.update({"build_s_o5": round(median("build-o5", "build_s", kenlm_runs), 3),
                      "build_s_o3": round(median("build-o3", "build_s", kenlm_runs), 3),
                      "cpu_s_o5": round(median("build-o5", "cpu_s", kenlm_runs), 3),
                      "peak_rss_mb": round(max(r["peak_rss_mb"] for r in kenlm_runs["build-o5"]
                                               + kenlm_runs["build-o3"]), 1)})
        if "build-o5-10x" in kenlm_runs:
            kenlm["build_s_o5_10x"] = round(kenlm_runs["build-o5-10x"][0]["build_s"], 3)
            kenlm["peak_rss_mb_10x"] = round(kenlm_runs["build-o5-10x"][0]["peak_rss_mb"], 1)

    def ratio(key):  # lmlab's time over lmplz's (above 1: lmlab is slower), or None without lmplz
        ours = {"build_s_o5": median("build-o5", "build_s"), "build_s_o3": median("build-o3", "build_s"),
                "build_s_o5_10x": big["build_s"] if big else None}[key]
        return round(ours / kenlm[key], 2) if key in kenlm and ours else None

    summary = {
        **cpu_facts(),
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
        "kenlm": kenlm,
        "ratio_o5_vs_kenlm": ratio("build_s_o5"),
        "ratio_o3_vs_kenlm": ratio("build_s_o3"),
        "ratio_o5_10x_vs_kenlm": ratio("build_s_o5_10x"),
        "repeats": args.repeats,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
