"""EDA-style text augmentation (Wei & Zou 2019, "EDA: Easy Data Augmentation Techniques"), plus random
vocabulary replacement.

Operations, each with a rate ``r`` over the ``n`` words of a text:

- ``sr`` synonym replacement: ``max(1, int(r*n))`` distinct words that have
  synonyms are each replaced by one of them, chosen at random;
- ``ri`` random insertion: ``max(1, int(r*n))`` times, a synonym of a random
  word is inserted at a random position;
- ``rs`` random swap: ``max(1, int(r*n))`` times, two random words trade
  places (their punctuation stays where it was);
- ``rd`` random deletion: every word is deleted with probability ``r``; if
  none but stop words would be left, one chosen at random stays;
- ``rv`` random vocabulary replacement: ``max(1, int(r*n))`` words are replaced
  by random words of a vocabulary (the corpus's own words by default).

Stop words (:mod:`~lmlab.tasks.augment.stopwords`) and punctuation are never
chosen. Copy ``c`` of text ``i`` applies operation ``c mod k`` of the ``k``
requested, with a generator seeded by ``(seed, i, c)``, so a result does not
depend on which other texts are augmented or in what order. A copy equal to
the text or to an earlier copy is dropped, so a text may get fewer copies
(a one-word text has nothing to swap). Labels are never touched here: the
callers copy them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence

from lmlab.core.errors import ConfigError
from lmlab.tasks.augment.stopwords import default_stop_words
from lmlab.tasks.augment.words import Token, join_words, resolve_lang, split_words

OPERATIONS = {
    "sr": "synonym replacement",
    "ri": "random insertion",
    "rs": "random swap",
    "rd": "random deletion",
    "rv": "random vocabulary replacement",
}
ALIASES = {"synonym": "sr", "insert": "ri", "swap": "rs", "delete": "rd", "vocab": "rv"}
DEFAULT_RATE = 0.1
NEEDS_SYNONYMS = ("sr", "ri")


class SynonymSource(Protocol):
    def synonyms(self, word: str) -> list[str]: ...


def parse_operations(spec: str) -> tuple[tuple[str, float], ...]:
    """``"sr=0.1,rd=0.2,rs"`` → ``(("sr", 0.1), ("rd", 0.2), ("rs", 0.1))``; long names work too."""
    operations = []
    for part in (p.strip() for p in str(spec).split(",")):
        if not part:
            continue
        name, _, rate_text = part.partition("=")
        name = ALIASES.get(name.strip(), name.strip())
        if name not in OPERATIONS:
            raise ConfigError(f"unknown augmentation {name!r}: expected "
                              f"{', '.join(f'{k} ({v})' for k, v in OPERATIONS.items())}")
        try:
            rate = float(rate_text) if rate_text else DEFAULT_RATE
        except ValueError:
            raise ConfigError(f"augmentation rate for {name} must be a number, got {rate_text!r}") from None
        operations.append((name, rate))
    return check_operations(operations)


def check_operations(operations) -> tuple[tuple[str, float], ...]:
    operations = tuple((str(name), float(rate)) for name, rate in operations)
    if not operations:
        raise ConfigError("no augmentation operations given (e.g. sr=0.1,ri=0.1,rs=0.1,rd=0.1)")
    names = [name for name, _ in operations]
    if len(set(names)) != len(names):
        raise ConfigError(f"an augmentation operation is listed twice: {', '.join(names)}")
    for name, rate in operations:
        if name not in OPERATIONS:
            raise ConfigError(f"unknown augmentation {name!r}: expected {', '.join(OPERATIONS)}")
        if not 0 < rate <= 1:
            raise ConfigError(f"augmentation rate for {name} must be in (0, 1], got {rate}")
    return operations


@dataclass(frozen=True)
class Augmented:
    text: str
    operation: str


class Augmenter:
    """Makes up to ``copies`` new versions of a text.

    ``synonyms`` maps a language ("en", "zh") to a source with a
    ``synonyms(word)`` method (WordNet, Cilin, embedding neighbours); ``"*"``
    serves every language. ``vocabulary`` feeds ``rv``. ``stop_words``
    replaces the built-in lists for all languages.
    """

    def __init__(self, operations, copies: int = 4, seed: int = 0, lang: str = "auto",
                 synonyms: Mapping[str, SynonymSource] | None = None, vocabulary: Sequence[str] | None = None,
                 stop_words: frozenset[str] | None = None):
        self.operations = check_operations(operations)
        if not isinstance(copies, int) or copies < 1:
            raise ConfigError(f"copies must be a positive integer, got {copies!r}")
        if lang not in ("auto", "en", "zh"):
            raise ConfigError(f"lang must be auto, en or zh, got {lang!r}")
        names = {name for name, _ in self.operations}
        if "rv" in names and not vocabulary:
            raise ConfigError("random vocabulary replacement (rv) needs a vocabulary of words")
        self.copies, self.seed, self.lang = copies, seed, lang
        self.synonym_sources = dict(synonyms or {})
        self.vocabulary = sorted(set(vocabulary or ()))
        self.stop_words = stop_words

    def _source(self, lang: str) -> SynonymSource:
        source = self.synonym_sources.get(lang) or self.synonym_sources.get("*")
        if source is None:
            hint = "--cilin FILE or --neighbours RUN" if lang == "zh" else "WordNet (--wordnet DIR) or --neighbours RUN"
            raise ConfigError(f"synonym operations on {'Chinese' if lang == 'zh' else 'English'} text need a "
                              f"synonym source: {hint}")
        return source

    def augment(self, text: str, index: int = 0) -> list[Augmented]:
        """New versions of ``text`` (never the text itself, never twice the same)."""
        lang = resolve_lang(text, self.lang)
        tokens = split_words(text, lang)
        if not any(t.is_word for t in tokens):
            return []
        stop = self.stop_words if self.stop_words is not None else default_stop_words(lang)
        results, seen = [], {text}
        for copy in range(self.copies):
            name, rate = self.operations[copy % len(self.operations)]
            rng = random.Random(f"{self.seed}/{index}/{copy}")
            changed = join_words(self._apply(name, rate, tokens, lang, stop, rng), lang)
            if changed not in seen:
                seen.add(changed)
                results.append(Augmented(changed, name))
        return results

    # -- the operations ----------------------------------------------------

    def _apply(self, name: str, rate: float, tokens: list[Token], lang: str, stop, rng: random.Random) -> list[Token]:
        tokens = list(tokens)
        eligible = [i for i, t in enumerate(tokens) if t.is_word and t.core.lower() not in stop]
        count = max(1, int(rate * sum(t.is_word for t in tokens)))
        if name == "sr":
            return self._replace_synonyms(tokens, eligible, count, lang, rng)
        if name == "ri":
            return self._insert_synonyms(tokens, eligible, count, lang, rng)
        if name == "rs":
            return _swap(tokens, eligible, count, rng)
        if name == "rd":
            return _delete(tokens, eligible, rate, rng)
        return self._replace_from_vocabulary(tokens, eligible, count, stop, rng)

    def _synonyms_of(self, token: Token, lang: str) -> list[str]:
        return [s for s in self._source(lang).synonyms(token.core) if s != token.core]

    def _replace_synonyms(self, tokens, eligible, count, lang, rng):
        order = list(eligible)
        rng.shuffle(order)
        replaced = 0
        for i in order:
            if replaced == count:
                break
            options = self._synonyms_of(tokens[i], lang)
            if options:
                tokens[i] = tokens[i].with_core(_match_case(rng.choice(options), tokens[i].core))
                replaced += 1
        return tokens

    def _insert_synonyms(self, tokens, eligible, count, lang, rng):
        with_synonyms = [i for i in eligible if self._synonyms_of(tokens[i], lang)]
        if not with_synonyms:
            return tokens
        for _ in range(count):
            source = tokens[rng.choice(with_synonyms)]
            word = rng.choice(self._synonyms_of(source, lang))
            position = rng.randint(0, len(tokens))
            tokens.insert(position, Token("", word, ""))
            with_synonyms = [i + (i >= position) for i in with_synonyms]
        return tokens

    def _replace_from_vocabulary(self, tokens, eligible, count, stop, rng):
        words = [w for w in self.vocabulary if w.lower() not in stop]
        order = list(eligible)
        rng.shuffle(order)
        for i in order[:count]:
            choices = [w for w in (rng.choice(words) for _ in range(5)) if w != tokens[i].core] if words else []
            if choices:
                tokens[i] = tokens[i].with_core(choices[0])
        return tokens


def _swap(tokens, eligible, count, rng):
    if len(eligible) < 2:
        return tokens
    for _ in range(count):
        a, b = rng.sample(eligible, 2)
        core_a, core_b = tokens[a].core, tokens[b].core
        tokens[a], tokens[b] = tokens[a].with_core(core_b), tokens[b].with_core(core_a)
    return tokens


def _delete(tokens, eligible, rate, rng):
    doomed = {i for i in eligible if rng.random() < rate}
    if doomed and len(doomed) == len(eligible):
        doomed.discard(rng.choice(sorted(doomed)))  # never delete every word that carries meaning
    kept = []
    for i, token in enumerate(tokens):
        if i not in doomed:
            kept.append(token)
        elif token.lead or token.trail:
            kept.append(Token(token.lead, "", token.trail))  # the word goes, its punctuation stays
    return kept


def _match_case(word: str, original: str) -> str:
    if original[:1].isupper() and word[:1].islower():
        return word[:1].upper() + word[1:]
    return word
