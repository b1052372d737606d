"""BLiMP accuracy of lmlab runs (docs/results/blimp.md), the full-sentence method of eval-pairs.

    python bench/rescoring.py            # builds runs/wikitext2-5gram-lower first
    python bench/blimp.py [--run runs/wikitext2-5gram-lower] [--out runs/blimp-5gram]
    python bench/blimp.py --text wikitext --out runs/blimp-families \\
        --run runs/compare/families-wikitext2/runs/5-gram-s1337 \\
        --run runs/compare/families-wikitext2/runs/transformer-s1337 ...

Each BLiMP sentence is first written the way the run's training text was:

* ``--text lower`` (default): lower-cased and normalised (``The cat sat.`` -> ``the cat sat``), for
  the runs of bench/rescoring.py;
* ``--text wikitext``: WikiText-2's own tokenization, case kept (``The cat didn't sit.`` ->
  ``The cat didn 't sit .``), for runs trained on WikiText-2 as published (the families experiment).

The pairs' contrasts are in their words, which both keep. Writes results.json, results.md and
accuracy.png for each run to ``--out/NAME`` (one run: to ``--out``), prints a table with a column
per run and, last, one JSON line: each run's overall and per-field accuracy, sentences scored per
second (``lmlab score``'s scorer, batch 32) and the CPU facts.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from contenders import cpu_facts

from lmlab.evaluation.pairs import evaluate_pairs, read_pairs, write_results
from lmlab.evaluation.rescore import normalize
from lmlab.runs.load import load_run

DATA = Path(os.environ.get("LMLAB_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))

_PUNCTUATION = re.compile(r"""([.,!?;:"()])""")
_CLITIC = re.compile(r"(\w)'(\w)")  # WikiText splits before the apostrophe: didn 't, it 's
_HYPHEN = re.compile(r"(\w)-(\w)")  # and writes an in-word hyphen as @-@


def wikitext_words(text: str) -> str:
    """``text`` in WikiText-2's tokenization: punctuation apart, clitics split off, hyphens as ``@-@``."""
    text = _HYPHEN.sub(r"\1 @-@ \2", _CLITIC.sub(r"\1 '\2", text))
    return " ".join(_PUNCTUATION.sub(r" \1 ", text).split())


TEXT_STYLES = {"lower": normalize, "wikitext": wikitext_words}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", help="a run folder (repeatable); default runs/wikitext2-5gram-lower")
    parser.add_argument("--text", choices=sorted(TEXT_STYLES), default="lower")
    parser.add_argument("--out", default="runs/blimp-5gram")
    parser.add_argument("--limit", type=int, default=None, help="pairs per paradigm (default: all 1,000)")
    args = parser.parse_args()
    runs = [Path(r) for r in (args.run or ["runs/wikitext2-5gram-lower"])]
    style = TEXT_STYLES[args.text]
    source = DATA / "blimp" / "data"
    pairs = [replace(p, good=style(p.good), bad=style(p.bad)) for p in read_pairs(source, args.limit)]
    results, figures = {}, {}
    for run in runs:
        loaded = load_run(run, "best")
        start = time.perf_counter()
        result = evaluate_pairs(loaded, pairs)
        seconds = time.perf_counter() - start
        write_results(result, Path(args.out) / run.name if len(runs) > 1 else args.out, str(source), log=print)
        family = loaded.config["model"].get("family", "transformer")
        results[run.name] = result
        figures[run.name] = {"family": family, "accuracy": round(100 * result["accuracy"], 2),
                             "fields": {f: round(100 * v["accuracy"], 2) for f, v in result["fields"].items()},
                             "unscored": result["unscored"], "seconds": round(seconds, 1),
                             "sentences_per_s": round(2 * len(pairs) / seconds, 1)}
        print(f"{run.name} ({family}): {figures[run.name]['accuracy']:.1f}% in {seconds:.0f} s", flush=True)
    names = list(results)
    print("| | pairs | " + " | ".join(names) + " |")
    print("|---|---:|" + "---:|" * len(names))
    first = results[names[0]]
    print(f"| **overall** | {first['pairs']:,} | "
          + " | ".join(f"**{100 * results[n]['accuracy']:.1f}**" for n in names) + " |")
    for field, v in first["fields"].items():
        print(f"| {field} | {v['pairs']:,} | "
              + " | ".join(f"{100 * results[n]['fields'][field]['accuracy']:.1f}" for n in names) + " |")
    print(json.dumps({"bench": "blimp", "text": args.text, "pairs": len(pairs), "runs": figures, **cpu_facts()}))


if __name__ == "__main__":
    main()
