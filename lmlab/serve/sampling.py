"""Log-probabilities as the API hands them out: the top alternatives of one position, on the host.

Tokens themselves are picked on the device, inside the batch step, by each sequence's own settings
(:func:`lmlab.generate.batching.pick_rows`); what stays here is for the prompt, whose log-probabilities
(``echo`` with ``logprobs``) come from the prefill as whole rows.
"""

from __future__ import annotations

import numpy as np


def top_log_probs(log_probs: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The ``k`` most probable ids of ``(V,)`` with their log-probabilities, most probable first."""
    k = min(k, len(log_probs))
    if k <= 0:
        return []
    best = np.argpartition(-log_probs, k - 1)[:k]
    best = best[np.argsort(-log_probs[best], kind="stable")]
    return [(int(i), float(log_probs[i])) for i in best]
