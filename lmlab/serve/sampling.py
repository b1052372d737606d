"""Picking each served sequence's next token on the host, from the log-probabilities a batch step returns.

Sequences in one batch have their own temperature, top-k, top-p and seed, so the choice is made
per row in NumPy rather than in the compiled step (whose sampler is one fixed configuration).
The filters are :mod:`lmlab.generate.samplers`' in the same order and with the same rules:
temperature 0 is the argmax (the first on ties); top-k keeps ties at the k-th value; top-p keeps
the smallest most-probable set reaching ``top_p``, at least one token. Each sequence draws from
its own ``numpy.random.Generator`` seeded by ``(seed, choice)``, so a seeded request gives the
same tokens whatever else the server is doing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lmlab.generate.samplers import SamplerConfig


@dataclass
class TokenPicker:
    sampler: SamplerConfig
    rng: np.random.Generator

    @classmethod
    def seeded(cls, sampler: SamplerConfig, seed: int | None, choice: int) -> "TokenPicker":
        entropy = None if seed is None else [int(seed) % 2**63, choice]
        return cls(sampler, np.random.default_rng(entropy))

    def pick(self, log_probs: np.ndarray) -> int:
        """The next token id from one row of log-probabilities ``(V,)``."""
        if self.sampler.greedy:
            return int(np.argmax(log_probs))
        return int(self.rng.choice(len(log_probs), p=filtered_probs(log_probs, self.sampler)))


def filtered_probs(log_probs: np.ndarray, sampler: SamplerConfig) -> np.ndarray:
    """The distribution ``(V,)`` float64 left after temperature, top-k and top-p, normalised."""
    logits = log_probs.astype(np.float64) / sampler.temperature
    if 0 < sampler.top_k < len(logits):
        kth = np.partition(logits, -sampler.top_k)[-sampler.top_k]
        logits = np.where(logits < kth, -np.inf, logits)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    if sampler.top_p < 1:
        order = np.argsort(-probs, kind="stable")  # most probable first
        before = np.cumsum(probs[order]) - probs[order]  # mass strictly before each token
        keep = np.zeros(len(probs), bool)
        keep[order[before < sampler.top_p]] = True
        probs = np.where(keep, probs, 0.0)
        probs /= probs.sum()
    return probs


def top_log_probs(log_probs: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The ``k`` most probable ids of ``(V,)`` with their log-probabilities, most probable first."""
    k = min(k, len(log_probs))
    if k <= 0:
        return []
    best = np.argpartition(-log_probs, k - 1)[:k]
    best = best[np.argsort(-log_probs[best], kind="stable")]
    return [(int(i), float(log_probs[i])) for i in best]
