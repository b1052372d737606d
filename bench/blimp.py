"""BLiMP accuracy of the WikiText-2 word 5-gram (docs/results/blimp.md), the full-sentence method of eval-pairs.

    python bench/rescoring.py            # builds runs/wikitext2-5gram-lower first
    python bench/blimp.py [--run runs/wikitext2-5gram-lower] [--out runs/blimp-5gram]

The run's words are lower-cased and normalised (bench/rescoring.py), so each BLiMP sentence is
passed through the same normaliser first (``The cat sat.`` -> ``the cat sat``); the pairs' contrasts
are in their words, which this keeps. Writes results.json, results.md and accuracy.png to --out.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path

from lmlab.evaluation.pairs import evaluate_pairs, read_pairs, table, write_results
from lmlab.evaluation.rescore import normalize

DATA = Path(os.environ.get("LMLAB_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/wikitext2-5gram-lower")
    parser.add_argument("--out", default="runs/blimp-5gram")
    args = parser.parse_args()
    pairs = [replace(p, good=normalize(p.good), bad=normalize(p.bad)) for p in read_pairs(DATA / "blimp" / "data")]
    result = evaluate_pairs(args.run, pairs)
    write_results(result, args.out, str(DATA / "blimp" / "data"), log=print)
    print(table(result))


if __name__ == "__main__":
    main()
