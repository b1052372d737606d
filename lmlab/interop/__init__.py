"""Bridges to other tools' file formats: Hugging Face checkpoints in and out, TensorFlow SavedModel out.

    from lmlab.interop import import_hf, export_hf, export_savedmodel
    import_hf("gpt2-folder", "runs/gpt2")            # safetensors + config.json + tokenizer.json -> a run
    export_hf("runs/gpt2", "gpt2-again")             # a run -> a folder transformers loads
    export_savedmodel("runs/gpt2", "gpt2-savedmodel")  # scoring and generation signatures, plain TensorFlow

Nothing here needs ``transformers`` or PyTorch; the tests use them as the reference.
"""

from __future__ import annotations

import importlib

_HOMES = {"import_hf": "lmlab.interop.hf_import", "export_hf": "lmlab.interop.hf_export",
          "export_savedmodel": "lmlab.interop.savedmodel"}


def __getattr__(name):  # imported on first use: `import lmlab.interop` stays instant
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_HOMES)
