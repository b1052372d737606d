"""Hugging Face import and export of a GPT-2-small-shaped (124M) checkpoint: time and peak memory.

    python bench/interop.py [--work DIR] [--keep]

Makes a random ``GPT2LMHeadModel(GPT2Config())`` with ``transformers`` (the
shape of the hub's ``gpt2``: 12 layers, 12 heads, 768 wide, 1,024 positions,
50,257 tokens), saves it as safetensors beside a byte-level BPE tokenizer
trained on Tiny Shakespeare, then times, each in a fresh process:

* ``import``: ``lmlab.interop.import_hf`` (safetensors → run folder);
* ``export``: ``lmlab.interop.export_hf`` (run folder → Hugging Face folder);
* ``savedmodel``: ``lmlab.interop.export_savedmodel`` (run folder → SavedModel);
* ``transformers_load``: ``AutoModelForCausalLM.from_pretrained`` of the same
  folder, for scale.

For each: seconds for the call alone, the process's peak resident memory
(``ru_maxrss``) and that peak over the memory it held before the call (after
importing TensorFlow or torch). Checks that the exported tensors equal the
original ones. Prints one JSON line at the end.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from contenders import cpu_facts  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def phase(name: str, source: str, target: str) -> dict:
    """Run one phase in this process (started fresh for it) and measure it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # The frameworks are imported before the baseline is read: their own footprint is not the phase's.
    if name == "transformers_load":
        importlib.import_module("torch")
        from transformers import AutoModelForCausalLM
    else:
        importlib.import_module("tensorflow")
        importlib.import_module("keras")
        from lmlab.interop import export_hf, export_savedmodel, import_hf
    baseline = rss_mb()
    started = time.perf_counter()
    if name == "import":
        import_hf(source, target, log=lambda m: None)
    elif name == "export":
        export_hf(source, target, log=lambda m: None)
    elif name == "savedmodel":
        export_savedmodel(source, target, log=lambda m: None)
    else:
        AutoModelForCausalLM.from_pretrained(source)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"s": round(seconds, 2), "peak_rss_mb": round(peak), "peak_over_baseline_mb": round(peak - baseline)}


def make_checkpoint(folder: Path, data: Path) -> dict:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from lmlab.tokenizers import train_tokenizer

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config())
    model.save_pretrained(folder)
    text = (data / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    tokenizer = train_tokenizer("bpe", text.split("\n\n"), vocab_size=8000)
    (folder / "tokenizer.json").write_text(tokenizer.hf_json(), encoding="utf-8")
    return {"parameters": sum(p.numel() for p in model.parameters()),
            "safetensors_mb": round((folder / "model.safetensors").stat().st_size / 2**20)}


def same_tensors(a: Path, b: Path) -> bool:
    import numpy as np

    from lmlab.interop.weight_files import CheckpointTensors

    left, right = CheckpointTensors.open(a), CheckpointTensors.open(b)
    return sorted(left.names) == sorted(right.names) and all(
        np.array_equal(left.read(n), right.read(n)) for n in left.names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", help="folder for the checkpoint and outputs (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--data", default=os.environ.get("LMLAB_DATA", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:  # a child: one measurement, one JSON line
        print(json.dumps(phase(args.phase, args.source, args.target)))
        return

    wall = time.perf_counter()
    work = Path(args.work or tempfile.mkdtemp(prefix="lmlab-interop-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    hf, run, back, saved = work / "gpt2-hf", work / "gpt2-run", work / "gpt2-back", work / "gpt2-savedmodel"
    for folder in (hf, run, back, saved):
        shutil.rmtree(folder, ignore_errors=True)
    result = make_checkpoint(hf, Path(args.data))

    def child(name, source, target):
        done = subprocess.run([sys.executable, __file__, "--phase", name, "--source", str(source),
                               "--target", str(target)], capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    for name, source, target in (("import", hf, run), ("export", run, back), ("savedmodel", run, saved),
                                 ("transformers_load", hf, None)):
        for key, value in child(name, source, target).items():
            result[f"{name}_{key}"] = value
    result["roundtrip_equal"] = same_tensors(hf, back)
    result["run_folder_mb"] = round(sum(p.stat().st_size for p in run.rglob("*") if p.is_file()) / 2**20)
    import tensorflow as tf
    import torch
    import transformers

    result.update(**cpu_facts(), tensorflow=tf.__version__, torch=torch.__version__,
                  transformers=transformers.__version__,
                  wall_s=round(time.perf_counter() - wall, 1))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
