"""Optional dependencies: which extra of ``pip install lmlab[...]`` brings each, and a clear error when missing.

The core (prepare, train, eval, generate, compare, the tasks) needs only the runtime dependencies;
these packages are imported where a feature needs them, through :func:`require`, so a missing one
says what to install instead of failing with a bare ``ModuleNotFoundError``.
"""

from __future__ import annotations

import importlib

from lmlab.core.errors import ConfigError

EXTRAS = {  # top-level module -> (extra, what needs it)
    "datasets": ("datasets", "reading Hugging Face datasets (hf: sources)"),
    "pyarrow": ("datasets", "reading Hugging Face datasets (hf: sources)"),
    "jax": ("jax", "the JAX backend (KERAS_BACKEND=jax)"),
    "jaxlib": ("jax", "the JAX backend (KERAS_BACKEND=jax)"),
    "transformers": ("parity", "checking lmlab against the transformers reference"),
    "torch": ("parity", "checking lmlab against the transformers reference"),
    "tensorboard": ("tensorboard", "viewing training logs (tensorboard --logdir RUN/tensorboard)"),
    "nltk": ("rouge", "ROUGE with Porter stemming (rouge-stemmed)"),
    "fastapi": ("serve", "lmlab serve (the HTTP server)"),
    "uvicorn": ("serve", "lmlab serve (the HTTP server)"),
    "jiwer": ("rescore", "lmlab rescore (word and character error rates)"),
    "lm_eval": ("harness", "lmlab harness (the lm-evaluation-harness model)"),
}


def missing_message(module: str, what: str | None = None) -> str | None:
    """The one-line advice for a missing optional module, or None when it is not an optional one."""
    top = module.split(".")[0]
    if top not in EXTRAS:
        return None
    extra, needed_by = EXTRAS[top]
    return f"{what or needed_by} needs the {top!r} package: pip install 'lmlab[{extra}]'"


def require(module: str, what: str | None = None):
    """Import ``module``; when it is not installed, a :class:`ConfigError` naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name and error.name.split(".")[0] in EXTRAS:
            raise ConfigError(missing_message(error.name, what)) from None
        raise
