"""N-best rescoring of the shared HyPoradise lists with a word 5-gram trained on WikiText-2 (docs/results/rescoring.md).

    python bench/rescoring.py [--out runs/wikitext2-5gram-lower] [--order 5]
    python bench/rescoring.py --run runs/compare/families-wikitext2/runs/transformer-s1337

Builds an n-gram run over WikiText-2's train.txt, lower-cased and passed through the rescoring
normaliser (so its words are the hypotheses' words; ``<unk>`` becomes ``unk``), one sentence per
line, then ``lmlab rescore``'s default (tuned on the odd utterances, tested on the even ones) on
each of the six sets; prints the markdown table of the results document. ``--run`` rescores with
a run that exists instead (any family; the hypotheses are scored as the normaliser leaves them:
lower case, no punctuation). Last, one JSON line: each set's test WER before and after, the
oracle, the weights, the seconds the set took and the CPU facts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from contenders import cpu_facts

from lmlab.core.io import write_json
from lmlab.evaluation.nbest import read_nbest
from lmlab.evaluation.rescore import normalize, rescore
from lmlab.models.ngram import NGramConfig, NGramLM
from lmlab.tokenizers.vocab import EOS, UNK, WordTokenizer

DATA = Path(os.environ.get("LMLAB_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
SETS = ["ls_clean", "wsj_score", "chime4", "cv", "swbd", "coraal"]


def build_run(out: Path, order: int) -> Path:
    if (out / "config.json").exists():
        return out
    lines = (DATA / "wikitext-2" / "train.txt").read_text(encoding="utf-8").splitlines()
    sentences = [normalize(line).split() for line in lines if normalize(line)]
    model = NGramLM.train(sentences, NGramConfig(order=order))
    model.save(out / "model")
    words = sorted({w for s in sentences for w in s})
    WordTokenizer([EOS, UNK, *words]).save(out / "tokenizer.json")
    write_json(out / "config.json", {"train": {"data": "wikitext-2/train.txt, lower-cased and normalised"},
                                     "model": {"family": "ngram", **model.get_config()}})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/wikitext2-5gram-lower")
    parser.add_argument("--order", type=int, default=5)
    parser.add_argument("--run", help="rescore with this run instead of building the n-gram")
    args = parser.parse_args()
    start = time.perf_counter()
    run = Path(args.run) if args.run else build_run(Path(args.out), args.order)
    print(f"run {run} ready in {time.perf_counter() - start:.0f} s")
    figures = {}
    print("| set | test utts | first pass | rescored | oracle | raw first pass | raw rescored | raw oracle | λ | β |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in SETS:
        began = time.perf_counter()
        result = rescore(read_nbest(DATA / "nbest" / "hyporadise" / f"test_{name}.json"), run)
        test, w = result["parts"]["test"], result["weights"]
        figures[name] = {**{k: round(test[k]["normalized"], 2) for k in ("first_pass", "rescored", "oracle")},
                         "lm_weight": w["lm"], "length_weight": w["length"],
                         "seconds": round(time.perf_counter() - began, 1)}
        cells = [f"{test[k][m]:.2f}" for m in ("normalized", "raw") for k in ("first_pass", "rescored", "oracle")]
        print(f"| {name} | {test['utterances']:,} | " + " | ".join(cells) + f" | {w['lm']:.3g} | {w['length']:.3g} |",
              flush=True)
    print(json.dumps({"bench": "rescoring", "run": str(run), "sets": figures, **cpu_facts()}))


if __name__ == "__main__":
    main()
