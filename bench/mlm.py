"""Masked-LM pretraining on real text, briefly, on CPU: WikiText-2 (English), the Tang poems
(classical Chinese) and modern Chinese (LCSTS + cmn-eng, the Chinese decoder's text in bench/applications.py),
the Chinese ones with whole-word masking (jieba words). Figures for bench/RESULTS.md.

For each corpus: a WordPiece tokenizer with [MASK] (lmlab.tokenizers.wordpiece), ``lmlab prepare``
with it, ``lmlab train --model encoder`` for a wall-clock budget, ``lmlab eval`` (masked
loss and accuracy, pseudo-perplexity) and ``lmlab fill-mask`` on a few sentences. Prints
one JSON line per corpus.

    python bench/mlm.py --out runs/bench-mlm [--seconds 270] [--only wikitext2|tang|zh]
    python bench/mlm.py --out runs/bench-mlm --tasks    # fine-tune: SST-2, SQuAD (English), ChnSentiCorp (zh)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from contenders import cpu_facts  # noqa: E402

DATA = Path(os.environ.get("LMLAB_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))

CORPORA = {
    "wikitext2": dict(
        sources=[f"train={DATA / 'wikitext-2' / 'train.txt'}", f"valid={DATA / 'wikitext-2' / 'valid.txt'}",
                 f"test={DATA / 'wikitext-2' / 'test.txt'}"],
        prepare=["--doc-sep", "blank"], lowercase=True, vocab=8000, whole_word=False,
        probes=["the [MASK] of the united states", "he was born in [MASK] .", "the game was released in [MASK] ."]),
    "tang": dict(
        sources=[str(DATA / "chinese-poetry" / "quan_tang_shi")],
        prepare=["--format", "json", "--field", "paragraphs", "--split", "0.98,0.01,0.01"], lowercase=False,
        vocab=8000, whole_word=True, probes=["床前明月光，疑是地上[MASK]。", "白日依山盡，黃河入[MASK]流。",
                                             "春眠不覺曉，處處聞啼[MASK]。"]),
    # Modern Chinese: the training parts of LCSTS (texts and summaries) and Tatoeba cmn-eng (both sides), as
    # bench/applications.py pre-trains its Chinese decoder on; ChnSentiCorp's text is not in it.
    "zh": dict(
        sources=None, prepare=["--doc-sep", "line", "--split", "0.98,0.01,0.01"], lowercase=True, vocab=8000,
        whole_word=True, probes=["今天天气很[MASK]。", "这家酒店的服务非常[MASK]。", "中国的首都是[MASK]京。"]),
}


def zh_corpus(out: Path) -> Path:
    from applications import splits  # bench/applications.py: the same files, so the same text as its decoder

    return splits(out)["zh_corpus"]


def lmlab(*args) -> str:
    result = subprocess.run([sys.executable, "-m", "lmlab", *map(str, args)], capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"lmlab {' '.join(map(str, args))} failed:\n{result.stderr[-3000:]}")
    return result.stdout


def tokenizer_texts(name: str, out: Path):
    if name == "zh":
        yield from zh_corpus(out).read_text(encoding="utf-8").splitlines()
        return
    if name == "wikitext2":
        yield from (DATA / "wikitext-2" / "train.txt").read_text(encoding="utf-8").splitlines()
        return
    for path in sorted((DATA / "chinese-poetry" / "quan_tang_shi").glob("poet.tang.*.json")):
        for poem in json.loads(path.read_text(encoding="utf-8")):
            yield "".join(poem.get("paragraphs") or [])


def run(name: str, out: Path, seconds: float, steps: int, position: str = "rope") -> dict:
    from lmlab.tokenizers.wordpiece import train_wordpiece

    spec = CORPORA[name]
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = folder / "tokenizer.json"
    if not tokenizer.exists():
        tokenizer.write_text(train_wordpiece(tokenizer_texts(name, out), spec["vocab"], spec["lowercase"]),
                             encoding="utf-8")
    if not (folder / "data" / "manifest.json").exists():
        sources = spec["sources"] or [str(zh_corpus(out))]
        lmlab("prepare", *sources, "--out", folder / "data", "--tokenizer", tokenizer, *spec["prepare"],
              "--quiet", "--overwrite")
    # The "small" shape (4 x 256, 128 tokens) runs at ~5 s a step on 2 shared cores; this is 2 x 128, 64 tokens.
    train_args = ["--data", folder / "data", "--model", "encoder", "--shape", "small", "--max-steps", steps,
                  "--set", "model.n_layer=2", "--set", "model.d_model=128", "--set", "model.block_size=64",
                  "--set", f"max_seconds={seconds}", "--set", "batch_size=32", "--set", "learning_rate=2e-3",
                  "--set", "warmup_steps=30", "--set", "weight_decay=0.01", "--set", "eval_interval=100",
                  "--set", "eval_batches=10", "--set", "log_interval=25",
                  "--set", f"model.whole_word={'true' if spec['whole_word'] else 'false'}",
                  "--set", f"model.position={position}", "--out", folder / f"run-{position}", "--quiet"]
    if not (folder / f"run-{position}" / "results.json").exists():
        lmlab("train", *train_args)
    log = [json.loads(line) for line in (folder / f"run-{position}" / "log.jsonl").read_text().splitlines()]
    evals = [r for r in log if "val_loss" in r]
    evaluation = json.loads(lmlab("eval", folder / f"run-{position}", "--json"))
    fills = [json.loads(lmlab("fill-mask", folder / f"run-{position}", probe, "--json")) for probe in spec["probes"]]
    return {
        "corpus": name, "position": position, "steps": evals[-1]["step"],
        "elapsed_s": round(evals[-1]["elapsed_s"], 1),
        "val_loss_by_step": {r["step"]: round(r["val_loss"], 3) for r in evals},
        "test_masked_loss": round(evaluation["masked_loss"], 3),
        "test_masked_accuracy": round(evaluation["masked_accuracy"], 4),
        "test_pseudo_perplexity": round(evaluation["pseudo_perplexity"], 1),
        "whole_word": spec["whole_word"],
        "fill_mask": {f["text"]: [c["token"] for c in f["masks"][0]["candidates"]] for f in fills},
    }


def tasks(out: Path, seconds_steps: dict, position: str = "rope") -> dict:
    """Fine-tune the WikiText-2 encoder on SST-2 (classification from [CLS]) and on part of the SQuAD v1.1 dev
    file (extractive QA), and the modern-Chinese encoder on ChnSentiCorp; the same SST-2 and ChnSentiCorp splits
    as bench/applications.py (SST-2: its first 20,000 training sentences; 5% held out at random with seed 0)."""
    from lmlab.tasks.finetune import split_off
    from lmlab.tasks.readers.labelled import read_labelled

    folder, base = out / f"tasks-{position}", out / "wikitext2" / f"run-{position}"
    folder.mkdir(parents=True, exist_ok=True)
    lines = (DATA / "sst2" / "train.tsv").read_text(encoding="utf-8").splitlines()[:20_001]
    (folder / "sst2-20k.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    kept, valid = split_off(list(read_labelled(folder / "sst2-20k.tsv")), 0.05, 0, "sst2")
    for name, examples in (("train", kept), ("valid", valid)):
        rows = ["sentence\tlabel"] + [f"{' '.join(e.text.split())}\t{e.label}" for e in examples]
        (folder / f"sst2-{name}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    squad = json.loads((DATA / "squad" / "dev-v1.1.json").read_text(encoding="utf-8"))
    (folder / "squad-train.json").write_text(json.dumps({"version": "1.1", "data": squad["data"][:-8]}))
    (folder / "squad-test.json").write_text(json.dumps({"version": "1.1", "data": squad["data"][-8:]}))
    results = {}
    if not (folder / "sst2" / "results.json").exists():
        lmlab("finetune", base, "--task", "classify", "--pooling", "cls", "--train", folder / "sst2-train.tsv",
              "--valid", folder / "sst2-valid.tsv", "--max-steps", seconds_steps["sst2"], "--batch-size", 32,
              "--lr", "5e-4", "--eval-interval", 100, "--out", folder / "sst2", "--quiet", "--overwrite")
    results["sst2"] = json.loads(lmlab("evaluate-task", folder / "sst2", "--test", DATA / "sst2" / "dev.tsv",
                                       "--json"))
    if not (folder / "squad" / "results.json").exists():
        lmlab("finetune", base, "--task", "span", "--train", folder / "squad-train.json", "--limit", 3000,
              "--valid-fraction", 0.05, "--max-steps", seconds_steps["squad"], "--batch-size", 32, "--lr", "5e-4",
              "--eval-interval", 100, "--out", folder / "squad", "--quiet", "--overwrite")
    results["squad"] = json.loads(lmlab("evaluate-task", folder / "squad", "--test", folder / "squad-test.json",
                                        "--limit", 300, "--json"))
    # ChnSentiCorp on the modern-Chinese encoder: the split bench/applications.py gives its Chinese decoder (5% of
    # the 9,600 training reviews held out with seed 0; the dev set as the test set), reviews cut to the
    # encoder's 64-token context.
    examples = list(read_labelled(DATA / "chnsenticorp" / "train.tsv"))
    kept, valid = split_off(examples, 0.05, 0, str(DATA / "chnsenticorp" / "train.tsv"))
    for name, part in (("train", kept), ("valid", valid)):
        rows = ["label\ttext_a"] + [f"{e.label}\t{' '.join(e.text.split())}" for e in part]
        (folder / f"chnsenticorp-{name}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    if not (folder / "chnsenticorp" / "results.json").exists():
        lmlab("finetune", out / "zh" / f"run-{position}", "--task", "classify", "--pooling", "cls",
              "--train", folder / "chnsenticorp-train.tsv", "--valid", folder / "chnsenticorp-valid.tsv",
              "--epochs", 1, "--max-length", 64, "--batch-size", 32, "--lr", "5e-4", "--eval-interval", 100,
              "--out", folder / "chnsenticorp", "--quiet", "--overwrite")
    results["chnsenticorp"] = json.loads(lmlab("evaluate-task", folder / "chnsenticorp", "--test",
                                               DATA / "chnsenticorp" / "dev.tsv", "--json"))
    return {name: {k: v for k, v in r.items() if isinstance(v, (int, float)) or k == "confusion_matrix"}
            for name, r in results.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench-mlm")
    parser.add_argument("--seconds", type=float, default=270.0, help="training wall-clock budget per corpus")
    parser.add_argument("--steps", type=int, default=3000, help="step limit (the schedule's length)")
    parser.add_argument("--only", choices=sorted(CORPORA))
    parser.add_argument("--position", choices=("learned", "rope"), default="rope",
                        help="the encoder's positions: BERT's learned table or rotary (the default: off the "
                             "masked-LM plateau far sooner, bench/RESULTS.md)")
    parser.add_argument("--tasks", action="store_true", help="fine-tune the WikiText-2 encoder on SST-2 and SQuAD")
    args = parser.parse_args()
    if args.tasks:
        print(json.dumps({**cpu_facts(), **tasks(Path(args.out), {"sst2": 594, "squad": 250}, args.position)}),
              flush=True)
        return 0
    for name in [args.only] if args.only else list(CORPORA):
        print(json.dumps({**cpu_facts(), **run(name, Path(args.out), args.seconds, args.steps, args.position)},
                         ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
