"""lmlab: a language-model lab on Keras 3.

The package imports nothing heavy at the top: ``import lmlab`` is instant and
TensorFlow loads only when a model is built. The front door, for any run, fine-tuned folder, Hugging Face folder, SavedModel or ARPA file
(:mod:`lmlab.language_model`)::

    lm = lmlab.load("runs/shakespeare")
    lm.score(["To be, or not to be"]); lm.perplexity(text); lm.generate(["ROMEO:"]); lm.save("out", format="hf")

The layers below it::

    from lmlab.data import prepare, open_split, RandomWindows, SequentialWindows
    from lmlab.tokenizers import train_tokenizer, load_tokenizer
"""

__version__ = "0.1.0"


def __getattr__(name):  # lmlab.load: imported on first use, so `import lmlab` stays instant
    if name in ("load", "LanguageModel"):
        import importlib

        return getattr(importlib.import_module("lmlab.language_model"), name)
    raise AttributeError(f"module 'lmlab' has no attribute {name!r}")


__all__ = ["LanguageModel", "load"]
