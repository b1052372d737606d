"""Interpolated modified Kneser-Ney n-gram language models, estimated exactly as KenLM's ``lmplz``.

One module per stage of KenLM's builder (``lm/builder/``), in pipeline order:

- :mod:`.vocabulary`: words ↔ ids (``<unk>`` 0, ``<s>`` 1, ``</s>`` 2, then first appearance);
- :mod:`.corpus`: reading text one sentence per line, split as ``lmplz`` splits;
- :mod:`.count`: raw counts of the ``<s>``-padded N-grams, vectorised, chunk by chunk;
- :mod:`.adjust_counts`: continuation counts, counts of counts, discounts, pruning marks;
- :mod:`.initial_probabilities`: discounted probabilities and interpolation weights;
- :mod:`.interpolate`: interpolation down to the uniform distribution, backoffs;
- :mod:`.pipeline`: stages 2-4 one order at a time, as ``lmplz``'s pipeline (less memory);
- :mod:`.arpa`: ARPA files, written like ``lmplz`` and read from KenLM or SRILM;
- :mod:`.query`: back-off scoring as KenLM's ``query``, next-word distributions;
- :mod:`.model`: :class:`NGramConfig` and :class:`NGramLM`, which tie them together.

Use::

    from lmlab.models.ngram import NGramConfig, NGramLM, read_sentences
    model = NGramLM.train(read_sentences("train.txt"), NGramConfig(order=5))
    model.perplexity(read_sentences("test.txt"))      # as KenLM's query -v summary
    model.save("lm/"); model.to_arpa("lm.arpa.gz"); NGramLM.from_arpa("kenlm.arpa")

On WikiText-2 the ARPA files equal ``lmplz``'s (the same bytes on our CI machine) and
test perplexities equal ``query``'s to every printed digit (tests/test_ngram.py).

Limits: counting holds the distinct N-grams in memory (no on-disk merge, so a
corpus whose distinct N-grams do not fit in RAM cannot be estimated); no
``--interpolate_unigrams 0`` (SRILM-style unigrams), ``--limit_vocab_file`` or
``--prune_vocab``; orders up to 6; reading a large ARPA file costs about 4 µs a line.

References: Chen & Goodman (1998), "An Empirical Study of Smoothing Techniques for
Language Modeling"; Heafield et al. (2013), "Scalable Modified Kneser-Ney Language
Model Estimation"; KenLM ``lm/builder`` (kpu/kenlm).
"""

from lmlab.models.ngram.corpus import read_sentences
from lmlab.models.ngram.model import NGramConfig, NGramLM, Scores

__all__ = ["NGramConfig", "NGramLM", "Scores", "read_sentences"]
