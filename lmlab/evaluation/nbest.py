"""Reading n-best lists: a recogniser's (or translator's) ranked hypotheses per utterance, with references.

Three formats, told apart by the file (``read_nbest``):

* **JSONL** (``.jsonl``): one utterance per line,
  ``{"id": "utt1", "reference": "the cat", "hypotheses": [{"text": "the cat", "score": -4.2}, ...]}``.
  ``score`` is the first-pass log-score (higher is better). Hypotheses may also be plain strings, in
  rank order, best first; ``reference`` is optional when ``--ref`` gives it; ``id`` defaults to the
  line number.
* **HyPoradise** (``.json``, one array): ``{"input": [5 hypotheses, best first], "output": reference,
  "score": [first-pass scores]}`` (``score`` optional: only WSJ's file has it). Ids are the
  positions from 1.
* **Kaldi n-best text** (anything else): ``UTT-N word word ...`` lines, N the rank from 1, as
  ``nbest-to-linear`` and ``int2sym.pl`` write them; the first-pass costs, if any, in a second file
  of ``UTT-N cost`` lines (Kaldi's costs are negative log-likelihoods, so ``am = -cost``).

Without first-pass scores the rank is the score: ``am = -rank`` (0 for the best), so the first pass
alone picks the first hypothesis and the LM weight is in nats per rank step. References for ``--ref``
are Kaldi ``text`` lines: ``UTT word word ...``. Every problem (invalid UTF-8, a missing field, a
key without ``-N``, an utterance without a reference) is a :class:`~lmlab.core.errors.DataError`
naming the file and line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lmlab.core.errors import DataError


@dataclass
class Utterance:
    id: str
    hypotheses: list[str]  # in first-pass rank order, best first
    am: list[float]  # first-pass log-scores, higher is better (-rank without scores)
    reference: str | None = None


def _text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        line = path.read_bytes()[:error.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: invalid UTF-8 at byte {error.start}") from None
    except OSError as error:
        raise DataError(f"{path}: {error.strerror}") from None


def _scores(values, count: int, where: str) -> list[float]:
    if values is None:
        return [-float(rank) for rank in range(count)]
    if not isinstance(values, list) or len(values) != count:
        raise DataError(f"{where}: 'score' needs one number per hypothesis ({count})")
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError):
        raise DataError(f"{where}: 'score' holds a value that is not a number") from None


def _string(value, name: str, where: str) -> str:
    if not isinstance(value, str):
        raise DataError(f"{where}: {name!r} must be a string")
    return value


def _from_jsonl(path: Path) -> list[Utterance]:
    utterances = []
    for number, line in enumerate(_text(path).splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except ValueError as error:
            raise DataError(f"{where}: not JSON ({error})") from None
        if not isinstance(record, dict) or not isinstance(record.get("hypotheses"), list) or not record["hypotheses"]:
            raise DataError(f"{where}: needs 'hypotheses', a non-empty list")
        hyps = record["hypotheses"]
        if all(isinstance(h, str) for h in hyps):
            texts, scores = hyps, None
        elif all(isinstance(h, dict) for h in hyps):
            texts = [_string(h.get("text"), "text", where) for h in hyps]
            given = ["score" in h for h in hyps]
            if any(given) and not all(given):
                raise DataError(f"{where}: some hypotheses have a 'score' and some do not")
            scores = [h["score"] for h in hyps] if all(given) else None
        else:
            raise DataError(f"{where}: each hypothesis must be a string or an object with 'text'")
        reference = record.get("reference")
        utterances.append(Utterance(str(record.get("id", number)), list(texts), _scores(scores, len(texts), where),
                                    None if reference is None else _string(reference, "reference", where)))
    return utterances


def _from_hyporadise(path: Path) -> list[Utterance]:
    try:
        records = json.loads(_text(path))
    except ValueError as error:
        raise DataError(f"{path}: not JSON ({error})") from None
    if not isinstance(records, list):
        raise DataError(f"{path}: a HyPoradise file is one JSON array of utterances")
    utterances = []
    for number, record in enumerate(records, 1):
        where = f"{path}: utterance {number}"
        if not isinstance(record, dict) or not isinstance(record.get("input"), list) or not record["input"]:
            raise DataError(f"{where}: needs 'input', a non-empty list of hypotheses")
        texts = [_string(h, "input", where) for h in record["input"]]
        reference = record.get("output")
        utterances.append(Utterance(str(number), texts, _scores(record.get("score"), len(texts), where),
                                    None if reference is None else _string(reference, "output", where)))
    return utterances


def _keyed_lines(path: Path) -> list[tuple[str, str, int]]:
    """``KEY rest`` lines: (key, rest, line number); blank lines skipped."""
    rows = []
    for number, line in enumerate(_text(path).splitlines(), 1):
        if line.strip():
            key, _, rest = line.strip().partition(" ")
            rows.append((key, " ".join(rest.split()), number))
    return rows


def _split_key(key: str, where: str) -> tuple[str, int]:
    utt, dash, rank = key.rpartition("-")
    if not dash or not utt or not rank.isdigit() or int(rank) < 1:
        raise DataError(f"{where}: expected a key UTT-N (N the rank from 1), got {key!r}")
    return utt, int(rank)


def _from_kaldi(path: Path, costs: Path | None) -> list[Utterance]:
    cost_of: dict[str, float] = {}
    if costs is not None:
        for key, rest, number in _keyed_lines(costs):
            try:
                cost_of[key] = float(rest)
            except ValueError:
                raise DataError(f"{costs}:{number}: expected 'UTT-N cost', got {rest!r} after the key") from None
    lists: dict[str, list[tuple[int, str, str]]] = {}
    for key, rest, number in _keyed_lines(path):
        utt, rank = _split_key(key, f"{path}:{number}")
        lists.setdefault(utt, []).append((rank, rest, key))
    utterances = []
    for utt, hyps in lists.items():
        hyps.sort()
        if [rank for rank, _, _ in hyps] != list(range(1, len(hyps) + 1)):
            raise DataError(f"{path}: utterance {utt!r} has ranks {[r for r, _, _ in hyps]}, expected 1..{len(hyps)}")
        if costs is None:
            am = [-float(rank - 1) for rank, _, _ in hyps]
        else:
            missing = [key for _, _, key in hyps if key not in cost_of]
            if missing:
                raise DataError(f"{costs}: no cost for {missing[0]!r}")
            am = [-cost_of[key] for _, _, key in hyps]
        utterances.append(Utterance(utt, [text for _, text, _ in hyps], am))
    return utterances


def read_references(path) -> dict[str, str]:
    """Kaldi ``text``: ``UTT word word ...`` per line (an id alone: an empty reference)."""
    path = Path(path)
    references: dict[str, str] = {}
    for key, rest, number in _keyed_lines(path):
        if key in references:
            raise DataError(f"{path}:{number}: utterance {key!r} appears twice")
        references[key] = rest
    return references


def read_nbest(path, references=None, costs=None) -> list[Utterance]:
    """The utterances of an n-best file (format by the file, see the module docstring).

    ``references``: a Kaldi ``text`` file whose references replace the file's own; ``costs``: a
    Kaldi n-best list's first-pass costs. Every utterance must end up with a reference."""
    path = Path(path)
    if costs is not None and path.suffix.lower() in (".json", ".jsonl"):
        raise DataError(f"{path}: first-pass costs in a separate file are for Kaldi n-best text only")
    if path.suffix.lower() == ".jsonl":
        utterances = _from_jsonl(path)
    elif path.suffix.lower() == ".json":
        utterances = _from_hyporadise(path)
    else:
        utterances = _from_kaldi(path, None if costs is None else Path(costs))
    if not utterances:
        raise DataError(f"{path}: no utterances")
    if references is not None:
        given = read_references(references)
        for utterance in utterances:
            if utterance.id not in given:
                raise DataError(f"{references}: no reference for utterance {utterance.id!r}")
            utterance.reference = given[utterance.id]
    for utterance in utterances:
        if utterance.reference is None:
            raise DataError(f"{path}: utterance {utterance.id!r} has no reference (give --ref)")
    return utterances
