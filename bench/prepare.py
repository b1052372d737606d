"""Benchmark ``lmlab prepare`` against raw Hugging Face ``tokenizers`` in the same run.

    python bench/prepare.py [--data ../shared/data] [--workers 2]

1. Trains a byte-level BPE (8,000) on WikiText-2 train once (not timed).
2. Peer: ``Tokenizer.encode_batch`` of the same file's lines, in memory, with
   the library's own threads: the speed of tokenisation alone.
3. lmlab: the whole ``lmlab prepare`` command with that tokenizer (process
   start, read, clean, BPE encode in ``--workers`` processes, write and
   checksum shards, manifest), timed from outside as a user sees it.
4. Peak memory (resident set of the whole process tree, sampled from /proc)
   of the same command on the file and on the file repeated ten times.

Prints one JSON line at the end with ``mb_per_s``, ``ratio_vs_tokenizers``
and ``rss_ratio_10x``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from contenders import cpu_facts  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def tree_rss(root_pid: int) -> int:
    """Resident bytes of a process and all its descendants."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry))
            rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def run_measured(args: list[str]) -> tuple[float, int]:
    """Run a command; return (wall seconds, peak resident bytes of its process tree)."""
    start = time.perf_counter()
    process = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss(process.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = process.communicate()
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    if process.returncode:
        sys.exit(f"command failed: {' '.join(args)}\n{err.decode()}")
    return wall, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.environ.get("LMLAB_DATA", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions; the best is reported")
    args = parser.parse_args()
    train = Path(args.data) / "wikitext-2" / "train.txt"
    size_mb = train.stat().st_size / 1e6
    lmlab = [sys.executable, "-m", "lmlab", "prepare", "--quiet", "--no-dedup", "--workers", str(args.workers)]

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        subprocess.run(lmlab + [str(train), "--tokenizer", "bpe", "--vocab-size", "8000", "--out", str(scratch / "tok")],
                       check=True, cwd=REPO)
        tokenizer_file = scratch / "tok" / "tokenizer.json"

        from tokenizers import Tokenizer

        hf = Tokenizer.from_str(json.dumps(json.loads(tokenizer_file.read_text())["hf_tokenizer"]))
        lines = [line for line in train.read_text(encoding="utf-8").splitlines() if line.strip()]
        peer_times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            hf.encode_batch(lines, add_special_tokens=False)
            peer_times.append(time.perf_counter() - start)
        peer = min(peer_times)

        ours_times, rss_1x = [], 0
        for repeat in range(args.repeats):
            out = scratch / f"one-{repeat}"
            wall, rss = run_measured(lmlab + [str(train), "--tokenizer", str(tokenizer_file), "--out", str(out)])
            ours_times.append(wall)
            rss_1x = max(rss_1x, rss)
        ours = min(ours_times)

        big = scratch / "train-x10.txt"
        with open(big, "wb") as handle:
            for _ in range(10):
                handle.write(train.read_bytes())
        wall_10x, rss_10x = run_measured(lmlab + [str(big), "--format", "wikitext", "--tokenizer", str(tokenizer_file),
                                                  "--out", str(scratch / "ten")])

    result = {
        "input_mb": round(size_mb, 2),
        "workers": args.workers,
        "cores": os.cpu_count(),
        "tokenizers_encode_batch_s": round(peer, 3),
        "tokenizers_mb_per_s": round(size_mb / peer, 2),
        "lmlab_prepare_s": round(ours, 3),
        "mb_per_s": round(size_mb / ours, 2),
        "ratio_vs_tokenizers": round(peer / ours, 3),
        "lmlab_prepare_10x_s": round(wall_10x, 3),
        "mb_per_s_10x": round(10 * size_mb / wall_10x, 2),
        "rss_1x_mib": round(rss_1x / 2**20, 1),
        "rss_10x_mib": round(rss_10x / 2**20, 1),
        "rss_ratio_10x": round(rss_10x / rss_1x, 3),
    }
    print(json.dumps({**cpu_facts(), **result}))


if __name__ == "__main__":
    main()
