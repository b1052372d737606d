"""The synonym sources augmentation uses, from command-line style options.

``--neighbours RUN`` serves every language; otherwise English uses WordNet
(``--wordnet DIR``, else found as :func:`~lmlab.tasks.augment.wordnet.wordnet_candidates` says) and
Chinese a Cilin file (``--cilin FILE`` or ``LMLAB_CILIN``). Each is opened
on first use, so English-only data never needs Cilin and the reverse.
"""

from __future__ import annotations

import os

from lmlab.core.errors import ConfigError
from lmlab.tasks.augment.cilin import Cilin
from lmlab.tasks.augment.neighbours import EmbeddingNeighbours
from lmlab.tasks.augment.wordnet import WordNet


class _Lazy:
    def __init__(self, make):
        self._make, self._source = make, None

    def synonyms(self, word: str) -> list[str]:
        if self._source is None:
            self._source = self._make()
        return self._source.synonyms(word)


def synonym_sources(wordnet=None, cilin=None, neighbours=None) -> dict:
    if neighbours:
        return {"*": _Lazy(lambda: EmbeddingNeighbours(neighbours))}

    sources = {"en": _Lazy(lambda: WordNet(wordnet))}
    cilin = cilin or os.environ.get("LMLAB_CILIN")
    if cilin:
        sources["zh"] = _Lazy(lambda: Cilin(cilin))
    return sources


def require(sources: dict, lang: str) -> None:
    if lang not in sources and "*" not in sources:
        raise ConfigError("synonyms for Chinese need --cilin FILE (a Cilin file such as "
                          "../shared/data/cilin/cilin_ex.utf8.txt) or --neighbours RUN")
