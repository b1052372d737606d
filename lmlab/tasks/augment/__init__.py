"""Data augmentation for classification: EDA operations with WordNet, Cilin or embedding synonyms.

    from lmlab.tasks.augment import Augmenter, WordNet, parse_operations
    augmenter = Augmenter(parse_operations("sr=0.1,ri=0.1,rs=0.1,rd=0.1"), copies=4, seed=0,
                          synonyms={"en": WordNet()})
    [a.text for a in augmenter.augment("a gripping , funny film")]
"""

from lmlab.tasks.augment.cilin import Cilin
from lmlab.tasks.augment.files import augment_examples, augment_file, corpus_vocabulary
from lmlab.tasks.augment.neighbours import EmbeddingNeighbours
from lmlab.tasks.augment.operations import OPERATIONS, Augmented, Augmenter, parse_operations
from lmlab.tasks.augment.sources import synonym_sources
from lmlab.tasks.augment.wordnet import WordNet

__all__ = ["OPERATIONS", "Augmented", "Augmenter", "Cilin", "EmbeddingNeighbours", "WordNet", "augment_examples",
           "augment_file", "corpus_vocabulary", "parse_operations", "synonym_sources"]
