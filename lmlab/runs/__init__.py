"""The run folder: ``config.json``, ``tokenizer.json`` and ``checkpoints/``, owned here alone.

- :mod:`~lmlab.runs.folder`: ``config.json`` (read, write, the data reference) and writing a whole run;
- :mod:`~lmlab.runs.checkpoint`: atomic checkpoints with ``last`` and ``best`` pointers;
- :mod:`~lmlab.runs.load`: a run's model and tokenizer, for evaluation and generation.
"""
