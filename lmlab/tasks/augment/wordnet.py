"""English synonyms from a local WordNet 3.0 database (Debian's ``wordnet-base``), parsed here.

The files are WordNet's own (format ``wndb(5WN)``): ``index.POS`` lines
``lemma pos synset_cnt p_cnt [ptr...] sense_cnt tagsense_cnt offset...`` give
each lemma's synsets as byte offsets into ``data.POS``, whose lines start
``offset lex_filenum ss_type w_cnt(hex) word lex_id ...``; ``POS.exc`` lists
irregular inflections. Inflected words are reduced to their base forms with
WordNet's ``morphy`` rules (exception list first, then suffix substitutions),
as NLTK's ``wordnet.synsets`` does. The synonyms of a word are the other
lemmas of all its synsets, most frequent sense first, underscores read as
spaces; capitalised lemmas (proper names) are kept only for capitalised words.

The database folder is the one given (``--wordnet DIR``), else the first of
:func:`wordnet_candidates` that holds it: ``$LMLAB_WORDNET``, ``$LMLAB_DATA/wordnet``
(default ``../shared/data``), NLTK's data folders (``$NLTK_DATA``, ``~/nltk_data``, ...,
each as ``corpora/wordnet``) and Debian's ``/usr/share/wordnet`` (package ``wordnet-base``).
Nothing is downloaded.
"""

from __future__ import annotations

import mmap
import os
import re
from pathlib import Path

from lmlab.core.errors import ConfigError, DataError

DEFAULT_DIR = "/usr/share/wordnet"
POS_FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
# WordNet's morph.c / NLTK's MORPHOLOGICAL_SUBSTITUTIONS.
SUBSTITUTIONS = {
    "n": [("s", ""), ("ses", "s"), ("ves", "f"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"),
          ("men", "man"), ("ies", "y")],
    "v": [("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"), ("ing", "")],
    "a": [("er", ""), ("est", ""), ("er", "e"), ("est", "e")],
    "r": [],
}
ADJECTIVE_MARKER_RE = re.compile(r"\((?:a|p|ip)\)$")
LEMMA_RE = re.compile(r"^[A-Za-z][A-Za-z' -]*$")


NLTK_DIRS = ("~/nltk_data", "/usr/share/nltk_data", "/usr/local/share/nltk_data", "/usr/lib/nltk_data",
             "/usr/local/lib/nltk_data")
HOW_TO_GET = ("get WordNet 3.0's database with Debian's wordnet-base (apt-get install wordnet-base), or NLTK "
              "(python -m nltk.downloader wordnet, then unzip corpora/wordnet.zip), or point --wordnet DIR / "
              "LMLAB_WORDNET at a folder holding index.noun, data.noun, ...")


def wordnet_candidates() -> list[Path]:
    """Where a WordNet database is looked for, in order."""
    found = []
    if os.environ.get("LMLAB_WORDNET"):
        found.append(Path(os.environ["LMLAB_WORDNET"]))
    found.append(Path(os.environ.get("LMLAB_DATA", "../shared/data")) / "wordnet")
    nltk = [d for d in os.environ.get("NLTK_DATA", "").split(os.pathsep) if d] + list(NLTK_DIRS)
    found.extend(Path(d).expanduser() / "corpora" / "wordnet" for d in nltk)
    found.append(Path(DEFAULT_DIR))
    return found


def holds_wordnet(folder: Path) -> bool:
    return all((folder / f"index.{name}").exists() for name in POS_FILES.values())


def default_wordnet_dir() -> Path:
    """The first candidate folder that holds WordNet (a clear error naming them all when none does)."""
    candidates = wordnet_candidates()
    for folder in candidates:
        if holds_wordnet(folder):
            return folder
    raise ConfigError(f"WordNet not found (looked in {', '.join(map(str, candidates))}): {HOW_TO_GET}")


class WordNet:
    """Synonym lookups in one WordNet database folder; files are read on first use of each part of speech."""

    def __init__(self, folder=None):
        self.folder = Path(folder) if folder else default_wordnet_dir()
        missing = [f"index.{name}" for name in POS_FILES.values() if not (self.folder / f"index.{name}").exists()]
        if missing:
            raise ConfigError(f"WordNet not found in {self.folder} (missing {', '.join(missing)}): {HOW_TO_GET}")
        self._index: dict[str, dict[str, list[int]]] = {}
        self._exceptions: dict[str, dict[str, list[str]]] = {}
        self._data: dict[str, mmap.mmap] = {}
        self._cache: dict[str, list[str]] = {}

    # -- the database files ------------------------------------------------

    def _index_of(self, pos: str) -> dict[str, list[int]]:
        if pos not in self._index:
            path = self.folder / f"index.{POS_FILES[pos]}"
            index: dict[str, list[int]] = {}
            with open(path, encoding="utf-8", errors="replace") as handle:
                for number, line in enumerate(handle, 1):
                    if line.startswith("  "):  # the licence header
                        continue
                    parts = line.split()
                    try:
                        n_synsets, n_pointers = int(parts[2]), int(parts[3])
                        offsets = [int(p) for p in parts[4 + n_pointers + 2:]]
                    except (IndexError, ValueError):
                        raise DataError(f"{path}:{number}: not a WordNet index line") from None
                    if len(offsets) != n_synsets:
                        raise DataError(f"{path}:{number}: {n_synsets} synsets announced, {len(offsets)} listed")
                    index[parts[0]] = offsets
            self._index[pos] = index
        return self._index[pos]

    def _exceptions_of(self, pos: str) -> dict[str, list[str]]:
        if pos not in self._exceptions:
            path = self.folder / f"{POS_FILES[pos]}.exc"
            table: dict[str, list[str]] = {}
            if path.exists():
                for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                    parts = line.split()
                    if len(parts) >= 2:
                        table[parts[0]] = parts[1:]
            self._exceptions[pos] = table
        return self._exceptions[pos]

    def _synset_words(self, pos: str, offset: int) -> list[str]:
        if pos not in self._data:
            path = self.folder / f"data.{POS_FILES[pos]}"
            try:
                with open(path, "rb") as handle:
                    self._data[pos] = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            except OSError as error:
                raise ConfigError(f"cannot read {path}: {error.strerror or error}") from None
        data = self._data[pos]
        end = data.find(b"\n", offset)
        parts = data[offset:end if end >= 0 else len(data)].decode("utf-8", "replace").split()
        try:
            if int(parts[0]) != offset:
                raise ValueError
            count = int(parts[3], 16)
            return [ADJECTIVE_MARKER_RE.sub("", parts[4 + 2 * i]) for i in range(count)]
        except (IndexError, ValueError):
            raise DataError(f"{self.folder / ('data.' + POS_FILES[pos])}: no synset at byte {offset}") from None

    # -- lookups -----------------------------------------------------------

    def base_forms(self, word: str, pos: str) -> list[str]:
        """``morphy``: the word's lemmas in ``pos`` (the word itself if it is one)."""
        index = self._index_of(pos)
        candidates = [word] + self._exceptions_of(pos).get(word, [])
        candidates += [word[: -len(old)] + new for old, new in SUBSTITUTIONS[pos] if word.endswith(old)
                       and len(word) > len(old)]
        return [c for c in dict.fromkeys(candidates) if c in index]

    def synonyms(self, word: str) -> list[str]:
        """Other lemmas of the word's synsets, in sense order, without repeats."""
        if word in self._cache:
            return self._cache[word]
        key = word.lower().replace(" ", "_")
        capitalised = word[:1].isupper()
        found: dict[str, None] = {}
        own = {key}
        for pos in POS_FILES:
            bases = self.base_forms(key, pos)
            own.update(bases)
            for base in bases:
                for offset in self._index_of(pos)[base]:
                    for lemma in self._synset_words(pos, offset):
                        found.setdefault(lemma, None)
        result = []
        for lemma in found:
            if lemma.lower() in own or not LEMMA_RE.match(lemma.replace("_", " ")):
                continue
            if lemma[:1].isupper() and not capitalised:
                continue
            result.append(lemma.replace("_", " "))
        self._cache[word] = result
        return result
