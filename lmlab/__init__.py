"""lmlab: a language-model lab on Keras 3.

The package imports nothing heavy at the top: ``import lmlab`` is instant and
TensorFlow loads only when a model is built. Main entry points::

    from lmlab.data import prepare, open_split, RandomWindows, SequentialWindows
    from lmlab.tokenizers import train_tokenizer, load_tokenizer
"""

__version__ = "0.1.0"
