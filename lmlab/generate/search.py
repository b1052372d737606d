"""Decoding one prompt by strategy: greedy, sampling or beam search (task evaluation and prediction).

Greedy and sampled tokens come from the one compiled decoder (:mod:`lmlab.generate.decoder`) with an eager
prefill, so a test set of prompts of many lengths compiles nothing per length; beam search is
:mod:`lmlab.generate.beam` over the same decoder. The tests hold greedy decoding here equal to
:func:`~lmlab.generate.decoder.generate_ids`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmlab.core.errors import ConfigError
from lmlab.generate.beam import beam_search
from lmlab.generate.decoder import decoder_for, generate_group
from lmlab.generate.samplers import SamplerConfig

STRATEGIES = ("greedy", "sample", "beam")


@dataclass(frozen=True)
class DecodeConfig:
    strategy: str = "greedy"
    temperature: float = 1.0  # sample only
    top_k: int = 0
    top_p: float = 1.0
    beam_size: int = 4
    length_penalty: float = 1.0  # beam: scores are log-probability / generated length ** length_penalty
    seed: int = 0

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"decoding must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if not isinstance(self.beam_size, int) or self.beam_size < 1:
            raise ConfigError(f"beam_size must be a positive integer, got {self.beam_size!r}")
        if self.strategy == "sample":
            self.sampler()  # validates temperature, top_k, top_p

    def sampler(self) -> SamplerConfig:
        if self.strategy == "greedy":
            return SamplerConfig(temperature=0.0)
        return SamplerConfig(self.temperature, self.top_k, self.top_p)

    def to_dict(self) -> dict:
        if self.strategy == "greedy":
            return {"strategy": "greedy"}
        if self.strategy == "beam":
            return {"strategy": "beam", "beam_size": self.beam_size, "length_penalty": self.length_penalty}
        return {"strategy": "sample", "temperature": self.temperature, "top_k": self.top_k, "top_p": self.top_p,
                "seed": self.seed}


def decode(model, prompt, max_new_tokens: int, config: DecodeConfig, eos_id: int | None, seed: int | None = None
           ) -> list[int]:
    """New tokens for one prompt (the end token, if produced, last); ``seed`` overrides the config's."""
    decoder = decoder_for(model, config.sampler() if config.strategy != "beam" else SamplerConfig(temperature=0.0),
                          compile_prefill=False)
    decoder.check_room(len(prompt), max_new_tokens)
    if config.strategy == "beam":
        return beam_search(decoder, prompt, max_new_tokens, config.beam_size, eos_id, config.length_penalty)
    return generate_group(decoder, [list(prompt)], max_new_tokens, config.seed if seed is None else seed, eos_id)[0]
