"""N-best rescoring: pick each utterance's hypothesis by ``am + λ·lm + β·length``, with λ and β tuned on a dev part.

* ``am``: the first-pass log-score of the n-best file (:mod:`lmlab.evaluation.nbest`), or ``-rank``
  (0 for the best) when the file has none, so λ is then in nats per rank step.
* ``lm``: the hypothesis's total log-probability in nats from any lmlab run (:func:`score_texts`:
  the chain rule for decoders, back-off for n-grams, PLL for masked LMs), given the normalised text.
  A hypothesis with nothing to score (empty after normalising) gets its list's lowest LM score.
* ``length``: its words (``unit="word"``) or characters (``unit="char"``, spaces not counted).

**Tuning** (unless ``weights`` are given): a grid, λ ∈ {0} ∪ 37 log-spaced values in [1e-4, 100],
β ∈ {0} ∪ ±19 log-spaced values in [1e-4, 100]; the pair with the fewest normalised errors on the
dev part wins; ties go to the middle of the tied λ values, then the smallest |β| (:func:`tune`). The dev part is ``dev`` (other
utterances) or, by default, the utterances at odd positions (1st, 3rd, ...), tested on the even
ones: a deterministic half split that spreads both halves over the file's order (speakers, topics).

**Error rates** (jiwer; corpus rates: errors summed over utterances / reference units, in %): WER
for ``unit="word"``, CER for ``unit="char"`` (whitespace removed first: Chinese transcripts are
segmented inconsistently). Each is reported ``raw`` (the texts as given) and ``normalized`` by
:func:`normalize` applied to hypotheses and references alike. The oracle is each utterance's
fewest-error hypothesis; ties in the combined score go to the better first-pass rank, so λ=0, β=0
reproduces the first pass exactly.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from lmlab.core.errors import ConfigError
from lmlab.core.extras import require
from lmlab.evaluation.nbest import Utterance
from lmlab.evaluation.score import score_texts
from lmlab.runs.load import LoadedRun, load_run

LAMBDAS = np.concatenate([[0.0], np.geomspace(1e-4, 100, 37)])
BETAS = np.concatenate([[0.0], np.geomspace(1e-4, 100, 19), -np.geomspace(1e-4, 100, 19)])
MEASURES = ("raw", "normalized")

_KEPT = re.compile(r"[^\w']|_")  # \w is Unicode letters and digits (Chinese too), plus "_", dropped here


def normalize(text: str) -> str:
    """Lower-case; every character but letters, digits and ``'`` becomes a space; spaces collapse.

    On ASCII text this is "map what is outside [a-z0-9' ] to a space" (it drops HyPoradise's ``$``,
    ``-``, ``,`` and ``.`` debris); letters outside ASCII (Chinese, accents) are kept."""
    return " ".join(_KEPT.sub(" ", text.lower()).split())


def units(text: str, unit: str) -> list[str]:
    return text.split() if unit == "word" else [ch for ch in text if not ch.isspace()]


def count_errors(reference: str, hypothesis: str, unit: str) -> int:
    """Substitutions + deletions + insertions (jiwer) of ``hypothesis`` against ``reference``."""
    jiwer = require("jiwer", "error rates (lmlab rescore)")
    ref, hyp = units(reference, unit), units(hypothesis, unit)
    if not ref or not hyp:
        return max(len(ref), len(hyp))
    out = (jiwer.process_words if unit == "word" else jiwer.process_characters)(
        " ".join(ref) if unit == "word" else "".join(ref), " ".join(hyp) if unit == "word" else "".join(hyp))
    return out.substitutions + out.deletions + out.insertions


class Lists:
    """The n-best lists as (U, H) arrays, padded with -inf first-pass scores (never chosen)."""

    def __init__(self, utterances: Sequence[Utterance], lm: dict[str, float | None], unit: str):
        width = max(len(u.hypotheses) for u in utterances)
        shape = (len(utterances), width)
        self.am = np.full(shape, -np.inf)
        self.lm, self.length = np.zeros(shape), np.zeros(shape)
        self.errors = {m: np.zeros(shape, np.int64) for m in MEASURES}
        self.ref_units = {m: np.zeros(len(utterances), np.int64) for m in MEASURES}
        cache: dict[tuple, int] = {}
        for i, u in enumerate(utterances):
            n = len(u.hypotheses)
            self.am[i, :n] = u.am
            normal = [normalize(h) for h in u.hypotheses]
            scores = [lm.get(h) for h in normal]
            floor = min((s for s in scores if s is not None), default=0.0)
            self.lm[i, :n] = [floor if s is None else s for s in scores]
            self.length[i, :n] = [len(units(h, unit)) for h in normal]
            for measure, ref, hyps in (("raw", u.reference, u.hypotheses),
                                       ("normalized", normalize(u.reference), normal)):
                self.ref_units[measure][i] = len(units(ref, unit))
                for j, h in enumerate(hyps):
                    key = (ref, h)
                    if key not in cache:
                        cache[key] = count_errors(ref, h, unit)
                    self.errors[measure][i, j] = cache[key]

    def choose(self, lm_weight: float, length_weight: float) -> np.ndarray:
        """Each utterance's chosen hypothesis; ``argmax`` takes the first maximum: the better rank."""
        return np.argmax(self.am + lm_weight * self.lm + length_weight * self.length, axis=1)

    def error_rate(self, chosen: np.ndarray, rows: np.ndarray, measure: str) -> float:
        errors = self.errors[measure][rows, chosen[rows]].sum()
        return 100.0 * float(errors) / max(1, int(self.ref_units[measure][rows].sum()))

    def oracle(self, rows: np.ndarray, measure: str) -> float:
        errors = self.errors[measure][rows].min(axis=1).sum() if len(rows) else 0
        return 100.0 * float(errors) / max(1, int(self.ref_units[measure][rows].sum()))


def tune(lists: Lists, rows: np.ndarray, lambdas=LAMBDAS, betas=BETAS) -> tuple[float, float, float]:
    """(λ, β, dev normalised error rate) with the fewest errors on ``rows``.

    Ties (common: a rank-only first pass leaves plateaus) go to the middle of the tied λ values, the
    plateau's centre on the log-spaced grid, so a test list a little off the dev optimum still
    falls inside; then to the smallest |β| at that λ."""
    errors = {}
    for lm_weight in sorted(lambdas):
        for length_weight in sorted(betas, key=abs):
            chosen = lists.choose(lm_weight, length_weight)
            errors[float(lm_weight), float(length_weight)] = int(lists.errors["normalized"][rows, chosen[rows]].sum())
    fewest = min(errors.values())
    tied = [key for key, value in errors.items() if value == fewest]  # λ ascending, |β| ascending within
    lm_weight = sorted({lm for lm, _ in tied})[(len({lm for lm, _ in tied}) - 1) // 2]
    length_weight = next(beta for lm, beta in tied if lm == lm_weight)
    return lm_weight, length_weight, 100.0 * fewest / max(1, int(lists.ref_units["normalized"][rows].sum()))


def lm_scores(run, texts: Sequence[str], batch_size: int = 32, checkpoint: str = "best",
              progress: bool = False) -> dict[str, float | None]:
    """Total log-probability (nats) of each distinct text by a run; None where nothing could be scored."""
    distinct = sorted(set(texts))
    scored = {}
    for text, record in zip(distinct, score_texts(run, distinct, batch_size=batch_size, checkpoint=checkpoint,
                                                  progress=progress)):
        scored[text] = None if "error" in record else record["logprob"]
    return scored


def _part(lists: Lists, chosen: np.ndarray, rows: np.ndarray) -> dict:
    part = {"utterances": int(len(rows)), "reference_units": {m: int(lists.ref_units[m][rows].sum()) for m in MEASURES}}
    first = np.zeros(len(chosen), np.int64)
    for name, picks in (("first_pass", first), ("rescored", chosen)):
        part[name] = {m: lists.error_rate(picks, rows, m) for m in MEASURES}
    part["oracle"] = {m: lists.oracle(rows, m) for m in MEASURES}
    return part


def rescore(utterances: Sequence[Utterance], lm, dev: Sequence[Utterance] | None = None, unit: str = "word",
            weights: tuple[float, float] | None = None, batch_size: int = 32, checkpoint: str = "best",
            progress: bool = False) -> dict:
    """Rescore n-best lists with an LM and report error rates before and after (see the module docstring).

    ``lm``: a run folder, a :class:`LoadedRun`, or a function from a list of texts to their total
    log-probabilities (None: nothing to score). ``dev``: utterances to tune on (then all of
    ``utterances`` are the test part); ``weights``: a fixed (λ, β), no tuning. Returns a dict:
    ``metric``, ``weights`` (``lm``, ``length``, ``tuned_on``, ``dev_error_rate``), ``parts``
    (``dev``, ``test``, ``all``, each with ``first_pass``, ``rescored``, ``oracle`` error rates
    raw and normalised, in %) and ``choices`` (each test utterance's id and chosen hypothesis)."""
    if unit not in ("word", "char"):
        raise ConfigError(f"unit must be word or char, got {unit!r}")
    if not utterances:
        raise ConfigError("no utterances to rescore")
    dev = list(dev or [])
    everything = list(utterances) + dev
    texts = [normalize(h) for u in everything for h in u.hypotheses]
    if callable(lm) and not isinstance(lm, LoadedRun):
        values = list(lm(sorted(set(texts))))
        scores = dict(zip(sorted(set(texts)), values))
    else:
        run = lm if isinstance(lm, LoadedRun) else load_run(lm, checkpoint)
        scores = lm_scores(run, texts, batch_size, checkpoint, progress)
    lists = Lists(everything, scores, unit)
    n = len(utterances)
    if dev:
        dev_rows, test_rows, tuned_on = np.arange(n, len(everything)), np.arange(n), f"a dev set of {len(dev)}"
    elif weights is None:
        dev_rows, test_rows, tuned_on = np.arange(0, n, 2), np.arange(1, n, 2), "odd positions (1st, 3rd, ...)"
        if not len(test_rows):
            raise ConfigError("tuning on half the utterances needs at least 2 (or give dev or fixed weights)")
    else:
        dev_rows, test_rows, tuned_on = np.arange(0), np.arange(n), None
    if weights is None:
        lm_weight, length_weight, dev_rate = tune(lists, dev_rows)
    else:
        (lm_weight, length_weight), dev_rate = map(float, weights), None
    chosen = lists.choose(lm_weight, length_weight)
    parts = {"test": _part(lists, chosen, test_rows), "all": _part(lists, chosen, np.arange(n))}
    if len(dev_rows):
        parts["dev"] = _part(lists, chosen, dev_rows)
    unscored = sum(scores.get(t) is None for t in set(texts))
    return {"metric": "WER" if unit == "word" else "CER", "unit": unit,
            "weights": {"lm": lm_weight, "length": length_weight, "tuned_on": tuned_on, "dev_error_rate": dev_rate},
            "parts": parts, "unscored_hypotheses": int(unscored),
            "choices": [{"id": everything[i].id, "hypothesis": everything[i].hypotheses[int(chosen[i])],
                         "rank": int(chosen[i]) + 1} for i in test_rows]}


def table(result: dict) -> str:
    """A markdown table of the error rates (%) per part: first pass, rescored, oracle; raw and normalised."""
    metric = result["metric"]
    lines = [f"| part | utterances | {metric} first pass | rescored | oracle | raw: first pass | rescored | oracle |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name in ("dev", "test", "all"):
        if name not in result["parts"]:
            continue
        part = result["parts"][name]
        cells = [f"{part[k][m]:.2f}" for m in ("normalized", "raw") for k in ("first_pass", "rescored", "oracle")]
        lines.append(f"| {name} | {part['utterances']:,} | " + " | ".join(cells) + " |")
    w = result["weights"]
    lines.append("")
    lines.append(f"weights: λ (lm) = {w['lm']:.4g}, β (length) = {w['length']:.4g}"
                 + (f", tuned on {w['tuned_on']} (dev {metric} {w['dev_error_rate']:.2f})" if w["tuned_on"] else
                    ", fixed"))
    return "\n".join(lines)

