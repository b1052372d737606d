"""Fault injection for the reliability tests (``tests/test_faults.py``; see ``docs/reliability.md``).

Each hook is an environment variable, read once by the job it affects, so a
test can inject the fault into an ``lmlab`` subprocess without patching code:

    LMLAB_TEST_KILL_AFTER_DOCS=N    ``prepare`` SIGKILLs itself after N documents
    LMLAB_TEST_KILL_AFTER_STEPS=N   ``train`` SIGKILLs itself after step N
    LMLAB_TEST_POISON_STEPS=SPEC    ``train`` multiplies the loss of the given steps' batches,
                                    e.g. ``12,15:inf,20:1e30`` (NaN when no value is given);
                                    steps are numbered as the log numbers them (from 1)

Unset, they cost nothing and change nothing.
"""

from __future__ import annotations

import os

from lmlab.core.errors import ConfigError

POISON_STEPS = "LMLAB_TEST_POISON_STEPS"


def poisoned_steps() -> dict[int, float]:
    """Step → loss multiplier from ``LMLAB_TEST_POISON_STEPS`` (empty when unset)."""
    spec = os.environ.get(POISON_STEPS, "").strip()
    steps = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        step, _, value = item.partition(":")
        try:
            steps[int(step)] = float(value or "nan")
        except ValueError:
            raise ConfigError(f"{POISON_STEPS}: expected STEP[:VALUE],... got {item!r}") from None
    return steps
